//! Reviewing and applying an overlay session: `cordon diff` and `cordon apply`.
//!
//! The upper layer was written by the agent and is untrusted: symlinks in it
//! are recreated as symlinks (never followed), device nodes other than
//! whiteouts are refused, and protected paths are never written back.
//!
//! overlayfs (with `userxattr`, no `redirect_dir`, no `metacopy`) leaves:
//! regular files and symlinks for created or modified entries (full copies);
//! a 0/0 character device (a *whiteout*) for each deleted lower entry;
//! directories, marked `user.overlay.opaque=y` when they replace a deleted
//! lower directory (so nothing below them comes from the lower layer).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// New file, symlink or empty directory.
    Added,
    /// Content changed (mode may have changed too).
    Modified,
    /// Only the permission bits changed.
    ModeChanged,
    /// Removed.
    Deleted,
}

impl Kind {
    /// The stable name used in `--stat`, `--json` and apply summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "added",
            Kind::Modified => "modified",
            Kind::ModeChanged => "mode_changed",
            Kind::Deleted => "deleted",
        }
    }
}

/// One change, relative to the project root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Project-relative path.
    pub path: PathBuf,
    /// What happened.
    pub kind: Kind,
    /// Permission bits before (for files that existed).
    pub old_mode: Option<u32>,
    /// Permission bits after (for files that exist now).
    pub new_mode: Option<u32>,
    /// `file`, `symlink` or `dir` (of the new entry, or the old one if deleted).
    pub entry: &'static str,
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let mut b = [0u8; 2];
    matches!(rustix::fs::lgetxattr(dir, "user.overlay.opaque", &mut b), Ok(1) if b[0] == b'y')
}

fn entry_kind(md: &std::fs::Metadata) -> &'static str {
    if md.is_dir() {
        "dir"
    } else if md.file_type().is_symlink() {
        "symlink"
    } else {
        "file"
    }
}

