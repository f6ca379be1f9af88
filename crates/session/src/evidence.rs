//! Evidence bundles: what `cordon contain` seals about a session, in
//! `evidence/SESSION-TIME/` under the state directory.
//!
//! A bundle holds the session's record, effective profile, audit log (with
//! the chain head at sealing), egress log, leases, open flows, process tree
//! (argv, cwd, executable digests), the overlay's upper layer and the
//! sandbox's scratch (`/tmp` and the fake home, read through the frozen
//! init's root). `manifest.json` lists every file with its SHA-256 and is
//! signed with the host's audit key (`manifest.sig`); `custody.log` is
//! appended on every later access, each line signed with the same key and
//! chained to the one before (only removing trailing lines goes unseen).
//!
//! Threat notes: everything copied was written by the agent; nothing is
//! followed (symlinks are recorded as links) and special files are skipped
//! and listed. A bundle is built in a temporary directory and renamed into
//! place, so there is never a half-written one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use cordon_audit::hex;

use crate::record::{now_ms, Record};
use crate::Error;

/// The bundles' directory in the state directory.
pub const DIR: &str = "evidence";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's signature (hex Ed25519 over the manifest's bytes).
pub const SIGNATURE: &str = "manifest.sig";
/// The chain-of-custody log.
pub const CUSTODY: &str = "custody.log";
/// How a deletion in the overlay (a whiteout, not copied) is listed among
/// the skipped entries.
pub const DELETION: &str = "(a deletion in the overlay)";
/// The manifest format.
const FORMAT: &str = "cordon-evidence/1";
/// The most bytes the scratch copy (`/tmp` and the fake home) takes;
/// what does not fit is listed as skipped.
const SCRATCH_CAP: u64 = 256 << 20;
/// The most bytes the overlay's copy takes, apart: junk in the scratch
/// cannot push the agent's changes out of the bundle, nor the reverse.
const UPPER_CAP: u64 = 1 << 30;

/// One entry of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Path inside the bundle.
    pub path: String,
    /// SHA-256 of a file's content, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `cordon-evidence/1`.
    pub format: String,
    /// The session.
    pub session: String,
    /// When it was sealed, ms since the epoch.
    pub sealed_ms: u64,
    /// Why the session was contained.
    pub reason: String,
    /// The uid that asked for it.
    pub by_uid: u32,
    /// The public key that signed it (hex).
    pub key: String,
    /// The audit log's last record when it was copied: seq and hash.
    pub audit_head: crate::audit::Head,
    /// The agent's executable and its SHA-256, when it still ran.
    pub agent: Option<Item>,
    /// Every file and link in the bundle but the manifest, its signature
    /// and the custody log.
    pub items: Vec<Item>,
    /// What could not be copied, and why.
    pub skipped: Vec<String>,
}

/// What a session's containment hands to [`seal`].
#[derive(Debug)]
pub struct Sources<'a> {
    /// The session's record.
    pub record: &'a Record,
    /// Its directory.
    pub dir: &'a Path,
    /// The effective profile.
    pub profile: serde_json::Value,
    /// The sandbox's init (host pid), when it runs.
    pub init: Option<i32>,
    /// Whether every process of the sandbox was seen stopped.
    pub frozen: bool,
    /// The fake home's path inside the sandbox.
    pub home: Option<PathBuf>,
    /// The flows open when egress was cut.
    pub flows: Vec<cordon_net::control::OpenFlow>,
    /// What containment did, with its timings.
    pub containment: serde_json::Value,
    /// The audit log's head when it was copied.
    pub audit_head: crate::audit::Head,
    /// Why.
    pub reason: &'a str,
    /// Who asked.
    pub by_uid: u32,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::io(what, e)
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), Error> {
    let data = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::io("encode evidence", std::io::Error::other(e)))?;
    std::fs::write(path, data).map_err(io(format!("write {}", path.display())))
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    crate::audit::digest(path).map(|(size, sha)| (sha, size))
}

/// What a copy may still take: bytes of file content and entries.
struct Budget {
    bytes: u64,
    entries: u64,
}

/// The most entries one copy takes (an agent must not stall sealing, or
/// verification, with millions of empty files).
const MAX_ENTRIES: u64 = 100_000;

