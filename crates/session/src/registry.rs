//! The session registry: one SQLite database (`sessions.sqlite`, next to
//! the sessions directory) with a row per session, so that `cordon ps` and
//! crash recovery read one table instead of every session's directory.
//!
//! The session's directory stays the full record (`session.json`,
//! `final.json`, its logs); every [`crate::Store::save`] writes the row as
//! well. A database made by this version imports the sessions recorded
//! before it existed, and one found damaged is moved aside and rebuilt the
//! same way: the registry is an index, never the only copy. It is written
//! ahead (WAL) with `synchronous = NORMAL`: a supervisor killed mid-write
//! (the case crash recovery is for) never damages it, and a commit does
//! not wait for the disk.
//!
//! Threat notes: the database lives in the state directory (0700) and is
//! created 0600; the sandbox never sees either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::record::{Record, Status};
use crate::Error;

/// The database's file name, in the state directory.
pub const FILE: &str = "sessions.sqlite";

/// The schema version this code writes (`PRAGMA user_version`).
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    profile        TEXT NOT NULL,
    tier           TEXT,
    project        TEXT NOT NULL,
    mode           TEXT NOT NULL,
    command        TEXT NOT NULL,
    supervisor_pid INTEGER NOT NULL,
    sandbox_pid    INTEGER,
    started_ms     INTEGER NOT NULL,
    ended_ms       INTEGER,
    status         TEXT NOT NULL,
    exit_code      INTEGER,
    signal         INTEGER,
    contained      TEXT,
    frozen         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_status ON sessions (status);
";

/// One session as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The session id.
    pub id: String,
    /// Profile name.
    pub profile: String,
    /// The profile's risk tier, when it declares one.
    pub tier: Option<String>,
    /// The project's real path.
    pub project: PathBuf,
    /// `ro`, `overlay` or `rw`.
    pub mode: String,
    /// The command line.
    pub command: Vec<String>,
    /// Host pid of the supervisor (`cordon run`).
    pub supervisor_pid: u32,
    /// Host pid of the sandbox's init.
    pub sandbox_pid: Option<i32>,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// End, ms since the epoch.
    pub ended_ms: Option<u64>,
    /// `running`, `exited`, `failed` or `crashed`.
    pub status: String,
    /// The agent's exit status.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Why the session was contained, when it was.
    pub contained: Option<String>,
    /// Whether its processes are frozen (contained and not resumed).
    pub frozen: bool,
}

/// An open registry.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
}

fn db_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::io(
        format!("session registry {}", path.display()),
        std::io::Error::other(e),
    )
}

impl Registry {
    /// The registry of the sessions kept in `sessions` (its file is
    /// `sessions.sqlite` beside that directory).
    pub fn path_for(sessions: &Path) -> PathBuf {
        sessions.with_file_name(FILE)
    }

    /// Opens (creating, 0600) the registry of `store`; a new one imports the
    /// sessions already recorded, and a damaged one is moved aside (to
    /// `sessions.sqlite.damaged-MS`) and rebuilt. (`Store::with_registry`
    /// keeps one open.)
    pub fn open(store: &crate::Store) -> Result<Registry, Error> {
        let path = Self::path_for(store.root());
        match Self::open_at(store, &path) {
            Err((true, _)) => {
                let aside = format!("{}.damaged-{}", path.display(), crate::record::now_ms());
                for ext in ["", "-wal", "-shm"] {
                    let from = format!("{}{ext}", path.display());
                    let _ = std::fs::rename(from, format!("{aside}{ext}"));
                }
                Self::open_at(store, &path).map_err(|(_, e)| e)
            }
            other => other.map_err(|(_, e)| e),
        }
    }

