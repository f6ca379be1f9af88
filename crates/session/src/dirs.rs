//! Where cordon keeps things: XDG base directories.

use std::path::{Path, PathBuf};

use crate::Error;

/// cordon's directories for the current user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The user's real home directory.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME/cordon` (user profiles live in `profiles/`).
    pub config: PathBuf,
    /// `$XDG_STATE_HOME/cordon` (sessions, persisted agent homes).
    pub state: PathBuf,
}

fn absolute_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// `path` with symlinks resolved: fully when it exists, otherwise its longest
/// existing ancestor resolved and the rest appended. Comparisons between
/// grants, the project and cordon's directories must see through symlinks
/// (e.g. `/home -> var/home`).
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    while let Some(parent) = cur.parent().map(Path::to_path_buf) {
        if let Some(name) = cur.file_name() {
            rest.push(name.to_owned());
        }
        if let Ok(mut p) = std::fs::canonicalize(&parent) {
            for n in rest.iter().rev() {
                p.push(n);
            }
            return p;
        }
        cur = parent;
    }
    path.to_path_buf()
}

impl Dirs {
    /// Reads `HOME`, `XDG_CONFIG_HOME` and `XDG_STATE_HOME` (relative values
    /// are ignored, as the XDG spec requires); symlinks in them are resolved.
    pub fn from_env() -> Result<Dirs, Error> {
        let home = absolute_env("HOME").ok_or_else(|| {
            Error::Usage("HOME is not set to an absolute path; cordon needs it to find its state directory and to build the fake home".into())
        })?;
        let config = absolute_env("XDG_CONFIG_HOME")
            .unwrap_or_else(|| home.join(".config"))
            .join("cordon");
        let state = absolute_env("XDG_STATE_HOME")
            .unwrap_or_else(|| home.join(".local/state"))
            .join("cordon");
        Ok(Dirs {
            home: resolve(&home),
            config: resolve(&config),
            state: resolve(&state),
        })
    }

    /// Where sessions are recorded.
    pub fn sessions(&self) -> PathBuf {
        self.state.join("sessions")
    }

    /// Where a profile's persisted home entries live.
    pub fn persisted_home(&self, profile: &str) -> PathBuf {
        self.state.join("profiles").join(profile).join("home")
    }

    /// The user profile directory.
    pub fn user_profiles(&self) -> PathBuf {
        self.config.join("profiles")
    }

    /// Creates the state directory (0700) if needed; refuses one that
    /// another user owns or can write to.
    pub fn ensure_state(&self) -> Result<(), Error> {
        create_private_dir(&self.state)?;
        create_private_dir(&self.sessions())
    }
}

/// `mkdir -p` with mode 0700 on every directory created; the directory
/// itself (new or not) must then pass [`check_trusted`]: what cordon keeps
/// there (session records, overlays that `apply` writes back, the sandbox's
/// `/etc`) must not be writable by anyone else.
pub fn create_private_dir(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let md = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("inspect {}", path.display()), e))?;
    if !md.is_dir() {
        return Err(Error::Refused {
            message: format!("{} is not a directory (a symlink?)", path.display()),
            hint: "remove it; cordon creates its own directories".into(),
        });
    }
    check_trusted(path, &md)
}

/// Refuses a file or directory that another user owns or can write to (root
/// may own it: a system-wide file). Modelled on ssh's `StrictModes`.
pub fn check_trusted(path: &Path, md: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if md.uid() != me && md.uid() != 0 {
        return Err(Error::Refused {
            message: format!(
                "{} belongs to uid {}, not to you (uid {me}): whoever owns it could change \
                 what cordon reads from it",
                path.display(),
                md.uid()
            ),
            hint: format!(
                "move it away; cordon will create its own ({})",
                path.display()
            ),
        });
    }
    if md.mode() & 0o022 != 0 && !md.file_type().is_symlink() {
        return Err(Error::Refused {
            message: format!(
                "{} is writable by other users (mode {:o}): they could change what cordon \
                 reads from it",
                path.display(),
                md.mode() & 0o7777
            ),
            hint: format!("chmod go-w {}", path.display()),
        });
    }
    Ok(())
}

/// A new private (0700) directory in the system's temporary directory,
/// named `PREFIX-RANDOM`.
pub fn private_temp_dir(prefix: &str) -> Result<PathBuf, Error> {
    let mut rnd = [0u8; 8];
    rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::io("read random bytes", e.into()))?;
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", cordon_audit::hex(&rnd)));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    Ok(dir)
}
