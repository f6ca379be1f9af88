//! Building the sandbox's root filesystem (stage 4 of the launcher).
//!
//! Three phases, so that host paths are resolved before anything is covered:
//! 1. every host source becomes a *detached* mount (`open_tree` clone or
//!    `fsmount`) with its final attributes already applied (`mount_setattr`,
//!    recursively read-only where asked);
//! 2. an empty tmpfs becomes the future root, attached at `/tmp` of our private
//!    mount namespace (the host never sees it);
//! 3. the detached mounts are moved into place in spec order. Every target is
//!    resolved with `RESOLVE_IN_ROOT`, so a symlink in a project cannot point a
//!    mount outside the new root.
//!
//! Then `pivot_root(".", ".")` swaps roots, the old root is detached, and the
//! root tmpfs itself is made read-only.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
    UnmountFlags,
};

use crate::spec::Mount;
use crate::StageError;

const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;

const MASK_FILE: &str = ".cordon-mask-file";
const MASK_DIR: &str = ".cordon-mask-dir";

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StageError {
    let what = what.into();
    move |e| StageError::new("mounts", what, e)
}

/// A mount prepared in phase 1.
enum Prepared {
    /// A detached mount to move into place; `dir` tells which kind of
    /// mountpoint it needs.
    Detached { fd: OwnedFd, dir: bool },
    /// Done in phase 3 without a host source.
    Later,
    /// Optional source missing: nothing to do.
    Skip,
}

