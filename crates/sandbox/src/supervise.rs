//! Stage 1 and the supervisor loop: launch the child, wait for it to report,
//! relay the terminal and signals, and collect the exit status.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use crate::child::{self, ChildArgs};
use crate::protocol::{self, Msg};
use crate::pty::{self, RawMode};
use crate::spec::{SandboxSpec, Terminal};
use crate::sys::{self, SigSet};
use crate::StageError;

/// Something the caller may want to record while the sandbox runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Every layer is in place; the agent is being executed. `pid` is init's
    /// pid in the caller's pid namespace.
    Started {
        /// Host pid of the sandbox's init.
        pid: i32,
    },
    /// A non-fatal degradation (already acceptable under the spec).
    Warning(String),
}

/// How the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub code: i32,
    /// The signal that killed the agent, if any.
    pub signal: Option<i32>,
}

/// Why a sandbox could not run the agent.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// `run` was called from a multi-threaded process.
    #[error(
        "the sandbox must be launched from a single-threaded process (this one has {0} threads)"
    )]
    Threads(usize),
    /// The spec cannot be executed (e.g. a NUL byte in an argument).
    #[error("invalid sandbox specification: {0}")]
    InvalidSpec(String),
    /// A setup stage failed; nothing ran.
    #[error("{0}")]
    Setup(StageError),
    /// The agent could not be executed.
    #[error("{program}: {message}")]
    Exec {
        /// The program as given.
        program: String,
        /// Why.
        message: String,
        /// 126 or 127.
        code: i32,
    },
    /// The supervisor itself failed.
    #[error("supervisor: {0}")]
    Io(#[from] io::Error),
}

/// Signals the supervisor handles (blocked, read from a signalfd) and init
/// relays.
const HANDLED: &[libc::c_int] = &[
    libc::SIGCHLD,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

fn cstring(bytes: &[u8], what: &str) -> Result<CString, LaunchError> {
    CString::new(bytes).map_err(|_| LaunchError::InvalidSpec(format!("{what} contains a NUL byte")))
}

/// Starts the sandbox described by `spec`, runs the agent to completion and
/// returns how it ended. Must be called from a single-threaded process.
pub fn run(spec: &SandboxSpec, on_event: &mut dyn FnMut(Event)) -> Result<Exit, LaunchError> {
    let threads = sys::thread_count()?;
    if threads != 1 {
        return Err(LaunchError::Threads(threads));
    }
    if spec.argv.is_empty() {
        return Err(LaunchError::InvalidSpec("no command given".into()));
    }
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.as_bytes().contains(&b'=') {
                return Err(LaunchError::InvalidSpec(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv, "an environment variable")
        })
        .collect::<Result<Vec<_>, _>>()?;

    let (parent_chan, child_chan) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let signals = SigSet::of(HANDLED);
    let old_mask = sys::set_sigmask(libc::SIG_BLOCK, &signals)?;
    let result = launch_and_wait(spec, argv, env, parent_chan, child_chan, signals, on_event);
    let _ = sys::set_sigmask(libc::SIG_SETMASK, &old_mask);
    result
}

fn launch_and_wait(
    spec: &SandboxSpec,
    argv: Vec<CString>,
    env: Vec<CString>,
    parent_chan: OwnedFd,
    child_chan: OwnedFd,
    signals: SigSet,
    on_event: &mut dyn FnMut(Event),
) -> Result<Exit, LaunchError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    // SAFETY: we verified above that this process is single-threaded, and the
    // child only runs `child::main`, which ends in `_exit`.
    let forked = unsafe { sys::clone_fork(CLONE_FLAGS) }
        .map_err(|e| LaunchError::Setup(StageError::new("clone", "create the namespaces", e)))?;
    let pid = match forked {
        sys::Forked::Child => {
            drop(parent_chan);
            child::main(ChildArgs {
                spec,
                argv,
                env,
                uid,
                gid,
                chan: child_chan,
                want_pty: spec.terminal == Terminal::Pty,
                signals,
            })
        }
        sys::Forked::Parent(pid) => pid,
    };
    drop(child_chan);
    Supervisor {
        pid,
        chan: parent_chan,
        sigfd: sys::signalfd(&signals)?,
        master: None,
        ready: false,
        exec_error: None,
        setup_error: None,
        exit: None,
        child_status: None,
        buf: protocol::buffer(),
        chan_open: true,
    }
    .run(on_event)
}

