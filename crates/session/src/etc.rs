//! The sandbox's curated `/etc`, prepared once per state of the host.
//!
//! Copying some thirty small files into every sandbox's root costs a few
//! hundred system calls at every start (and as many dentries to tear down at
//! exit). Instead the copies are made once, into
//! `<state>/etc/<key>/`, where the key digests the identity of every source
//! (name, type, size, mode, inode, modification and change times, link
//! target) and the generated files (`hostname`, `hosts`). The sandbox gets one
//! read-only bind of that directory; the host's `/etc` subdirectories (`ssl`,
//! `alternatives`, ...) and any file too large to copy are bound on top of
//! empty mountpoints in it. A change on the host gives a new key, hence a
//! fresh copy; copies unused for 30 days are removed.
//!
//! The cache lives in cordon's state directory, which no sandbox can see or
//! be granted; a copy is renamed into place only when complete.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::Error;

/// `/etc` entries the sandbox sees (everything else in `/etc` is absent:
/// shadow files, SSH host keys, sudoers, Wi-Fi and VPN secrets, ...).
pub const ETC_ENTRIES: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "alternatives",
    "localtime",
    "timezone",
    "os-release",
    "lsb-release",
    "debian_version",
    "profile",
    "profile.d",
    "bash.bashrc",
    "bash_completion",
    "bash_completion.d",
    "inputrc",
    "terminfo",
    "locale.alias",
    "locale.conf",
    "locale.gen",
    "mime.types",
    "protocols",
    "services",
    "host.conf",
    "gai.conf",
    "magic",
    "magic.mime",
    "vim",
    "gitconfig",
    "manpath.config",
    "fonts",
    "shells",
    "environment",
    "ImageMagick-6",
    "ImageMagick-7",
    "xdg",
];

/// `/etc` entries passed by prefix (language runtimes' configuration).
pub const ETC_PREFIXES: &[&str] = &["java", "python", "perl", "ruby", "php", "node"];

/// Files larger than this are bound rather than copied.
const MAX_COPY: u64 = 1 << 20;

/// Cached copies not used for this long are removed.
const KEEP_UNUSED: Duration = Duration::from_secs(30 * 24 * 3600);

/// Bumped whenever the layout of a cached copy changes.
const FORMAT: &str = "cordon-etc-2";

/// What the sandbox's `/etc` is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcView {
    /// The prepared directory, bound read-only at `/etc`.
    pub dir: PathBuf,
    /// Host paths under `/etc` bound read-only at the same path on top of it
    /// (directories, and files too large to copy).
    pub binds: Vec<PathBuf>,
}

/// One selected entry of the host's `/etc`.
enum Entry {
    Dir,
    Link(PathBuf),
    /// A small regular file; its permission bits.
    File {
        mode: u32,
    },
    Big,
}

