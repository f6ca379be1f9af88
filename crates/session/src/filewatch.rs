//! File changes in a project mounted read-write: inotify watches on every
//! directory of the project (from the host side, before the sandbox
//! exists), turned into File System Activity records as they happen —
//! created, written (with size and SHA-256 when the writer closes the
//! file), deleted, renamed. Overlay sessions do not need this: their
//! changes are listed from the upper layer at the end.
//!
//! inotify does not say who made a change: the records have no actor, and
//! a change made on the host during the session (an editor) is recorded
//! too. A tree with more directories than [`MAX_WATCHES`], or a user at the
//! kernel's watch limit, is watched in part, and the record says so.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_audit::{Class, Event, Severity};
use rustix::fs::inotify;
use serde_json::json;

use crate::detection::Recorder;

/// Directories watched at most (a guard against huge trees).
pub const MAX_WATCHES: usize = 65_536;

/// Files larger than this get a size but no digest.
const HASH_MAX: u64 = 16 << 20;

fn mask() -> inotify::WatchFlags {
    use inotify::WatchFlags as W;
    W::CREATE
        | W::CLOSE_WRITE
        | W::DELETE
        | W::MOVED_FROM
        | W::MOVED_TO
        | W::ONLYDIR
        | W::EXCL_UNLINK
}

/// The watches on one project tree.
pub(crate) struct Watcher {
    fd: Arc<OwnedFd>,
    /// The project, opened once: everything below is opened beneath it,
    /// never through a symlink (the agent may swap any component for one).
    root: OwnedFd,
    /// Watch descriptor → directory, relative to the root.
    dirs: HashMap<i32, PathBuf>,
    /// Directories not watched (limit reached), reported once.
    unwatched: u64,
    limit_reported: bool,
    /// MOVED_FROM events of the last read that found no MOVED_TO in it:
    /// its partner may open the next read (a read can end between them).
    pending_moves: HashMap<u32, (PathBuf, bool)>,
}

impl Watcher {
    /// Watches `rel` and every directory under it; `created` lists what
    /// was already inside (for a directory that appeared during the
    /// session: its entries were made before the watch could see them).
    fn add_tree(&mut self, rel: &Path, mut created: Option<&mut Vec<PathBuf>>) {
        let mut stack = vec![rel.to_owned()];
        while let Some(dir) = stack.pop() {
            if self.dirs.len() >= MAX_WATCHES {
                self.unwatched += 1;
                continue;
            }
            // Gone already, a symlink now, or not a directory any more.
            let Ok(fd) = self.open(&dir, rustix::fs::OFlags::DIRECTORY) else {
                continue;
            };
            // The directory just opened, by its descriptor: what is watched
            // is what was checked.
            let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
            match inotify::add_watch(&*self.fd, by_fd.as_str(), mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, dir.clone());
                }
                Err(rustix::io::Errno::NOSPC) => {
                    self.unwatched += 1;
                    continue;
                }
                Err(_) => continue,
            }
            let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let child = dir.join(OsStr::from_bytes(name));
                if let Some(list) = created.as_deref_mut() {
                    list.push(child.clone());
                }
                if e.file_type() == rustix::fs::FileType::Directory {
                    stack.push(child);
                }
            }
        }
    }

    /// Opens `rel` beneath the project root without following any
    /// symlink and without blocking (a FIFO opens and is then refused).
    fn open(&self, rel: &Path, flags: rustix::fs::OFlags) -> rustix::io::Result<OwnedFd> {
        use rustix::fs::{OFlags, ResolveFlags};
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        // O_PATH takes no other flags (openat2 is strict about it).
        let nonblock = if flags.contains(OFlags::PATH) {
            OFlags::empty()
        } else {
            OFlags::NONBLOCK
        };
        rustix::fs::openat2(
            &self.root,
            path,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | nonblock,
            rustix::fs::Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Forgets the watches at and under `rel` (moved out of the tree).
    fn drop_tree(&mut self, rel: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, d)| d.starts_with(rel))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            let _ = inotify::remove_watch(&self.fd, wd);
            self.dirs.remove(&wd);
        }
    }

    /// Renames the watched directories at and under `from` to `to`.
    fn move_tree(&mut self, from: &Path, to: &Path) {
        for d in self.dirs.values_mut() {
            if let Ok(rest) = d.strip_prefix(from) {
                *d = to.join(rest);
            }
        }
    }
}

