//! The sandbox side of the launch: init, PID 1 of the new pid namespace
//! (stages 2–7).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::protocol::{self, Msg, Order};
use crate::spec::{SandboxSpec, Terminal};
use crate::sys::{self, SigSet, WaitStatus};
use crate::{confine, mounts, seccomp, StageError};

/// Exit code of init when setup failed (reported over the channel as well).
pub(crate) const EXIT_SETUP_FAILED: i32 = 125;

/// What init starts with: nothing from the spec, which does not exist yet.
pub(crate) struct StartArgs {
    /// The sandbox's end of the socketpair.
    pub chan: OwnedFd,
    pub uid: u32,
    pub gid: u32,
    /// The signals init waits for; blocked from its first instruction on.
    pub signals: SigSet,
    pub cpus: CpuPlacement,
}

/// Where init runs while it creates its namespaces. The scheduler starts a
/// new process on its parent's CPU, and often leaves it queued there behind
/// the parent (or runs it ahead of the parent) while the other CPUs idle: the
/// namespace work, meant to overlap the supervisor's, would then delay it.
/// So init is moved to the other CPUs until the spec arrives — by the
/// supervisor right after `clone`, or by itself if it runs first — and then
/// takes back the supervisor's mask, which the agent inherits.
pub(crate) struct CpuPlacement {
    /// The CPU the supervisor ran on at `clone`.
    pub parent_cpu: usize,
    /// The supervisor's affinity mask.
    pub mask: Option<rustix::thread::CpuSet>,
    /// `mask` without `parent_cpu`; `None` when that leaves nothing.
    pub away: Option<rustix::thread::CpuSet>,
}

impl CpuPlacement {
    /// The placement for a child of the calling thread.
    pub fn here() -> CpuPlacement {
        let parent_cpu = rustix::thread::sched_getcpu();
        let mask = rustix::thread::sched_getaffinity(None).ok();
        let away = mask.as_ref().and_then(|m| {
            let mut away = *m;
            away.unset(parent_cpu);
            (away.count() > 0).then_some(away)
        });
        CpuPlacement {
            parent_cpu,
            mask,
            away,
        }
    }
}

/// Init (PID 1 of the new pid namespace). Never returns.
pub(crate) fn init_main(a: StartArgs) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init(a)))
        .unwrap_or(EXIT_SETUP_FAILED);
    sys::exit_now(code)
}

/// Stage 2, while the supervisor still resolves the profile: ids, the
/// network namespace, then wait for the spec.
fn init(a: StartArgs) -> i32 {
    let _ = rustix::thread::set_name(c"cordon-init");
    // If the supervisor is already gone, the send fails and we stop here;
    // otherwise the death signal covers every later moment.
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
        || protocol::send(a.chan.as_fd(), &Msg::Started).is_err()
    {
        return EXIT_SETUP_FAILED;
    }
    if let Err(e) = enter(&a) {
        let _ = protocol::send(a.chan.as_fd(), &Msg::SetupFailed(e));
        return EXIT_SETUP_FAILED;
    }
    let spec = match receive_spec(a.chan.as_fd()) {
        Ok(Some(spec)) => spec,
        // The supervisor gave up on this launch.
        Ok(None) => return EXIT_SETUP_FAILED,
        Err(e) => {
            let _ = protocol::send(a.chan.as_fd(), &Msg::SetupFailed(e));
            return EXIT_SETUP_FAILED;
        }
    };
    // The supervisor moved us (if at all) before it sent the spec: from here
    // on the mask the agent inherits is the one cordon was started with.
    if let (Some(_), Some(mask)) = (&a.cpus.away, &a.cpus.mask) {
        if let Err(e) = rustix::thread::sched_setaffinity(None, mask) {
            let e = StageError::new("cpus", "restore the CPU affinity", e.into());
            let _ = protocol::send(a.chan.as_fd(), &Msg::SetupFailed(e));
            return EXIT_SETUP_FAILED;
        }
    }
    // Made here, by a process that is in the sandbox's cgroup (if it has
    // one), the cgroup namespace is rooted there: nothing in the sandbox
    // can name a cgroup above its own.
    // SAFETY: unsharing a namespace does not affect memory safety; init is
    // single-threaded.
    let cgroupns =
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) };
    if let Err(e) = cgroupns {
        let e = StageError::new("cgroupns", "create the cgroup namespace", e.into());
        let _ = protocol::send(a.chan.as_fd(), &Msg::SetupFailed(e));
        return EXIT_SETUP_FAILED;
    }
    let args = match InitArgs::new(spec, a) {
        Ok(a) => a,
        Err((chan, e)) => {
            let _ = protocol::send(chan.as_fd(), &Msg::SetupFailed(e));
            return EXIT_SETUP_FAILED;
        }
    };
    run(args)
}