struct Supervisor {
    pid: libc::pid_t,
    chan: OwnedFd,
    sigfd: OwnedFd,
    master: Option<OwnedFd>,
    ready: bool,
    exec_error: Option<LaunchError>,
    setup_error: Option<StageError>,
    exit: Option<Exit>,
    child_status: Option<sys::WaitStatus>,
    buf: Vec<u8>,
    chan_open: bool,
}

impl Supervisor {
    fn run(mut self, on_event: &mut dyn FnMut(Event)) -> Result<Exit, LaunchError> {
        let stdin = rustix::stdio::stdin();
        let ttys = pty::std_ttys();
        // The pty's output goes where a terminal is: stdout, else stderr.
        let out_fd = if !ttys[1] && ttys[2] {
            rustix::stdio::stderr()
        } else {
            rustix::stdio::stdout()
        };
        let mut raw: Option<RawMode<'_>> = None;
        let mut relay = Relay {
            stdin_closed: !ttys[0],
            ..Relay::default()
        };
        while self.child_status.is_none() || (self.master.is_some() && !relay.master_closed) {
            let want_stdin = self.ready
                && self.master.is_some()
                && !relay.stdin_closed
                && relay.pending.len() < 64 * 1024;
            let mut fds = Vec::with_capacity(4);
            fds.push(PollFd::new(&self.sigfd, PollFlags::IN));
            // After EOF the channel polls as hung up forever (POLLHUP ignores
            // the event mask); init closes it before the kernel tears its
            // namespaces down and sends SIGCHLD, so drop it from the set then,
            // or we would spin through the teardown.
            let mut chan_idx = None;
            if self.chan_open {
                chan_idx = Some(fds.len());
                fds.push(PollFd::new(&self.chan, PollFlags::IN));
            }
            let mut master_idx = None;
            let mut stdin_idx = None;
            if let Some(m) = &self.master {
                if !relay.master_closed {
                    let mut f = PollFlags::IN;
                    if !relay.pending.is_empty() {
                        f |= PollFlags::OUT;
                    }
                    master_idx = Some(fds.len());
                    fds.push(PollFd::new(m, f));
                }
            }
            if want_stdin {
                stdin_idx = Some(fds.len());
                fds.push(PollFd::new(&stdin, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
            let ev = |i: usize| fds[i].revents();
            let sig_ev = ev(0);
            let chan_ev = chan_idx.map(ev).unwrap_or(PollFlags::empty());
            let master_ev = master_idx.map(ev).unwrap_or(PollFlags::empty());
            let stdin_ev = stdin_idx.map(ev).unwrap_or(PollFlags::empty());
            drop(fds);

            if !chan_ev.is_empty() {
                self.read_messages(on_event)?;
                if self.ready && raw.is_none() && self.master.is_some() && ttys[0] {
                    raw = RawMode::enter(stdin).ok();
                }
            }
            if !sig_ev.is_empty() {
                self.handle_signals()?;
            }
            if let Some(m) = &self.master {
                relay.pump(m.as_fd(), master_ev, stdin, stdin_ev, out_fd)?;
            }
            if self.child_status.is_some() && self.master.is_some() && !relay.master_closed {
                // The namespace is gone, so every slave fd is closed: whatever
                // is left in the master is drained by the reads above until EIO.
                if master_ev.is_empty() {
                    relay.master_closed = true;
                }
            }
        }
        drop(raw);
        // Late messages (Exited, ExecFailed) may still be queued.
        let _ = self.read_messages(on_event);
        if let Some(e) = self.setup_error {
            return Err(LaunchError::Setup(e));
        }
        if let Some(e) = self.exec_error {
            return Err(e);
        }
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        match self.child_status {
            Some(sys::WaitStatus::Exited(code)) if !self.ready => {
                Err(LaunchError::Setup(StageError::new(
                    "init",
                    format!("the sandbox exited during setup (code {code})"),
                    io::Error::from_raw_os_error(libc::ECHILD),
                )))
            }
            Some(sys::WaitStatus::Signaled(sig)) => Ok(Exit {
                code: 128 + sig,
                signal: Some(sig),
            }),
            Some(sys::WaitStatus::Exited(code)) => Ok(Exit { code, signal: None }),
            None => Err(io::Error::other("sandbox status unknown").into()),
        }
    }

    fn read_messages(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<(), LaunchError> {
        loop {
            let (msg, fd) = match protocol::recv(&self.chan, &mut self.buf) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.chan_open = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match msg {
                Msg::Started => {}
                Msg::Pty => {
                    let Some(master) = fd else {
                        return Err(io::Error::other("pty message without a descriptor").into());
                    };
                    rustix::io::ioctl_fionbio(&master, true).map_err(io::Error::from)?;
                    self.master = Some(master);
                }
                Msg::Warning { message } => on_event(Event::Warning(message)),
                Msg::Ready => {
                    self.ready = true;
                    on_event(Event::Started { pid: self.pid });
                }
                Msg::SetupFailed(e) => self.setup_error = Some(e),
                Msg::ExecFailed {
                    program,
                    message,
                    code,
                } => {
                    self.exec_error = Some(LaunchError::Exec {
                        program,
                        message,
                        code,
                    })
                }
                Msg::Exited { code, signal } => self.exit = Some(Exit { code, signal }),
            }
        }
    }

    fn handle_signals(&mut self) -> Result<(), LaunchError> {
        while let Some(sig) = sys::read_signalfd(self.sigfd.as_fd())? {
            match sig {
                libc::SIGCHLD => {
                    if let Some((_, st)) = sys::waitpid(self.pid, true)? {
                        self.child_status = Some(st);
                    }
                }
                libc::SIGWINCH => {
                    if let (Some(m), Some(term)) = (&self.master, pty::first_tty()) {
                        pty::copy_winsize(term, m.as_fd());
                    }
                }
                // Once init is reaped its pid may belong to someone else.
                _ if self.child_status.is_some() => {}
                other => {
                    // Init relays it to the agent; before the agent exists, a
                    // termination request simply ends the launch.
                    if self.ready {
                        let _ = sys::kill(self.pid, other);
                    } else {
                        let _ = sys::kill(self.pid, libc::SIGKILL);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Byte relay between the user's terminal and the pty master.
#[derive(Default)]
struct Relay {
    pending: Vec<u8>,
    stdin_closed: bool,
    master_closed: bool,
}

impl Relay {
    fn pump(
        &mut self,
        master: BorrowedFd<'_>,
        master_ev: PollFlags,
        stdin: BorrowedFd<'_>,
        stdin_ev: PollFlags,
        out: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        if master_ev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match rustix::io::read(master, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => self.master_closed = true,
                Ok(n) => write_all(out, &buf[..n])?,
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if stdin_ev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) => self.stdin_closed = true,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => self.stdin_closed = true,
            }
        }
        if !self.pending.is_empty() && !self.master_closed {
            match rustix::io::write(master, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::IO) => self.master_closed = true,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut p = [PollFd::new(&fd, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            // The reader went away (e.g. `cordon run ... | head`): not an error
            // of the sandbox; drop the output.
            Err(rustix::io::Errno::PIPE) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
