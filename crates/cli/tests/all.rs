//! End-to-end tests of the `cordon` binary: real sandboxes, real clients,
//! run both as root and as an unprivileged uid (65534) via `setpriv`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
