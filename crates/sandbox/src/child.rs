//! Stages 2–6, run by the cloned child, which is PID 1 of the new pid
//! namespace and becomes the sandbox's init.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::protocol::{self, Msg};
use crate::spec::SandboxSpec;
use crate::sys::{self, SigSet, WaitStatus};
use crate::{confine, mounts, seccomp, StageError};

/// Exit code of init when setup failed (reported over the channel as well).
pub(crate) const EXIT_SETUP_FAILED: i32 = 125;

/// What the child needs, prepared by the supervisor before `clone`.
pub(crate) struct ChildArgs<'a> {
    pub spec: &'a SandboxSpec,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub uid: u32,
    pub gid: u32,
    pub chan: OwnedFd,
    /// Give the agent its own pty (allocated inside the sandbox's devpts).
    pub want_pty: bool,
    /// The signals init waits for (already blocked, inherited from the supervisor).
    pub signals: SigSet,
}

/// Runs the child side. Never returns.
pub(crate) fn main(args: ChildArgs<'_>) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(args)))
        .unwrap_or(EXIT_SETUP_FAILED);
    sys::exit_now(code)
}

fn run(args: ChildArgs<'_>) -> i32 {
    let chan = args.chan.as_fd();
    // If the supervisor is already gone, the send fails and we stop here;
    // otherwise the death signal covers every later moment.
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
        || protocol::send(chan, &Msg::Started).is_err()
    {
        return EXIT_SETUP_FAILED;
    }
    let mut pty_slave = None;
    match setup(&args, &mut pty_slave) {
        Ok(warnings) => {
            for message in warnings {
                let _ = protocol::send(chan, &Msg::Warning { message });
            }
        }
        Err(e) => {
            let _ = protocol::send(chan, &Msg::SetupFailed(e));
            return EXIT_SETUP_FAILED;
        }
    }
    let program = match find_program(&args) {
        Ok(p) => p,
        Err((code, message)) => {
            let _ = protocol::send(
                chan,
                &Msg::ExecFailed {
                    program: display(&args.argv[0]),
                    message,
                    code,
                },
            );
            return code;
        }
    };
    if protocol::send(chan, &Msg::Ready).is_err() {
        return EXIT_SETUP_FAILED;
    }
    // SAFETY: init is single-threaded (it is a fresh clone of the
    // single-threaded supervisor and never spawned threads).
    let agent = match unsafe { sys::fork() } {
        Ok(sys::Forked::Child) => exec_agent(&args, &program, pty_slave.as_ref()),
        Ok(sys::Forked::Parent(pid)) => pid,
        Err(e) => {
            let _ = protocol::send(
                chan,
                &Msg::SetupFailed(StageError::new("init", "fork the agent", e)),
            );
            return EXIT_SETUP_FAILED;
        }
    };
    drop(pty_slave);
    detach_stdio();
    init_loop(agent, &args.signals, chan)
}

/// Stages 2–5. Returns warnings to report.
fn setup(a: &ChildArgs<'_>, pty_slave: &mut Option<OwnedFd>) -> Result<Vec<String>, StageError> {
    use std::os::fd::AsRawFd;
    // One open directory fd to $HOME would bypass every mount rule.
    sys::close_fds_except(&[a.chan.as_raw_fd()])
        .map_err(|e| StageError::new("fds", "close inherited descriptors", e))?;
    confine::map_ids(a.uid, a.gid)?;
    mounts::build_root(&a.spec.mounts, a.spec.root_size)?;
    if let (true, Some(term)) = (a.want_pty, crate::pty::first_tty()) {
        // Allocated from the sandbox's own devpts, so the agent's tty has a
        // name inside (ttyname works); the master goes to the supervisor.
        let pty = crate::pty::open(term)
            .map_err(|e| StageError::new("pty", "allocate the agent's pty", e))?;
        protocol::send_fd(a.chan.as_fd(), &Msg::Pty, pty.master.as_fd())
            .map_err(|e| StageError::new("pty", "hand the pty to the supervisor", e))?;
        *pty_slave = Some(pty.slave);
    }
    sys::loopback_up().map_err(|e| StageError::new("network", "bring up loopback", e))?;
    rustix::system::sethostname(a.spec.hostname.as_bytes())
        .map_err(|e| StageError::new("uts", "set the hostname", e.into()))?;
    sys::join_new_session_keyring()
        .map_err(|e| StageError::new("keyring", "join a new session keyring", e))?;

    confine::lock_mounts(a.uid, a.gid)?;
    confine::set_limits(&a.spec.limits)?;
    confine::drop_capabilities()?;
    confine::no_new_privs()?;
    // The descriptors the agent will hold: the pty slave in place of every
    // terminal, the others as inherited.
    let ttys = crate::pty::std_ttys();
    let mut std_fds: Vec<RawFd> = (0..3)
        .filter(|&fd| !(pty_slave.is_some() && ttys[fd as usize]))
        .collect();
    if let Some(s) = pty_slave {
        std_fds.push(s.as_raw_fd());
    }
    let warnings = confine::landlock(&a.spec.landlock, &std_fds)?
        .into_iter()
        .collect();
    seccomp::install(&a.spec.seccomp, libc::EPERM)
        .map_err(|e| StageError::new("seccomp", "install the syscall filter", e))?;
    // The agent runs as the same uid: keep it out of init's memory and
    // /proc/1/environ (which still holds the supervisor's environment).
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| StageError::new("dumpable", "make init non-dumpable", e.into()))?;
    Ok(warnings)
}

