//! The embedded store: every secret in one file, encrypted as a whole.
//!
//! ```text
//! header (84 bytes, authenticated as associated data)
//!   0  "cordon-secrets"   magic
//!  14  1                  format version
//!  15  1 | 2              protection: key file | passphrase
//!  16  key id             first 16 bytes of SHA-256("cordon-secrets key id v1\0" || key)
//!  32  salt               16 bytes (passphrase; zero otherwise)
//!  48  m, t, p            Argon2id memory (KiB), passes, lanes: u32 LE each
//!  60  nonce              24 bytes, fresh for every write
//! ciphertext || tag       XChaCha20-Poly1305 of the entries:
//!   u32 count, then per entry: u16 name length, name, u64 created (ms),
//!   u64 updated (ms), u32 value length, value (all LE)
//! ```
//!
//! The key id tells a wrong key from a damaged file. Writers hold an
//! exclusive `flock` on `<store>.lock`, readers a shared one; a write goes
//! to a temporary file that is synced, then renamed over the store, then
//! the directory is synced: a crash leaves the old store or the new one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Secret};

/// The longest name, in bytes.
pub const MAX_NAME: usize = 128;
/// The longest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// The largest store file read.
const MAX_FILE: u64 = 64 << 20;
/// The shortest passphrase a new store accepts.
const MIN_PASSPHRASE: usize = 8;

const MAGIC: &[u8; 14] = b"cordon-secrets";
const VERSION: u8 = 1;
const HEADER: usize = 84;
const TAG: usize = 16;

/// Argon2id cost for new passphrase stores: RFC 9106's second
/// recommended setting (64 MiB, three passes), with one lane.
const KDF_NEW: Kdf = Kdf {
    m_kib: 64 * 1024,
    t: 3,
    p: 1,
};

/// How a store is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// By a random key in a file (0600).
    KeyFile,
    /// By a key derived from a passphrase (Argon2id).
    Passphrase,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub enum Unlock {
    /// With the key in this file (created, 0600, when a new store is
    /// first written).
    KeyFile(PathBuf),
    /// With this passphrase.
    Passphrase(Secret),
}

/// A secret's name and times, as `list` shows them (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// When it was first set (ms since the epoch).
    pub created_ms: u64,
    /// When it was last set (ms since the epoch).
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kdf {
    m_kib: u32,
    t: u32,
    p: u32,
}

#[derive(Debug, Clone)]
struct Header {
    protection: Protection,
    key_id: [u8; 16],
    salt: [u8; 16],
    kdf: Kdf,
    nonce: [u8; 24],
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..14].copy_from_slice(MAGIC);
        h[14] = VERSION;
        h[15] = match self.protection {
            Protection::KeyFile => 1,
            Protection::Passphrase => 2,
        };
        h[16..32].copy_from_slice(&self.key_id);
        h[32..48].copy_from_slice(&self.salt);
        h[48..52].copy_from_slice(&self.kdf.m_kib.to_le_bytes());
        h[52..56].copy_from_slice(&self.kdf.t.to_le_bytes());
        h[56..60].copy_from_slice(&self.kdf.p.to_le_bytes());
        h[60..84].copy_from_slice(&self.nonce);
        h
    }

    fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER {
            return Err(format!("{} bytes: shorter than its header", b.len()));
        }
        if &b[..14] != MAGIC {
            return Err("not a cordon secrets store (wrong magic)".into());
        }
        if b[14] != VERSION {
            return Err(format!(
                "format version {} (this cordon reads {VERSION})",
                b[14]
            ));
        }
        let protection = match b[15] {
            1 => Protection::KeyFile,
            2 => Protection::Passphrase,
            n => return Err(format!("unknown protection {n}")),
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let kdf = Kdf {
            m_kib: u32_at(48),
            t: u32_at(52),
            p: u32_at(56),
        };
        // A crafted header must not make opening the store cost minutes or
        // gigabytes.
        let sane = (8 * 1024..=1024 * 1024).contains(&kdf.m_kib)
            && (1..=16).contains(&kdf.t)
            && (1..=8).contains(&kdf.p);
        if protection == Protection::Passphrase && !sane {
            return Err(format!(
                "Argon2id cost out of range (m {} KiB, t {}, p {})",
                kdf.m_kib, kdf.t, kdf.p
            ));
        }
        let mut h = Header {
            protection,
            key_id: [0; 16],
            salt: [0; 16],
            kdf,
            nonce: [0; 24],
        };
        h.key_id.copy_from_slice(&b[16..32]);
        h.salt.copy_from_slice(&b[32..48]);
        h.nonce.copy_from_slice(&b[60..84]);
        Ok(h)
    }
}

type Key = Zeroizing<[u8; 32]>;