/// Selects the curated entries, finds (or makes) their cached copy, and
/// returns the view. `hostname` goes into `/etc/hostname` and `/etc/hosts`.
/// `mountpoints` (relative to `/etc`, with whether each is a directory) are
/// created empty in the copy, for grants mounted under `/etc`: the copy is
/// read-only inside the sandbox, so they could not be created there.
pub fn prepare(
    state: &Path,
    hostname: &str,
    mountpoints: &[(PathBuf, bool)],
) -> Result<EtcView, Error> {
    let host = Path::new("/etc");
    let mut names: Vec<OsString> = ETC_ENTRIES.iter().map(OsString::from).collect();
    if let Ok(rd) = std::fs::read_dir(host) {
        for e in rd.flatten() {
            let name = e.file_name();
            let b = name.as_bytes();
            if ETC_PREFIXES.iter().any(|p| b.starts_with(p.as_bytes())) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    let mut key = Sha256::new();
    key.update(FORMAT);
    key.update([0]);
    key.update(hostname.as_bytes());
    key.update([0]);
    for (rel, dir) in mountpoints {
        key.update(rel.as_os_str().as_bytes());
        key.update(if *dir { b"/\0" } else { b"\0\0" });
    }
    let mut entries = Vec::new();
    for name in names {
        let path = host.join(&name);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = md.file_type();
        let entry = if ft.is_dir() {
            Entry::Dir
        } else if ft.is_symlink() {
            match std::fs::read_link(&path) {
                Ok(t) => Entry::Link(t),
                Err(_) => continue,
            }
        } else if ft.is_file() && md.len() <= MAX_COPY {
            Entry::File { mode: md.mode() }
        } else if ft.is_file() {
            Entry::Big
        } else {
            // Sockets, fifos and device nodes have no place in /etc.
            continue;
        };
        key.update(name.as_bytes());
        key.update([0]);
        match &entry {
            Entry::Dir => key.update(b"d"),
            Entry::Link(t) => {
                key.update(b"l");
                key.update(t.as_os_str().as_bytes());
            }
            Entry::File { .. } | Entry::Big => {
                key.update(b"f");
                for n in [
                    md.len(),
                    u64::from(md.mode()),
                    md.ino(),
                    md.dev(),
                    md.mtime() as u64,
                    md.mtime_nsec() as u64,
                    md.ctime() as u64,
                    md.ctime_nsec() as u64,
                ] {
                    key.update(n.to_le_bytes());
                }
            }
        }
        key.update([0]);
        entries.push((name, entry));
    }
    let key: String = key
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = state.join("etc");
    let dir = root.join(&key);
    let binds = entries
        .iter()
        .filter(|(_, e)| matches!(e, Entry::Dir | Entry::Big))
        .map(|(n, _)| host.join(n))
        .collect();
    match std::fs::symlink_metadata(&dir) {
        Ok(md) if md.is_dir() => {
            touch_if_stale(&dir, &md);
            return Ok(EtcView { dir, binds });
        }
        _ => {}
    }
    crate::dirs::create_private_dir(&root)?;
    build(&root, &dir, host, &entries, hostname, mountpoints)?;
    prune(&root, &key);
    Ok(EtcView { dir, binds })
}

fn build(
    root: &Path,
    dir: &Path,
    host: &Path,
    entries: &[(OsString, Entry)],
    hostname: &str,
    mountpoints: &[(PathBuf, bool)],
) -> Result<(), Error> {
    let tmp = root.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let io = |what: String| move |e: std::io::Error| Error::io(what, e);
    let fill = || -> Result<(), Error> {
        std::fs::create_dir(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        for (name, entry) in entries {
            let dest = tmp.join(name);
            match entry {
                Entry::Dir => {
                    std::fs::create_dir(&dest).map_err(io(format!("create {}", dest.display())))?
                }
                Entry::Link(target) => std::os::unix::fs::symlink(target, &dest)
                    .map_err(io(format!("create {}", dest.display())))?,
                Entry::Big => {
                    std::fs::write(&dest, b"").map_err(io(format!("create {}", dest.display())))?
                }
                Entry::File { mode } => copy(&host.join(name), &dest, *mode)?,
            }
        }
        let write = |name: &str, text: String| {
            let dest = tmp.join(name);
            std::fs::write(&dest, text).map_err(io(format!("write {}", dest.display())))
        };
        write("hostname", format!("{hostname}\n"))?;
        // cordon's DNS at the TUN's gateway (transparent egress); without
        // it the address has no route and lookups fail at once.
        write(
            "resolv.conf",
            format!(
                "nameserver {}\noptions timeout:2 attempts:2\n",
                cordon_net::dns::GATEWAY
            ),
        )?;
        write(
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        )?;
        // Best effort: a mountpoint under an entry bound from the host (say
        // /etc/ssl/x) cannot be made here, and the mount reports it.
        for (rel, dir) in mountpoints {
            let at = tmp.join(rel);
            if *dir {
                let _ = std::fs::create_dir_all(&at);
            } else if let Some(parent) = at.parent() {
                let _ = std::fs::create_dir_all(parent).and_then(|()| std::fs::write(&at, b""));
            }
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", tmp.display())))
    };
    let result = fill().and_then(|()| match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another cordon made the same copy meanwhile.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Copies a host file (at most [`MAX_COPY`] bytes) with the permission
/// bits it had when its identity went into the key, minus set-id bits and
/// write bits for others. Never follows a symlink swapped in meanwhile.
fn copy(src: &Path, dest: &Path, mode: u32) -> Result<(), Error> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |e| Error::io(format!("read {}", src.display()), e);
    let mut data = Vec::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(src)
        .and_then(|f| f.take(MAX_COPY + 1).read_to_end(&mut data))
        .map_err(read_err)?;
    if data.len() as u64 > MAX_COPY {
        return Err(read_err(std::io::Error::other(
            "file grew past 1 MiB while being copied",
        )));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
    f.write_all(&data)
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode & 0o755)))
        .map_err(|e| Error::io(format!("write {}", dest.display()), e))
}

/// Marks a cached copy as used (at most once a day).
fn touch_if_stale(dir: &Path, md: &std::fs::Metadata) {
    let day = Duration::from_secs(24 * 3600);
    let stale = md
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > day);
    if stale {
        if let Ok(f) = std::fs::File::open(dir) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

/// Removes cached copies (and leftovers of interrupted builds) unused for
/// [`KEEP_UNUSED`], except `keep`.
fn prune(root: &Path, keep: &str) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name() == keep {
            continue;
        }
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_UNUSED);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_same_copy_and_a_change_makes_a_new_one() -> Result<(), Error> {
        let state = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let a = prepare(state.path(), "cordon", &[])?;
        let b = prepare(state.path(), "cordon", &[])?;
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read_to_string(a.dir.join("hostname"))
                .ok()
                .as_deref(),
            Some("cordon\n")
        );
        let passwd = std::fs::read(a.dir.join("passwd")).ok();
        assert_eq!(passwd, std::fs::read("/etc/passwd").ok());
        assert!(!a.dir.join("shadow").exists(), "shadow is never copied");
        let c = prepare(state.path(), "other", &[])?;
        assert_ne!(a.dir, c.dir);
        assert!(a.binds.iter().all(|p| p.starts_with("/etc")));
        Ok(())
    }
}
