//! The audit file writer: the supervisor's only way to write a session's
//! record. Records are sealed into the chain as they come, appended in
//! batches, signed by a checkpoint every [`Config::checkpoint_every`]
//! records or [`Config::checkpoint_interval`], and synced to disk by a
//! background thread (never on the caller's thread, so a slow disk does not
//! hold up the agent's traffic). [`AuditLog::close`] writes the closing
//! checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::chain::Chain;
use crate::event::{Context, Event};
use crate::key::HostKey;
use crate::now_ns;

/// When the file is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every [`Config::sync_interval`], by the background thread, and at
    /// close (the default).
    Interval,
    /// After every checkpoint, on the appending thread.
    Checkpoint,
    /// Only at close.
    Close,
}

/// How a log is written.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// A checkpoint after this many records.
    pub checkpoint_every: u64,
    /// A checkpoint at least this often while records come.
    pub checkpoint_interval: Duration,
    /// When to sync.
    pub sync: SyncPolicy,
    /// How often the background thread syncs (with [`SyncPolicy::Interval`]).
    pub sync_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(1),
            sync: SyncPolicy::Interval,
            sync_interval: Duration::from_millis(200),
        }
    }
}

/// Bytes gathered before they are written.
const BATCH: usize = 64 * 1024;

#[derive(Debug)]
struct Inner {
    file: File,
    chain: Chain,
    buf: Vec<u8>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    unsynced: bool,
    closed: bool,
    /// A write failed: the file may end in a partial record, so nothing
    /// more is written to it.
    failed: Option<io::ErrorKind>,
    lost: u64,
}

/// Why a record was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritten {
    /// The log is closed.
    Closed,
    /// A write failed; nothing more is written.
    Failed(io::ErrorKind),
}

/// One session's audit log.
#[derive(Debug)]
pub struct AuditLog {
    inner: Mutex<Inner>,
    /// The same file, for syncing without holding the lock.
    sync_file: File,
    key: Arc<HostKey>,
    cfg: Config,
}

/// Where a closed log ends: what `session.json` keeps so that a log cut
/// back to an earlier checkpoint is caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The last record's seq.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
}

impl AuditLog {
    /// Creates the log at `path` (which must not exist), private to the
    /// user, and starts its background thread.
    pub fn create(
        path: &Path,
        ctx: Context,
        key: Arc<HostKey>,
        cfg: Config,
    ) -> io::Result<Arc<AuditLog>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let sync_file = file.try_clone()?;
        let log = Arc::new(AuditLog {
            sync_file,
            inner: Mutex::new(Inner {
                file,
                chain: Chain::new(ctx),
                buf: Vec::with_capacity(BATCH + 4096),
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                unsynced: false,
                closed: false,
                failed: None,
                lost: 0,
            }),
            key,
            cfg,
        });
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("cordon-audit".into())
            .spawn(move || background(weak))?;
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state (records
        // are sealed into the buffer whole): keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seals `ev` into the chain. Never blocks on the disk for long: the
    /// write happens once a batch is full, the sync in the background.
    pub fn append(&self, ev: &Event) {
        let _ = self.seal(ev, false);
    }

    /// Like [`append`](Self::append), and returns the record's line
    /// (without its newline) for whoever watches the records, or why it
    /// was not written.
    pub fn append_seen(&self, ev: &Event) -> Result<Vec<u8>, Unwritten> {
        self.seal(ev, true)
    }

    fn seal(&self, ev: &Event, copy: bool) -> Result<Vec<u8>, Unwritten> {
        let mut g = self.lock();
        if let Some(kind) = g.failed {
            g.lost += 1;
            return Err(Unwritten::Failed(kind));
        }
        if g.closed {
            g.lost += 1;
            return Err(Unwritten::Closed);
        }
        let inner = &mut *g;
        let start = inner.buf.len();
        inner.chain.seal(ev, now_ns(), &mut inner.buf);
        let line = if copy {
            inner.buf[start..inner.buf.len() - 1].to_vec()
        } else {
            Vec::new()
        };
        inner.since_checkpoint += 1;
        if inner.since_checkpoint >= self.cfg.checkpoint_every {
            self.checkpoint(inner, false);
        } else if inner.buf.len() >= BATCH {
            write_out(inner);
        }
        // The batch this record was in may just have failed.
        match inner.failed {
            Some(kind) => Err(Unwritten::Failed(kind)),
            None => Ok(line),
        }
    }

    /// Writes what is waiting, a checkpoint if one is due, and syncs.
    pub fn tick(&self) {
        let sync = {
            let mut g = self.lock();
            if g.closed || g.failed.is_some() {
                return;
            }
            let inner = &mut *g;
            if inner.since_checkpoint > 0
                && inner.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval
            {
                self.checkpoint(inner, false);
            } else {
                write_out(inner);
            }
            self.cfg.sync == SyncPolicy::Interval && std::mem::take(&mut inner.unsynced)
        };
        if sync {
            // Outside the lock: appenders never wait for the disk. What was
            // written before this call is what it makes durable.
            let _ = self.sync_file.sync_data();
        }
    }

    fn checkpoint(&self, inner: &mut Inner, closing: bool) {
        inner
            .chain
            .checkpoint(&self.key, closing, now_ns(), &mut inner.buf);
        inner.since_checkpoint = 0;
        inner.last_checkpoint = Instant::now();
        write_out(inner);
        if self.cfg.sync == SyncPolicy::Checkpoint {
            let _ = inner.file.sync_data();
            inner.unsynced = false;
        }
    }

    /// Writes the closing checkpoint and syncs; later appends are counted
    /// as lost. Returns where the log ends.
    pub fn close(&self) -> io::Result<Head> {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(kind) = inner.failed {
            return Err(io::Error::new(
                kind,
                format!(
                    "the audit log could not be written ({} records lost)",
                    inner.lost
                ),
            ));
        }
        if !inner.closed {
            self.checkpoint(inner, true);
            inner.closed = true;
            if let Some(kind) = inner.failed {
                return Err(io::Error::new(
                    kind,
                    "the closing checkpoint could not be written",
                ));
            }
            inner.file.sync_all()?;
        }
        Ok(Head {
            seq: inner.chain.last_seq(),
            hash: inner.chain.head(),
        })
    }

    /// Records that could not be written (a full disk, or after close).
    pub fn lost(&self) -> u64 {
        self.lock().lost
    }

    /// Why writing stopped, if a write failed: nothing more is written.
    pub fn failed(&self) -> Option<io::ErrorKind> {
        self.lock().failed
    }

    /// The last record's seq and hash so far.
    pub fn head(&self) -> Head {
        let g = self.lock();
        Head {
            seq: g.chain.last_seq(),
            hash: g.chain.head(),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Not closed (a panic, an early return): keep every record sealed
        // so far; verify reports the log as not closed.
        let inner = self
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_out(inner);
    }
}

fn write_out(inner: &mut Inner) {
    if inner.buf.is_empty() || inner.failed.is_some() {
        inner.buf.clear();
        return;
    }
    match inner.file.write_all(&inner.buf) {
        Ok(()) => inner.unsynced = true,
        Err(e) => {
            inner.lost += inner.buf.iter().filter(|&&b| b == b'\n').count() as u64;
            inner.failed = Some(e.kind());
        }
    }
    inner.buf.clear();
}

fn background(log: Weak<AuditLog>) {
    let step = Duration::from_millis(100);
    loop {
        std::thread::sleep(step);
        let Some(log) = log.upgrade() else {
            return;
        };
        {
            let g = log.lock();
            if g.closed || g.failed.is_some() {
                return;
            }
        }
        log.tick();
    }
}
