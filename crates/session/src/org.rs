//! The organisation's ceiling, read from `/etc/cordon/policy.toml`
//! ([`cordon_policy::org`] has the format and the checks).
//!
//! Threat notes: the file and its directory must belong to root and be
//! writable by no one else; one the user could have written is no ceiling,
//! and cordon refuses to run rather than ignore it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cordon_policy::org::OrgPolicy;

use crate::Error;

/// Where the organisation's policy lives.
pub const PATH: &str = "/etc/cordon/policy.toml";

/// The organisation's policy at `path`, if there is one.
pub fn load(path: &Path) -> Result<Option<OrgPolicy>, Error> {
    match read_admin_file(path, "the organisation's policy")? {
        Some(text) => Ok(Some(cordon_policy::org::parse(
            &text,
            &path.display().to_string(),
        )?)),
        None => Ok(None),
    }
}

/// The text of an administrator's file (`what` names it in messages), if
/// it exists: a regular file that root owns and only root can write, in a
/// directory of the same kind; anything else is refused, never ignored.
pub fn read_admin_file(path: &Path, what: &str) -> Result<Option<String>, Error> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let untrusted = |why: String| Error::Refused {
        message: format!(
            "{what} {} {why}: it cannot be trusted, so nothing runs",
            path.display()
        ),
        hint: "it must be a regular file owned by root and writable only by root (and so must \
               its directory); ask your administrator"
            .into(),
    };
    if !md.file_type().is_file() {
        return Err(untrusted("is not a regular file".into()));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    for (p, m) in [
        (path, md.clone()),
        (
            dir,
            std::fs::metadata(dir)
                .map_err(|e| Error::io(format!("inspect {}", dir.display()), e))?,
        ),
    ] {
        if m.uid() != 0 {
            return Err(untrusted(format!(
                "({}) belongs to uid {}",
                p.display(),
                m.uid()
            )));
        }
        if m.mode() & 0o022 != 0 {
            return Err(untrusted(format!(
                "({}) is writable by group or others (mode {:o})",
                p.display(),
                m.mode() & 0o7777
            )));
        }
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_root_owned_policy_counts() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("policy.toml");
        assert!(load(&p).unwrap().is_none());
        std::fs::write(&p, "[ceiling]\nsecrets = false\n").unwrap();
        if !rustix::process::geteuid().is_root() {
            // Not root: the file is the user's own, which is no ceiling.
            assert!(matches!(load(&p), Err(Error::Refused { .. })));
            return;
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load(&p).unwrap().unwrap().ceiling.secrets, Some(false));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("belongs to uid 65534"), "{e}");
    }
}
