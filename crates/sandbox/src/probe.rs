//! Host capability probes for `cordon doctor`.
//!
//! Every probe *does* the thing the launcher will do (create the namespace,
//! mount the filesystem, install the filter) in a forked child, rather than
//! guessing from sysctls; the sysctls only feed the hints. Callers must be
//! single-threaded, like [`crate::run`].

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use serde::Serialize;

use crate::sys::{self, Forked, WaitStatus};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Stable identifier (`userns`, `landlock`, ...).
    pub id: &'static str,
    /// What was tested, for people.
    pub tested: &'static str,
    /// Whether it works here.
    pub ok: bool,
    /// What happened (a version, an errno, ...).
    pub detail: String,
    /// How to fix it, when it failed and the fix is known.
    pub hint: Option<String>,
}

type Outcome = Result<String, String>;

/// Runs `f` in a child created with `clone(flags)`, returning its message.
fn in_child(flags: libc::c_int, f: impl FnOnce() -> Outcome) -> Outcome {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: probes run from the single-threaded CLI process (documented
    // contract); the child runs `f` and leaves with _exit.
    match unsafe { sys::clone_fork(flags) } {
        Err(e) => Err(e.to_string()),
        Ok(Forked::Child) => {
            drop(r);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("probe panicked".into()));
            let (code, msg) = match res {
                Ok(m) => (0, m),
                Err(m) => (1, m),
            };
            let mut file = std::fs::File::from(w);
            let _ = file.write_all(msg.as_bytes());
            sys::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => {
            drop(w);
            let mut msg = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
            match sys::waitpid(pid, false) {
                Ok(Some((_, WaitStatus::Exited(0)))) => Ok(msg),
                Ok(Some((_, WaitStatus::Exited(_)))) => Err(msg),
                Ok(Some((_, WaitStatus::Signaled(s)))) => Err(format!("killed by signal {s}")),
                Ok(None) => Err("child vanished".into()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// The caller's ids, read before any clone: inside a fresh user namespace
/// `getuid()` returns the overflow id until the map is written.
fn ids() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

fn map_ids((uid, gid): (u32, u32)) -> Result<(), String> {
    crate::confine::map_ids(uid, gid).map_err(|e| e.to_string())
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn userns_hint() -> String {
    let mut parts = Vec::new();
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        parts.push("kernel.unprivileged_userns_clone=0 (set it to 1)".to_owned());
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        parts.push("user.max_user_namespaces=0 (raise it)".to_owned());
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        parts.push(
            "kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu: add an AppArmor profile \
             granting `userns` to cordon, or set the sysctl to 0)"
                .to_owned(),
        );
    }
    if parts.is_empty() {
        "unprivileged user namespaces are blocked by this host's configuration".into()
    } else {
        parts.join("; ")
    }
}

/// What a launch does: a cgroup of the sandbox's own below this process's,
/// and a child cloned into it (`clone3`, `CLONE_INTO_CGROUP`).
fn cgroup_freezer() -> Outcome {
    let cg = crate::cgroup::Cgroup::create(&crate::cgroup::unique_name())?;
    let res = cg
        .open()
        .map_err(|e| format!("open {}: {e}", cg.path().display()))
        .and_then(|fd| {
            // SAFETY: probes run from the single-threaded CLI process
            // (documented contract); the child only leaves with _exit.
            match unsafe { sys::clone_fork_into(0, fd.as_fd()) } {
                Err(e) => Err(format!("clone3 into {}: {e}", cg.path().display())),
                Ok(Forked::Child) => sys::exit_now(0),
                Ok(Forked::Parent(pid)) => {
                    let _ = sys::waitpid(pid, false);
                    let parent = cg.path().parent().unwrap_or(cg.path());
                    Ok(format!(
                        "{} is delegated: each sandbox gets a cgroup below it, frozen with \
                         cgroup.freeze",
                        parent.display()
                    ))
                }
            }
        });
    let _ = cg.clone().remove();
    res
}

fn probe(
    id: &'static str,
    tested: &'static str,
    outcome: Outcome,
    hint: impl FnOnce() -> String,
) -> Probe {
    match outcome {
        Ok(detail) => Probe {
            id,
            tested,
            ok: true,
            detail,
            hint: None,
        },
        Err(detail) => Probe {
            id,
            tested,
            ok: false,
            detail,
            hint: Some(hint()),
        },
    }
}

/// The Landlock ABI version of the running kernel, if Landlock is enabled.
pub fn landlock_abi() -> Result<i64, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with the VERSION flag the kernel reads no memory (null attr, size 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(ret)
    }
}

/// Runs every probe. `scratch` is a writable directory on the filesystem that
/// will hold overlay upper layers (the state directory), used by the overlay
/// probe and left clean.
pub fn run_all(scratch: &Path) -> Vec<Probe> {
    let mut out = Vec::new();
    match sys::thread_count() {
        Ok(1) => {}
        other => {
            // Forking a multi-threaded process is unsound; refuse to probe.
            out.push(Probe {
                id: "process",
                tested: "probes run from a single-threaded process",
                ok: false,
                detail: format!("thread count: {other:?}"),
                hint: Some("call the probes before starting any thread".into()),
            });
            return out;
        }
    }
    let me = ids();
    let uts = rustix::system::uname();
    out.push(Probe {
        id: "kernel",
        tested: "kernel release",
        ok: true,
        detail: format!(
            "{} {}",
            uts.sysname().to_string_lossy(),
            uts.release().to_string_lossy()
        ),
        hint: None,
    });

    let userns = in_child(libc::CLONE_NEWUSER, || {
        map_ids(me)?;
        Ok("created a user namespace and mapped the caller's uid/gid".into())
    });
    let userns_ok = userns.is_ok();
    out.push(probe(
        "userns",
        "unprivileged user namespace",
        userns,
        userns_hint,
    ));

    let need_userns = |o: Outcome| {
        if userns_ok {
            o
        } else {
            Err("skipped: needs user namespaces".into())
        }
    };
    out.push(probe(
        "mountns",
        "mount namespace, tmpfs, recursive read-only bind (open_tree + mount_setattr)",
        need_userns(in_child(libc::CLONE_NEWUSER | libc::CLONE_NEWNS, || {
            map_ids(me)?;
            let fs = rustix::mount::fsopen("tmpfs", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
                .map_err(|e| format!("fsopen tmpfs: {e}"))?;
            rustix::mount::fsconfig_create(fs.as_fd()).map_err(|e| format!("tmpfs: {e}"))?;
            rustix::mount::fsmount(
                fs.as_fd(),
                rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
                rustix::mount::MountAttrFlags::empty(),
            )
            .map_err(|e| format!("fsmount: {e}"))?;
            let t = rustix::mount::open_tree(
                rustix::fs::CWD,
                "/usr",
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::AT_RECURSIVE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(|e| format!("open_tree /usr: {e}"))?;
            sys::mount_setattr(t.as_fd(), true, 0x1, 0, 0)
                .map_err(|e| format!("mount_setattr: {e}"))?;
            Ok("new mount API works in a user namespace".into())
        })),
        || "Linux >= 5.12 with unprivileged user namespaces is required".into(),
    ));
    out.push(probe(
        "pidns",
        "pid namespace with a fresh /proc",
        need_userns(in_child(
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID,
            || {
                map_ids(me)?;
                let fs = rustix::mount::fsopen("proc", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
                    .map_err(|e| format!("fsopen proc: {e}"))?;
                rustix::mount::fsconfig_create(fs.as_fd())
                    .map_err(|e| format!("mount proc: {e}"))?;
                Ok(format!(
                    "init is pid {}",
                    rustix::process::getpid().as_raw_nonzero()
                ))
            },
        )),
        || {
            "procfs could not be mounted: is /proc partly covered on this host (e.g. inside a \
             container)?"
                .into()
        },
    ));
    out.push(probe(
        "netns",
        "network namespace with loopback only",
        need_userns(in_child(libc::CLONE_NEWUSER | libc::CLONE_NEWNET, || {
            map_ids(me)?;
            sys::loopback_up().map_err(|e| format!("loopback: {e}"))?;
            Ok("isolated network namespace, lo up".into())
        })),
        || "network namespaces are required for the no-network sandbox".into(),
    ));
    out.push(probe(
        "nested_userns",
        "nested user namespace (locks the sandbox's mounts)",
        need_userns(in_child(libc::CLONE_NEWUSER | libc::CLONE_NEWNS, || {
            map_ids(me)?;
            crate::confine::lock_mounts(me.0, me.1).map_err(|e| e.to_string())?;
            Ok("mounts can be locked".into())
        })),
        || "user.max_user_namespaces may be too low for nesting (needs 2 per sandbox)".into(),
    ));
    out.push(probe(
        "overlayfs",
        "overlayfs inside a user namespace (userxattr), whiteouts",
        need_userns(overlay_probe(scratch, me)),
        || {
            format!(
                "overlay mode needs {} on a filesystem with user xattrs (ext4, xfs, btrfs, \
                 tmpfs >= 6.6) and Linux >= 5.11; ro and rw modes still work",
                scratch.display()
            )
        },
    ));
    out.push(probe(
        "landlock",
        "Landlock LSM (filesystem rules, ABI >= 6 for signal and socket scopes)",
        landlock_abi().and_then(|abi| {
            if abi >= 1 {
                Ok(format!("ABI {abi}"))
            } else {
                Err(format!("ABI {abi}"))
            }
        }),
        || {
            "enable Landlock: CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= boot \
             parameter"
                .into()
        },
    ));
    out.push(probe(
        "seccomp",
        "seccomp filters and user notification",
        sys::seccomp_action_available(0x0005_0000)
            .map_err(|e| format!("SECCOMP_RET_ERRNO: {e}"))
            .and_then(|()| {
                sys::seccomp_action_available(0x7fc0_0000)
                    .map(|()| "filters with ERRNO and USER_NOTIF actions".to_owned())
                    .map_err(|e| format!("SECCOMP_RET_USER_NOTIF: {e}"))
            }),
        || "a kernel with CONFIG_SECCOMP_FILTER (Linux >= 5.0 for user notification)".into(),
    ));
    out.push(probe(
        "tun",
        "/dev/net/tun accessible (transparent egress capture)",
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(_) => Ok("can open /dev/net/tun".into()),
            Err(e) => Err(format!("/dev/net/tun: {e}")),
        },
        || {
            "the egress proxy will use explicit-proxy mode; to enable transparent capture make \
             /dev/net/tun 0666 (the usual default)"
                .into()
        },
    ));
    out.push(probe(
        "cgroup",
        "cgroup v2 delegation (the freeze of `cordon contain`)",
        cgroup_freezer(),
        || {
            "`cordon contain` freezes with SIGSTOP instead; a systemd user session \
             (`systemd-run --user --scope`) provides a delegated cgroup"
                .into()
        },
    ));
    out.push(probe(
        "pidfd",
        "pidfd_open (race-free process handles)",
        rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .map(|_| "available".to_owned())
        .map_err(|e| e.to_string()),
        || "Linux >= 5.3".into(),
    ));
    out
}

fn overlay_probe(scratch: &Path, me: (u32, u32)) -> Outcome {
    let base = scratch.join(format!(".doctor-overlay-{}", std::process::id()));
    let dirs = ["lower", "upper", "work", "merged"];
    let setup = || -> std::io::Result<()> {
        for d in dirs {
            std::fs::create_dir_all(base.join(d))?;
        }
        std::fs::write(base.join("lower/file"), b"x")
    };
    if let Err(e) = setup() {
        let _ = std::fs::remove_dir_all(&base);
        return Err(format!("prepare {}: {e}", base.display()));
    }
    let b = base.clone();
    let res = in_child(libc::CLONE_NEWUSER | libc::CLONE_NEWNS, move || {
        map_ids(me)?;
        let fs = rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| format!("fsopen overlay: {e}"))?;
        let s = |k: &str, v: &Path| {
            rustix::mount::fsconfig_set_string(fs.as_fd(), k, v)
                .map_err(|e| format!("overlay {k}: {e}"))
        };
        if s("lowerdir+", &b.join("lower")).is_err() {
            s("lowerdir", &b.join("lower"))?;
        }
        s("upperdir", &b.join("upper"))?;
        s("workdir", &b.join("work"))?;
        rustix::mount::fsconfig_set_flag(fs.as_fd(), "userxattr")
            .map_err(|e| format!("overlay userxattr: {e}"))?;
        rustix::mount::fsconfig_create(fs.as_fd()).map_err(|e| format!("overlay: {e}"))?;
        let m = rustix::mount::fsmount(
            fs.as_fd(),
            rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
            rustix::mount::MountAttrFlags::empty(),
        )
        .map_err(|e| format!("fsmount overlay: {e}"))?;
        rustix::mount::move_mount(
            m.as_fd(),
            "",
            rustix::fs::CWD,
            b.join("merged").as_path(),
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| format!("attach overlay: {e}"))?;
        std::fs::remove_file(b.join("merged/file")).map_err(|e| format!("whiteout: {e}"))?;
        Ok(String::new())
    })
    .and_then(|_| {
        use std::os::unix::fs::FileTypeExt;
        let st = std::fs::symlink_metadata(base.join("upper/file"))
            .map_err(|e| format!("no whiteout in the upper layer: {e}"))?;
        if st.file_type().is_char_device() {
            Ok(format!("works on {}", scratch.display()))
        } else {
            Err("deleting a lower file did not leave a whiteout".into())
        }
    });
    let _ = std::fs::remove_dir_all(&base);
    res
}
