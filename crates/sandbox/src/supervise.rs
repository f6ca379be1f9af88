//! Stage 1 and the supervisor loop: launch the child, wait for it to report,
//! relay the terminal and signals, and collect the exit status.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use crate::child;
use crate::protocol::{self, Msg, Order};
use crate::pty::{self, RawMode};
use crate::spec::SandboxSpec;
use crate::sys::{self, SigSet};
use crate::StageError;

/// Something the caller may want to record while the sandbox runs.
#[derive(Debug)]
pub enum Event {
    /// The listening socket of the egress proxy (see
    /// [`SandboxSpec::proxy_port`]), delivered before `Started`. The caller
    /// accepts the sandbox's connections on it; if it drops it, they are
    /// refused.
    ProxyListener(OwnedFd),
    /// The sandbox's TUN device (see [`SandboxSpec::tun`]), delivered before
    /// `Started`: every IPv4 packet the sandbox sends off its loopback
    /// arrives here, and the caller's userspace stack answers.
    Tun(OwnedFd),
    /// Every layer is in place; the agent is being executed. `pid` is init's
    /// pid in the caller's pid namespace.
    Started {
        /// Host pid of the sandbox's init.
        pid: i32,
    },
    /// A non-fatal degradation (already acceptable under the spec).
    Warning(String),
    /// The exec audit's listener (see [`crate::SeccompSpec::audit_exec`]),
    /// delivered just before the agent starts. The caller must serve it
    /// ([`crate::ExecListener::serve`], on a thread of its own) for the
    /// agent to run at all: every exec waits for its answer.
    ExecListener(crate::ExecListener),
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

/// A sandbox being created while the caller still prepares its spec.
///
/// [`Prelaunch::start`] clones the sandbox's init into new user, mount,
/// pid, ipc and uts namespaces, and into a cgroup of its own where the
/// caller's cgroup is delegated ([`Prelaunch::cgroup`]); init maps its ids
/// and creates its network namespace (about half a millisecond, the most
/// expensive one) while the caller resolves the profile, then waits for the
/// spec, then creates its cgroup namespace. Nothing from the caller's state
/// after `start` reaches the sandbox except the spec. Dropping a
/// `Prelaunch` kills the sandbox (and removes its cgroup).
#[derive(Debug)]
pub struct Prelaunch {
    pid: libc::pid_t,
    chan: Option<OwnedFd>,
    /// The sandbox's cgroup, or why it has none.
    cgroup: Result<crate::cgroup::Cgroup, String>,
}

/// A sandbox that has its spec and is setting itself up; [`Launch::supervise`]
/// runs it to the end. Dropping a `Launch` kills the sandbox.
pub struct Launch {
    sup: Option<Supervisor>,
}

impl Prelaunch {
    /// Starts creating a sandbox. The calling process must be
    /// single-threaded here. Until [`Launch::supervise`] returns, it may only
    /// start threads inside [`with_relayed_signals_blocked`] (the relayed
    /// signals are read from a signalfd by the calling thread, and another
    /// thread must not take them), and the calling thread must stay (the
    /// sandbox's death signal follows the thread that created it).
    pub fn start() -> Result<Prelaunch, LaunchError> {
        let threads = sys::thread_count()?;
        if threads != 1 {
            return Err(LaunchError::Threads(threads));
        }
        let (parent_chan, child_chan) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        // Its own cgroup, where this process's is delegated: init is born
        // in it (no migration), and so is every process of the sandbox.
        let mut cgroup = crate::cgroup::Cgroup::create(&crate::cgroup::unique_name());
        let cgroup_dir = match &cgroup {
            Ok(cg) => match cg.open() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    let why = format!("cannot open the cgroup {}: {e}", cg.path().display());
                    let _ = cg.clone().remove();
                    cgroup = Err(why);
                    None
                }
            },
            Err(_) => None,
        };
        let args = child::StartArgs {
            chan: child_chan,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            signals: SigSet::of(HANDLED),
            cpus: child::CpuPlacement::here(),
        };
        // SAFETY: we verified above that this process is single-threaded, and
        // the child only runs `child::init_main`, which ends in `_exit`.
        let into = cgroup_dir
            .as_ref()
            .map(|fd| unsafe { sys::clone_fork_into(CLONE_FLAGS, fd.as_fd()) });
        let forked = match into {
            Some(Ok(f)) => Ok(f),
            // No clone3, or the cgroup refuses the child: no cgroup, then.
            Some(Err(e)) => {
                if let Ok(cg) = std::mem::replace(
                    &mut cgroup,
                    Err(format!(
                        "cannot start the sandbox in its cgroup (clone3 with CLONE_INTO_CGROUP): {e}"
                    )),
                ) {
                    let _ = cg.remove();
                }
                // SAFETY: as above.
                unsafe { sys::clone_fork(CLONE_FLAGS) }
            }
            // SAFETY: as above.
            None => unsafe { sys::clone_fork(CLONE_FLAGS) },
        };
        drop(cgroup_dir);
        match forked
            .map_err(|e| LaunchError::Setup(StageError::new("clone", "create the namespaces", e)))?
        {
            sys::Forked::Child => {
                drop(parent_chan);
                child::init_main(args)
            }
            sys::Forked::Parent(pid) => {
                // Best effort: it only decides where init runs until the
                // spec arrives (see `CpuPlacement`).
                if let (Some(away), Some(child)) =
                    (&args.cpus.away, rustix::process::Pid::from_raw(pid))
                {
                    let _ = rustix::thread::sched_setaffinity(Some(child), away);
                }
                drop(args);
                Ok(Prelaunch {
                    pid,
                    chan: Some(parent_chan),
                    cgroup,
                })
            }
        }
    }

    /// The sandbox's own cgroup, which every process of it is born in (the
    /// caller removes it once the sandbox is gone: [`Cgroup::remove`]), or
    /// why it has none (the caller's cgroup not delegated, no cgroup2, no
    /// `clone3`).
    ///
    /// [`Cgroup::remove`]: crate::cgroup::Cgroup::remove
    pub fn cgroup(&self) -> Result<&crate::cgroup::Cgroup, &str> {
        self.cgroup.as_ref().map_err(String::as_str)
    }

    /// Hands `spec` to the sandbox, which sets itself up and then waits for
    /// [`Launch::go`] before it starts the agent; supervise it with
    /// [`Launch::supervise`]. On error `self` is dropped, which kills the
    /// sandbox.
    pub fn hand_over(mut self, spec: &SandboxSpec) -> Result<Launch, LaunchError> {
        check(spec)?;
        let chan = self
            .chan
            .take()
            .ok_or_else(|| io::Error::other("sandbox already launched"))?;
        let launch = Launch {
            sup: Some(Supervisor::new(self.pid, chan)),
        };
        // On error, dropping `launch` kills the sandbox.
        send_spec(launch.chan()?, spec)?;
        Ok(launch)
    }
}

