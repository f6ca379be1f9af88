//! Profile lookup: `~/.config/cordon/profiles/NAME.toml`, then the built-ins.

use std::path::{Path, PathBuf};

use cordon_policy::profile::{builtin, builtin_names, resolve_text};
use cordon_policy::{Profile, ProfileError, ProfileSource, SourceText};

use crate::Dirs;

/// Looks profiles up in the user's profile directory, then among built-ins.
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
}

impl FileSource {
    /// A source reading `dir/NAME.toml`.
    pub fn new(dir: PathBuf) -> FileSource {
        FileSource { dir }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Reads a profile file. It, and the directory holding it, must be the
/// caller's (or root's) and writable by nobody else: another user who could
/// edit a profile could open the sandbox.
fn read(path: &Path) -> Result<Option<SourceText>, ProfileError> {
    use std::io::Read;
    let io = |e: std::io::Error| ProfileError::Io {
        origin: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let untrusted = |e: crate::Error| ProfileError::Invalid {
        origin: path.display().to_string(),
        message: e.to_string(),
    };
    let md = file.metadata().map_err(io)?;
    crate::dirs::check_trusted(path, &md).map_err(untrusted)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let pmd = std::fs::metadata(parent).map_err(io)?;
    // A shared sticky directory (/tmp) is fine: others cannot replace files
    // they do not own there.
    use std::os::unix::fs::MetadataExt;
    if pmd.mode() & 0o1000 == 0 {
        crate::dirs::check_trusted(parent, &pmd).map_err(untrusted)?;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(Some(SourceText::new(path.display().to_string(), text)))
}

impl ProfileSource for FileSource {
    fn find(&self, name: &str) -> Result<Option<SourceText>, ProfileError> {
        if !valid_name(name) {
            return Err(ProfileError::Invalid {
                origin: name.to_owned(),
                message: "profile names use letters, digits, '-', '_' and '.'".into(),
            });
        }
        match read(&self.dir.join(format!("{name}.toml")))? {
            Some(t) => Ok(Some(t)),
            None => Ok(builtin(name)),
        }
    }

    fn searched(&self, name: &str) -> Vec<String> {
        vec![
            self.dir.join(format!("{name}.toml")).display().to_string(),
            format!(
                "built-in profiles ({})",
                builtin_names().collect::<Vec<_>>().join(", ")
            ),
        ]
    }
}

/// Resolves `--profile` (a name, or a path to a `.toml` file).
pub fn load(arg: &str, dirs: &Dirs) -> Result<Profile, ProfileError> {
    let source = FileSource::new(dirs.user_profiles());
    if arg.contains('/') || arg.ends_with(".toml") {
        let path = Path::new(arg);
        let text = read(path)?.ok_or_else(|| ProfileError::NotFound {
            name: arg.to_owned(),
            searched: vec![path.display().to_string()],
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_name(&stem) {
            return Err(ProfileError::Invalid {
                origin: arg.to_owned(),
                message: "profile file names use letters, digits, '-', '_' and '.'".into(),
            });
        }
        // A profile given by path gets a name of its own (its persisted home
        // must not be shared with a built-in or user profile of that stem).
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in abs.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        let name = format!("{stem}.file-{:08x}", h as u32);
        return resolve_text(&name, text, &source);
    }
    cordon_policy::resolve(arg, &source)
}

/// One line of `cordon profile list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// Name.
    pub name: String,
    /// `builtin` or the file path.
    pub origin: String,
    /// The description, or the error that prevents loading it.
    pub description: String,
    /// Whether it resolves.
    pub ok: bool,
}

/// Every profile: user files (which may shadow built-ins), then built-ins.
pub fn list(dirs: &Dirs) -> Vec<Listed> {
    let mut names: Vec<(String, String)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dirs.user_profiles()) {
        let mut user: Vec<(String, String)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml").then(|| {
                    (
                        p.file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        p.display().to_string(),
                    )
                })
            })
            .filter(|(n, _)| valid_name(n))
            .collect();
        user.sort();
        names.extend(user);
    }
    for b in builtin_names() {
        if !names.iter().any(|(n, _)| n == b) {
            names.push((b.to_owned(), "builtin".into()));
        }
    }
    let source = FileSource::new(dirs.user_profiles());
    names
        .into_iter()
        .map(
            |(name, origin)| match cordon_policy::resolve(&name, &source) {
                Ok(p) => Listed {
                    name,
                    origin,
                    description: p.description,
                    ok: true,
                },
                Err(e) => Listed {
                    name,
                    origin,
                    description: e.to_string(),
                    ok: false,
                },
            },
        )
        .collect()
}