fn enter(a: &StartArgs) -> Result<(), StageError> {
    sys::set_sigmask(libc::SIG_BLOCK, &a.signals)
        .map_err(|e| StageError::new("signals", "block the relayed signals", e))?;
    // One open directory fd to $HOME would bypass every mount rule.
    sys::close_fds_except(&[a.chan.as_raw_fd()])
        .map_err(|e| StageError::new("fds", "close inherited descriptors", e))?;
    // Started on the supervisor's CPU, ahead of it: step aside (see
    // `CpuPlacement`).
    if let Some(away) = &a.cpus.away {
        if rustix::thread::sched_getcpu() == a.cpus.parent_cpu {
            let _ = rustix::thread::sched_setaffinity(None, away);
        }
    }
    confine::map_ids(a.uid, a.gid)?;
    // The network namespace is the expensive one (about half a millisecond):
    // created here rather than in `clone`, it overlaps the supervisor's work.
    // SAFETY: unsharing a namespace does not affect memory safety; init is
    // single-threaded.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(|e| StageError::new("netns", "create the network namespace", e.into()))
}

/// What init works from once the spec has arrived.
struct InitArgs {
    spec: SandboxSpec,
    argv: Vec<CString>,
    env: Vec<CString>,
    uid: u32,
    gid: u32,
    chan: OwnedFd,
    signals: SigSet,
}

/// Waits for the spec; `Ok(None)` when the supervisor closed the channel.
fn receive_spec(chan: BorrowedFd<'_>) -> Result<Option<SandboxSpec>, StageError> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: io::Error| StageError::new("spec", what, err)
    };
    let mut buf = vec![0u8; 256];
    let Some((Order::Spec, Some(fd))) =
        protocol::recv_blocking::<Order>(chan, &mut buf).map_err(e("receive the spec"))?
    else {
        return Ok(None);
    };
    let len = rustix::fs::fstat(&fd)
        .map_err(io::Error::from)
        .map_err(e("size the spec"))?
        .st_size;
    let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let mut done = 0;
    while done < data.len() {
        match rustix::io::pread(&fd, &mut data[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(e("read the spec")(err.into())),
        }
    }
    data.truncate(done);
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|err| e("parse the spec")(io::Error::new(io::ErrorKind::InvalidData, err)))
}

impl InitArgs {
    #[allow(clippy::result_large_err)]
    fn new(spec: SandboxSpec, h: StartArgs) -> Result<InitArgs, (OwnedFd, StageError)> {
        match (argv_cstrings(&spec), env_cstrings(&spec)) {
            (Ok(argv), Ok(env)) => Ok(InitArgs {
                spec,
                argv,
                env,
                uid: h.uid,
                gid: h.gid,
                chan: h.chan,
                signals: h.signals,
            }),
            (Err(msg), _) | (_, Err(msg)) => Err((
                h.chan,
                StageError::new("spec", msg, io::Error::from_raw_os_error(libc::EINVAL)),
            )),
        }
    }
}

