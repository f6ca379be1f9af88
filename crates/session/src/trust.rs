//! Agent binary trust: which executable a session's command is, its
//! SHA-256 (for a script, also its interpreter's, and for an npm-installed
//! agent its package's `package.json`), the pins `cordon trust pin` records
//! (`trust.json` in cordon's configuration directory) and the profile's
//! `[agent]` section (`sha256`, `minisign_key`). A mismatch refuses the run;
//! the identity goes into the session's audit record.
//!
//! Digests are cached in the state directory by file identity (device,
//! inode, size, modification and change times), so a large agent (node is
//! ~100 MB) is hashed once, not at every start.
//!
//! Threat notes: the file is hashed on the host before the sandbox starts;
//! replacing it between the check and the exec needs write access to it on
//! the host, which is outside cordon's threat model (a compromised host
//! user session). Nothing here follows a path the agent controls: the
//! command is resolved before the sandbox exists.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The pins' file in cordon's configuration directory.
pub const PINS: &str = "trust.json";
/// The digest cache in cordon's state directory.
const CACHE: &str = "trust-cache.json";

/// A file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digested {
    /// Its real path (symlinks resolved).
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of its content.
    pub sha256: String,
}

/// What a command line's program is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The program as given (`claude`, `./run.sh`).
    pub command: String,
    /// Where it was found in `PATH`, before symlinks are resolved (the
    /// sandbox executes `exe.path`, bound read-only over itself).
    #[serde(default)]
    pub found: PathBuf,
    /// The executable (for a script: the script).
    pub exe: Digested,
    /// A script's interpreter (`#!/usr/bin/env node` is node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<Digested>,
    /// The nearest `package.json` above a script (npm-installed agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Digested>,
}

/// A pin recorded by `cordon trust pin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The identity at the time.
    #[serde(flatten)]
    pub identity: Identity,
    /// When, ms since the epoch.
    pub pinned_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache(BTreeMap<String, (String, String)>);

/// The cache key of a file: what changes when its content can have.
fn stamp(md: &std::fs::Metadata) -> String {
    format!(
        "{}:{}:{}:{}.{}:{}.{}",
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    )
}

/// Hashes files, remembering digests by file identity.
struct Hasher {
    path: Option<PathBuf>,
    cache: Cache,
    dirty: bool,
}

impl Hasher {
    fn new(state: Option<&Path>) -> Hasher {
        let path = state.map(|s| s.join(CACHE));
        let cache = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        Hasher {
            path,
            cache,
            dirty: false,
        }
    }

    fn digest(&mut self, path: &Path) -> Result<Digested, Error> {
        let real = std::fs::canonicalize(path)
            .map_err(|e| Error::io(format!("resolve {}", path.display()), e))?;
        let md = std::fs::metadata(&real)
            .map_err(|e| Error::io(format!("inspect {}", real.display()), e))?;
        let key = real.to_string_lossy().into_owned();
        let st = stamp(&md);
        if let Some((s, sha)) = self.cache.0.get(&key) {
            if *s == st {
                return Ok(Digested {
                    path: real,
                    sha256: sha.clone(),
                });
            }
        }
        let sha = sha256_file(&real)?;
        self.cache.0.insert(key, (st, sha.clone()));
        self.dirty = true;
        Ok(Digested {
            path: real,
            sha256: sha,
        })
    }

    fn save(self) {
        if let (Some(path), true) = (self.path, self.dirty) {
            if let Ok(data) = serde_json::to_vec(&self.cache) {
                let tmp = path.with_extension("json.tmp");
                let _ = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, &path));
            }
        }
    }
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    crate::audit::digest(path)
        .map(|(_, sha)| sha)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// Finds `program` as `execvp` would: a path when it has a `/` (relative
