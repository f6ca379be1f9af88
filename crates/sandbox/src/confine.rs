//! Stage 6 of the launcher: taking privileges away for good.
//!
//! Order matters and is fixed here: nested user namespace (locks the mounts),
//! resource limits, capabilities, `no_new_privs`, Landlock, and seccomp last
//! (so the earlier steps can still use the calls it denies).

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::spec::{LandlockMode, LandlockSpec, Limits};
use crate::sys;
use crate::StageError;

/// Writes the uid/gid maps of the current (fresh) user namespace so that the
/// caller keeps its ids: `uid -> uid`, `gid -> gid`, nothing else.
pub(crate) fn map_ids(uid: u32, gid: u32) -> Result<(), StageError> {
    let w = |path: &str, data: String| {
        std::fs::write(path, data)
            .map_err(|e| StageError::new("userns", format!("write {path}"), e))
    };
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    w("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Enters a nested user + mount namespace. The mounts built by the outer
/// namespace become locked: the new owner cannot clear their read-only flag,
/// unmount them, or reveal what they cover.
pub(crate) fn lock_mounts(uid: u32, gid: u32) -> Result<(), StageError> {
    // SAFETY: unsharing the user and mount namespaces does not affect memory
    // safety; this process is single-threaded (init before the agent fork).
    unsafe {
        rustix::thread::unshare_unsafe(
            rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS,
        )
    }
    .map_err(|e| StageError::new("lock", "enter the nested user namespace", e.into()))?;
    map_ids(uid, gid)
}

/// Core dumps off, a sane open-file limit, and a process cap.
pub(crate) fn set_limits(limits: &Limits) -> Result<(), StageError> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: io::Error| StageError::new("rlimits", what, err)
    };
    sys::setrlimit(libc::RLIMIT_CORE, 0, 0).map_err(e("RLIMIT_CORE"))?;
    let (_, hard) = sys::getrlimit(libc::RLIMIT_NOFILE).map_err(e("RLIMIT_NOFILE"))?;
    let nofile = limits.nofile.min(hard);
    sys::setrlimit(libc::RLIMIT_NOFILE, nofile, nofile).map_err(e("RLIMIT_NOFILE"))?;
    // Counted per user namespace (Linux >= 5.14), i.e. per sandbox.
    let (_, hard) = sys::getrlimit(libc::RLIMIT_NPROC).map_err(e("RLIMIT_NPROC"))?;
    let nproc = limits.nproc.min(hard);
    sys::setrlimit(libc::RLIMIT_NPROC, nproc, nproc).map_err(e("RLIMIT_NPROC"))?;
    Ok(())
}

/// Drops every capability (effective, permitted, inheritable, ambient and the
/// bounding set) and locks securebits; verifies the result.
pub(crate) fn drop_capabilities() -> Result<(), StageError> {
    let e = |what: &'static str| move |err: io::Error| StageError::new("capabilities", what, err);
    sys::lock_securebits().map_err(e("lock securebits"))?;
    sys::drop_bounding_set().map_err(e("drop the bounding set"))?;
    sys::clear_ambient_caps().map_err(e("clear ambient capabilities"))?;
    let none = rustix::thread::CapabilitySet::empty();
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: none,
            permitted: none,
            inheritable: none,
        },
    )
    .map_err(|err| StageError::new("capabilities", "clear capability sets", err.into()))?;
    let now = rustix::thread::capabilities(None)
        .map_err(|err| StageError::new("capabilities", "read capability sets", err.into()))?;
    if !(now.effective.is_empty() && now.permitted.is_empty() && now.inheritable.is_empty()) {
        return Err(StageError::new(
            "capabilities",
            "capabilities still present after dropping them",
            io::Error::from_raw_os_error(libc::EPERM),
        ));
    }
    Ok(())
}

/// Sets `no_new_privs`: setuid bits and file capabilities stop working.
pub(crate) fn no_new_privs() -> Result<(), StageError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| StageError::new("no_new_privs", "PR_SET_NO_NEW_PRIVS", e.into()))
}

/// The ABI whose rights and scopes we ask for.
const ABI_WANTED: ABI = ABI::V6;

fn fs_rights_rw() -> landlock::BitFlags<AccessFs> {
    // Device nodes cannot be created without CAP_MKNOD anyway; do not ask.
    AccessFs::from_all(ABI_WANTED) & !(AccessFs::MakeChar | AccessFs::MakeBlock)
}