/// Builds the root described by `mounts` and pivots into it.
pub(crate) fn build_root(mounts: &[Mount], root_size: u64) -> Result<(), StageError> {
    for m in mounts {
        validate_dest(m.dest())?;
    }
    // Nothing we do below may propagate back to the host.
    rmount::mount_change(
        "/",
        rmount::MountPropagationFlags::PRIVATE | rmount::MountPropagationFlags::REC,
    )
    .map_err(io::Error::from)
    .map_err(err("make / private"))?;

    // Phase 1: resolve host sources into detached mounts.
    let mut order: Vec<(usize, &Mount)> = mounts.iter().enumerate().collect();
    // Parents before children; otherwise keep spec order.
    order.sort_by_key(|(i, m)| (depth(m.dest()), *i));
    let mut prepared = Vec::with_capacity(order.len());
    for (_, m) in &order {
        prepared.push(prepare(m)?);
    }

    // Phase 2: the root tmpfs, attached at /tmp of our private namespace.
    let root = tmpfs(root_size, 0o755, false)?;
    rmount::move_mount(
        root.as_fd(),
        "",
        rfs::CWD,
        "/tmp",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(io::Error::from)
    .map_err(err("attach the root tmpfs"))?;

    let needs_masks = mounts.iter().any(|m| matches!(m, Mount::Mask { .. }));
    if needs_masks {
        create_file(root.as_fd(), Path::new(MASK_FILE), b"", 0o000)?;
        rfs::mkdirat(root.as_fd(), MASK_DIR, Mode::empty())
            .map_err(io::Error::from)
            .map_err(err("create the mask directory"))?;
    }

    // Phase 3: place everything.
    for ((_, m), p) in order.iter().zip(prepared) {
        place(root.as_fd(), m, p)?;
    }
    if needs_masks {
        rfs::unlinkat(root.as_fd(), MASK_FILE, rfs::AtFlags::empty())
            .and_then(|()| rfs::unlinkat(root.as_fd(), MASK_DIR, rfs::AtFlags::REMOVEDIR))
            .map_err(io::Error::from)
            .map_err(err("remove the mask sources"))?;
    }

    // Swap roots: the old root ends up stacked on "/" and is detached.
    rustix::process::fchdir(root.as_fd())
        .map_err(io::Error::from)
        .map_err(err("enter the new root"))?;
    rustix::process::pivot_root(".", ".")
        .map_err(io::Error::from)
        .map_err(err("pivot_root into the new root"))?;
    rmount::unmount(".", UnmountFlags::DETACH)
        .map_err(io::Error::from)
        .map_err(err("detach the host root"))?;
    rustix::process::chdir("/")
        .map_err(io::Error::from)
        .map_err(err("chdir to /"))?;
    crate::sys::mount_setattr(
        root.as_fd(),
        false,
        ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV,
        0,
        0,
    )
    .map_err(err("make the root read-only"))?;
    Ok(())
}

fn validate_dest(dest: &Path) -> Result<(), StageError> {
    let ok = dest.is_absolute()
        && dest
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok && dest != Path::new("/") {
        Ok(())
    } else {
        Err(StageError::new(
            "mounts",
            format!("invalid mount destination {}", dest.display()),
            io::Error::from_raw_os_error(libc::EINVAL),
        ))
    }
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

fn rel(dest: &Path) -> &Path {
    dest.strip_prefix("/").unwrap_or(dest)
}

fn prepare(m: &Mount) -> Result<Prepared, StageError> {
    match m {
        Mount::Bind {
            src,
            writable,
            optional,
            dev,
            ..
        } => {
            let fd = match rmount::open_tree(
                rfs::CWD,
                src.as_path(),
                OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_RECURSIVE,
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if *optional => return Ok(Prepared::Skip),
                Err(e) => {
                    return Err(StageError::new(
                        "mounts",
                        format!("bind {}", src.display()),
                        e.into(),
                    )
                    .hint_if_noent(src))
                }
            };
            let mut set = ATTR_NOSUID;
            if !dev {
                set |= ATTR_NODEV;
            }
            if !writable {
                set |= ATTR_RDONLY;
            }
            crate::sys::mount_setattr(fd.as_fd(), true, set, 0, 0)
                .map_err(err(format!("set attributes on {}", src.display())))?;
            let dir = rfs::fstat(&fd)
                .map(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
                .map_err(io::Error::from)
                .map_err(err(format!("stat {}", src.display())))?;
            Ok(Prepared::Detached { fd, dir })
        }
        Mount::Tmpfs { size, mode, .. } => Ok(Prepared::Detached {
            fd: tmpfs(*size, *mode, false)?,
            dir: true,
        }),
        Mount::Proc { .. } => {
            let fs = fsopen("proc")?;
            rmount::fsconfig_create(fs.as_fd())
                .map_err(io::Error::from)
                .map_err(err("create procfs (is /proc fully visible on the host?)"))?;
            let fd = fsmount(
                &fs,
                MountAttrFlags::MOUNT_ATTR_NOSUID
                    | MountAttrFlags::MOUNT_ATTR_NODEV
                    | MountAttrFlags::MOUNT_ATTR_NOEXEC,
                "proc",
            )?;
            Ok(Prepared::Detached { fd, dir: true })
        }
        Mount::Devpts { .. } => {
            let fs = fsopen("devpts")?;
            rmount::fsconfig_set_flag(fs.as_fd(), "newinstance")
                .and_then(|()| rmount::fsconfig_set_string(fs.as_fd(), "ptmxmode", "0666"))
                .and_then(|()| rmount::fsconfig_set_string(fs.as_fd(), "mode", "0620"))
                .and_then(|()| rmount::fsconfig_create(fs.as_fd()))
                .map_err(io::Error::from)
                .map_err(err("create a devpts instance"))?;
            let fd = fsmount(
                &fs,
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
                "devpts",
            )?;
            Ok(Prepared::Detached { fd, dir: true })
        }
        Mount::Overlay {
            lower, upper, work, ..
        } => {
            let fs = fsopen("overlay")?;
            let cfg = || -> rustix::io::Result<()> {
                match rmount::fsconfig_set_string(fs.as_fd(), "lowerdir+", lower.as_path()) {
                    Ok(()) => {}
                    // Before Linux 6.8: the classic option, with ':' escaped.
                    Err(rustix::io::Errno::INVAL) => rmount::fsconfig_set_string(
                        fs.as_fd(),
                        "lowerdir",
                        escape_lowerdir(lower.as_os_str()).as_os_str(),
                    )?,
                    Err(e) => return Err(e),
                }
                rmount::fsconfig_set_string(fs.as_fd(), "upperdir", upper.as_path())?;
                rmount::fsconfig_set_string(fs.as_fd(), "workdir", work.as_path())?;
                rmount::fsconfig_set_flag(fs.as_fd(), "userxattr")?;
                rmount::fsconfig_create(fs.as_fd())
            };
            cfg()
                .map_err(io::Error::from)
                .map_err(err(format!("create the overlay for {}", lower.display())))
                .map_err(|e| {
                    e.with_hint(
                        "overlayfs needs the session directory on a filesystem with user \
                         xattrs (ext4, xfs, btrfs, tmpfs); see `cordon doctor`",
                    )
                })?;
            let fd = fsmount(
                &fs,
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
                "overlay",
            )?;
            Ok(Prepared::Detached { fd, dir: true })
        }
        Mount::Symlink { .. }
        | Mount::File { .. }
        | Mount::ReadOnly { .. }
        | Mount::Pin { .. }
        | Mount::Mask { .. } => Ok(Prepared::Later),
    }
}

fn escape_lowerdir(p: &OsStr) -> std::ffi::OsString {
    let mut out = Vec::with_capacity(p.len());
    for &b in p.as_bytes() {
        if b == b':' || b == b'\\' || b == b',' {
            out.push(b'\\');
        }
        out.push(b);
    }
    <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out)
}

fn fsopen(name: &str) -> Result<OwnedFd, StageError> {
    rmount::fsopen(name, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(io::Error::from)
        .map_err(err(format!("open a {name} filesystem context")))
}

fn fsmount(fs: &OwnedFd, attrs: MountAttrFlags, what: &str) -> Result<OwnedFd, StageError> {
    rmount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(io::Error::from)
        .map_err(err(format!("mount {what}")))
}

fn tmpfs(size: u64, mode: u32, read_only: bool) -> Result<OwnedFd, StageError> {
    let fs = fsopen("tmpfs")?;
    rmount::fsconfig_set_string(fs.as_fd(), "size", size.to_string().as_str())
        .and_then(|()| {
            rmount::fsconfig_set_string(fs.as_fd(), "mode", format!("{mode:o}").as_str())
        })
        .and_then(|()| rmount::fsconfig_create(fs.as_fd()))
        .map_err(io::Error::from)
        .map_err(err("create a tmpfs"))?;
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    if read_only {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    fsmount(&fs, attrs, "tmpfs")
}

/// Opens `path` (relative to the new root) as an `O_PATH` fd, never leaving the root.
fn open_in_root(root: BorrowedFd<'_>, path: &Path, dir: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    rfs::openat2(
        root,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens `path` (relative to the root) when it exists; `Ok(None)` when not.
fn open_existing(
    root: BorrowedFd<'_>,
    path: &Path,
    dir: bool,
) -> Result<Option<OwnedFd>, StageError> {
    match open_in_root(root, path, dir) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(StageError::new(
            "mounts",
            format!("open /{}", path.display()),
            e.into(),
        )),
    }
}

/// Opens the directory `path` (relative to the root), creating every missing
/// component. Existing components are resolved one at a time and may not
/// lead outside the directory they start in.
fn ensure_dir(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, StageError> {
    // Fast path: most mountpoints already exist inside a bound tree.
    if let Some(fd) = open_existing(root, path, true)? {
        return Ok(fd);
    }
    let mut fd = open_in_root(root, Path::new("."), true)
        .map_err(io::Error::from)
        .map_err(err("open the new root"))?;
    let mut cur = PathBuf::new();
    for comp in path.components() {
        let Component::Normal(name) = comp else {
            continue;
        };
        cur.push(name);
        match rfs::mkdirat(fd.as_fd(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(StageError::new(
                    "mounts",
                    format!("create mountpoint /{}", cur.display()),
                    e.into(),
                ))
            }
        }
        fd = rfs::openat2(
            fd.as_fd(),
            name,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::DIRECTORY,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(io::Error::from)
        .map_err(err(format!("open /{}", cur.display())))?;
    }
    Ok(fd)
}

fn split(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new("")),
        path.file_name().unwrap_or_default(),
    )
}

fn create_file(
    root: BorrowedFd<'_>,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), StageError> {
    let (parent, name) = split(path);
    let dir = ensure_dir(root, parent)?;
    let f = rfs::openat(
        dir.as_fd(),
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
    )
    .map_err(io::Error::from)
    .map_err(err(format!("create /{}", path.display())))?;
    let mut rest = contents;
    while !rest.is_empty() {
        let n = rustix::io::write(&f, rest)
            .map_err(io::Error::from)
            .map_err(err(format!("write /{}", path.display())))?;
        rest = &rest[n..];
    }
    Ok(())
}

/// Makes sure a mountpoint of the right kind exists at `path` and opens it.
fn mountpoint(root: BorrowedFd<'_>, path: &Path, dir: bool) -> Result<OwnedFd, StageError> {
    if dir {
        return ensure_dir(root, path);
    }
    if let Some(fd) = open_existing(root, path, false)? {
        return Ok(fd);
    }
    create_file(root, path, b"", 0o644)?;
    open_in_root(root, path, false)
        .map_err(io::Error::from)
        .map_err(err(format!("open /{}", path.display())))
}

fn attach(src: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &Path) -> Result<(), StageError> {
    rmount::move_mount(
        src,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(io::Error::from)
    .map_err(err(format!("mount on {}", what.display())))
}

/// Clones the tree at `path` (inside the new root) with extra attributes and
/// mounts the clone back on the same path.
fn rebind(root: BorrowedFd<'_>, path: &Path, from: &Path, set: u64) -> Result<(), StageError> {
    let Some(target) = open_existing(root, path, false)? else {
        return Ok(());
    };
    let src = open_in_root(root, from, false)
        .map_err(io::Error::from)
        .map_err(err(format!("open /{}", from.display())))?;
    let clone = rmount::open_tree(
        src.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(io::Error::from)
    .map_err(err(format!("clone /{}", from.display())))?;
    crate::sys::mount_setattr(clone.as_fd(), true, set, 0, 0)
        .map_err(err(format!("set attributes on /{}", path.display())))?;
    attach(clone.as_fd(), target.as_fd(), &Path::new("/").join(path))
}

fn place(root: BorrowedFd<'_>, m: &Mount, p: Prepared) -> Result<(), StageError> {
    let path = rel(m.dest());
    match (m, p) {
        (_, Prepared::Skip) => Ok(()),
        (_, Prepared::Detached { fd, dir }) => {
            let target = mountpoint(root, path, dir)?;
            attach(fd.as_fd(), target.as_fd(), m.dest())?;
            if let Mount::Devpts { .. } = m {
                // /dev/ptmx must be the instance's multiplexer.
                let (parent, _) = split(path);
                let ptmx = parent.join("ptmx");
                if open_in_root(root, &ptmx, false).is_err() {
                    let dir = ensure_dir(root, parent)?;
                    let target = Path::new(path.file_name().unwrap_or_default()).join("ptmx");
                    rfs::symlinkat(&target, dir.as_fd(), "ptmx")
                        .map_err(io::Error::from)
                        .map_err(err("create /dev/ptmx"))?;
                }
            }
            Ok(())
        }
        (Mount::Symlink { target, .. }, Prepared::Later) => {
            let (parent, name) = split(path);
            let dir = ensure_dir(root, parent)?;
            rfs::symlinkat(target.as_path(), dir.as_fd(), name)
                .map_err(io::Error::from)
                .map_err(err(format!("create symlink {}", m.dest().display())))
        }
        (Mount::File { contents, mode, .. }, Prepared::Later) => {
            create_file(root, path, contents, *mode)
        }
        (Mount::ReadOnly { .. }, Prepared::Later) => {
            rebind(root, path, path, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV)
        }
        (Mount::Pin { .. }, Prepared::Later) => rebind(root, path, path, ATTR_NOSUID | ATTR_NODEV),
        (Mount::Mask { .. }, Prepared::Later) => {
            let Some(fd) = open_existing(root, path, false)? else {
                return Ok(());
            };
            let is_dir = rfs::fstat(&fd)
                .map(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
                .unwrap_or(false);
            let from = if is_dir { MASK_DIR } else { MASK_FILE };
            rebind(
                root,
                path,
                Path::new(from),
                ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
            )
        }
        (_, Prepared::Later) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escaping_protects_separators() {
        assert_eq!(
            escape_lowerdir(OsStr::new("/a:b,c\\d")),
            OsStr::new("/a\\:b\\,c\\\\d")
        );
    }

    #[test]
    fn destinations_must_be_absolute_and_plain() {
        assert!(validate_dest(Path::new("/usr")).is_ok());
        for bad in ["usr", "/", "/a/../b"] {
            assert!(validate_dest(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
