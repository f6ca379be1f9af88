//! cordon's secrets broker. The agent never holds a real credential: the
//! supervisor fetches it from here when a request toward its bound host
//! needs it. This crate has the [`Secret`] type (zeroized when dropped,
//! never printed) and the embedded [`Store`]: one file, encrypted with
//! XChaCha20-Poly1305 under a key file or a passphrase (Argon2id),
//! rewritten atomically under a lock. The format is in docs/secrets.md.
#![forbid(unsafe_code)]

mod store;

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

pub use store::{Entry, Protection, Store, Unlock, MAX_NAME, MAX_VALUE};

/// A secret value: zeroized when dropped, shown nowhere (its `Debug` says
/// only how long it is).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `value`.
    pub fn new(value: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// What went wrong. No variant ever holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The store's bytes do not decrypt or do not parse under a key that
    /// matches it: damaged, cut short, or edited. Nothing was written.
    #[error(
        "{0} is corrupt ({1}); it was left as it is: restore it from a backup, or move it away \
         to start an empty store"
    )]
    Corrupt(PathBuf, String),
    /// The key does not open the store.
    #[error("{0}")]
    WrongKey(String),
    /// The key file is missing, unsafe, or malformed.
    #[error("secrets key {0}: {1}")]
    KeyFile(PathBuf, String),
    /// A file's owner or mode makes it unsafe to use.
    #[error("{0} {1}")]
    Unsafe(PathBuf, String),
    /// The store needs another way to unlock it.
    #[error("{0}")]
    Protection(String),
    /// A secret's name is not acceptable.
    #[error("secret name {0:?}: {1}")]
    Name(String, &'static str),
    /// A secret's value is not acceptable (the value itself is not shown).
    #[error("secret value: {0}")]
    Value(String),
    /// No secret has this name.
    #[error("no secret named {0:?} in the store")]
    NotFound(String),
    /// The system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(String),
}
