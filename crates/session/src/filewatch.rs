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
use std::os::fd::OwnedFd;
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
const HASH_MAX: u64 = 64 << 20;

fn mask() -> inotify::WatchFlags {
    use inotify::WatchFlags as W;
    W::CREATE
        | W::CLOSE_WRITE
        | W::DELETE
        | W::MOVED_FROM
        | W::MOVED_TO
        | W::ONLYDIR
        | W::DONT_FOLLOW
        | W::EXCL_UNLINK
}

/// The watches on one project tree.
pub(crate) struct Watcher {
    fd: Arc<OwnedFd>,
    root: PathBuf,
    /// Watch descriptor → directory, relative to the root.
    dirs: HashMap<i32, PathBuf>,
    /// Directories not watched (limit reached), reported once.
    unwatched: u64,
    limit_reported: bool,
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
            match inotify::add_watch(&self.fd, self.root.join(&dir), mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, dir.clone());
                }
                Err(rustix::io::Errno::NOSPC) => {
                    self.unwatched += 1;
                    continue;
                }
                // Gone already, or not a directory any more.
                Err(_) => continue,
            }
            let Ok(entries) = std::fs::read_dir(self.root.join(&dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let child = dir.join(e.file_name());
                if let Some(list) = created.as_deref_mut() {
                    list.push(child.clone());
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(child);
                }
            }
        }
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
        let mut w = Watcher {
            fd,
            root: root.to_owned(),
            dirs: HashMap::new(),
            unwatched: 0,
            limit_reported: false,
        };
        w.add_tree(Path::new(""), None);
        if w.dirs.is_empty() {
            return Err(std::io::Error::other(format!(
                "cannot watch {} with inotify",
                root.display()
            )));
        }
        report_limit(&mut w, rec);
        Ok(w)
    }

    /// Whether `wd` is one of this tree's watches.
    pub(crate) fn owns(&self, wd: i32) -> bool {
        self.dirs.contains_key(&wd)
    }

    /// Records a batch of events (everything queued, so that a rename's
    /// two halves are usually together).
    pub(crate) fn handle(&mut self, rec: &Recorder, batch: Vec<Raw>) {
        handle(self, rec, batch);
        report_limit(self, rec);
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
    // Renames come as MOVED_FROM and MOVED_TO with one cookie, usually in
    // the same read.
    let mut moved_from: HashMap<u32, (PathBuf, bool)> = HashMap::new();
    for ev in &batch {
        if ev.flags.contains(R::MOVED_FROM) {
            if let (Some(dir), Some(name)) = (w.dirs.get(&ev.wd), &ev.name) {
                moved_from.insert(ev.cookie, (dir.join(name), ev.flags.contains(R::ISDIR)));
            }
        }
    }
    for ev in batch {
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
        let (Some(dir), Some(name)) = (w.dirs.get(&ev.wd).cloned(), ev.name) else {
            continue;
        };
        let rel = dir.join(&name);
        let is_dir = ev.flags.contains(R::ISDIR);
        if ev.flags.contains(R::CREATE) {
            rec.append(&change(
                1,
                "Create",
                &rel,
                entry_type(w, &rel, is_dir),
                None,
            ));
            if is_dir {
                let mut inside = Vec::new();
                w.add_tree(&rel, Some(&mut inside));
                for p in inside {
                    let t = entry_type(w, &p, false);
                    let digest = (t == "file").then(|| digest(&w.root.join(&p))).flatten();
                    rec.append(&change(1, "Create", &p, t, digest));
                }
            }
        } else if ev.flags.contains(R::CLOSE_WRITE) {
            let digest = digest(&w.root.join(&rel));
            rec.append(&change(3, "Update", &rel, "file", digest));
        } else if ev.flags.contains(R::DELETE) {
            rec.append(&change(4, "Delete", &rel, dir_or_file(is_dir), None));
        } else if ev.flags.contains(R::MOVED_TO) {
            match moved_from.remove(&ev.cookie) {
                Some((from, _)) => {
                    if is_dir {
                        w.move_tree(&from, &rel);
                    }
                    rec.append(
                        &change(5, "Rename", &rel, entry_type(w, &rel, is_dir), None)
                            .field("unmapped", json!({ "from": from, "source": "inotify" })),
                    );
                }
                None => {
                    // Moved in from outside the project.
                    rec.append(&change(
                        1,
                        "Create",
                        &rel,
                        entry_type(w, &rel, is_dir),
                        None,
                    ));
                    if is_dir {
                        w.add_tree(&rel, None);
                    }
                }
            }
        }
        // A MOVED_FROM is settled by its MOVED_TO above, or below.
    }
    // Whatever MOVED_FROM found no partner in this read left the tree.
    for (_, (from, is_dir)) in moved_from {
        if is_dir {
            w.drop_tree(&from);
        }
        rec.append(&change(4, "Delete", &from, dir_or_file(is_dir), None));
    }
}

fn dir_or_file(is_dir: bool) -> &'static str {
    if is_dir {
        "dir"
    } else {
        "file"
    }
}

fn entry_type(w: &Watcher, rel: &Path, is_dir: bool) -> &'static str {
    if is_dir {
        return "dir";
    }
    match std::fs::symlink_metadata(w.root.join(rel)) {
        Ok(m) if m.is_dir() => "dir",
        Ok(m) if m.file_type().is_symlink() => "symlink",
        Ok(m) if m.is_file() => "file",
        Ok(_) => "special",
        Err(_) => "file",
    }
}

fn digest(path: &Path) -> Option<(u64, Option<String>)> {
    let meta = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())?;
    if meta.len() > HASH_MAX {
        return Some((meta.len(), None));
    }
    crate::audit::digest(path).ok().map(|(n, h)| (n, Some(h)))
}

fn change(
    id: u8,
    name: &'static str,
    rel: &Path,
    entry: &str,
    digest: Option<(u64, Option<String>)>,
) -> Event {
    let mut file = json!({
        "path": rel,
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
