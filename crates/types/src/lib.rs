//! Shared vocabulary of cordon.
//!
//! Plain data types used by every other crate: session identifiers, the project
//! mount modes and the stable reason codes that appear in CLI output, HTTP 403
//! bodies and audit events.
//!
//! Non-goals: no IO, no policy logic. Everything here is `serde` data and small
//! parsing helpers, so that embedders can depend on it without pulling in the
//! sandbox or the network stack.
#![forbid(unsafe_code)]

mod reason;
mod session;

pub use reason::ReasonCode;
pub use session::{civil_from_unix, ParseError, ProjectMode, SessionId};
