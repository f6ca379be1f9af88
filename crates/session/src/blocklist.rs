//! The host block list (`cordon block HOST`): names every session refuses,
//! whatever its profile allows, kept in the state directory (one pattern a
//! line, `blocked-hosts`) and sent to the sessions running when it changes.

use std::path::{Path, PathBuf};

use cordon_policy::network::HostPattern;

use crate::Error;

/// The list's file in the state directory.
pub const FILE: &str = "blocked-hosts";

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

/// The list (empty when there is none yet).
pub fn load(state: &Path) -> Result<Vec<HostPattern>, Error> {
    let path = path(state);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(HostPattern::parse(line).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: format!("line {}: {e}", n + 1),
        })?);
    }
    Ok(out)
}

/// Adds `p` (atomically: temp file and rename); false when it was listed.
pub fn add(state: &Path, p: &HostPattern) -> Result<bool, Error> {
    let mut list = load(state)?;
    if list.contains(p) {
        return Ok(false);
    }
    list.push(p.clone());
    let mut text = String::from("# Hosts every cordon session refuses (cordon block).\n");
    for p in &list {
        text.push_str(&format!("{p}\n"));
    }
    let path = path(state);
    let tmp = state.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
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