fn same_content(
    a: &Path,
    b: &Path,
    am: &std::fs::Metadata,
    bm: &std::fs::Metadata,
) -> std::io::Result<bool> {
    if am.file_type().is_symlink() || bm.file_type().is_symlink() {
        return Ok(am.file_type().is_symlink()
            && bm.file_type().is_symlink()
            && std::fs::read_link(a)? == std::fs::read_link(b)?);
    }
    if am.len() != bm.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Lists every lower entry below `dir` (files, symlinks, and directories
/// after their contents) as deleted.
fn deleted_tree(lower: &Path, rel: &Path, out: &mut Vec<Change>) -> std::io::Result<()> {
    let full = lower.join(rel);
    let md = std::fs::symlink_metadata(&full)?;
    if md.is_dir() {
        let mut names: Vec<OsString> = std::fs::read_dir(&full)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            deleted_tree(lower, &rel.join(n), out)?;
        }
    }
    out.push(Change {
        path: rel.to_path_buf(),
        kind: Kind::Deleted,
        old_mode: Some(md.mode() & 0o7777),
        new_mode: None,
        entry: entry_kind(&md),
    });
    Ok(())
}

/// Computes the changes recorded in `upper` relative to `lower` (the real
/// project). `skip` lists cordon's own placeholders.
pub fn changes(upper: &Path, lower: &Path, skip: &[PathBuf]) -> Result<Vec<Change>, Error> {
    let mut out = Vec::new();
    walk(upper, lower, Path::new(""), skip, &mut out).map_err(|e| {
        Error::io(
            format!("compare {} with {}", upper.display(), lower.display()),
            e,
        )
    })?;
    Ok(out)
}

fn walk(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    skip: &[PathBuf],
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    let udir = upper.join(rel);
    let mut names: Vec<OsString> = std::fs::read_dir(&udir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    // An opaque directory hides every lower entry it does not itself contain.
    if !rel.as_os_str().is_empty() && is_opaque(&udir) {
        if let Ok(rd) = std::fs::read_dir(lower.join(rel)) {
            let mut gone: Vec<OsString> = rd
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| !names.contains(n))
                .collect();
            gone.sort();
            for n in gone {
                deleted_tree(lower, &rel.join(n), out)?;
            }
        }
    }
    for name in names {
        let r = rel.join(&name);
        if skip.contains(&r) {
            // cordon's placeholder, read-only for the whole session.
            continue;
        }
        let u = upper.join(&r);
        let l = lower.join(&r);
        let um = std::fs::symlink_metadata(&u)?;
        let lm = std::fs::symlink_metadata(&l).ok();
        if is_whiteout(&um) {
            if lm.is_some() {
                deleted_tree(lower, &r, out)?;
            }
            continue;
        }
        let ft = um.file_type();
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            // Nothing else is applied; a special file is reported as added so
            // the user sees it, and `apply` refuses it.
            out.push(Change {
                path: r,
                kind: Kind::Added,
                old_mode: None,
                new_mode: Some(um.mode() & 0o7777),
                entry: "special",
            });
            continue;
        }
        if um.is_dir() {
            match &lm {
                Some(lmd) if lmd.is_dir() => {}
                Some(_) => {
                    deleted_tree(lower, &r, out)?;
                    push_added_dir_if_empty(&u, &r, &um, out)?;
                }
                None => push_added_dir_if_empty(&u, &r, &um, out)?,
            }
            walk(upper, lower, &r, skip, out)?;
            continue;
        }
        match &lm {
            None => out.push(Change {
                path: r,
                kind: Kind::Added,
                old_mode: None,
                new_mode: Some(um.mode() & 0o7777),
                entry: entry_kind(&um),
            }),
            Some(lmd) if lmd.is_dir() => {
                deleted_tree(lower, &r, out)?;
                out.push(Change {
                    path: r,
                    kind: Kind::Added,
                    old_mode: None,
                    new_mode: Some(um.mode() & 0o7777),
                    entry: entry_kind(&um),
                });
            }
            Some(lmd) => {
                let (om, nm) = (lmd.mode() & 0o7777, um.mode() & 0o7777);
                let same = same_content(&l, &u, lmd, &um)?;
                let kind = if !same {
                    Kind::Modified
                } else if om != nm && !ft.is_symlink() {
                    Kind::ModeChanged
                } else {
                    continue;
                };
                out.push(Change {
                    path: r,
                    kind,
                    old_mode: Some(om),
                    new_mode: Some(nm),
                    entry: entry_kind(&um),
                });
            }
        }
    }
    Ok(())
}

fn push_added_dir_if_empty(
    u: &Path,
    r: &Path,
    um: &std::fs::Metadata,
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    if std::fs::read_dir(u)?.next().is_none() {
        out.push(Change {
            path: r.to_path_buf(),
            kind: Kind::Added,
            old_mode: None,
            new_mode: Some(um.mode() & 0o7777),
            entry: "dir",
        });
    }
    Ok(())
}

fn read_text(path: &Path, md: Option<&std::fs::Metadata>) -> Option<String> {
    match md {
        None => Some(String::new()),
        Some(m) if m.file_type().is_symlink() => std::fs::read_link(path)
            .ok()
            .map(|t| format!("symlink -> {}\n", t.display())),
        Some(_) => {
            let bytes = std::fs::read(path).ok()?;
            if bytes.iter().take(8000).any(|&b| b == 0) {
                return None;
            }
            String::from_utf8(bytes).ok()
        }
    }
}

