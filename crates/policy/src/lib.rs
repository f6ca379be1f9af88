//! cordon's policy: profiles as data.
//!
//! A profile is TOML ([`profile`]); profiles can `extends` another one; the
//! result of resolution is an effective [`Profile`] with every rule's `reason`
//! kept, and a digest that identifies it in session records. This crate also
//! decides which environment variables reach the agent ([`env`]), which
//! project files are hidden ([`hide`]) and which hosts and addresses the
//! agent's traffic may reach ([`network`]).
//!
//! Non-goals: no IO. Profile text is handed in through a [`ProfileSource`];
//! the session layer reads files. Nothing here touches the kernel.
//! Threat notes: profile files are user input. Unknown keys and bad values are
//! errors with file, line and column; nothing is silently ignored.
#![forbid(unsafe_code)]

pub mod env;
pub mod glob;
pub mod hide;
pub mod network;
pub mod org;
pub mod profile;
pub mod secrets;
mod values;

pub use profile::{builtin_names, resolve, Profile, ProfileError, ProfileSource, SourceText};
pub use values::{Bare, ByteSize, EnvName, Glob, HomePath, HostPath, PathRule, RuleValue};