impl Watcher {
    /// Watches every directory of `root` now (on the inotify instance
    /// `fd`); later events go to [`Watcher::handle`].
    pub(crate) fn new(fd: Arc<OwnedFd>, root: &Path, rec: &Recorder) -> std::io::Result<Watcher> {
        let root = rustix::fs::open(
            root,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::PATH,
            rustix::fs::Mode::empty(),
        )?;
        let mut w = Watcher {
            fd,
            root,
            dirs: HashMap::new(),
            unwatched: 0,
            limit_reported: false,
            pending_moves: HashMap::new(),
        };
        w.add_tree(Path::new(""), None);
        if w.dirs.is_empty() {
            return Err(std::io::Error::other("inotify watches nothing of it"));
        }
        report_limit(&mut w, rec);
        Ok(w)
    }

    /// Records a batch of events (everything queued, so that a rename's
    /// two halves are usually together).
    pub(crate) fn handle(&mut self, rec: &Recorder, batch: Vec<Raw>) {
        handle(self, rec, batch);
        report_limit(self, rec);
    }

    /// Records what left the tree without a partner before the watch stops.
    pub(crate) fn flush(&mut self, rec: &Recorder) {
        for (_, (from, is_dir)) in std::mem::take(&mut self.pending_moves) {
            if is_dir {
                self.drop_tree(&from);
            }
            rec.append(&change(4, "Delete", &from, dir_or_file(is_dir), None));
        }
    }
}

/// One raw event, copied out of the read buffer.
pub(crate) struct Raw {
    pub(crate) wd: i32,
    pub(crate) flags: inotify::ReadFlags,
    pub(crate) cookie: u32,
    pub(crate) name: Option<PathBuf>,
}

/// Every event queued on `fd` (the reader reads again until nothing is
/// left).
pub(crate) fn read_all(fd: &OwnedFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> Vec<Raw> {
    let mut batch = Vec::new();
    let mut reader = inotify::Reader::new(fd, buf);
    while let Ok(ev) = reader.next() {
        batch.push(Raw {
            wd: ev.wd(),
            flags: ev.events(),
            cookie: ev.cookie(),
            name: ev
                .file_name()
                .map(|n| PathBuf::from(OsStr::from_bytes(n.to_bytes()))),
        });
    }
    batch
}

/// Says once that part of the tree is not watched.
fn report_limit(w: &mut Watcher, rec: &Recorder) {
    if w.unwatched > 0 && !w.limit_reported {
        w.limit_reported = true;
        rec.append(
            &Event::new(Class::FileSystem, 99, "Other")
                .severity(Severity::Medium)
                .success(false)
                .reason("file_watch_incomplete")
                .message(format!(
                    "{} director{} of the project are not watched (at most {MAX_WATCHES}, \
                     or the kernel's inotify limit): changes there are not recorded",
                    w.unwatched,
                    if w.unwatched == 1 { "y" } else { "ies" }
                )),
        );
    }
}

fn handle(w: &mut Watcher, rec: &Recorder, batch: Vec<Raw>) {
    use inotify::ReadFlags as R;
    // A file closed after writing many times in one batch is hashed once,
    // at its last close (an agent must not make cordon hash the same big
    // file over and over).
    let last_write: HashMap<(i32, &Path), usize> = batch
        .iter()
        .enumerate()
        .filter(|(_, ev)| ev.flags.contains(R::CLOSE_WRITE))
        .filter_map(|(i, ev)| ev.name.as_deref().map(|n| ((ev.wd, n), i)))
        .collect();
    let last_write: std::collections::HashSet<usize> = last_write.into_values().collect();
    // Renames come as MOVED_FROM then MOVED_TO with one cookie, usually in
    // the same read, else the MOVED_TO opens the next one; paired in event
    // order, so that directories renamed before are already under their
    // new names.
    let carried = std::mem::take(&mut w.pending_moves);
    let mut moved_from: HashMap<u32, (PathBuf, bool)> = carried.clone();
    for (i, ev) in batch.iter().enumerate() {
        if ev.flags.contains(R::QUEUE_OVERFLOW) {
            rec.append(
                &Event::new(Class::FileSystem, 99, "Other")
                    .severity(Severity::Medium)
                    .success(false)
                    .reason("file_events_lost")
                    .message(
                        "the kernel dropped file events (inotify queue overflow): some \
                         changes in the project are not itemised",
                    ),
            );
            continue;
        }
        if ev.flags.contains(R::IGNORED) {
            w.dirs.remove(&ev.wd);
            continue;
        }
        let (Some(dir), Some(name)) = (w.dirs.get(&ev.wd).cloned(), ev.name.as_deref()) else {
            continue;
        };
        let rel = dir.join(name);
        let is_dir = ev.flags.contains(R::ISDIR);
        if ev.flags.contains(R::CREATE) {
            created(w, rec, &rel, is_dir);
        } else if ev.flags.contains(R::CLOSE_WRITE) {
            if last_write.contains(&i) {
                rec.append(&change(3, "Update", &rel, "file", digest(w, &rel)));
            }
        } else if ev.flags.contains(R::DELETE) {
            rec.append(&change(4, "Delete", &rel, dir_or_file(is_dir), None));
        } else if ev.flags.contains(R::MOVED_FROM) {
            moved_from.insert(ev.cookie, (rel, is_dir));
        } else if ev.flags.contains(R::MOVED_TO) {
            match moved_from.remove(&ev.cookie) {
                Some((from, _)) => {
                    let watched = is_dir && w.dirs.values().any(|d| d.starts_with(&from));
                    if watched {
                        w.move_tree(&from, &rel);
                    }
                    rec.append(
                        &change(5, "Rename", &rel, entry_type(w, &rel, is_dir), None).field(
                            "unmapped",
                            json!({ "from": from.to_string_lossy(), "source": "inotify" }),
                        ),
                    );
                    if is_dir && !watched {
                        // Made and renamed before its watch could be added:
                        // watch it now, and record what is already in it.
                        created_tree(w, rec, &rel);
                    }
                }
                // Moved in from outside the project: new here, with what
                // it holds.
                None => created(w, rec, &rel, is_dir),
            }
        }
    }
    // A MOVED_FROM of the last read still without a partner left the
    // tree; one of this read waits for the next.
    for (cookie, (from, is_dir)) in moved_from {
        if carried.contains_key(&cookie) {
            if is_dir {
                w.drop_tree(&from);
            }
            rec.append(&change(4, "Delete", &from, dir_or_file(is_dir), None));
        } else {
            w.pending_moves.insert(cookie, (from, is_dir));
        }
    }
}

/// Records `rel` as created; a directory is watched and what it already
/// holds recorded too.
fn created(w: &mut Watcher, rec: &Recorder, rel: &Path, is_dir: bool) {
    rec.append(&change(1, "Create", rel, entry_type(w, rel, is_dir), None));
    if is_dir {
        created_tree(w, rec, rel);
    }
}

/// Watches the new directory `rel` and records what it already holds (made
/// before its watch existed).
fn created_tree(w: &mut Watcher, rec: &Recorder, rel: &Path) {
    let mut inside = Vec::new();
    w.add_tree(rel, Some(&mut inside));
    for p in inside {
        let t = entry_type(w, &p, false);
        let digest = (t == "file").then(|| digest(w, &p)).flatten();
        rec.append(&change(1, "Create", &p, t, digest));
    }
}

fn dir_or_file(is_dir: bool) -> &'static str {
    if is_dir {
        "dir"
    } else {
        "file"
    }
}