/// Renders the changes as a unified diff (git style headers).
pub fn render(changes: &[Change], upper: &Path, lower: &Path) -> String {
    let mut out = String::new();
    for c in changes {
        let p = quote(&c.path);
        out.push_str(&format!("diff --cordon a/{p} b/{p}\n"));
        match c.kind {
            Kind::Added if c.entry == "dir" => {
                out.push_str(&format!(
                    "new directory mode {:o}\n",
                    c.new_mode.unwrap_or(0)
                ));
                continue;
            }
            Kind::Added if c.entry == "special" => {
                out.push_str("special file (device, fifo or socket): cannot be applied\n");
                continue;
            }
            // Full mode, setuid/setgid/sticky included (apply drops those).
            Kind::Added => out.push_str(&format!(
                "new file mode 10{:04o}\n",
                c.new_mode.unwrap_or(0)
            )),
            Kind::Deleted if c.entry == "dir" => {
                out.push_str("deleted directory\n");
                continue;
            }
            Kind::Deleted => out.push_str(&format!(
                "deleted file mode 10{:04o}\n",
                c.old_mode.unwrap_or(0)
            )),
            Kind::ModeChanged | Kind::Modified => {
                if c.old_mode != c.new_mode {
                    out.push_str(&format!(
                        "old mode 10{:04o}\nnew mode 10{:04o}\n",
                        c.old_mode.unwrap_or(0),
                        c.new_mode.unwrap_or(0)
                    ));
                }
                if c.kind == Kind::ModeChanged {
                    continue;
                }
            }
        }
        let lp = lower.join(&c.path);
        let up = upper.join(&c.path);
        let lm = if c.kind == Kind::Added {
            None
        } else {
            std::fs::symlink_metadata(&lp).ok()
        };
        let um = if c.kind == Kind::Deleted {
            None
        } else {
            std::fs::symlink_metadata(&up).ok()
        };
        let old = read_text(&lp, lm.as_ref());
        let new = read_text(&up, um.as_ref());
        let (a, b) = (
            if c.kind == Kind::Added {
                "/dev/null".to_owned()
            } else {
                format!("a/{p}")
            },
            if c.kind == Kind::Deleted {
                "/dev/null".to_owned()
            } else {
                format!("b/{p}")
            },
        );
        match (old, new) {
            (Some(o), Some(n)) => {
                let diff = similar::TextDiff::from_lines(&o, &n);
                out.push_str(
                    &diff
                        .unified_diff()
                        .context_radius(3)
                        .header(&a, &b)
                        .to_string(),
                );
                if !out.ends_with('\n') {
                    out.push_str("\n\\ No newline at end of file\n");
                }
            }
            _ => out.push_str(&format!("Binary files {a} and {b} differ\n")),
        }
    }
    out
}

/// What `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Paths written or removed.
    pub done: Vec<PathBuf>,
    /// Paths refused, with the reason.
    pub refused: Vec<(PathBuf, String)>,
}

/// Why `apply` refuses `change`, if it does. `upper` is the session's upper
/// layer (to look at what would be written).
pub fn refusal(c: &Change, upper: &Path, protected: &[PathBuf]) -> Option<&'static str> {
    use cordon_policy::profile::{GIT_APPLY_ALLOWED, NEVER_APPLIED_NAMES, NEVER_APPLIED_SUFFIXES};
    use std::os::unix::ffi::OsStrExt;
    let path = &c.path;
    if path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|&b| b < 0x20 || b == 0x7f)
    {
        return Some("control characters in the name");
    }
    if protected.iter().any(|p| path.starts_with(p)) {
        return Some("protected path");
    }
    let comps: Vec<&std::ffi::OsStr> = path.components().map(|c| c.as_os_str()).collect();
    if comps.first().is_some_and(|f| *f == ".git") {
        let Some(second) = comps.get(1) else {
            return Some("the .git entry itself");
        };
        if !GIT_APPLY_ALLOWED.iter().any(|a| second == a) {
            return Some("git metadata other than objects, refs, logs and the index");
        }
        // git follows symlinks when it writes its files: never plant one.
        if c.entry == "symlink" || c.entry == "special" {
            return Some("a symlink or special file inside .git");
        }
        if c.kind == Kind::Deleted
            && (comps.len() == 2
                && (*second == "HEAD" || *second == "objects" || *second == "refs")
                || *second == "objects")
        {
            return Some("deleting git history");
        }
        if comps.len() == 2
            && *second == "HEAD"
            && c.kind != Kind::Deleted
            && !valid_head(&upper.join(path))
        {
            return Some("HEAD is neither a ref nor a commit id");
        }
        if comps[2..]
            .iter()
            .any(|n| NEVER_APPLIED_NAMES.iter().any(|x| n == x))
        {
            return Some("runs code on the host (editor, direnv or git files)");
        }
        return None;
    }
    let name = comps.last().map(|n| n.as_bytes()).unwrap_or_default();
    if comps
        .iter()
        .any(|n| NEVER_APPLIED_NAMES.iter().any(|x| n == x))
        || NEVER_APPLIED_SUFFIXES
            .iter()
            .any(|s| name.ends_with(s.as_bytes()))
    {
        return Some("runs code on the host (editor, direnv or git files)");
    }
    None
}