/// to `cwd`), else the first executable file in `path`.
pub fn resolve(program: &OsStr, path: Option<&OsStr>, cwd: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    if program.as_bytes().contains(&b'/') {
        let p = cwd.join(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin")))
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// A script's interpreter: `#!/path args` is `/path`; `#!/usr/bin/env
/// NAME` is NAME found in `path`.
fn interpreter(script: &Path, path: Option<&OsStr>, cwd: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    let first = words.next()?;
    if Path::new(first).file_name() == Some(OsStr::new("env")) {
        let name = words.find(|w| !w.starts_with('-'))?;
        return resolve(OsStr::new(name), path, cwd);
    }
    Some(PathBuf::from(first))
}

/// The nearest `package.json` in the directories above `file` (at most
/// eight levels).
fn package_json(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .take(8)
        .map(|d| d.join("package.json"))
        .find(|p| p.is_file())
}

/// Identifies `program` (resolved with `path` from `cwd`); `state` holds
/// the digest cache.
pub fn identify(
    program: &OsStr,
    path: Option<&OsStr>,
    cwd: &Path,
    state: Option<&Path>,
) -> Result<Identity, Error> {
    let found = resolve(program, path, cwd).ok_or_else(|| {
        Error::NotFound(format!(
            "{}: not found (or not executable) in PATH",
            program.to_string_lossy()
        ))
    })?;
    let mut h = Hasher::new(state);
    let exe = h.digest(&found)?;
    let interpreter = match interpreter(&exe.path, path, cwd) {
        Some(i) => Some(h.digest(&i)?),
        None => None,
    };
    let package = match interpreter.as_ref().and(package_json(&exe.path)) {
        Some(p) => Some(h.digest(&p)?),
        None => None,
    };
    h.save();
    Ok(Identity {
        command: program.to_string_lossy().into_owned(),
        found,
        exe,
        interpreter,
        package,
    })
}

/// The `PATH` a session of `profile` looks its command up in: the
/// profile's `[env] set` PATH, else cordon's own.
pub fn agent_path(profile: &cordon_policy::Profile, home: &Path) -> Option<std::ffi::OsString> {
    profile
        .env
        .set
        .get("PATH")
        .map(|v| crate::run::expand_home(v, home))
        .or_else(|| std::env::var_os("PATH"))
}

/// The recorded pins.
pub fn pins(config: &Path) -> Result<Vec<Pin>, Error> {
    let path = config.join(PINS);
    match std::fs::read(&path) {
        Ok(d) => serde_json::from_slice(&d).map_err(|e| Error::Corrupt {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// Records `id` as the trusted identity of its command (replacing an
/// earlier pin of the same command).
pub fn pin(config: &Path, id: Identity) -> Result<(), Error> {
    let mut all = pins(config)?;
    all.retain(|p| p.identity.command != id.command);
    all.push(Pin {
        identity: id,
        pinned_ms: crate::record::now_ms(),
    });
    write_pins(config, &all)
}

/// Removes the pin of `command`; false when there was none.
pub fn unpin(config: &Path, command: &str) -> Result<bool, Error> {
    let mut all = pins(config)?;
    let before = all.len();
    all.retain(|p| p.identity.command != command);
    if all.len() == before {
        return Ok(false);
    }
    write_pins(config, &all).map(|()| true)
}

fn write_pins(config: &Path, all: &[Pin]) -> Result<(), Error> {
    crate::dirs::create_private_dir(config)?;
    let path = config.join(PINS);
    let tmp = config.join(format!(".{PINS}.tmp"));
    let data = serde_json::to_vec_pretty(all)
        .map_err(|e| Error::io("encode pins", std::io::Error::other(e)))?;
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn refused(message: String, hint: &str) -> Error {
    Error::Refused {
        message,
        hint: hint.into(),
    }
}

/// Checks `id` against the profile's `[agent]` and the pin of its command;
/// the error names what differs.
pub fn check(
    id: &Identity,
    policy: &cordon_policy::profile::AgentPolicy,
    pins: &[Pin],
) -> Result<(), Error> {
    if let Some(want) = &policy.sha256 {
        if *want != id.exe.sha256 {
            return Err(refused(
                format!(
                    "the agent {} has SHA-256 {}, and the profile's [agent] sha256 is {want}",
                    id.exe.path.display(),
                    id.exe.sha256
                ),
                "update the pin only after checking where the new binary came from",
            ));
        }
    }
    if let Some(key) = &policy.minisign_key {
        let sig_path = PathBuf::from(format!("{}.minisig", id.exe.path.display()));
        let verified = minisign_verify::PublicKey::from_base64(key)
            .map_err(|e| format!("the profile's minisign_key: {e}"))
            .and_then(|pk| {
                let sig = minisign_verify::Signature::from_file(&sig_path)
                    .map_err(|e| format!("{}: {e}", sig_path.display()))?;
                let bin = std::fs::read(&id.exe.path)
                    .map_err(|e| format!("{}: {e}", id.exe.path.display()))?;
                pk.verify(&bin, &sig, false).map_err(|e| {
                    format!("the signature {} does not verify: {e}", sig_path.display())
                })
            });
        if let Err(why) = verified {
            return Err(refused(
                format!(
                    "the agent {} is not signed by the profile's minisign key: {why}",
                    id.exe.path.display()
                ),
                "get the agent and its .minisig from its publisher",
            ));
        }
    }
    if let Some(p) = pins.iter().find(|p| p.identity.command == id.command) {
        let want = &p.identity;
        let mut diffs = Vec::new();
        if want.exe != id.exe {
            diffs.push(format!(
                "the executable is {} ({}), pinned {} ({})",
                id.exe.path.display(),
                id.exe.sha256,
                want.exe.path.display(),
                want.exe.sha256
            ));
        }
        for (what, now, then) in [
            ("interpreter", &id.interpreter, &want.interpreter),
            ("package.json", &id.package, &want.package),
        ] {
            if now != then {
                let show = |d: &Option<Digested>| {
                    d.as_ref().map_or("none".to_owned(), |d| {
                        format!("{} ({})", d.path.display(), d.sha256)
                    })
                };
                diffs.push(format!(
                    "the {what} is {}, pinned {}",
                    show(now),
                    show(then)
                ));
            }
        }
        if !diffs.is_empty() {
            return Err(refused(
                format!(
                    "the agent {} does not match its pin: {}",
                    id.command,
                    diffs.join("; ")
                ),
                &format!(
                    "if the change is expected (an update you made), pin it again: `cordon trust \
                     pin {}`",
                    id.command
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn scripts_bring_their_interpreter_and_package_and_pins_catch_changes() {
        let t = tempfile::tempdir().unwrap();
        let pkg = t.path().join("lib/node_modules/agent");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(pkg.join("package.json"), "{\"version\":\"1.0.0\"}").unwrap();
        script(&pkg.join("bin"), "cli.js", "#!/usr/bin/env sh\necho hi\n");
        let bin = t.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(pkg.join("bin/cli.js"), bin.join("agent")).unwrap();
        let path = std::env::join_paths([bin.as_path(), Path::new("/usr/bin"), Path::new("/bin")])
            .unwrap();
        let state = t.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let id = identify(OsStr::new("agent"), Some(&path), t.path(), Some(&state)).unwrap();
        assert_eq!(id.exe.path, pkg.join("bin/cli.js").canonicalize().unwrap());
        assert_eq!(
            id.interpreter.as_ref().unwrap().path,
            std::fs::canonicalize("/usr/bin/sh").unwrap()
        );
        assert_eq!(id.package.as_ref().unwrap().path, pkg.join("package.json"));
        assert!(state.join(CACHE).is_file());

        let config = t.path().join("config");
        pin(&config, id.clone()).unwrap();
        let pins = pins(&config).unwrap();
        let policy = cordon_policy::profile::AgentPolicy::default();
        check(&id, &policy, &pins).unwrap();
        // A new version: the package changes.
        std::fs::write(pkg.join("package.json"), "{\"version\":\"1.0.1\"}").unwrap();
        let now = identify(OsStr::new("agent"), Some(&path), t.path(), Some(&state)).unwrap();
        let e = check(&now, &policy, &pins).unwrap_err().to_string();
        assert!(e.contains("package.json"), "{e}");
        assert!(e.contains("cordon trust pin agent"), "{e}");
        // A profile's digest.
        let strict = cordon_policy::profile::AgentPolicy {
            sha256: Some("0".repeat(64)),
            minisign_key: None,
        };
        let e = check(&now, &strict, &[]).unwrap_err().to_string();
        assert!(e.contains("[agent] sha256"), "{e}");
        assert!(unpin(&config, "agent").unwrap());
        assert!(!unpin(&config, "agent").unwrap());
    }

    #[test]
    fn a_missing_program_is_named() {
        let e = identify(OsStr::new("no-such-agent-xyz"), None, Path::new("/"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-agent-xyz"), "{e}");
    }
}
