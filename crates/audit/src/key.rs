//! The host's Ed25519 audit key: generated on first use, kept private to
//! the user (0600) in the state directory, with its public half beside it
//! for verifiers.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use crate::chain::hex;
use crate::Error;

/// The file name of the private key in the state directory.
pub const KEY_FILE: &str = "audit-key";
/// The file name of the public key.
pub const PUB_FILE: &str = "audit-key.pub";

/// The signing key. Its Debug output does not show it.
pub struct HostKey {
    signing: SigningKey,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey(public {})", self.public_hex())
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl HostKey {
    /// A key from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> HostKey {
        HostKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A new random key.
    pub fn generate() -> Result<HostKey, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        Ok(HostKey::from_seed(seed))
    }

    /// The key in `dir` (created with its public half if there is none).
    /// A key file others can read, or that another user owns, is refused.
    pub fn load_or_create(dir: &Path) -> Result<HostKey, Error> {
        let path = dir.join(KEY_FILE);
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                let euid = rustix_euid();
                if !meta.file_type().is_file() {
                    return Err(Error::Key(path, "is not a regular file".into()));
                }
                if meta.uid() != euid {
                    return Err(Error::Key(path, format!("belongs to uid {}", meta.uid())));
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(Error::Key(
                        path,
                        format!(
                            "is readable by others (mode {:o}); hint: chmod 600 it",
                            meta.permissions().mode() & 0o777
                        ),
                    ));
                }
                let text = fs::read_to_string(&path).map_err(|e| Error::Io(path.clone(), e))?;
                let seed: [u8; 32] = unhex(&text)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| Error::Key(path.clone(), "is not 64 hex digits".into()))?;
                let key = HostKey::from_seed(seed);
                key.write_public(dir)?;
                Ok(key)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = HostKey::generate()?;
                // Written whole under a temporary name, then linked into
                // place: a crash leaves no half key, and of two cordons
                // starting at once the first link wins and both use it.
                let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
                write_private(&tmp, hex(&key.signing.to_bytes()).as_bytes())
                    .map_err(|e| Error::Io(tmp.clone(), e))?;
                let linked = fs::hard_link(&tmp, &path);
                let _ = fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        key.write_public(dir)?;
                        Ok(key)
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        HostKey::load_or_create(dir)
                    }
                    Err(e) => Err(Error::Io(path, e)),
                }
            }
            Err(e) => Err(Error::Io(path, e)),
        }
    }

    fn write_public(&self, dir: &Path) -> Result<(), Error> {
        let path: PathBuf = dir.join(PUB_FILE);
        let want = format!("{}\n", self.public_hex());
        if fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()) {
            return Ok(());
        }
        let tmp = dir.join(format!(".{PUB_FILE}.{}", std::process::id()));
        fs::write(&tmp, want).map_err(|e| Error::Io(tmp.clone(), e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::Io(path, e))
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex(self.signing.verifying_key().as_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn rustix_euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `sig_hex` is a valid signature of `msg` by the public key
/// `public_hex`.
pub fn verify_signature(public_hex: &str, msg: &[u8], sig_hex: &str) -> bool {
    let Some(pk) = unhex(public_hex).and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
        return false;
    };
    let Some(sig) = unhex(sig_hex).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    let Ok(vk) = VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    vk.verify(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

/// A public key read from a file (the `audit-key.pub` format: 64 hex
/// digits) or given as hex.
pub fn parse_public(text: &str) -> Option<String> {
    let t = text.trim();
    (unhex(t)?.len() == 32).then(|| t.to_ascii_lowercase())
}
