//! Session records: one directory per session with a `session.json`.

use std::path::PathBuf;

use cordon_types::{ProjectMode, SessionId};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Lifecycle of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Set up and running (or its supervisor died without updating this).
    Running,
    /// The agent exited.
    Exited,
    /// The sandbox could not be set up; nothing ran.
    Failed,
    /// The supervisor died while the session ran (found by a later start).
    Crashed,
}

impl Status {
    /// The name used in records and the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Failed => "failed",
            Status::Crashed => "crashed",
        }
    }
}

/// Everything cordon remembers about a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The id.
    pub id: SessionId,
    /// Profile name.
    pub profile: String,
    /// The profile's risk tier, when it declares one.
    #[serde(default)]
    pub tier: Option<String>,
    /// The agent's executable and digests (none when it was not found).
    #[serde(default)]
    pub agent: Option<crate::trust::Identity>,
    /// The approval the session's tier needed, when it needed one.
    #[serde(default)]
    pub approval: Option<crate::approval::Granted>,
    /// Digest of the effective profile.
    pub profile_digest: String,
    /// Real path of the project.
    pub project: PathBuf,
    /// Project mode.
    pub mode: ProjectMode,
    /// The command, as text (lossy for non-UTF-8 arguments).
    pub command: Vec<String>,
    /// Start time, milliseconds since the epoch.
    pub started_ms: u64,
    /// End time, milliseconds since the epoch.
    pub ended_ms: Option<u64>,
    /// Lifecycle state.
    pub status: Status,
    /// Exit code (or 128 + signal).
    pub exit_code: Option<i32>,
    /// The killing signal, if any.
    pub signal: Option<i32>,
    /// Host pid of the supervisor (`cordon run`).
    pub supervisor_pid: u32,
    /// Host pid of the sandbox's init.
    pub sandbox_pid: Option<i32>,
    /// Environment variables withheld (names only).
    pub env_withheld: Vec<String>,
    /// Number of hidden project paths.
    pub hidden_paths: usize,
    /// Placeholders cordon created in the overlay's upper layer (not changes).
    pub placeholders: Vec<PathBuf>,
    /// Protected project paths in force for this session (`apply` refuses them).
    #[serde(default)]
    pub protected: Vec<PathBuf>,
    /// Protected paths the agent created in rw mode, moved out of the project.
    pub quarantined: Vec<PathBuf>,
    /// Why setup failed, if it did.
    pub error: Option<String>,
    /// When `cordon apply` wrote the overlay back, ms since the epoch.
    pub applied_ms: Option<u64>,
    /// Warnings raised while running.
    pub warnings: Vec<String>,
    /// Where the session's audit log ended when it was closed.
    #[serde(default)]
    pub audit_head: Option<crate::audit::Head>,
    /// Why a detection rule contained the session, if one did.
    #[serde(default)]
    pub contained: Option<String>,
    /// The detection findings, one line each.
    #[serde(default)]
    pub findings: Vec<String>,
    /// The sandbox's own cgroup (v2), when the user's cgroup is delegated;
    /// removed when the session ends.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// The sessions directory, and its registry (opened on first use, then
/// kept: one connection per process).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    registry: std::sync::Arc<std::sync::Mutex<Option<crate::registry::Registry>>>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The record of a running session (as launched).
const RUNNING: &str = "session.json";
/// The record of an ended session; preferred when present.
const FINAL: &str = "final.json";

impl Store {
    /// A store rooted at `root` (normally `Dirs::sessions()`).
    pub fn new(root: PathBuf) -> Store {
        Store {
            root,
            registry: Default::default(),
        }
    }

    /// Runs `f` on the registry, opening it the first time.
    pub fn with_registry<T>(
        &self,
        f: impl FnOnce(&crate::registry::Registry) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut g = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let reg = match g.take() {
            Some(r) => r,
            None => crate::registry::Registry::open(self)?,
        };
        let r = f(&reg);
        *g = Some(reg);
        r
    }

