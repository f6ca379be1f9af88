//! Exec audit by seccomp user notification: init installs a second filter,
//! just before it starts the agent, that turns `execve`, `execveat` and
//! `exit_group` into notifications, and hands the listener to the
//! supervisor. The supervisor reads what each call is about (the program,
//! its arguments, the working directory; the exit status), checks that the
//! notification is still valid after reading the target's memory, and lets
//! the call continue.
//!
//! It is an audit, not a control: the target's memory can change between
//! the read and the kernel's own read (a racing thread), so nothing is
//! decided from it; enforcement stays with mounts, Landlock and the deny
//! filter. A process killed by a signal makes no `exit_group` call and has
//! no exit record.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use crate::sys;

/// What a notification was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A process is executing a program.
    Exec {
        /// Host pid.
        pid: u32,
        /// Host pid of its parent.
        ppid: Option<u32>,
        /// The program as the call named it (relative to `cwd` when not
        /// absolute).
        path: String,
        /// Its arguments (at most [`MAX_ARGS`], each at most
        /// [`MAX_ARG_LEN`] bytes; lossy UTF-8).
        argv: Vec<String>,
        /// Working directory, as the supervisor's /proc shows it.
        cwd: Option<String>,
        /// Its uid on the host.
        uid: Option<u32>,
        /// The target's memory could not be read: `path` and `argv` are
        /// empty. This happens to the agent's own first exec when cordon
        /// runs unprivileged: it comes from init's memory, which is
        /// non-dumpable and belongs to the host's user namespace (the
        /// caller knows that command from the spec).
        unreadable: bool,
    },
    /// A process is exiting (notified) or has exited (read from a pidfd).
    Exit {
        /// Host pid.
        pid: u32,
        /// Its exit status (0–255), or 128 + the signal that killed it.
        status: i32,
        /// The signal that killed it, when one did.
        signal: Option<i32>,
    },
}

/// The most arguments recorded.
pub const MAX_ARGS: usize = 256;
/// The most bytes recorded of one argument or path.
pub const MAX_ARG_LEN: usize = 4096;

/// The supervisor's end of the exec audit.
#[derive(Debug)]
pub struct ExecListener {
    fd: OwnedFd,
}

impl ExecListener {
    pub(crate) fn new(fd: OwnedFd) -> ExecListener {
        ExecListener { fd }
    }

    /// Answers notifications until every process under the filter is gone
    /// (the listener hangs up), calling `on` for each. Every notification
    /// is let through, also when reading it fails.
    pub fn serve(self, on: &mut dyn FnMut(Notice)) -> io::Result<()> {
        self.serve_until(None, on)
    }

    /// Like [`serve`](Self::serve), and also returns once `stop` is
    /// readable and no notification is waiting: for a supervisor whose init
    /// lingers (see `Launch::go_holding`), stopped once the agent and
    /// everything it started are gone.
    pub fn serve_until(
        self,
        stop: Option<BorrowedFd<'_>>,
        on: &mut dyn FnMut(Notice),
    ) -> io::Result<()> {
        self.serve_exits(stop, false, on)
    }