/// The agent's argv as C strings; the message names what is wrong.
pub(crate) fn argv_cstrings(spec: &SandboxSpec) -> Result<Vec<CString>, String> {
    if spec.argv.is_empty() {
        return Err("no command given".into());
    }
    spec.argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "an argument contains a NUL byte".into()))
        .collect()
}

/// The agent's environment as `NAME=value` C strings.
pub(crate) fn env_cstrings(spec: &SandboxSpec) -> Result<Vec<CString>, String> {
    spec.env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.as_bytes().contains(&b'=') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| "an environment variable contains a NUL byte".into())
        })
        .collect()
}

fn run(args: InitArgs) -> i32 {
    let chan = args.chan.as_fd();
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
    // The supervisor records the session while the sandbox sets up; the
    // agent starts only once that record exists.
    let mut buf = [0u8; 64];
    // What the supervisor asks init to hold until it exits (close-on-exec,
    // never used here).
    let held = match protocol::recv_blocking_fds::<Order>(chan, &mut buf) {
        Ok(Some((Order::Go, held))) => held,
        _ => return EXIT_SETUP_FAILED,
    };
    // The exec audit covers the agent from its first execve on: the filter
    // goes on init just before the agent is cloned from it (init itself
    // makes no more execs; its exit is reported too), and the listener to
    // the supervisor, which answers while init waits.
    if args.spec.seccomp.audit_exec {
        let sent = seccomp::install_exec_notify(!args.spec.seccomp.exits_by_pidfd)
            .map_err(|e| StageError::new("seccomp", "install the exec-audit filter", e))
            .and_then(|fd| {
                protocol::send_fd(chan, &Msg::ExecListener, fd.as_fd()).map_err(|e| {
                    StageError::new(
                        "seccomp",
                        "hand the exec-audit listener to the supervisor",
                        e,
                    )
                })
            });
        if let Err(e) = sent {
            let _ = protocol::send(chan, &Msg::SetupFailed(e));
            return EXIT_SETUP_FAILED;
        }
    }
    let agent = match spawn_agent(&args, &program, pty_slave.as_ref()) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = protocol::send(
                chan,
                &Msg::SetupFailed(StageError::new("init", "start the agent", e)),
            );
            return EXIT_SETUP_FAILED;
        }
    };
    drop(pty_slave);
    detach_stdio();
    let (code, alone) = init_loop(agent, &args.signals, chan);
    if !held.is_empty() && alone {
        // Hold it until the supervisor's process exits (the parent-death
        // signal, SIGKILL, ends this), so that its last close is not the
        // supervisor's: see `Launch::go_holding`.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    code
}