struct Item {
    created_ms: u64,
    updated_ms: u64,
    value: Secret,
}

/// What an open store holds, and how to write it back.
struct Loaded {
    header: Header,
    key: Key,
    items: BTreeMap<String, Item>,
}

/// The embedded store at one path.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    unlock: Unlock,
}

impl Store {
    /// The store at `path`, opened with `unlock` when it is used. Nothing
    /// is read or created yet.
    pub fn new(path: impl Into<PathBuf>, unlock: Unlock) -> Store {
        Store {
            path: path.into(),
            unlock,
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the store at `path` is protected, or `None` when there is none.
    pub fn protection(path: &Path) -> Result<Option<Protection>, Error> {
        let mut f = match open_store_file(path)? {
            Some(f) => f,
            None => return Ok(None),
        };
        let mut head = [0u8; HEADER];
        let mut got = 0;
        while got < HEADER {
            match f.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(path.to_path_buf(), e)),
            }
        }
        Header::decode(&head[..got])
            .map(|h| Some(h.protection))
            .map_err(|why| Error::Corrupt(path.to_path_buf(), why))
    }

    /// The names and times of every secret, by name.
    pub fn list(&self) -> Result<Vec<Entry>, Error> {
        let _lock = self.lock(false)?;
        Ok(match self.load()? {
            None => Vec::new(),
            Some(l) => l
                .items
                .iter()
                .map(|(name, i)| Entry {
                    name: name.clone(),
                    created_ms: i.created_ms,
                    updated_ms: i.updated_ms,
                })
                .collect(),
        })
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Result<Secret, Error> {
        check_name(name)?;
        let _lock = self.lock(false)?;
        self.load()?
            .and_then(|mut l| l.items.remove(name))
            .map(|i| i.value)
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Sets secret `name` to `value`; whether it replaced one.
    pub fn set(&self, name: &str, value: Secret) -> Result<bool, Error> {
        check_name(name)?;
        if value.is_empty() {
            return Err(Error::Value("empty".into()));
        }
        if value.len() > MAX_VALUE {
            return Err(Error::Value(format!(
                "{} bytes, more than the {MAX_VALUE} a secret may hold",
                value.len()
            )));
        }
        let _lock = self.lock(true)?;
        let mut l = match self.load()? {
            Some(l) => l,
            None => self.fresh()?,
        };
        let now = now_ms();
        let replaced = match l.items.get_mut(name) {
            Some(i) => {
                i.value = value;
                i.updated_ms = now;
                true
            }
            None => {
                l.items.insert(
                    name.to_string(),
                    Item {
                        created_ms: now,
                        updated_ms: now,
                        value,
                    },
                );
                false
            }
        };
        self.save(&l)?;
        Ok(replaced)
    }

    /// Removes secret `name`.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let _lock = self.lock(true)?;
        let mut l = self
            .load()?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if l.items.remove(name).is_none() {
            return Err(Error::NotFound(name.to_string()));
        }
        self.save(&l)
    }

    /// Creates an empty store (protected as `unlock` says); refused when
    /// one exists.
    pub fn create(&self) -> Result<(), Error> {
        let _lock = self.lock(true)?;
        if open_store_file(&self.path)?.is_some() {
            return Err(Error::Protection(format!(
                "{} exists already",
                self.path.display()
            )));
        }
        let l = self.fresh()?;
        self.save(&l)
    }

    /// A new, empty store's contents and key.
    fn fresh(&self) -> Result<Loaded, Error> {
        let (protection, salt, kdf, key) = match &self.unlock {
            Unlock::KeyFile(p) => (
                Protection::KeyFile,
                [0; 16],
                Kdf {
                    m_kib: 0,
                    t: 0,
                    p: 0,
                },
                key_file(p, true)?,
            ),
            Unlock::Passphrase(pass) => {
                if std::str::from_utf8(pass.expose()).map_or(0, |s| s.chars().count())
                    < MIN_PASSPHRASE
                {
                    return Err(Error::Protection(format!(
                        "a new store's passphrase must be at least {MIN_PASSPHRASE} characters \
                         of UTF-8"
                    )));
                }
                let salt: [u8; 16] = random()?;
                let key = derive(pass, &salt, KDF_NEW)?;
                (Protection::Passphrase, salt, KDF_NEW, key)
            }
        };
        Ok(Loaded {
            header: Header {
                protection,
                key_id: key_id(&key),
                salt,
                kdf,
                nonce: [0; 24],
            },
            key,
            items: BTreeMap::new(),
        })
    }

    /// Takes the store's lock, creating its directory (0700) and lock file
    /// as needed; released when the file is dropped.
    fn lock(&self, exclusive: bool) -> Result<File, Error> {
        let dir = parent(&self.path);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Io(dir.to_path_buf(), e))?;
        let path = lock_path(&self.path);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::Io(path.clone(), e))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).map_err(|e| Error::Io(path, e.into()))?;
        Ok(f)
    }

    /// Reads and decrypts the store; `None` when there is none.
    fn load(&self) -> Result<Option<Loaded>, Error> {
        let Some(mut f) = open_store_file(&self.path)? else {
            return Ok(None);
        };
        let corrupt = |why: String| Error::Corrupt(self.path.clone(), why);
        let mut bytes = Vec::new();
        (&mut f)
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Io(self.path.clone(), e))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(corrupt(format!("larger than {MAX_FILE} bytes")));
        }
        let header = Header::decode(&bytes).map_err(corrupt)?;
        if bytes.len() < HEADER + TAG {
            return Err(corrupt(format!(
                "{} bytes: cut short after its header",
                bytes.len()
            )));
        }
        let key = match (&self.unlock, header.protection) {
            (Unlock::KeyFile(p), Protection::KeyFile) => key_file(p, false)?,
            (Unlock::Passphrase(pass), Protection::Passphrase) => {
                derive(pass, &header.salt, header.kdf)?
            }
            (Unlock::KeyFile(_), Protection::Passphrase) => {
                return Err(Error::Protection(format!(
                    "{} is protected by a passphrase",
                    self.path.display()
                )))
            }
            (Unlock::Passphrase(_), Protection::KeyFile) => {
                return Err(Error::Protection(format!(
                    "{} is protected by a key file, not a passphrase",
                    self.path.display()
                )))
            }
        };
        if key_id(&key) != header.key_id {
            return Err(Error::WrongKey(match &self.unlock {
                Unlock::KeyFile(p) => format!(
                    "the key in {} does not open {} (it was written with another key)",
                    p.display(),
                    self.path.display()
                ),
                Unlock::Passphrase(_) => {
                    format!("wrong passphrase for {}", self.path.display())
                }
            }));
        }
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&header.nonce),
                Payload {
                    msg: &bytes[HEADER..],
                    aad: &bytes[..HEADER],
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                corrupt("its contents fail authentication: changed or damaged on disk".into())
            })?;
        let items = decode_items(&plain).map_err(corrupt)?;
        Ok(Some(Loaded { header, key, items }))
    }

    /// Encrypts `l` under a fresh nonce and replaces the store with it.
    fn save(&self, l: &Loaded) -> Result<(), Error> {
        let mut header = l.header.clone();
        header.nonce = random()?;
        let head = header.encode();
        let plain = encode_items(&l.items);
        let cipher = XChaCha20Poly1305::new((&*l.key).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&header.nonce),
                Payload {
                    msg: &plain,
                    aad: &head,
                },
            )
            .map_err(|_| Error::Value("could not be encrypted".into()))?;
        let dir = parent(&self.path);
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Under the exclusive lock, a temporary file left here is a crashed
        // writer's.
        if let Ok(rd) = fs::read_dir(dir) {
            let prefix = format!(".{file_name}.");
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && n.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let tmp = temp_path(dir, &file_name)?;
        let written = (|| {
            let mut f = create_private(&tmp)?;
            f.write_all(&head)?;
            f.write_all(&sealed)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Io(self.path.clone(), e));
        }
        Ok(())
    }
}