    /// Opens the registry at `path`; an error says whether the file is
    /// damaged (`true`: not a database, or corrupt).
    fn open_at(store: &crate::Store, path: &Path) -> Result<Registry, (bool, Error)> {
        let sql = |e: rusqlite::Error| {
            let damaged = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            );
            (damaged, db_err(path, e))
        };
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
                .map_err(|e| (false, Error::io(format!("open {}", path.display()), e)))?;
        }
        let conn = Connection::open(path).map_err(sql)?;
        let setup = || -> rusqlite::Result<bool> {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version >= VERSION {
                // Reads the table: a damaged file says so here.
                conn.query_row("SELECT count(*) FROM sessions", [], |_| Ok(()))?;
                return Ok(false);
            }
            // Two cordons may create it at once: one makes the table, the
            // other sees it made.
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version >= VERSION {
                conn.execute_batch("COMMIT")?;
                return Ok(false);
            }
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", VERSION)?;
            Ok(true)
        };
        let created = setup().map_err(sql)?;
        let reg = Registry { conn };
        if created {
            let imported = store
                .records()
                .and_then(|recs| recs.iter().try_for_each(|r| reg.put(r, path)));
            let end = if imported.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            reg.conn.execute_batch(end).map_err(sql)?;
            imported.map_err(|e| (false, e))?;
        }
        Ok(reg)
    }

    fn put(&self, r: &Record, path: &Path) -> Result<(), Error> {
        let command = serde_json::to_string(&r.command)
            .map_err(|e| Error::io("encode a command line", std::io::Error::other(e)))?;
        self.conn
            .execute(
                "INSERT INTO sessions (id, profile, tier, project, mode, command, supervisor_pid,
                     sandbox_pid, started_ms, ended_ms, status, exit_code, signal, contained)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (id) DO UPDATE SET profile = ?2, tier = ?3, project = ?4, mode = ?5,
                     command = ?6, supervisor_pid = ?7, sandbox_pid = ?8, started_ms = ?9,
                     ended_ms = ?10, status = ?11, exit_code = ?12, signal = ?13,
                     contained = ?14,
                     frozen = CASE WHEN ?11 = 'running' THEN frozen ELSE 0 END",
                params![
                    r.id.as_str(),
                    r.profile,
                    r.tier,
                    r.project.to_string_lossy(),
                    r.mode.as_str(),
                    command,
                    r.supervisor_pid,
                    r.sandbox_pid,
                    r.started_ms as i64,
                    r.ended_ms.map(|v| v as i64),
                    r.status.as_str(),
                    r.exit_code,
                    r.signal,
                    r.contained,
                ],
            )
            .map_err(|e| db_err(path, e))?;
        Ok(())
    }

    /// Writes `r`'s row.
    pub fn save(&self, r: &Record) -> Result<(), Error> {
        let path = self.path();
        self.put(r, &path)
    }

    /// Marks a running session frozen or thawed.
    pub fn set_frozen(&self, id: &str, frozen: bool) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE sessions SET frozen = ?2 WHERE id = ?1",
                params![id, frozen],
            )
            .map_err(|e| db_err(&self.path(), e))?;
        Ok(())
    }

    /// Every session, oldest first; only those still marked running with
    /// `running_only`.
    pub fn list(&self, running_only: bool) -> Result<Vec<Entry>, Error> {
        let sql = if running_only {
            "SELECT * FROM sessions WHERE status = 'running' ORDER BY started_ms, id"
        } else {
            "SELECT * FROM sessions ORDER BY started_ms, id"
        };
        let path = self.path();
        let mut stmt = self.conn.prepare(sql).map_err(|e| db_err(&path, e))?;
        let rows = stmt
            .query_map([], entry)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Entry>>>())
            .map_err(|e| db_err(&path, e))?;
        Ok(rows)
    }

    /// One session's row.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, Error> {
        self.conn
            .query_row("SELECT * FROM sessions WHERE id = ?1", [id], entry)
            .optional()
            .map_err(|e| db_err(&self.path(), e))
    }

    fn path(&self) -> PathBuf {
        self.conn.path().map(PathBuf::from).unwrap_or_default()
    }
}

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let command: String = row.get("command")?;
    let project: String = row.get("project")?;
    Ok(Entry {
        id: row.get("id")?,
        profile: row.get("profile")?,
        tier: row.get("tier")?,
        project: PathBuf::from(project),
        mode: row.get("mode")?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        supervisor_pid: row.get("supervisor_pid")?,
        sandbox_pid: row.get("sandbox_pid")?,
        started_ms: row.get::<_, i64>("started_ms")? as u64,
        ended_ms: row.get::<_, Option<i64>>("ended_ms")?.map(|v| v as u64),
        status: row.get("status")?,
        exit_code: row.get("exit_code")?,
        signal: row.get("signal")?,
        contained: row.get("contained")?,
        frozen: row.get("frozen")?,
    })
}