impl Drop for Prelaunch {
    fn drop(&mut self) {
        if self.chan.take().is_some() {
            kill_and_reap(self.pid);
            if let Ok(cg) = &self.cgroup {
                let _ = cg.clone().remove();
            }
        }
    }
}

impl Launch {
    fn chan(&self) -> Result<BorrowedFd<'_>, LaunchError> {
        self.sup
            .as_ref()
            .map(|s| s.chan.as_fd())
            .ok_or_else(|| io::Error::other("sandbox already supervised").into())
    }

    /// Lets the sandbox start the agent once its setup is done. Work that must
    /// happen before the agent runs, but need not delay the sandbox's setup
    /// (writing the session record), goes between [`Prelaunch::hand_over`]
    /// and this call.
    pub fn go(&self) -> Result<(), LaunchError> {
        // A failure means the sandbox side is already gone; `supervise`
        // reports why.
        let _ = protocol::send(self.chan()?, &Order::Go);
        Ok(())
    }

    /// Like [`go`](Self::go), and init keeps `hold` (at most four
    /// descriptors) open (close-on-exec:
    /// the agent never has it) until the supervisor's process exits: after
    /// reporting the agent's exit, init waits for its parent-death signal
    /// instead of exiting. For a descriptor whose last close is slow — an
    /// inotify instance with watches, where the kernel waits for a grace
    /// period of 10–20 ms — the supervisor's own close is then never the
    /// last, and the wait falls to init's death, which nobody waits for.
    /// [`Launch::supervise_and_reap`] kills init once it has reported.
    pub fn go_holding(&mut self, hold: &[BorrowedFd<'_>]) -> Result<(), LaunchError> {
        if hold.is_empty() {
            return self.go();
        }
        if hold.len() > protocol::MAX_FDS {
            return Err(io::Error::other("too many descriptors for init to hold").into());
        }
        // As in `go`: a failure is reported by `supervise`.
        let _ = protocol::send_fds(self.chan()?, &Order::Go, hold);
        if let Some(sup) = self.sup.as_mut() {
            sup.holding = true;
        }
        Ok(())
    }

    /// Relays signals and the terminal until the agent exits; returns how it
    /// ended. Without [`Launch::go`] the agent never starts.
    ///
    /// Returns as soon as init has reported that the agent exited and every
    /// other process of the sandbox is gone; init itself may still be
    /// exiting (the kernel tearing down its namespaces), and then stays a
    /// zombie child of the caller until the caller's process exits. That
    /// suits a process that exits next (cordon's CLI); a long-running caller
    /// uses [`Launch::supervise_and_reap`].
    pub fn supervise(self, on_event: &mut dyn FnMut(Event)) -> Result<Exit, LaunchError> {
        self.supervise_inner(on_event, false)
    }

    /// Like [`Launch::supervise`], and also waits for init to exit and reaps
    /// it, so that nothing of the sandbox is left behind.
    pub fn supervise_and_reap(self, on_event: &mut dyn FnMut(Event)) -> Result<Exit, LaunchError> {
        self.supervise_inner(on_event, true)
    }

    fn supervise_inner(
        mut self,
        on_event: &mut dyn FnMut(Event),
        reap: bool,
    ) -> Result<Exit, LaunchError> {
        let Some(mut sup) = self.sup.take() else {
            return Err(io::Error::other("sandbox already supervised").into());
        };
        let signals = SigSet::of(HANDLED);
        let old_mask = match sys::set_sigmask(libc::SIG_BLOCK, &signals) {
            Ok(m) => m,
            Err(e) => {
                kill_and_reap(sup.pid);
                return Err(e.into());
            }
        };
        let result = match sys::signalfd(&signals) {
            Ok(fd) => {
                sup.sigfd = Some(fd);
                sup.run(on_event, reap)
            }
            Err(e) => {
                kill_and_reap(sup.pid);
                Err(e.into())
            }
        };
        let _ = sys::set_sigmask(libc::SIG_SETMASK, &old_mask);
        result
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some(sup) = self.sup.take() {
            kill_and_reap(sup.pid);
        }
    }
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("init", &self.sup.as_ref().map(|s| s.pid))
            .finish()
    }
}

