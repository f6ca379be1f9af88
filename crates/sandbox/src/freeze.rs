//! Freezing a running sandbox for incident response, and the list of its
//! processes for the evidence. Without a delegated cgroup (this crate
//! creates none) the freeze is SIGSTOP to every process of the sandbox's
//! pid namespace, repeated until each one is seen stopped: a process that
//! forked meanwhile has its child caught by the next pass, and a stopped
//! process cannot fork. A parent waiting in vfork for a child that is
//! stopped before its exec cannot stop itself (the kernel waits for the
//! child's exec or exit, which a stopped child never reaches), but it
//! cannot run either: it counts as frozen.
//!
//! Threat notes: the sandbox cannot ignore or catch SIGSTOP, and signals
//! from the parent namespace reach its init. Members are found by their
//! pid namespace, so a recycled pid outside the sandbox is never signalled.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde::Serialize;

/// The pid namespace `pid` is in (`pid:[INODE]`).
fn pid_ns(pid: i32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
}

/// A process's parent, from its stat.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    rest.split(' ').nth(1)?.parse().ok()
}

fn pids() -> io::Result<Vec<i32>> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .collect())
}

/// The sandbox's pid namespace. Init is a copy of the non-dumpable
/// supervisor, so an unprivileged supervisor cannot read its namespace
/// links; its children (exec'd, dumpable) show the same namespace.
pub fn pid_namespace(init: i32) -> io::Result<PathBuf> {
    pid_ns(init).or_else(|e| {
        pids()?
            .into_iter()
            .filter(|&p| ppid(p) == Some(init))
            .find_map(|p| pid_ns(p).ok())
            .ok_or(e)
    })
}

/// Host pids of every process in the pid namespace of `init` (init first).
/// Refuses when that namespace is cordon's own: `init` is then not a
/// sandbox's (it exited and its pid went to another process).
pub fn members(init: i32) -> io::Result<Vec<i32>> {
    let ns = pid_namespace(init)?;
    if std::fs::read_link("/proc/self/ns/pid").is_ok_and(|own| own == ns) {
        return Err(io::Error::other(format!(
            "pid {init} is not a sandbox's init (it shares cordon's pid namespace)"
        )));
    }
    let mut out: Vec<i32> = pids()?
        .into_iter()
        .filter(|&p| p != init && pid_ns(p).is_ok_and(|n| n == ns))
        .collect();
    out.sort_unstable();
    out.insert(0, init);
    Ok(out)
}

/// A process of the sandbox whose `/proc` entries its uid can read (init's
/// are not, see [`pid_namespace`]): the agent, or init when it is gone.
pub fn readable_member(init: i32) -> i32 {
    pids()
        .ok()
        .and_then(|ps| ps.into_iter().find(|&p| ppid(p) == Some(init)))
        .unwrap_or(init)
}

/// A process's state letter (`R`, `S`, `D`, `T`, `Z`, ...), from its stat.
fn state(pid: i32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Whether `pid` waits in vfork (`kernel_clone` on current kernels, older
/// names before) for a child of its that is stopped: it cannot run before
/// that child runs again.
fn held_by_stopped_vfork_child(pid: i32, members: &[i32]) -> bool {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let in_vfork = matches!(
        wchan.trim(),
        "kernel_clone" | "wait_for_vfork_done" | "do_fork" | "_do_fork"
    );
    in_vfork
        && members
            .iter()
            .any(|&c| ppid(c) == Some(pid) && matches!(state(c), Some(b'T' | b't')))
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, sig);
    }
}

/// What a freeze did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frozen {
    /// Processes seen stopped (or already dead, or waiting in vfork for a
    /// stopped child).
    pub stopped: usize,
    /// Processes still not stopped at the deadline (in the kernel, say);
    /// their stop is pending and takes effect when they return to user
    /// space.
    pub pending: Vec<i32>,
}

/// Stops every process of the sandbox whose init is `init`, waiting up to
/// `within` for each to be seen stopped.
pub fn freeze(init: i32, within: Duration) -> io::Result<Frozen> {
    freeze_where(init, within, &|_| true)
}

/// Like [`freeze`], for the processes of the sandbox that `which` picks
/// (those outside its cgroup, say), children forked meanwhile included.
pub fn freeze_where(
    init: i32,
    within: Duration,
    which: &dyn Fn(i32) -> bool,
) -> io::Result<Frozen> {
    let deadline = Instant::now() + within;
    let mut signalled = std::collections::HashSet::new();
    loop {
        let mut pids = members(init)?;
        pids.retain(|&p| which(p));
        let mut pending = Vec::new();
        for &pid in &pids {
            // Every member is signalled once; then those not seen stopped
            // (a state that cannot be read is a process gone).
            if signalled.insert(pid) {
                signal(pid, Signal::STOP);
            }
            match state(pid) {
                Some(b'T' | b't' | b'Z' | b'X') | None => {}
                Some(b'D') if held_by_stopped_vfork_child(pid, &pids) => {}
                Some(_) => {
                    signal(pid, Signal::STOP);
                    pending.push(pid);
                }
            }
        }
        if pending.is_empty() {
            return Ok(Frozen {
                stopped: pids.len(),
                pending,
            });
        }
        if Instant::now() >= deadline {
            return Ok(Frozen {
                stopped: pids.len() - pending.len(),
                pending,
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Lets every process of the sandbox run again.
pub fn thaw(init: i32) -> io::Result<usize> {
    let pids = members(init)?;
    for &pid in &pids {
        signal(pid, Signal::CONT);
    }
    Ok(pids.len())
}

/// One process of a sandbox, as the evidence records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Host pid.
    pub pid: i32,
    /// Pid inside the sandbox.
    pub ns_pid: Option<i32>,
    /// Host pid of the parent.
    pub ppid: Option<i32>,
    /// State letter when read.
    pub state: String,
    /// Arguments (lossy UTF-8).
    pub argv: Vec<String>,
    /// Working directory, as the sandbox sees it.
    pub cwd: Option<String>,
    /// The executable's path, as the sandbox sees it.
    pub exe: Option<String>,
}

/// The processes of the sandbox whose init is `init`.
pub fn processes(init: i32) -> io::Result<Vec<Process>> {
    let mut out = Vec::new();
    for pid in members(init)? {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .map(str::to_owned)
        };
        let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let link = |what: &str| {
            std::fs::read_link(format!("/proc/{pid}/{what}"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        };
        out.push(Process {
            pid,
            ns_pid: field("NSpid:")
                .and_then(|v| v.split_whitespace().last().and_then(|p| p.parse().ok())),
            ppid: field("PPid:").and_then(|v| v.parse().ok()),
            state: state(pid)
                .map(|b| char::from(b).to_string())
                .unwrap_or_default(),
            argv,
            cwd: link("cwd"),
            exe: link("exe"),
        });
    }
    Ok(out)
}
