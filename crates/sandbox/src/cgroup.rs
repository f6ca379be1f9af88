//! A cgroup v2 of the sandbox's own, for the incident response's freeze,
//! where the user's cgroup is delegated to them (a systemd user session's
//! `user@UID.service` subtree, or root anywhere).
//!
//! The supervisor makes `cordon-sandbox-PID-TIME` under its own cgroup and
//! clones init into it (`clone3` with `CLONE_INTO_CGROUP`: moving a
//! process by writing `cgroup.procs` waits for an RCU grace period, tens of
//! milliseconds); init then enters a cgroup namespace rooted there, and
//! every process of the sandbox is born inside it. `cgroup.freeze` stops them all at once, whatever they are doing:
//! unlike SIGSTOP ([`crate::freeze`]) it is invisible to the processes
//! (no job-control state for a shell to notice) and the kernel itself says
//! when the whole group is frozen (`frozen 1` in `cgroup.events`).
//!
//! Threat notes: the sandbox has no cgroupfs (no `/sys`, no mount, no new
//! namespaces under seccomp), and its cgroup namespace's root is its own
//! cgroup, so it cannot move out of the group or thaw it. The cgroup's
//! directory is named by the supervisor, under the supervisor's own
//! cgroup; nothing in it comes from the sandbox.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup v2 path of process `pid` (`self` for the caller) in the
/// caller's cgroup namespace, from `/proc/PID/cgroup` (`0::PATH`).
fn path_of(pid: &str) -> Result<String, String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| "this process is in no cgroup v2 hierarchy".to_owned())
}

/// The cgroup v2 directory of the calling process, from its cgroup path and
/// the cgroup2 mount in `/proc/self/mountinfo`.
pub fn own_dir() -> Result<PathBuf, String> {
    own().map(|(_, dir)| dir)
}

/// The calling process's cgroup path (as `/proc/self/cgroup` shows it) and
/// directory.
fn own() -> Result<(String, PathBuf), String> {
    let path = path_of("self")?;
    let own = path.as_str();
    // The mount that shows this cgroup (a bind of a subtree may not),
    // the whole hierarchy's first.
    let mut mounts = mounts()?;
    mounts.sort_by_key(|(root, _)| root != "/");
    let (root, point) = mounts
        .into_iter()
        .find(|(root, _)| Path::new(own).starts_with(root))
        .ok_or_else(|| format!("no cgroup2 mount shows the cgroup {own}"))?;
    let rel = Path::new(own)
        .strip_prefix(&root)
        .map_err(|_| format!("the cgroup {own} is outside the cgroup2 mount's root {root}"))?;
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("the cgroup path {own} is not a plain path"));
    }
    let dir = PathBuf::from(point).join(rel);
    Ok((path, dir))
}

/// The root and mount point of every cgroup2 mount.
fn mounts() -> Result<Vec<(String, String)>, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let found: Vec<_> = mountinfo.lines().filter_map(cgroup2_mount).collect();
    if found.is_empty() {
        return Err("no cgroup2 filesystem is mounted".to_owned());
    }
    Ok(found)
}

/// The root and mount point of a `mountinfo` line that mounts cgroup2.
fn cgroup2_mount(line: &str) -> Option<(String, String)> {
    let (left, right) = line.split_once(" - ")?;
    if right.split(' ').next()? != "cgroup2" {
        return None;
    }
    let mut f = left.split(' ');
    let root = f.nth(3)?;
    let point = f.next()?;
    Some((unescape(root), unescape(point)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], oct) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The calling process's cgroup path and directory when the cgroup is
/// delegated to its user: starting a process in a cgroup below it needs
/// write access to its `cgroup.procs` (the common ancestor's) and to the
/// directory. Else why not.
fn delegated() -> Result<(String, PathBuf), String> {
    let (path, parent) = own()?;
    for f in [parent.join("cgroup.procs"), parent.clone()] {
        rustix::fs::access(&f, rustix::fs::Access::WRITE_OK).map_err(|e| {
            format!(
                "the cgroup {} is not delegated to this user ({} is not writable: {e})",
                parent.display(),
                f.display()
            )
        })?;
    }
    Ok((path, parent))
}

/// What the cgroups of sandboxes are named after.
pub const PREFIX: &str = "cordon-sandbox-";

/// A fresh name for a sandbox's cgroup (made before its session has an
/// id): the supervisor's pid and the time.
pub fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{PREFIX}{}-{nanos:x}", std::process::id())
}