/// The namespaces of `clone`; init adds the network namespace itself, and
/// the cgroup namespace once it has its spec (rooted in its own cgroup).
const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// Ends a launch that will not be supervised.
fn kill_and_reap(pid: libc::pid_t) {
    let _ = sys::kill(pid, libc::SIGKILL);
    let _ = sys::waitpid(pid, false);
}

/// Rejects what init could not execute, so that the error is reported
/// before anything starts.
fn check(spec: &SandboxSpec) -> Result<(), LaunchError> {
    child::argv_cstrings(spec)
        .and_then(|_| child::env_cstrings(spec))
        .map(drop)
        .map_err(LaunchError::InvalidSpec)
}

/// Sends the spec as JSON in a memfd: no size limit, one copy.
fn send_spec(chan: BorrowedFd<'_>, spec: &SandboxSpec) -> Result<(), LaunchError> {
    let json = serde_json::to_vec(spec).map_err(io::Error::other)?;
    let fd = rustix::fs::memfd_create("cordon-spec", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(io::Error::from)?;
    let mut rest = &json[..];
    while !rest.is_empty() {
        match rustix::io::write(&fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
    // A failure here means the sandbox side is already gone; its report (or
    // exit status) says why.
    let _ = protocol::send_fd(chan, &Order::Spec, fd.as_fd());
    Ok(())
}

/// Runs `f` with the signals the supervisor relays blocked in the calling
/// thread. Threads started inside `f` inherit the mask and keep those
/// signals blocked for good, so a supervisor may run helper threads (the
/// egress engine's runtime) without one of them catching a SIGINT meant for
/// the sandbox and its default action ending cordon.
pub fn with_relayed_signals_blocked<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let old = sys::set_sigmask(libc::SIG_BLOCK, &SigSet::of(HANDLED))?;
    let out = f();
    sys::set_sigmask(libc::SIG_SETMASK, &old)?;
    Ok(out)
}

/// Starts the sandbox described by `spec`, runs the agent to completion and
/// returns how it ended. Must be called from a single-threaded process.
/// Equivalent to [`Prelaunch::start`], [`Prelaunch::hand_over`],
/// [`Launch::go`] and [`Launch::supervise_and_reap`]: nothing of the sandbox
/// is left when it returns.
pub fn run(spec: &SandboxSpec, on_event: &mut dyn FnMut(Event)) -> Result<Exit, LaunchError> {
    let pre = Prelaunch::start()?;
    let cgroup = pre.cgroup().ok().cloned();
    let result = pre
        .hand_over(spec)
        .and_then(|launch| launch.go().map(|()| launch))
        .and_then(|launch| launch.supervise_and_reap(on_event));
    if let Some(cg) = cgroup {
        let _ = cg.remove();
    }
    result
}

struct Supervisor {
    /// Init's pid.
    pid: libc::pid_t,
    chan: OwnedFd,
    sigfd: Option<OwnedFd>,
    master: Option<OwnedFd>,
    ready: bool,
    exec_error: Option<LaunchError>,
    setup_error: Option<StageError>,
    exit: Option<Exit>,
    child_status: Option<sys::WaitStatus>,
    buf: Vec<u8>,
    chan_open: bool,
    /// Init reported that nothing but itself is left.
    alone: bool,
    /// Init holds a descriptor for us and lingers after reporting.
    holding: bool,
}

impl Supervisor {
    fn new(pid: libc::pid_t, chan: OwnedFd) -> Supervisor {
        Supervisor {
            pid,
            chan,
            sigfd: None,
            master: None,
            ready: false,
            exec_error: None,
            setup_error: None,
            exit: None,
            child_status: None,
            buf: protocol::buffer(),
            chan_open: true,
            alone: false,
            holding: false,
        }
    }

    /// Whether the sandbox is over: init is reaped, or it reported the
    /// agent's exit after ending every other process.
    fn over(&self) -> bool {
        self.child_status.is_some() || self.alone
    }

    fn run(mut self, on_event: &mut dyn FnMut(Event), reap: bool) -> Result<Exit, LaunchError> {
        let pid = self.pid;
        // Init may have exited before SIGCHLD was blocked (then the signal
        // was discarded): look once.
        if let Some((_, st)) = sys::waitpid(pid, true)? {
            self.child_status = Some(st);
        }
        let result = self.supervise(on_event);
        if reap && self.holding && self.child_status.is_none() {
            // It lingers until our process exits; this caller goes on.
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        if self.child_status.is_none() {
            // Init is exiting (it reported with nothing else left): reap it
            // if it already has, or wait for it when asked to; otherwise the
            // kernel finishes the teardown on its own.
            let _ = sys::waitpid(pid, !reap);
        }
        result
    }

    fn supervise(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<Exit, LaunchError> {
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
        while !self.over() || (self.master.is_some() && !relay.master_closed) {
            let want_stdin = self.ready
                && self.master.is_some()
                && !relay.stdin_closed
                && relay.pending.len() < 64 * 1024;
            let Some(sigfd) = &self.sigfd else {
                return Err(io::Error::other("signals are not being received").into());
            };
            let mut fds = Vec::with_capacity(4);
            fds.push(PollFd::new(sigfd, PollFlags::IN));
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
            if self.over() && self.master.is_some() && !relay.master_closed {
                // The agent and its descendants are gone, so every slave fd
                // is closed: whatever
                // is left in the master is drained by the reads above until EIO.
                if master_ev.is_empty() {
                    relay.master_closed = true;
                }
            }
        }
        drop(raw);
        // Late messages (Exited, ExecFailed) may still be queued.
        let _ = self.read_messages(on_event);
        if let Some(e) = self.setup_error.take() {
            return Err(LaunchError::Setup(e));
        }
        if let Some(e) = self.exec_error.take() {
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
                Msg::ProxyListener => {
                    let Some(listener) = fd else {
                        return Err(io::Error::other("proxy message without a descriptor").into());
                    };
                    on_event(Event::ProxyListener(listener));
                }
                Msg::ExecListener => {
                    let Some(l) = fd else {
                        return Err(
                            io::Error::other("exec-audit message without a descriptor").into()
                        );
                    };
                    on_event(Event::ExecListener(crate::ExecListener::new(l)));
                }
                Msg::Tun => {
                    let Some(tun) = fd else {
                        return Err(io::Error::other("tun message without a descriptor").into());
                    };
                    on_event(Event::Tun(tun));
                }
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
                Msg::Exited {
                    code,
                    signal,
                    alone,
                } => {
                    self.exit = Some(Exit { code, signal });
                    self.alone = alone;
                }
            }
        }
    }

    fn handle_signals(&mut self) -> Result<(), LaunchError> {
        let pid = self.pid;
        let Some(sigfd) = &self.sigfd else {
            return Ok(());
        };
        while let Some(sig) = sys::read_signalfd(sigfd.as_fd())? {
            match sig {
                libc::SIGCHLD => {
                    if let Some((_, st)) = sys::waitpid(pid, true)? {
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
                        let _ = sys::kill(pid, other);
                    } else {
                        let _ = sys::kill(pid, libc::SIGKILL);
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