    /// Like [`serve_until`](Self::serve_until); with `pidfd_exits` (the
    /// filter was made with [`crate::SeccompSpec::exits_by_pidfd`]), each
    /// executed process's exit is read from a pidfd opened while its exec
    /// waited, once it has been reaped: an [`Notice::Exit`] without a round
    /// trip, deaths by signal included.
    pub fn serve_exits(
        self,
        stop: Option<BorrowedFd<'_>>,
        pidfd_exits: bool,
        on: &mut dyn FnMut(Notice),
    ) -> io::Result<()> {
        use rustix::event::{poll, PollFd, PollFlags};
        let sizes = sys::seccomp_notif_sizes()?;
        // Each exec waits for this thread: hand the CPU straight back to
        // it when answered (an older kernel answers without this).
        let _ = sys::seccomp_notif_sync_wake_up(self.fd.as_fd());
        let mut req = vec![
            0u8;
            usize::from(sizes.seccomp_notif)
                .max(std::mem::size_of::<libc::seccomp_notif>())
        ];
        // Executed processes whose exit is awaited: pid and pidfd.
        let mut running: Vec<(u32, OwnedFd)> = Vec::new();
        loop {
            let (listener, stopped, reaped) = {
                let mut fds = vec![PollFd::new(&self.fd, PollFlags::IN)];
                if let Some(s) = &stop {
                    fds.push(PollFd::new(s, PollFlags::IN));
                }
                let first_pid = fds.len();
                // No events asked: a pidfd reports POLLHUP once its process
                // has been reaped, and only then.
                fds.extend(
                    running
                        .iter()
                        .map(|(_, fd)| PollFd::new(fd, PollFlags::empty())),
                );
                match poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let reaped: Vec<usize> = fds[first_pid..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect();
                (
                    fds[0].revents(),
                    stop.is_some() && !fds[1].revents().is_empty(),
                    reaped,
                )
            };
            for i in reaped.into_iter().rev() {
                let (pid, fd) = running.swap_remove(i);
                if let Ok(Some(status)) = sys::pidfd_exit_status(fd.as_fd()) {
                    on(exit_notice(pid, status));
                }
            }
            if !listener.contains(PollFlags::IN) {
                if listener.intersects(PollFlags::HUP | PollFlags::ERR) || stopped {
                    // Hung up (no process has the filter any more), or told
                    // to stop with nothing waiting: the exits already reaped
                    // are the last to report.
                    for (pid, fd) in running {
                        if let Ok(Some(status)) = sys::pidfd_exit_status(fd.as_fd()) {
                            on(exit_notice(pid, status));
                        }
                    }
                    return Ok(());
                }
                continue;
            }
            let notif = match sys::seccomp_notif_recv(self.fd.as_fd(), &mut req) {
                Ok(n) => n,
                // The target died (or was interrupted) between poll and
                // recv: nothing to answer.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => continue,
                Err(e) => return Err(e),
            };
            let pid = notif.pid;
            let held = running.iter().position(|(p, _)| *p == pid);
            // Opened before the validity check below, so a notification
            // still valid after it proves the pidfd is this process's (its
            // pid cannot have been reused while it waited in the call). An
            // exec from a thread other than the leader has no pidfd of its
            // own: its exit goes unrecorded.
            let opened = match held {
                None if i64::from(notif.data.nr) != libc::SYS_exit_group => {
                    rustix::process::Pid::from_raw(pid as i32).and_then(|p| {
                        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
                    })
                }
                _ => None,
            };
            let pidfd = match held {
                Some(i) => Some(running[i].1.as_fd()),
                None => opened.as_ref().map(|fd| fd.as_fd()),
            };
            let notice = describe(&notif, pidfd);
            // Only a notification that is still valid after its target's
            // memory was read describes that target (its pid may have been
            // reused otherwise).
            let valid = sys::seccomp_notif_id_valid(self.fd.as_fd(), notif.id).unwrap_or(false);
            if let (true, true, Some(fd)) = (valid, pidfd_exits, opened) {
                running.push((pid, fd));
            }
            if let (true, Some(n)) = (valid, notice) {
                on(n);
            }
            match sys::seccomp_notif_continue(self.fd.as_fd(), notif.id) {
                Ok(()) => {}
                // The target is gone.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("let pid {pid}'s call continue: {e}"),
                    ))
                }
            }
        }
    }
}

/// The exit of `pid` from its wait status.
fn exit_notice(pid: u32, wstatus: i32) -> Notice {
    let sig = wstatus & 0x7f;
    if sig == 0 {
        Notice::Exit {
            pid,
            status: (wstatus >> 8) & 0xff,
            signal: None,
        }
    } else {
        Notice::Exit {
            pid,
            status: 128 + sig,
            signal: Some(sig),
        }
    }
}

/// Whether this kernel tells a pidfd's holder the exit status of a reaped
/// process that is not its child (`PIDFD_INFO_EXIT`, Linux 6.15), so that
/// exits need no notification ([`crate::SeccompSpec::exits_by_pidfd`]).
pub fn exit_info_supported() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(major), Some(minor)) if (major, minor) >= (6, 15))
}