/// Copies `src` into `dest` without following links, within `budget` and,
/// with `dev`, without entering other mounts (the project and grants under
/// the sandbox's /tmp or home); what is not copied goes into `skipped`.
/// A file is read through the descriptor whose type was checked (no
/// symlink followed, a FIFO never blocks).
fn copy_tree(
    src: &Path,
    dest: &Path,
    dev: Option<u64>,
    budget: &mut Budget,
    skipped: &mut Vec<String>,
) {
    if budget.entries == 0 {
        skipped.push(format!("{}: over the bundle's entry limit", src.display()));
        return;
    }
    budget.entries -= 1;
    let md = match std::fs::symlink_metadata(src) {
        Ok(md) => md,
        Err(e) => {
            skipped.push(format!("{}: {e}", src.display()));
            return;
        }
    };
    if dev.is_some_and(|d| d != md.dev()) {
        skipped.push(format!(
            "{}: another mount (the project or a granted path)",
            src.display()
        ));
        return;
    }
    let result = if md.file_type().is_symlink() {
        std::fs::read_link(src).and_then(|t| std::os::unix::fs::symlink(t, dest))
    } else if md.is_dir() {
        std::fs::create_dir(dest).map(|()| match std::fs::read_dir(src) {
            Ok(rd) => {
                for e in rd.flatten() {
                    copy_tree(&e.path(), &dest.join(e.file_name()), dev, budget, skipped);
                }
            }
            Err(e) => skipped.push(format!("{}: {e}", src.display())),
        })
    } else if md.is_file() {
        copy_file(src, dest, budget, skipped)
    } else {
        // Whiteouts (0/0 character devices) mark deletions in an overlay.
        skipped.push(if md.file_type().is_char_device() && md.rdev() == 0 {
            format!("{}: not copied {DELETION}", src.display())
        } else {
            format!(
                "{}: not a file, directory or link (special file)",
                src.display()
            )
        });
        Ok(())
    };
    if let Err(e) = result {
        skipped.push(format!("{}: {e}", src.display()));
    }
}

/// Copies the regular file at `src`, opened without following a link and
/// without blocking, checked on that descriptor, within the byte budget.
fn copy_file(
    src: &Path,
    dest: &Path,
    budget: &mut Budget,
    skipped: &mut Vec<String>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(src)?;
    let md = f.metadata()?;
    if !md.is_file() {
        skipped.push(format!("{}: changed into something else", src.display()));
        return Ok(());
    }
    if md.len() > budget.bytes {
        skipped.push(format!(
            "{}: {} bytes, over the bundle's copy limit",
            src.display(),
            md.len()
        ));
        return Ok(());
    }
    budget.bytes -= md.len();
    let mut out = std::fs::File::create(dest)?;
    std::io::copy(&mut std::io::Read::take(f, md.len()), &mut out).map(drop)
}