/// Stages 4–6. Returns warnings to report.
fn setup(a: &InitArgs, pty_slave: &mut Option<OwnedFd>) -> Result<Vec<String>, StageError> {
    // Before the new root hides the host's /dev/net/tun; the network
    // namespace is already the sandbox's own.
    if let Some(tun) = a.spec.tun {
        let dev = sys::tun_create(TUN_NAME, tun.address, tun.mtu).map_err(|e| {
            StageError::new("network", "create the TUN device", e).with_hint(
                "transparent egress capture needs /dev/net/tun (`cordon doctor`); set \
                 [network] mode = \"proxy\" to use the explicit proxy instead",
            )
        })?;
        protocol::send_fd(a.chan.as_fd(), &Msg::Tun, dev.as_fd())
            .map_err(|e| StageError::new("network", "hand the TUN device to the supervisor", e))?;
    }
    mounts::build_root(&a.spec.mounts, a.spec.root_size)?;
    let want_pty = a.spec.terminal == Terminal::Pty;
    if let (true, Some(term)) = (want_pty, crate::pty::first_tty()) {
        // Allocated from the sandbox's own devpts, so the agent's tty has a
        // name inside (ttyname works); the master goes to the supervisor.
        let pty = crate::pty::open(term)
            .map_err(|e| StageError::new("pty", "allocate the agent's pty", e))?;
        protocol::send_fd(a.chan.as_fd(), &Msg::Pty, pty.master.as_fd())
            .map_err(|e| StageError::new("pty", "hand the pty to the supervisor", e))?;
        *pty_slave = Some(pty.slave);
    }
    sys::loopback_up().map_err(|e| StageError::new("network", "bring up loopback", e))?;
    if let Some(port) = a.spec.proxy_port {
        let listener = proxy_listener(port)
            .map_err(|e| StageError::new("network", format!("listen on 127.0.0.1:{port}"), e))?;
        protocol::send_fd(a.chan.as_fd(), &Msg::ProxyListener, listener.as_fd()).map_err(|e| {
            StageError::new("network", "hand the proxy socket to the supervisor", e)
        })?;
    }
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

/// The sandbox's TUN device.
const TUN_NAME: &str = "cordon0";

/// The egress proxy's listening socket on the sandbox's loopback. Init
/// closes its copy once the supervisor has it; the agent never holds it.
fn proxy_listener(port: u16) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
    rustix::net::bind(&sock, &addr)?;
    rustix::net::listen(&sock, 4096)?;
    Ok(sock)
}

fn display(s: &CStr) -> String {
    String::from_utf8_lossy(s.to_bytes()).into_owned()
}

/// Resolves `argv[0]` inside the sandbox view, like `execvp`.
fn find_program(a: &InitArgs) -> Result<CString, (i32, String)> {
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
    if let Some(p) = &a.spec.program {
        check(p)?;
        return CString::new(p.as_os_str().as_bytes())
            .map_err(|_| (127, "path contains a NUL byte".into()));
    }
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

/// Where the agent's start failed (written by the vfork child).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Step {
    None = 0,
    Setpgid,
    Ctty,
    Dup,
    Chdir,
    Exec,
}

/// Everything the vfork child reads, prepared by init beforehand (the child
/// shares init's memory and must not allocate), and what it reports back.
#[repr(C)]
struct AgentStart {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// The pty slave, or -1.
    slave: RawFd,
    /// Which of fds 0–2 get the slave.
    ttys: [bool; 3],
    failed: Step,
    errno: i32,
}

/// The vfork child: its own process group in init's session, the pty's
/// foreground group, working directory, default signal state, `execve`.
/// Only system calls, no allocation: the memory is init's.
extern "C" fn agent_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `AgentStart` that `spawn_agent` keeps alive and
    // does not touch until this child has exec'd or exited (CLONE_VFORK).
    let a = unsafe { &mut *arg.cast::<AgentStart>() };
    let fail = |a: &mut AgentStart, step: Step| -> ! {
        // SAFETY: reading errno right after the failed call; _exit never returns.
        let errno = unsafe { *libc::__errno_location() };
        a.failed = step;
        a.errno = errno;
        let code = if step == Step::Exec && errno == libc::ENOENT {
            127
        } else {
            126
        };
        // SAFETY: as above.
        unsafe { libc::_exit(code) }
    };
    // SAFETY: each call below takes plain integers or pointers to the
    // NUL-terminated strings and NULL-terminated arrays that `spawn_agent`
    // prepared and keeps alive.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::setpgid(0, 0) < 0 {
            fail(a, Step::Setpgid);
        }
        if a.slave >= 0 {
            // A background group taking the terminal would get SIGTTOU;
            // the mask is reset before execve.
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
            if libc::tcsetpgrp(a.slave, libc::getpid()) < 0 {
                fail(a, Step::Ctty);
            }
            for fd in 0..3 {
                if a.ttys[fd as usize] && libc::dup2(a.slave, fd) < 0 {
                    fail(a, Step::Dup);
                }
            }
        }
        if libc::chdir(a.cwd) < 0 {
            fail(a, Step::Chdir);
        }
        // The Rust runtime ignores SIGPIPE and `execve` would pass that on.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
    }
    fail(a, Step::Exec)
}

