//! cordon sessions: from a profile and a command line to a running sandbox,
//! and what is left afterwards.
//!
//! * [`dirs`]: XDG state and config directories.
//! * [`profiles`]: profile lookup (user directory, then built-ins).
//! * [`layout`]: turns an effective profile into a sandbox specification —
//!   the system view, the fake home, the project, protected and hidden paths.
//! * [`etc`]: the curated `/etc`, copied once per state of the host.
//! * [`run`]: creates the session record, launches, records the outcome.
//! * [`overlay`]: `cordon diff` / `cordon apply` over an overlay's upper layer.
//! * [`doctor`]: which layers and profiles work on this host.
//!
//! Non-goals: no kernel work here (that is `cordon-sandbox`), no policy
//! decisions beyond what the profile says (that is `cordon-policy`).
//! Threat notes: everything under a session directory was written by the
//! agent (the overlay's upper layer) or by us; `overlay` treats the former as
//! untrusted — it never follows its symlinks and refuses protected paths.
#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod blocklist;
pub mod broker;
pub mod control;
pub mod detection;
pub mod dirs;
pub mod doctor;
pub mod drill;
pub mod etc;
pub mod evidence;
pub mod filewatch;
pub mod inspect;
pub mod layout;
pub mod org;
pub mod overlay;
pub mod profiles;
pub mod provenance;
pub mod record;
pub mod registry;
pub mod run;
pub mod scan;
pub mod trust;
pub mod vault;

use std::path::PathBuf;

pub use dirs::Dirs;
pub use record::{Record, Status, Store};

/// Errors of the session layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user.
    #[error("{0}")]
    Usage(String),
    /// A session or file that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request cordon refuses for safety, with the way out.
    #[error("{message}\nhint: {hint}")]
    Refused {
        /// What was refused.
        message: String,
        /// What to do instead.
        hint: String,
    },
    /// The profile could not be resolved.
    #[error(transparent)]
    Profile(#[from] cordon_policy::ProfileError),
    /// The sandbox could not be started.
    #[error(transparent)]
    Launch(#[from] cordon_sandbox::LaunchError),
    /// The audit record cannot be kept (an unusable host key, a log that
    /// cannot be written): the session does not run without one.
    #[error("audit: {0}")]
    Audit(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A state file is damaged.
    #[error("{}: damaged: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