/// Creates `path` for writing: new (never an existing file or a link's
/// target), 0600.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A fresh name for a temporary file in `dir`: `.STEM.RANDOM.tmp` (what
/// a crashed writer leaves is recognised by it).
fn temp_path(dir: &Path, stem: &str) -> Result<PathBuf, Error> {
    let suffix: [u8; 8] = random()?;
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(format!(".{stem}.{hex}.tmp")))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn lock_path(store: &Path) -> PathBuf {
    let mut s = store.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Opens the store file for reading after checking that it is a regular
/// file of the user's that nobody else can read; `None` when it does not
/// exist.
fn open_store_file(path: &Path) -> Result<Option<File>, Error> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Unsafe(
                path.to_path_buf(),
                "is a symbolic link".into(),
            ))
        }
        Err(e) => return Err(Error::Io(path.to_path_buf(), e)),
    };
    let meta = f.metadata().map_err(|e| Error::Io(path.to_path_buf(), e))?;
    check_private(path, &meta)?;
    Ok(Some(f))
}

fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    if !meta.file_type().is_file() {
        return Err(Error::Unsafe(
            path.to_path_buf(),
            "is not a regular file".into(),
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(Error::Unsafe(
            path.to_path_buf(),
            format!("belongs to uid {}, not to you (uid {euid})", meta.uid()),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Unsafe(
            path.to_path_buf(),
            format!("is open to others (mode {mode:o}); hint: chmod 600 it"),
        ));
    }
    Ok(())
}

/// The key in key file `path`: 64 hex digits. With `create`, a missing
/// file is made with a new random key (0600, written whole, then linked
/// into place so that of two writers the first wins).
fn key_file(path: &Path, create: bool) -> Result<Key, Error> {
    let bad = |why: String| Error::KeyFile(path.to_path_buf(), why);
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(mut f) => {
            let meta = f.metadata().map_err(|e| Error::Io(path.to_path_buf(), e))?;
            check_private(path, &meta)?;
            let mut text = Zeroizing::new(String::new());
            (&mut f)
                .take(256)
                .read_to_string(&mut text)
                .map_err(|_| bad("is not text".into()))?;
            let digits = text.trim();
            if digits.len() != 64 {
                return Err(bad("is not 64 hex digits".into()));
            }
            let mut key = Zeroizing::new([0u8; 32]);
            for (i, k) in key.iter_mut().enumerate() {
                *k = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                    .map_err(|_| bad("is not 64 hex digits".into()))?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            let key = Zeroizing::new(random::<32>()?);
            let dir = parent(path);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::Io(dir.to_path_buf(), e))?;
            let tmp = temp_path(dir, "secrets-key")?;
            let mut hex = Zeroizing::new(String::with_capacity(65));
            for b in key.iter() {
                hex.push_str(&format!("{b:02x}"));
            }
            hex.push('\n');
            let written = (|| {
                let mut f = create_private(&tmp)?;
                f.write_all(hex.as_bytes())?;
                f.sync_all()?;
                fs::hard_link(&tmp, path)
            })();
            let _ = fs::remove_file(&tmp);
            match written {
                Ok(()) => Ok(key),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => key_file(path, false),
                Err(e) => Err(Error::Io(path.to_path_buf(), e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(bad(
            "is missing, and the store was written with it: restore it from a backup".into(),
        )),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::Unsafe(
            path.to_path_buf(),
            "is a symbolic link".into(),
        )),
        Err(e) => Err(Error::Io(path.to_path_buf(), e)),
    }
}

fn derive(pass: &Secret, salt: &[u8; 16], kdf: Kdf) -> Result<Key, Error> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| Error::Protection(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.expose(), salt, &mut *key)
        .map_err(|e| Error::Protection(format!("Argon2id: {e}")))?;
    Ok(key)
}

fn key_id(key: &Key) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"cordon-secrets key id v1\0");
    h.update(key.as_slice());
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits, `_`, `.` and
/// `-`, starting with a letter, digit or `_`.
fn check_name(name: &str) -> Result<(), Error> {
    let bad = |why| Err(Error::Name(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 128 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    if !name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return bad("must start with a letter, a digit or '_'");
    }
    Ok(())
}

fn encode_items(items: &BTreeMap<String, Item>) -> Zeroizing<Vec<u8>> {
    let size: usize = 4 + items
        .iter()
        .map(|(n, i)| 2 + n.len() + 8 + 8 + 4 + i.value.len())
        .sum::<usize>();
    // Sized up front: a reallocation would leave a copy behind unzeroized.
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (name, i) in items {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&i.created_ms.to_le_bytes());
        out.extend_from_slice(&i.updated_ms.to_le_bytes());
        out.extend_from_slice(&(i.value.len() as u32).to_le_bytes());
        out.extend_from_slice(i.value.expose());
    }
    out
}

fn decode_items(b: &[u8]) -> Result<BTreeMap<String, Item>, String> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("its entries end early".into());
            }
            let (a, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(a)
        }
        fn u16(&mut self) -> Result<u16, String> {
            let b = self.take(2)?;
            Ok(u16::from_le_bytes([b[0], b[1]]))
        }
        fn u32(&mut self) -> Result<u32, String> {
            let b = self.take(4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        fn u64(&mut self) -> Result<u64, String> {
            let b = self.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(u64::from_le_bytes(a))
        }
    }
    let mut r = Reader(b);
    let count = r.u32()?;
    let mut items = BTreeMap::new();
    for _ in 0..count {
        let n = usize::from(r.u16()?);
        let name = std::str::from_utf8(r.take(n)?)
            .map_err(|_| "a name is not UTF-8".to_string())?
            .to_string();
        check_name(&name).map_err(|e| e.to_string())?;
        let created_ms = r.u64()?;
        let updated_ms = r.u64()?;
        let len = r.u32()? as usize;
        if len == 0 || len > MAX_VALUE {
            return Err(format!("secret {name:?} has a value of {len} bytes"));
        }
        let value = Secret::new(r.take(len)?.to_vec());
        if items
            .insert(
                name.clone(),
                Item {
                    created_ms,
                    updated_ms,
                    value,
                },
            )
            .is_some()
        {
            return Err(format!("secret {name:?} appears twice"));
        }
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after its last entry", r.0.len()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests;