/// What notification `n` is about; `pidfd` is its target's, when open.
fn describe(n: &libc::seccomp_notif, pidfd: Option<BorrowedFd<'_>>) -> Option<Notice> {
    use rustix::fs::{Mode, OFlags, CWD};
    let pid = n.pid;
    let nr = i64::from(n.data.nr);
    let args = n.data.args;
    if nr == libc::SYS_exit_group {
        return Some(Notice::Exit {
            pid,
            status: (args[0] & 0xff) as i32,
            signal: None,
        });
    }
    let (path_at, argv_at) = if nr == libc::SYS_execve {
        (args[0], args[1])
    } else if nr == libc::SYS_execveat {
        (args[1], args[2])
    } else {
        return None;
    };
    // One lookup of the process's /proc directory (a fresh pid's entry is
    // built on first use), then its entries relative to it.
    let dir = rustix::fs::openat(
        CWD,
        format!("/proc/{pid}"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let entry = |name: &str| {
        dir.as_ref().and_then(|d| {
            rustix::fs::openat(d, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()
        })
    };
    let mut mem = entry("mem").map(|fd| Mem::new(File::from(fd)));
    let unreadable = mem.is_none();
    let path = mem
        .as_mut()
        .and_then(|m| read_string(m, path_at))
        .unwrap_or_default();
    let mut argv = Vec::new();
    let mut at = argv_at;
    while let (Some(mem), true) = (&mut mem, argv_at != 0 && argv.len() < MAX_ARGS) {
        let mut word = [0u8; 8];
        if mem.read(at, &mut word) < 8 {
            break;
        }
        let p = u64::from_ne_bytes(word);
        if p == 0 {
            break;
        }
        argv.push(read_string(mem, p).unwrap_or_default());
        at += 8;
    }
    let cwd = dir
        .as_ref()
        .and_then(|d| rustix::fs::readlinkat(d, "cwd", Vec::new()).ok())
        .map(|p| p.to_string_lossy().into_owned());
    let (ppid, uid) = match pidfd.and_then(|fd| sys::pidfd_parent_and_uid(fd).ok()) {
        Some((ppid, uid)) => (Some(ppid), Some(uid)),
        // Before Linux 6.13: from /proc/PID/status.
        None => {
            let mut status = String::new();
            if let Some(fd) = entry("status") {
                let _ = File::from(fd).read_to_string(&mut status);
            }
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u32>().ok())
            };
            (field("PPid:"), field("Uid:"))
        }
    };
    Some(Notice::Exec {
        pid,
        ppid,
        path,
        argv,
        cwd,
        uid,
        unreadable,
    })
}

/// Another process's memory read a page at a time, the pages kept: an
/// exec's argument pointers and strings mostly share a few pages, and each
/// read of `/proc/PID/mem` costs a walk of the target's page tables.
struct Mem {
    file: File,
    pages: Vec<(u64, Vec<u8>)>,
}

/// Pages kept per exec.
const MEM_PAGES: usize = 16;
const PAGE: u64 = 4096;

impl Mem {
    fn new(file: File) -> Mem {
        Mem {
            file,
            pages: Vec::new(),
        }
    }

    /// The bytes of the page at `base` (fewer at the end of a mapping,
    /// none where nothing is mapped).
    fn page(&mut self, base: u64) -> &[u8] {
        if let Some(i) = self.pages.iter().position(|(b, _)| *b == base) {
            return &self.pages[i].1;
        }
        let mut buf = vec![0u8; PAGE as usize];
        let n = self.file.read_at(&mut buf, base).unwrap_or(0);
        buf.truncate(n);
        if self.pages.len() == MEM_PAGES {
            self.pages.remove(0);
        }
        self.pages.push((base, buf));
        self.pages.last().map_or(&[][..], |(_, b)| b)
    }

    /// Copies memory at `addr` into `out`; how many bytes could be read.
    fn read(&mut self, addr: u64, out: &mut [u8]) -> usize {
        let mut done = 0;
        while done < out.len() {
            let at = addr + done as u64;
            let base = at & !(PAGE - 1);
            let off = (at - base) as usize;
            let page = self.page(base);
            if off >= page.len() {
                break;
            }
            let n = (page.len() - off).min(out.len() - done);
            out[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
        }
        done
    }
}

/// The NUL-terminated string at `addr` in the target (at most
/// [`MAX_ARG_LEN`] bytes).
fn read_string(mem: &mut Mem, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 256];
    while out.len() < MAX_ARG_LEN {
        // A read may stop at the end of a mapping: take what came.
        let n = mem.read(addr + out.len() as u64, &mut chunk);
        if n == 0 {
            break;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    out.truncate(MAX_ARG_LEN);
    Some(String::from_utf8_lossy(&out).into_owned())
}