/// What git accepts in `.git/HEAD`: `ref: refs/...` or a full object id.
fn valid_head(path: &Path) -> bool {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !md.is_file() || md.len() > 512 {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let t = text.trim_end_matches('\n');
    if let Some(r) = t.strip_prefix("ref: refs/") {
        return !r.is_empty() && r.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    }
    (t.len() == 40 || t.len() == 64) && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A path for display: control characters and invalid UTF-8 escaped, so a
/// file name cannot rewrite the terminal it is shown on.
pub fn quote(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape(path.as_os_str().as_bytes())
}

/// Invisible characters that reorder or hide text (bidi controls,
/// zero-width characters, BOM).
fn is_format_char(c: char) -> bool {
    matches!(c as u32, 0x061C | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2069 | 0xFEFF)
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if (ch.is_control() && ch != '\t') || is_format_char(ch) {
                out.push_str(&format!("\\x{:02x}", ch as u32));
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The first symlink among the existing parents of `rel` inside `root`.
fn symlinked_parent(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    for comp in rel.parent()?.components() {
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Some(cur),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Writes `changes` from `upper` into `lower`. Each file is written to a
/// temporary name in its directory and renamed into place, so a crash leaves
/// every file either old or new. Protected paths and special files are
/// refused, never written.
pub fn apply(
    changes: &[Change],
    upper: &Path,
    lower: &Path,
    protected: &[PathBuf],
) -> Result<Applied, Error> {
    let mut res = Applied::default();
    for c in changes {
        if let Some(why) = refusal(c, upper, protected) {
            res.refused.push((c.path.clone(), why.into()));
            continue;
        }
        if c.entry == "special" {
            res.refused.push((c.path.clone(), "special file".into()));
            continue;
        }
        let dst = lower.join(&c.path);
        let src = upper.join(&c.path);
        let what = |e: std::io::Error| Error::io(format!("apply {}", c.path.display()), e);
        // Never write through a symlink the project has on the way.
        if let Some(link) = symlinked_parent(lower, &c.path) {
            res.refused
                .push((c.path.clone(), format!("{} is a symlink", link.display())));
            continue;
        }
        match c.kind {
            Kind::Deleted => {
                let r = match std::fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir(&dst),
                    Ok(_) => std::fs::remove_file(&dst),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                        res.refused.push((
                            c.path.clone(),
                            "directory still holds refused entries".into(),
                        ));
                        continue;
                    }
                    Err(e) => return Err(what(e)),
                }
            }
            Kind::ModeChanged => {
                std::fs::set_permissions(
                    &dst,
                    std::fs::Permissions::from_mode(c.new_mode.unwrap_or(0o644) & 0o777),
                )
                .map_err(what)?;
            }
            Kind::Added | Kind::Modified => {
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(what)?;
                }
                let um = std::fs::symlink_metadata(&src).map_err(what)?;
                if um.is_dir() {
                    match std::fs::create_dir(&dst) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(what(e))
                        }
                        _ => {}
                    }
                    std::fs::set_permissions(
                        &dst,
                        std::fs::Permissions::from_mode(um.mode() & 0o777),
                    )
                    .map_err(what)?;
                } else {
                    let tmp = dst.with_file_name(format!(
                        ".{}.cordon-apply",
                        dst.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    ));
                    let _ = std::fs::remove_file(&tmp);
                    if um.file_type().is_symlink() {
                        std::os::unix::fs::symlink(std::fs::read_link(&src).map_err(what)?, &tmp)
                            .map_err(what)?;
                    } else {
                        std::fs::copy(&src, &tmp).map_err(what)?;
                        std::fs::set_permissions(
                            &tmp,
                            std::fs::Permissions::from_mode(um.mode() & 0o777),
                        )
                        .map_err(what)?;
                    }
                    if let Err(e) = std::fs::rename(&tmp, &dst) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(what(e));
                    }
                }
            }
        }
        res.done.push(c.path.clone());
    }
    Ok(res)
}
