//! cordon-audit: the tamper-evident record of a session.
//!
//! Events are shaped after OCSF 1.x classes ([`Event`], [`Class`]) and
//! sealed into a hash chain ([`Chain`]): one JSON object per line, each with
//! its `seq` and `prev`, the SHA-256 of the line before it. Every so often
//! a checkpoint signs the chain's head with the host's Ed25519 key
//! ([`HostKey`], made on first use, 0600 in the state directory); the last
//! line of a closed log is a closing checkpoint. [`verify`] checks a log
//! and names the first record that was inserted, deleted, reordered,
//! edited or cut off; a torn last line (a crash mid-write) is reported as
//! such, never accepted or dropped silently.
//!
//! The core ([`Chain`], [`verify`]) takes and returns bytes; [`AuditLog`]
//! is the file writer the supervisor uses. The supervisor, outside the
//! sandbox, is the only writer.
//!
//! What it does not do: it does not stop a process with the user's rights
//! from deleting or rewriting the whole file (that is what sinks off the
//! host are for); it proves whether what is there is what was written.
//! Records after the last checkpoint of a log whose writer died are chained
//! but not signed: they are reported as such.
//! The format is documented in docs/audit-format.md.

#![forbid(unsafe_code)]

mod chain;
mod event;
mod file;
pub mod http;
mod key;
pub mod rules;
pub mod ship;
mod verify;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub use chain::{hex, line_hash, line_seq, Chain, Checkpoint};
pub use event::{Class, Context, Event, Members, Process, Severity, OCSF_VERSION};
pub use file::{AuditLog, Config, Head, SyncPolicy, Unwritten};
pub use key::{parse_public, verify_signature, HostKey, KEY_FILE, PUB_FILE};
pub use verify::{verify, Problem, Report, Torn, Verdict};

/// Why the audit layer failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The host key is unusable.
    #[error("audit key {0}: {1}")]
    Key(PathBuf, String),
    /// No randomness for a new key.
    #[error("no randomness for a new audit key: {0}")]
    Random(String),
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
