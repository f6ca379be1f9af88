//! The host block lists (`cordon block HOST`): names every session
//! refuses, whatever its profile allows, one pattern a line. The user's
//! (`blocked-hosts` in the state directory) is sent to the user's running
//! sessions when it changes; the system's (`/etc/cordon/blocked-hosts`,
//! root's, `cordon block --system`) holds for every user, and running
//! sessions read it again within a second of a change.

use std::path::{Path, PathBuf};

use cordon_policy::network::HostPattern;

use crate::Error;

/// The list's file in the state directory.
pub const FILE: &str = "blocked-hosts";
/// The system's list, for every user.
pub const SYSTEM: &str = "/etc/cordon/blocked-hosts";

fn path(state: &Path) -> PathBuf {
    state.join(FILE)
}

/// Parses a pattern as `cordon block` takes it: `host`, `*.domain`
/// (no port: a blocked name is blocked on every port).
pub fn parse(s: &str) -> Result<HostPattern, Error> {
    let p = HostPattern::parse(s).map_err(|e| Error::Usage(format!("cordon block: {e}")))?;
    if p.port.is_some() {
        return Err(Error::Usage(format!(
            "cordon block: {s:?}: a blocked host is blocked on every port; give it without one"
        )));
    }
    Ok(p)
}

/// The user's list and the system's (empty when there is none).
pub fn load(state: &Path) -> Result<Vec<HostPattern>, Error> {
    let path = path(state);
    let mut out = match std::fs::read_to_string(&path) {
        Ok(t) => parse_list(&t, &path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    for p in load_system(Path::new(SYSTEM))? {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The system's list at `path` (root's, or refused).
pub fn load_system(path: &Path) -> Result<Vec<HostPattern>, Error> {
    match crate::org::read_admin_file(path, "the system block list")? {
        Some(t) => parse_list(&t, path),
        None => Ok(Vec::new()),
    }
}

fn parse_list(text: &str, path: &Path) -> Result<Vec<HostPattern>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(HostPattern::parse(line).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", n + 1),
        })?);
    }
    Ok(out)
}

/// Adds `p` to the user's list (atomically: temp file and rename); false
/// when it was listed.
pub fn add(state: &Path, p: &HostPattern) -> Result<bool, Error> {
    let path = path(state);
    let list = match std::fs::read_to_string(&path) {
        Ok(t) => parse_list(&t, &path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    write_with(&path, list, p)
}

/// Adds `p` to the system's list at `path` (root only).
pub fn add_system(path: &Path, p: &HostPattern) -> Result<bool, Error> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Refused {
            message: format!("only root writes the system block list {}", path.display()),
            hint: "run `cordon block` without --system for your own sessions".into(),
        });
    }
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let list = load_system(path)?;
    write_with(path, list, p)
}

fn write_with(path: &Path, mut list: Vec<HostPattern>, p: &HostPattern) -> Result<bool, Error> {
    if list.contains(p) {
        return Ok(false);
    }
    list.push(p.clone());
    let mut text = String::from("# Hosts every cordon session refuses (cordon block).\n");
    for p in &list {
        text.push_str(&format!("{p}\n"));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    // 0644 whatever the umask: every user's sessions read the system list.
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_patterns_load_back_and_ports_are_refused() {
        let t = tempfile::tempdir().unwrap();
        assert!(load(t.path()).unwrap().is_empty());
        let p = parse("*.evil.test").unwrap();
        assert!(add(t.path(), &p).unwrap());
        assert!(!add(t.path(), &p).unwrap());
        assert!(add(t.path(), &parse("paste.test").unwrap()).unwrap());
        assert_eq!(load(t.path()).unwrap().len(), 2);
        assert!(parse("evil.test:443").is_err());
        assert!(parse("*").is_err());
        std::fs::write(t.path().join(FILE), "ok.test\n*bad\n").unwrap();
        assert!(matches!(load(t.path()), Err(Error::Corrupt { .. })));
    }
}