fn display(s: &CStr) -> String {
    String::from_utf8_lossy(s.to_bytes()).into_owned()
}

/// Resolves `argv[0]` inside the sandbox view, like `execvp`.
fn find_program(a: &ChildArgs<'_>) -> Result<CString, (i32, String)> {
    let name = a.argv[0].to_bytes();
    let check = |p: &Path| -> Result<(), (i32, String)> {
        match rustix::fs::access(p, rustix::fs::Access::EXEC_OK) {
            Ok(()) if !p.is_dir() => Ok(()),
            Ok(()) => Err((126, "is a directory".into())),
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
                Err((127, "no such file inside the sandbox".into()))
            }
            Err(e) => Err((126, io::Error::from(e).to_string())),
        }
    };
    if name.contains(&b'/') {
        let p = Path::new(OsStr::from_bytes(name));
        check(p)?;
        return Ok(a.argv[0].clone());
    }
    let path_var = a
        .env
        .iter()
        .find_map(|kv| kv.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    let mut last = (127, "command not found in the sandbox's PATH".to_owned());
    for dir in path_var.split(|&b| b == b':').filter(|d| !d.is_empty()) {
        let candidate: PathBuf = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(name));
        match check(&candidate) {
            Ok(()) => {
                return CString::new(candidate.as_os_str().as_bytes())
                    .map_err(|_| (127, "path contains a NUL byte".into()))
            }
            Err((126, msg)) => last = (126, format!("{}: {msg}", candidate.display())),
            Err(_) => {}
        }
    }
    Err(last)
}

/// The agent's side of the fork: new session, stdio, signals, exec.
fn exec_agent(a: &ChildArgs<'_>, program: &CStr, pty_slave: Option<&OwnedFd>) -> ! {
    let chan = a.chan.as_fd();
    let fail = |message: String, code: i32| -> ! {
        let _ = protocol::send(
            chan,
            &Msg::ExecFailed {
                program: display(&a.argv[0]),
                message,
                code,
            },
        );
        sys::exit_now(code)
    };
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if let Err(e) = rustix::process::setsid() {
        fail(format!("setsid: {}", io::Error::from(e)), 126);
    }
    if let Some(slave) = pty_slave {
        if let Err(e) = rustix::process::ioctl_tiocsctty(slave) {
            fail(format!("acquire the pty: {}", io::Error::from(e)), 126);
        }
        let ttys = crate::pty::std_ttys();
        for target in (0..3).filter(|&fd| ttys[fd as usize]) {
            if let Err(e) = sys::dup2_raw(std::os::fd::AsRawFd::as_raw_fd(slave), target) {
                fail(format!("dup2 the pty: {e}"), 126);
            }
        }
    }
    if let Err(e) = rustix::process::chdir(&a.spec.cwd) {
        fail(
            format!(
                "working directory {} is not available inside the sandbox: {}",
                a.spec.cwd.display(),
                io::Error::from(e)
            ),
            126,
        );
    }
    sys::reset_sigpipe();
    let _ = sys::set_sigmask(libc::SIG_SETMASK, &SigSet::empty());
    let err = sys::execve(program, &a.argv, &a.env);
    let code = if err.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    fail(err.to_string(), code)
}

/// Points init's own stdio at /dev/null so that it holds no reference to the
/// terminal or to pipes the agent's readers wait on.
fn detach_stdio() {
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        for target in 0..3 {
            let _ = sys::dup2_raw(std::os::fd::AsRawFd::as_raw_fd(&null), target);
        }
    }
}

/// PID 1: reap every child, relay signals to the agent, and exit with the
/// agent's status. Exiting makes the kernel kill the rest of the namespace.
fn init_loop(agent: libc::pid_t, signals: &SigSet, chan: BorrowedFd<'_>) -> i32 {
    loop {
        let sig = match sys::sigwait(signals) {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != libc::SIGCHLD {
            if sig != libc::SIGWINCH {
                let _ = sys::kill(agent, sig);
            }
            continue;
        }
        while let Ok(Some((pid, status))) = sys::waitpid(-1, true) {
            if pid == agent {
                let signal = match status {
                    WaitStatus::Signaled(s) => Some(s),
                    WaitStatus::Exited(_) => None,
                };
                let _ = protocol::send(
                    chan,
                    &Msg::Exited {
                        code: status.code(),
                        signal,
                    },
                );
                return status.code();
            }
        }
    }
}