    /// The sessions directory.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The directory of a session.
    pub fn dir(&self, id: &SessionId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Creates a fresh session directory (0700) and returns its id.
    pub fn create(&self) -> Result<SessionId, Error> {
        crate::dirs::create_private_dir(&self.root)?;
        for _ in 0..8 {
            let mut rnd = [0u8; 4];
            rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::empty())
                .map_err(|e| Error::io("read random bytes", e.into()))?;
            let id = SessionId::new(now_ms() / 1000, u32::from_le_bytes(rnd));
            let dir = self.dir(&id);
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
            }
        }
        Err(Error::Usage(
            "could not allocate a unique session id".into(),
        ))
    }

    /// Writes the record atomically (temp file + rename): `session.json`
    /// while the session runs, `final.json` once it has ended (and for any
    /// later update). Two names, because ext4 writes a file's data out when
    /// it is renamed over an existing one (`auto_da_alloc`), which would put
    /// a disk write on every session's exit path. Then its row in the
    /// registry.
    pub fn save(&self, rec: &Record) -> Result<(), Error> {
        self.save_file(rec)?;
        self.with_registry(|r| r.save(rec))
    }

    fn save_file(&self, rec: &Record) -> Result<(), Error> {
        let name = if rec.status == Status::Running {
            RUNNING
        } else {
            FINAL
        };
        let dir = self.dir(&rec.id);
        let tmp = dir.join(format!(".{name}.tmp"));
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::io("encode session record", std::io::Error::other(e)))?;
        std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, dir.join(name)))
            .map_err(|e| Error::io(format!("write {}", dir.join(name).display()), e))
    }

    /// Reads a session's record (the final one when the session has ended).
    pub fn load(&self, id: &SessionId) -> Result<Record, Error> {
        let dir = self.dir(id);
        let (path, data) = match std::fs::read(dir.join(FINAL)) {
            Ok(data) => (dir.join(FINAL), data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let path = dir.join(RUNNING);
                let data = std::fs::read(&path)
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                (path, data)
            }
            Err(e) => return Err(Error::io(format!("read {}", dir.join(FINAL).display()), e)),
        };
        serde_json::from_slice(&data).map_err(|e| Error::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// All session ids, oldest first.
    pub fn ids(&self) -> Result<Vec<SessionId>, Error> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", self.root.display()), e)),
        };
        let mut ids: Vec<SessionId> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Finds a session by full id, unique prefix, unique random suffix, or
    /// `last` (the newest).
    pub fn find(&self, query: &str) -> Result<SessionId, Error> {
        if query.is_empty() {
            return Err(Error::Usage("empty session id".into()));
        }
        let ids = self.ids()?;
        if query == "last" {
            let newest = ids
                .last()
                .ok_or_else(|| Error::NotFound("there are no sessions yet".into()))?;
            // Ids order by the second they were made in; within one second
            // the records' start times decide.
            let second = newest.as_str().get(..15).unwrap_or(newest.as_str());
            return Ok(ids
                .iter()
                .filter(|id| id.as_str().starts_with(second))
                .max_by_key(|id| {
                    self.load(id).map_or((0, id.as_str().to_owned()), |r| {
                        (r.started_ms, id.as_str().to_owned())
                    })
                })
                .unwrap_or(newest)
                .clone());
        }
        let matches: Vec<&SessionId> = ids
            .iter()
            .filter(|id| id.as_str().starts_with(query) || id.as_str().ends_with(query))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!(
                "no session matches {query:?} (sessions are the directories in {})",
                self.root.display()
            ))),
            many => Err(Error::Usage(format!(
                "{query:?} matches {} sessions ({}...); give more characters",
                many.len(),
                many.iter()
                    .take(3)
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

impl Store {
    /// Every readable session record (damaged ones are skipped).
    pub fn records(&self) -> Result<Vec<Record>, Error> {
        Ok(self
            .ids()?
            .iter()
            .filter_map(|id| self.load(id).ok())
            .collect())
    }
}

impl Store {
    /// Takes the session's lock (a `flock` on its directory), held by the
    /// supervisor for as long as the session runs (released by the kernel
    /// when it exits, however it dies).
    pub fn lock(&self, id: &SessionId) -> Result<std::os::fd::OwnedFd, Error> {
        use rustix::fs::{FlockOperation, Mode, OFlags};
        let path = self.dir(id);
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("open {}", path.display()), e.into()))?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| Error::io(format!("lock {}", path.display()), e.into()))?;
        Ok(fd)
    }

    /// Whether a supervisor still holds the session (its lock is taken).
    pub fn is_live(&self, id: &SessionId) -> bool {
        matches!(self.lock(id), Err(Error::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: SessionId) -> Record {
        Record {
            id,
            profile: "default".into(),
            tier: None,
            agent: None,
            approval: None,
            profile_digest: "sha256:0".into(),
            project: "/p".into(),
            mode: ProjectMode::Ro,
            command: vec!["true".into()],
            started_ms: 1,
            ended_ms: None,
            status: Status::Running,
            exit_code: None,
            signal: None,
            supervisor_pid: 1,
            sandbox_pid: None,
            env_withheld: vec![],
            hidden_paths: 0,
            placeholders: vec![],
            protected: vec![],
            quarantined: vec![],
            error: None,
            applied_ms: None,
            warnings: vec![],
            audit_head: None,
            contained: None,
            findings: vec![],
            cgroup: None,
        }
    }

    #[test]
    fn create_save_load_and_find() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path().join("sessions"));
        let a = store.create().unwrap();
        store.save(&record(a.clone())).unwrap();
        assert_eq!(store.load(&a).unwrap(), record(a.clone()));
        assert_eq!(store.find("last").unwrap(), a);
        assert_eq!(store.find(&a.as_str()[16..]).unwrap(), a);
        assert!(matches!(store.find("zzz"), Err(Error::NotFound(_))));
        std::fs::write(store.dir(&a).join("session.json"), b"{").unwrap();
        assert!(matches!(store.load(&a), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn the_final_record_wins_over_the_running_one() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path().join("sessions"));
        let a = store.create().unwrap();
        let mut rec = record(a.clone());
        store.save(&rec).unwrap();
        rec.status = Status::Exited;
        rec.exit_code = Some(3);
        store.save(&rec).unwrap();
        assert_eq!(store.load(&a).unwrap(), rec);
        assert!(store.dir(&a).join("session.json").exists());
        rec.applied_ms = Some(9);
        store.save(&rec).unwrap();
        assert_eq!(store.load(&a).unwrap().applied_ms, Some(9));
    }
}