/// Starts the agent with `CLONE_VM | CLONE_VFORK` (no copy of init's page
/// tables) and reports a failed start over the channel, naming the step.
fn spawn_agent(
    a: &InitArgs,
    program: &CStr,
    pty_slave: Option<&OwnedFd>,
) -> io::Result<libc::pid_t> {
    let mut argv: Vec<*const libc::c_char> = a.argv.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = a.env.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = CString::new(a.spec.cwd.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let ttys = crate::pty::std_ttys();
    // Init leads the sandbox's session (away from the user's terminal) and
    // holds the pty as its controlling terminal; the agent gets a process
    // group of its own in that session. A group whose parent is in the same
    // session is not orphaned, so freezing it (`cordon contain`) never makes
    // the kernel hang it up when one of its processes exits meanwhile.
    // SAFETY: plain system calls on init's own state and the slave fd.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::other(format!(
                "setsid: {}",
                io::Error::last_os_error()
            )));
        }
        if let Some(s) = pty_slave {
            if libc::ioctl(s.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::other(format!(
                    "acquire the pty: {}",
                    io::Error::last_os_error()
                )));
            }
        }
    }
    let mut start = AgentStart {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        slave: pty_slave.map_or(-1, |s| s.as_raw_fd()),
        ttys,
        failed: Step::None,
        errno: 0,
    };
    // SAFETY: init is single-threaded; `start` and everything it points to
    // outlive the child's use of them, since the call returns only after the
    // child has exec'd or exited.
    let pid = unsafe { sys::vfork_spawn(agent_entry, (&mut start as *mut AgentStart).cast())? };
    if start.failed != Step::None {
        let err = io::Error::from_raw_os_error(start.errno);
        let message = match start.failed {
            Step::Setpgid => format!("setpgid: {err}"),
            Step::Ctty => format!("acquire the pty: {err}"),
            Step::Dup => format!("dup2 the pty: {err}"),
            Step::Chdir => format!(
                "working directory {} is not available inside the sandbox: {err}",
                a.spec.cwd.display()
            ),
            Step::Exec | Step::None => err.to_string(),
        };
        let code = if start.failed == Step::Exec && start.errno == libc::ENOENT {
            127
        } else {
            126
        };
        let _ = protocol::send(
            a.chan.as_fd(),
            &Msg::ExecFailed {
                program: display(&a.argv[0]),
                message,
                code,
            },
        );
    }
    Ok(pid)
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
/// Returns the status and whether nothing else is left.
fn init_loop(agent: libc::pid_t, signals: &SigSet, chan: BorrowedFd<'_>) -> (i32, bool) {
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
                let alone = end_everything_else();
                let _ = protocol::send(
                    chan,
                    &Msg::Exited {
                        code: status.code(),
                        signal,
                        alone,
                    },
                );
                return (status.code(), alone);
            }
        }
    }
}

/// Kills and reaps every other process in the pid namespace (all of them
/// are init's descendants, and orphans are re-parented to init), so that
/// the supervisor can report the exit without waiting for the kernel to
/// tear the namespaces down. `false` if something is still there after
/// half a second (a process that cannot be signalled, or stuck in the
/// kernel): then init just exits, and the kernel's own kill of the pid
/// namespace, which the supervisor waits for, finishes the job.
fn end_everything_else() -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let sigchld = SigSet::of(&[libc::SIGCHLD]);
    loop {
        let _ = sys::kill(-1, libc::SIGKILL);
        while let Ok(Some(_)) = sys::waitpid(-1, true) {}
        // ESRCH: nothing left that could be signalled, zombies included.
        if sys::kill(-1, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH)) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || !matches!(sys::sigtimedwait(&sigchld, left), Ok(Some(_))) {
            return false;
        }
    }
}