/// Removes the sandboxes' cgroups ([`PREFIX`]) under the calling process's
/// cgroup that are empty and older than `age`: those of sandboxes whose
/// supervisor was killed (nothing else removes them; the sandbox died with
/// its supervisor). A cgroup with a process in it cannot be removed; one
/// that is empty is needed by nobody (its sandbox is over), except between
/// its `mkdir` and the `clone3` that starts init in it, which `age` covers.
/// Returns the directories removed.
pub fn sweep(age: Duration) -> Vec<PathBuf> {
    let Ok(parent) = own_dir() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a >= age);
        let dir = e.path();
        let empty = std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|ev| ev.lines().any(|l| l == "populated 0"));
        if old && empty && std::fs::remove_dir(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// A sandbox's cgroup. Dropping it does not remove it: [`Cgroup::remove`]
/// does, once the sandbox is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
    /// Its path as `/proc/PID/cgroup` shows it to the supervisor.
    path: Option<PathBuf>,
}

impl Cgroup {
    /// Makes `NAME` under the calling process's cgroup; the error says why
    /// there is none (not delegated, no cgroup2, no freezer).
    pub fn create(name: &str) -> Result<Cgroup, String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("{name:?} is not a cgroup name"));
        }
        let (own, parent) = delegated()?;
        let path = Path::new(&own).join(name);
        let dir = parent.join(name);
        // Nobody else may add cgroups below it (whatever the umask).
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(|e| format!("cannot make the cgroup {}: {e}", dir.display()))?;
        }
        let cg = Cgroup {
            dir,
            path: Some(path),
        };
        if !cg.dir.join("cgroup.freeze").exists() {
            let _ = cg.clone().remove();
            return Err("the kernel's cgroup v2 has no freezer (cgroup.freeze, Linux 5.2)".into());
        }
        Ok(cg)
    }

    fn at(dir: PathBuf) -> Cgroup {
        Cgroup { dir, path: None }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its directory, open for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&self.dir)
            .map(Into::into)
    }

    /// Whether process `pid` is in it or below it, as `/proc/PID/cgroup`
    /// tells the caller (whose cgroup namespace is the one its path is in);
    /// `None` when that cannot be read (the process is gone).
    /// Any other failure to read it counts as outside (it is then stopped
    /// by signal as well).
    pub fn holds(&self, pid: i32) -> Option<bool> {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            Ok(t) => t,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => return None,
            Err(_) => return Some(false),
        };
        let theirs = text.lines().find_map(|l| l.strip_prefix("0::"));
        Some(matches!(
            (theirs, &self.path),
            (Some(theirs), Some(ours)) if Path::new(theirs).starts_with(ours)
        ))
    }

    /// Freezes every process in it and waits up to `within` for the kernel
    /// to say the whole group is frozen; returns whether it did.
    pub fn freeze(&self, within: Duration) -> io::Result<bool> {
        std::fs::write(self.dir.join("cgroup.freeze"), "1")?;
        self.wait_frozen(within)
    }

    /// Waits up to `within` for the group to be frozen.
    pub fn wait_frozen(&self, within: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            if self.frozen()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Whether the kernel has the whole group frozen.
    pub fn frozen(&self) -> io::Result<bool> {
        let events = std::fs::read_to_string(self.dir.join("cgroup.events"))?;
        Ok(events.lines().any(|l| l == "frozen 1"))
    }

    /// Lets every process in it run again.
    pub fn thaw(&self) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.freeze"), "0")
    }

    /// Kills every process in it (`cgroup.kill`, Linux 5.14), frozen or
    /// not.
    pub fn kill_all(&self) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.kill"), "1")
    }

    /// Removes it if it is empty; `Ok(false)` when a process is still in
    /// it (or still exiting: a process leaves its cgroup only after its
    /// namespaces are torn down, which takes milliseconds for a sandbox's
    /// init).
    pub fn try_remove(&self) -> io::Result<bool> {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes it once it is empty, waiting up to `within` for its last
    /// processes to exit.
    pub fn remove_within(&self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        while !self.try_remove()? {
            if Instant::now() >= deadline {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(())
    }

    /// Removes it, waiting up to a second for its last processes to exit.
    pub fn remove(self) -> io::Result<()> {
        self.remove_within(Duration::from_secs(1))
    }

    /// A sandbox's cgroup named by a record or a command line: a real
    /// directory (no symlink on the way) named as cordon names them, in
    /// the cgroup2 filesystem. Anything else is refused: its `cgroup.kill`
    /// is written.
    pub fn named(dir: &Path) -> Result<Cgroup, String> {
        let refuse = |why: &str| {
            Err(format!(
                "{} is not a sandbox's cgroup: {why}",
                dir.display()
            ))
        };
        if !dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX))
        {
            return refuse("not named as cordon names them");
        }
        let real = match std::fs::canonicalize(dir) {
            Ok(r) => r,
            Err(e) => return refuse(&e.to_string()),
        };
        const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
        let in_cgroupfs = rustix::fs::statfs(&real)
            .is_ok_and(|st| u64::try_from(st.f_type).is_ok_and(|t| t == CGROUP2_SUPER_MAGIC));
        let mounted = mounts()?
            .iter()
            .any(|(_, point)| real.starts_with(point) && real != Path::new(point));
        if real != dir || !in_cgroupfs || !mounted {
            return refuse("not a plain path inside the cgroup2 filesystem");
        }
        if !real.join("cgroup.events").is_file() {
            return refuse("no cgroup.events");
        }
        Ok(Cgroup::at(real))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read() {
        let line = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(line),
            Some(("/".into(), "/sys/fs/cgroup".into()))
        );
        let v1 = "36 24 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
        let spaced = r"40 24 0:32 /a\040b /mnt/c\040g rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount(spaced),
            Some(("/a b".into(), "/mnt/c g".into()))
        );
    }

    #[test]
    fn only_real_sandbox_cgroups_are_named() {
        let t = tempfile::tempdir().unwrap();
        let plain = t.path().join(format!("{PREFIX}1-2"));
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("cgroup.events"), "populated 0\n").unwrap();
        // Not in the cgroup2 filesystem (or there is none here).
        assert!(Cgroup::named(&plain).is_err());
        assert!(Cgroup::named(Path::new("/sys/fs/cgroup")).is_err());
        let Ok(own) = own_dir() else { return };
        // Named otherwise, or reached through a symlink: refused.
        assert!(Cgroup::named(&own).is_err());
        let link = t.path().join(format!("{PREFIX}3-4"));
        std::os::unix::fs::symlink(&own, &link).unwrap();
        assert!(Cgroup::named(&link).is_err());
        // A real one is named; reached through `..`, it is not.
        let Ok(cg) = Cgroup::create(&unique_name()) else {
            return;
        };
        let name = cg.path().file_name().unwrap().to_owned();
        assert_eq!(
            Cgroup::named(cg.path()).as_ref(),
            Ok(&Cgroup::at(cg.path().to_path_buf()))
        );
        assert!(Cgroup::named(&cg.path().join("..").join(&name)).is_err());
        let twice = cg.path().join(&name);
        let _ = std::fs::create_dir(&twice);
        assert!(Cgroup::named(&twice.join("..").join("..").join(&name)).is_err());
        let _ = std::fs::remove_dir(&twice);
        cg.remove().unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "a/b", "..", ".hidden"] {
            assert!(Cgroup::create(name).is_err(), "{name}");
        }
    }
}