use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// A path as the manifest writes it: UTF-8 as it is, with `\\` for a
/// backslash and `\\xNN` for each byte that is not UTF-8, so that two
/// different names never read the same.
fn encode_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Every file and link under `root`, as manifest items (sorted by path).
fn inventory(root: &Path) -> Result<Vec<Item>, Error> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Item>) -> Result<(), Error> {
        let rd = std::fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))?;
        for e in rd {
            let e = e.map_err(io(format!("list {}", dir.display())))?;
            let path = e.path();
            let rel = encode_path(path.strip_prefix(root).unwrap_or(&path));
            if dir == root && [MANIFEST, SIGNATURE, CUSTODY].contains(&rel.as_str()) {
                continue;
            }
            let md = std::fs::symlink_metadata(&path)
                .map_err(io(format!("inspect {}", path.display())))?;
            if md.file_type().is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(io(format!("read {}", path.display())))?;
                out.push(Item {
                    path: rel,
                    sha256: None,
                    size: None,
                    link: Some(target.to_string_lossy().into_owned()),
                });
            } else if md.is_dir() {
                walk(root, &path, out)?;
            } else if md.is_file() {
                let (sha, size) =
                    sha256_file(&path).map_err(io(format!("read {}", path.display())))?;
                out.push(Item {
                    path: rel,
                    sha256: Some(sha),
                    size: Some(size),
                    link: None,
                });
            } else {
                out.push(Item {
                    path: rel,
                    sha256: None,
                    size: None,
                    link: None,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A process of the sandbox with its executable's digest.
#[derive(Debug, Clone, Serialize)]
struct ProcessEvidence {
    #[serde(flatten)]
    process: cordon_sandbox::freeze::Process,
    exe_sha256: Option<String>,
}

/// Seals a bundle for a contained session; returns its directory.
pub fn seal(
    state: &Path,
    key: &cordon_audit::HostKey,
    src: Sources<'_>,
) -> Result<(PathBuf, Manifest), Error> {
    let root = state.join(DIR);
    crate::dirs::create_private_dir(&root)?;
    let sealed_ms = now_ms();
    let name = format!("{}-{sealed_ms}", src.record.id);
    let tmp = root.join(format!(".{name}.tmp"));
    let dest = root.join(&name);
    std::fs::create_dir(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    let built = build(&tmp, key, &src, sealed_ms).and_then(|m| {
        std::fs::rename(&tmp, &dest).map_err(io(format!("rename to {}", dest.display())))?;
        Ok(m)
    });
    match built {
        Ok(m) => {
            custody(
                &dest,
                key,
                src.by_uid,
                "seal",
                &format!("sealed: {}", src.reason),
            )?;
            Ok((dest, m))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn build(
    tmp: &Path,
    key: &cordon_audit::HostKey,
    src: &Sources<'_>,
    sealed_ms: u64,
) -> Result<Manifest, Error> {
    let mut skipped = Vec::new();
    write_json(&tmp.join("session.json"), src.record)?;
    write_json(&tmp.join("profile.json"), &src.profile)?;
    write_json(&tmp.join("flows.json"), &src.flows)?;
    write_json(&tmp.join("containment.json"), &src.containment)?;
    write_json(&tmp.join("audit-head.json"), &src.audit_head)?;
    for f in [crate::audit::FILE, "net.jsonl", "leases.json"] {
        let from = src.dir.join(f);
        match std::fs::copy(&from, tmp.join(f)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => skipped.push(format!("{}: {e}", from.display())),
        }
    }
    let mut agent = None;
    let mut processes = Vec::new();
    if let Some(init) = src.init {
        match cordon_sandbox::freeze::processes(init) {
            Ok(list) => {
                for p in list {
                    let exe_sha256 = sha256_file(Path::new(&format!("/proc/{}/exe", p.pid)))
                        .ok()
                        .map(|(s, _)| s);
                    // The agent is init's first child.
                    if agent.is_none() && p.ppid == Some(init) {
                        agent = Some(Item {
                            path: p.exe.clone().unwrap_or_default(),
                            sha256: exe_sha256.clone(),
                            size: None,
                            link: None,
                        });
                    }
                    processes.push(ProcessEvidence {
                        process: p,
                        exe_sha256,
                    });
                }
            }
            Err(e) => skipped.push(format!("the process tree: {e}")),
        }
    }
    write_json(&tmp.join("processes.json"), &processes)?;
    let upper = src.dir.join("upper");
    if upper.is_dir() {
        let mut budget = Budget {
            bytes: UPPER_CAP,
            entries: MAX_ENTRIES,
        };
        copy_tree(&upper, &tmp.join("upper"), None, &mut budget, &mut skipped);
    }
    let mut budget = Budget {
        bytes: SCRATCH_CAP,
        entries: MAX_ENTRIES,
    };
    // The sandbox's own files are read only while it is frozen: a process
    // still running could swap them as they are copied.
    if let (Some(init), false) = (src.init, src.frozen) {
        skipped.push(format!(
            "the sandbox's /tmp and home: not copied, the freeze of init {init} was not \
             confirmed"
        ));
    }
    if let (Some(init), true) = (src.init, src.frozen) {
        let scratch = tmp.join("scratch");
        std::fs::create_dir(&scratch).map_err(io(format!("create {}", scratch.display())))?;
        let member = cordon_sandbox::freeze::readable_member(init);
        let inside = PathBuf::from(format!("/proc/{member}/root"));
        let mut wanted = vec![("tmp", PathBuf::from("/tmp"))];
        if let Some(h) = &src.home {
            wanted.push(("home", h.clone()));
        }
        for (name, path) in wanted {
            let from = inside.join(path.strip_prefix("/").unwrap_or(&path));
            let dev = std::fs::symlink_metadata(&from).ok().map(|m| m.dev());
            copy_tree(&from, &scratch.join(name), dev, &mut budget, &mut skipped);
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        session: src.record.id.to_string(),
        sealed_ms,
        reason: src.reason.to_owned(),
        by_uid: src.by_uid,
        key: key.public_hex(),
        audit_head: src.audit_head.clone(),
        agent,
        items: inventory(tmp)?,
        skipped,
    };
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::io("encode the manifest", std::io::Error::other(e)))?;
    std::fs::write(tmp.join(MANIFEST), &bytes).map_err(io("write the manifest"))?;
    std::fs::write(tmp.join(SIGNATURE), hex(&key.sign(&bytes)))
        .map_err(io("write the manifest's signature"))?;
    Ok(manifest)
}

/// One line of the custody log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Custody {
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// Who (uid).
    pub uid: u32,
    /// `seal`, `verify`, `export`.
    pub action: String,
    /// What came of it.
    pub detail: String,
    /// SHA-256 of the line before (of the manifest for the first).
    pub prev: String,
    /// Ed25519 signature (hex) by the host key over this entry with an
    /// empty `sig`.
    #[serde(default)]
    pub sig: String,
}

impl Custody {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.sig.clear();
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }
}

/// Appends an entry to the bundle's custody log, signed with `key`.
pub fn custody(
    bundle: &Path,
    key: &cordon_audit::HostKey,
    uid: u32,
    action: &str,
    detail: &str,
) -> Result<(), Error> {
    let path = bundle.join(CUSTODY);
    let prev = match std::fs::read(&path) {
        Ok(data) => match data
            .strip_suffix(b"\n")
            .unwrap_or(&data)
            .rsplit(|&b| b == b'\n')
            .next()
        {
            Some(last) if !last.is_empty() => hex(&Sha256::digest(last)),
            _ => manifest_digest(bundle)?,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => manifest_digest(bundle)?,
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let mut entry = Custody {
        time_ms: now_ms(),
        uid,
        action: action.into(),
        detail: detail.into(),
        prev,
        sig: String::new(),
    };
    entry.sig = hex(&key.sign(&entry.signed_bytes()));
    let line = serde_json::to_string(&entry)
        .map_err(|e| Error::io("encode a custody entry", std::io::Error::other(e)))?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(io(format!("open {}", path.display())))?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(io(format!("append to {}", path.display())))
}

fn manifest_digest(bundle: &Path) -> Result<String, Error> {
    let path = bundle.join(MANIFEST);
    let data = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
    Ok(hex(&Sha256::digest(&data)))
}

/// The result of checking a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The bundle's directory.
    pub bundle: PathBuf,
    /// The manifest, when it could be read.
    pub session: Option<String>,
    /// Files and links checked.
    pub checked: usize,
    /// Custody entries checked.
    pub custody: usize,
    /// What is wrong (empty: the bundle is intact).
    pub problems: Vec<String>,
    /// Whether the manifest's signature verified with the trusted key.
    pub signed: bool,
}

impl Report {
    /// Whether the bundle is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the manifest's signature against `trusted` (hex public key),
/// every file and link against the manifest (nothing missing, changed or
/// added), and the custody log's chain.
pub fn verify(bundle: &Path, trusted: &str) -> Result<Report, Error> {
    let mut report = Report {
        bundle: bundle.to_path_buf(),
        session: None,
        checked: 0,
        custody: 0,
        problems: Vec::new(),
        signed: false,
    };
    let mpath = bundle.join(MANIFEST);
    let bytes = std::fs::read(&mpath).map_err(|e| {
        Error::NotFound(format!(
            "{}: {e} (not an evidence bundle?)",
            mpath.display()
        ))
    })?;
    let sig = std::fs::read_to_string(bundle.join(SIGNATURE)).unwrap_or_default();
    report.signed = cordon_audit::verify_signature(trusted, &bytes, sig.trim());
    if !report.signed {
        report
            .problems
            .push("manifest.json: the signature does not verify with the trusted key".into());
    }
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(format!("manifest.json: {e}"));
            return Ok(report);
        }
    };
    report.session = Some(manifest.session.clone());
    if manifest.format != FORMAT {
        report.problems.push(format!(
            "manifest.json: unknown format {:?}",
            manifest.format
        ));
    }
    let found = inventory(bundle)?;
    report.checked = found.len();
    let by_path: std::collections::HashMap<&str, &Item> =
        found.iter().map(|f| (f.path.as_str(), f)).collect();
    let listed: std::collections::HashSet<&str> =
        manifest.items.iter().map(|w| w.path.as_str()).collect();
    for want in &manifest.items {
        match by_path.get(want.path.as_str()).copied() {
            None => report.problems.push(format!("{}: missing", want.path)),
            Some(f) if f != want => report.problems.push(format!(
                "{}: changed ({})",
                want.path,
                if want.link.is_some() || f.link.is_some() {
                    "link target or type"
                } else {
                    "content differs from its recorded SHA-256"
                }
            )),
            Some(_) => {}
        }
    }
    for f in &found {
        if !listed.contains(f.path.as_str()) {
            report
                .problems
                .push(format!("{}: not in the manifest (added later)", f.path));
        }
    }
    match std::fs::read(bundle.join(CUSTODY)) {
        Ok(data) => {
            let mut prev = hex(&Sha256::digest(&bytes));
            for (n, line) in data
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .enumerate()
            {
                report.custody += 1;
                match serde_json::from_slice::<Custody>(line) {
                    Ok(c)
                        if !cordon_audit::verify_signature(trusted, &c.signed_bytes(), &c.sig) =>
                    {
                        report.problems.push(format!(
                            "custody.log line {}: the signature does not verify (edited or \
                             forged)",
                            n + 1
                        ))
                    }
                    Ok(c) if c.prev == prev => {}
                    Ok(_) => report.problems.push(format!(
                        "custody.log line {}: does not follow the line before (edited, removed or \
                         reordered)",
                        n + 1
                    )),
                    Err(e) => report
                        .problems
                        .push(format!("custody.log line {}: {e}", n + 1)),
                }
                prev = hex(&Sha256::digest(line));
            }
        }
        Err(e) => report.problems.push(format!("custody.log: {e}")),
    }
    Ok(report)
}

/// The bundle `query` names: a directory, or a session (id, unique part,
/// `last`) whose newest bundle is meant.
pub fn find(state: &Path, store: &crate::Store, query: &str) -> Result<PathBuf, Error> {
    let p = Path::new(query);
    if p.join(MANIFEST).is_file() {
        return Ok(p.to_path_buf());
    }
    if query.contains('/') {
        return Err(Error::NotFound(format!(
            "{query}: not an evidence bundle (no {MANIFEST})"
        )));
    }
    let id = store.find(query)?;
    let root = state.join(DIR);
    let prefix = format!("{id}-");
    let newest = std::fs::read_dir(&root)
        .map_err(|e| Error::NotFound(format!("{}: {e}", root.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ms = name.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((ms, e.path()))
        })
        .max();
    newest.map(|(_, p)| p).ok_or_else(|| {
        Error::NotFound(format!(
            "session {id} has no evidence bundle (bundles are sealed by `cordon contain`)"
        ))
    })
}

/// Copies a verified bundle to `dest` (which must not exist), recording
/// the export in its custody log first.
pub fn export(
    bundle: &Path,
    dest: &Path,
    key: &cordon_audit::HostKey,
    uid: u32,
) -> Result<(), Error> {
    if dest.exists() {
        return Err(Error::Usage(format!(
            "{} exists; export into a new directory",
            dest.display()
        )));
    }
    // Started, then done or failed: the log never claims a copy that was
    // not made. The copy carries the log up to "started".
    custody(
        bundle,
        key,
        uid,
        "export",
        &format!("copying to {}", dest.display()),
    )?;
    let mut budget = Budget {
        bytes: u64::MAX,
        entries: u64::MAX,
    };
    let mut skipped = Vec::new();
    copy_tree(bundle, dest, None, &mut budget, &mut skipped);
    let outcome = match skipped.first() {
        None => format!("copied to {}", dest.display()),
        Some(s) => format!("the copy to {} failed: {s}", dest.display()),
    };
    custody(bundle, key, uid, "export", &outcome)?;
    if let Some(s) = skipped.first() {
        let _ = std::fs::remove_dir_all(dest);
        return Err(Error::io(
            format!("export to {}", dest.display()),
            std::io::Error::other(s.clone()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> (tempfile::TempDir, PathBuf, String) {
        let t = tempfile::tempdir().unwrap();
        let store = crate::Store::new(t.path().join("sessions"));
        let id = store.create().unwrap();
        let dir = store.dir(&id);
        std::fs::write(dir.join(crate::audit::FILE), "{\"seq\":1}\n").unwrap();
        std::fs::create_dir_all(dir.join("upper/src")).unwrap();
        std::fs::write(dir.join("upper/src/main.rs"), "changed").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("upper/link")).unwrap();
        let key = cordon_audit::HostKey::from_seed([7; 32]);
        let record = crate::record::tests::record(id);
        let (bundle, manifest) = seal(
            t.path(),
            &key,
            Sources {
                record: &record,
                dir: &dir,
                profile: serde_json::json!({ "name": "default" }),
                init: None,
                frozen: false,
                home: None,
                flows: Vec::new(),
                containment: serde_json::json!({}),
                audit_head: crate::audit::Head {
                    seq: 1,
                    hash: "00".into(),
                },
                reason: "test",
                by_uid: 0,
            },
        )
        .unwrap();
        assert!(manifest
            .items
            .iter()
            .any(|i| i.path == "upper/link" && i.link.as_deref() == Some("/etc/passwd")));
        (t, bundle, key.public_hex())
    }

    fn host() -> cordon_audit::HostKey {
        cordon_audit::HostKey::from_seed([7; 32])
    }

    #[test]
    fn a_sealed_bundle_verifies_and_every_kind_of_tampering_is_named() {
        let (_t, bundle, key) = sealed();
        let r = verify(&bundle, &key).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.custody, 1);
        custody(&bundle, &host(), 0, "verify", "intact").unwrap();
        assert!(verify(&bundle, &key).unwrap().ok());
        // Another key does not vouch for it.
        let other = cordon_audit::HostKey::from_seed([8; 32]).public_hex();
        let r = verify(&bundle, &other).unwrap();
        assert!(r.problems[0].contains("signature"), "{:?}", r.problems);

        std::fs::write(bundle.join("upper/src/main.rs"), "innocent").unwrap();
        std::fs::remove_file(bundle.join("upper/link")).unwrap();
        std::os::unix::fs::symlink("/tmp", bundle.join("upper/link")).unwrap();
        std::fs::write(bundle.join("extra"), "x").unwrap();
        std::fs::remove_file(bundle.join("profile.json")).unwrap();
        let r = verify(&bundle, &key).unwrap();
        let all = r.problems.join("\n");
        for want in [
            "upper/src/main.rs: changed (content",
            "upper/link: changed (link",
            "extra: not in the manifest",
            "profile.json: missing",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
    }

    #[test]
    fn names_that_are_not_utf8_stay_distinct() {
        use std::os::unix::ffi::OsStrExt;
        let raw = Path::new(std::ffi::OsStr::from_bytes(b"a\xff"));
        let replaced = Path::new("a\u{fffd}");
        let slash = Path::new("a\\xff");
        let all = [encode_path(raw), encode_path(replaced), encode_path(slash)];
        assert_eq!(all[0], "a\\xff");
        assert_ne!(all[0], all[1]);
        assert_ne!(all[0], all[2]);
        assert_eq!(encode_path(Path::new("upper/src/x.rs")), "upper/src/x.rs");
    }

    #[test]
    fn an_edited_custody_log_breaks_its_chain() {
        let (_t, bundle, key) = sealed();
        custody(&bundle, &host(), 0, "verify", "intact").unwrap();
        custody(&bundle, &host(), 0, "export", "somewhere").unwrap();
        let path = bundle.join(CUSTODY);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("somewhere", "nowhere")).unwrap();
        let r = verify(&bundle, &key).unwrap();
        assert!(
            r.problems[0].contains("line 3: the signature"),
            "{:?}",
            r.problems
        );
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let r = verify(&bundle, &key).unwrap();
        assert!(
            r.problems[0].contains("custody.log line 2"),
            "{:?}",
            r.problems
        );
    }
}