/// What `rel` is now (as seen beneath the root, its last component not
/// followed).
fn entry_type(w: &Watcher, rel: &Path, is_dir: bool) -> &'static str {
    use rustix::fs::FileType;
    if is_dir {
        return "dir";
    }
    let kind = w
        .open(rel, rustix::fs::OFlags::PATH)
        .and_then(|fd| rustix::fs::fstat(&fd))
        .map(|st| FileType::from_raw_mode(st.st_mode));
    match kind {
        Ok(FileType::Directory) => "dir",
        Ok(FileType::Symlink) => "symlink",
        Ok(FileType::RegularFile) => "file",
        Ok(_) => "special",
        Err(_) => "file",
    }
}

/// The size and SHA-256 of the regular file `rel`, read through a
/// descriptor opened beneath the root (no symlink followed, a FIFO or
/// device refused) and only as far as its size when opened; a file over
/// [`HASH_MAX`] gets its size only.
fn digest(w: &Watcher, rel: &Path) -> Option<(u64, Option<String>)> {
    use std::io::Read;
    let fd = w.open(rel, rustix::fs::OFlags::RDONLY).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > HASH_MAX {
        return Some((size, None));
    }
    match crate::audit::digest_reader(std::fs::File::from(fd).take(size)) {
        Ok((n, sha)) => Some((n, Some(sha))),
        Err(_) => Some((size, None)),
    }
}

fn change(
    id: u8,
    name: &'static str,
    rel: &Path,
    entry: &str,
    digest: Option<(u64, Option<String>)>,
) -> Event {
    // Names that are not UTF-8 are written lossily (U+FFFD): JSON holds
    // text.
    let mut file = json!({
        "path": rel.to_string_lossy(),
        "name": rel.file_name().map(|n| n.to_string_lossy().into_owned()),
        "type": entry,
    });
    if let Some((size, sha)) = digest {
        file["size"] = size.into();
        if let Some(sha) = sha {
            file["hashes"] = json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": sha }]);
        }
    }
    let verb = match id {
        1 => "created",
        3 => "written",
        4 => "deleted",
        _ => "renamed",
    };
    Event::new(Class::FileSystem, id, name)
        .success(true)
        .field("file", file)
        .field("unmapped", json!({ "source": "inotify" }))
        .message(format!("{verb} {}", rel.display()))
}