/// Marks the sessions whose supervisor died while they ran (`crashed`),
/// in their record and the registry. Returns a notice per session marked.
pub fn mark_dead(store: &crate::Store) -> Result<Vec<String>, Error> {
    let mut notices = Vec::new();
    for e in store.with_registry(|r| r.list(true))? {
        let Ok(id) = e.id.parse::<cordon_types::SessionId>() else {
            continue;
        };
        if store.is_live(&id) {
            continue;
        }
        let Ok(mut rec) = store.load(&id) else {
            continue;
        };
        if rec.status != Status::Running {
            store.with_registry(|r| r.save(&rec))?;
            continue;
        }
        // Its sandbox died with the supervisor (init's parent-death
        // signal); the cgroup it was in is left empty. Gone already, or
        // not a sandbox's cgroup (a record edited to name another): left.
        match rec
            .cgroup
            .as_deref()
            .filter(|d| d.exists())
            .map(cordon_sandbox::cgroup::Cgroup::named)
        {
            Some(Ok(cg)) => {
                if let Err(e) = crate::run::remove_cgroup(cg) {
                    notices.push(e);
                }
            }
            Some(Err(e)) => notices.push(format!("session {id}'s record: {e}; left as it is")),
            None => {}
        }
        rec.status = Status::Crashed;
        rec.error = Some(
            "cordon's supervisor died while the session ran (killed, or the machine went down); \
             its sandbox died with it"
                .into(),
        );
        store.save(&rec)?;
        notices.push(format!(
            "session {id} ended without its supervisor (crashed); marked it, see `cordon show {id}`"
        ));
    }
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn rows_follow_saves_and_old_sessions_are_imported() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path().join("sessions"));
        // A session recorded before the registry existed.
        let old = store.create().unwrap();
        let mut rec = crate::record::tests::record(old.clone());
        rec.status = Status::Exited;
        rec.exit_code = Some(3);
        std::fs::write(
            store.dir(&old).join("final.json"),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        let reg = Registry::open(&store).unwrap();
        let rows = reg.list(false).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, old.as_str());
        assert_eq!(rows[0].exit_code, Some(3));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Registry::path_for(store.root()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let new = store.create().unwrap();
        let mut rec = crate::record::tests::record(new.clone());
        rec.tier = Some("approved".into());
        store.save(&rec).unwrap();
        let running = reg.list(true).unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].tier.as_deref(), Some("approved"));
        reg.set_frozen(new.as_str(), true).unwrap();
        assert!(reg.get(new.as_str()).unwrap().unwrap().frozen);
        // Nothing holds the new session's lock: its supervisor is "dead".
        let notices = mark_dead(&store).unwrap();
        assert_eq!(notices.len(), 1, "{notices:?}");
        let row = reg.get(new.as_str()).unwrap().unwrap();
        assert_eq!(row.status, "crashed");
        assert!(!row.frozen, "an ended session is not frozen");
        assert_eq!(store.load(&new).unwrap().status, Status::Crashed);
        // A live one (its lock held) is left alone.
        let live = store.create().unwrap();
        store
            .save(&crate::record::tests::record(live.clone()))
            .unwrap();
        let _lock = store.lock(&live).unwrap();
        assert!(mark_dead(&store).unwrap().is_empty());
        assert_eq!(reg.get(live.as_str()).unwrap().unwrap().status, "running");
    }

    #[test]
    fn a_damaged_registry_is_moved_aside_and_rebuilt() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path().join("sessions"));
        let id = store.create().unwrap();
        store
            .save(&crate::record::tests::record(id.clone()))
            .unwrap();
        let path = Registry::path_for(store.root());
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let _ = std::fs::remove_file(format!("{}-wal", path.display()));
        let _ = std::fs::remove_file(format!("{}-shm", path.display()));
        let reg = Registry::open(&store).unwrap();
        assert_eq!(reg.list(false).unwrap()[0].id, id.as_str());
        let aside = std::fs::read_dir(t.path()).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("sessions.sqlite.damaged-")
        });
        assert!(aside, "the damaged file is kept aside");
    }
}