/// Applies Landlock. Returns a warning when enforcement is partial but
/// acceptable under `spec.mode`.
pub(crate) fn landlock(
    spec: &LandlockSpec,
    std_fds: &[RawFd],
) -> Result<Option<String>, StageError> {
    let e = |what: String| {
        move |err: landlock::RulesetError| {
            StageError::new("landlock", what, io::Error::other(err.to_string()))
        }
    };
    let read = AccessFs::from_read(ABI_WANTED);
    let file_only = AccessFs::from_file(ABI_WANTED);
    let all = AccessFs::from_all(ABI_WANTED);
    let compat = match spec.mode {
        LandlockMode::Strict => CompatLevel::HardRequirement,
        LandlockMode::Required | LandlockMode::BestEffort => CompatLevel::BestEffort,
    };
    let mut rs = Ruleset::default()
        .set_compatibility(compat)
        .handle_access(all)
        .map_err(e("handle fs access".into()))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(e("scope abstract sockets and signals".into()))?
        .create()
        .map_err(e("create the ruleset".into()))?;
    let mut add = |path: &Path, rights: landlock::BitFlags<AccessFs>| -> Result<(), StageError> {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // A writable path the profile lists may legitimately be absent.
            Err(_) if !path.exists() => return Ok(()),
            Err(err) => {
                return Err(StageError::new(
                    "landlock",
                    format!("open {}", path.display()),
                    io::Error::other(err.to_string()),
                ))
            }
        };
        let rights = if path.is_dir() {
            rights
        } else {
            rights & file_only
        };
        rs.as_mut()
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(e(format!("allow {}", path.display())))?;
        Ok(())
    };
    for p in &spec.read {
        add(p, read)?;
    }
    for p in &spec.write {
        add(p, fs_rights_rw())?;
    }
    for p in &spec.devices {
        add(p, read | AccessFs::WriteFile | AccessFs::IoctlDev)?;
    }
    // Files cordon was started with (a pty, a redirected file) stay usable
    // through /dev/stdout & co, but only in the mode they were opened with:
    // a read-only stdin cannot be reopened for writing via /proc/self/fd/0.
    for &fd in std_fds {
        let Some(mode) = sys::fd_access_mode(fd) else {
            continue;
        };
        let mut rights = landlock::BitFlags::<AccessFs>::empty();
        if mode == libc::O_RDONLY || mode == libc::O_RDWR {
            rights |= AccessFs::ReadFile;
        }
        if mode == libc::O_WRONLY || mode == libc::O_RDWR {
            rights |= AccessFs::WriteFile | AccessFs::Truncate;
        }
        // SAFETY: `fd` is one of our standard descriptors, open (checked just
        // above) for the duration of this call; we only borrow it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(st) = rustix::fs::fstat(borrowed) else {
            continue;
        };
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if ft == rustix::fs::FileType::CharacterDevice {
            rights |= AccessFs::IoctlDev;
        } else if ft != rustix::fs::FileType::RegularFile {
            continue; // pipes and sockets are not path-checked by Landlock
        }
        let Ok(owned) = borrowed.try_clone_to_owned() else {
            continue;
        };
        rs.as_mut()
            .add_rule(PathBeneath::new(owned, rights & file_only))
            .map_err(e(format!("allow standard fd {fd}")))?;
    }
    let status = rs
        .restrict_self()
        .map_err(e("enforce the ruleset".into()))?;
    match (status.ruleset, spec.mode) {
        (RulesetStatus::FullyEnforced, _) => Ok(None),
        (RulesetStatus::PartiallyEnforced, LandlockMode::Strict) => Err(StageError::new(
            "landlock",
            "Landlock is only partly enforced on this kernel and the profile requires all of it",
            io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        )
        .with_hint("run `cordon doctor` to see the Landlock ABI; use a kernel with ABI >= 6")),
        (RulesetStatus::PartiallyEnforced, _) => Ok(Some(
            "Landlock is only partly enforced (older kernel ABI); see `cordon doctor`".into(),
        )),
        (RulesetStatus::NotEnforced, LandlockMode::BestEffort) => Ok(Some(
            "Landlock is not available: the sandbox runs without its filesystem rules".into(),
        )),
        (RulesetStatus::NotEnforced, _) => Err(StageError::new(
            "landlock",
            "Landlock is not enforced on this kernel and the profile requires it",
            io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        )
        .with_hint(
            "enable Landlock (CONFIG_SECURITY_LANDLOCK=y and `lsm=...,landlock` on the kernel \
             command line) or set `landlock = \"best-effort\"` in the profile",
        )),
    }
}
