//! cordon's rootless Linux sandbox launcher — the only crate with `unsafe`.
//!
//! [`Prelaunch::start`] begins a sandbox before its spec exists;
//! [`Prelaunch::hand_over`] gives it the [`SandboxSpec`]; [`Launch::supervise`]
//! runs it until the agent exits ([`run`] does all three). The setup sequence,
//! in order (docs/sandbox.md mirrors it):
//!
//! 1. **Supervisor** (the calling process, which must be single-threaded at
//!    `start`): socketpair, then `clone` with `CLONE_NEWUSER | NEWNS | NEWPID |
//!    NEWIPC | NEWUTS` (`clone3` with `CLONE_INTO_CGROUP` where the user's
//!    cgroup is delegated: init is born in a cgroup of the sandbox's own,
//!    [`cgroup`]); later the spec, as JSON in a memfd.
//! 2. **Child = PID 1 of the new pid namespace**: `PR_SET_PDEATHSIG(SIGKILL)`,
//!    signals blocked, every inherited fd closed, uid/gid mapped to
//!    themselves, a network namespace of its own (overlapping the caller's
//!    work); then it waits for the spec, and makes its cgroup namespace
//!    once the spec is there (rooted in its own cgroup).
//! 3. **Root filesystem** ([`mounts`]): tmpfs root built from recursive
//!    read-only binds, fresh `/proc`, minimal `/dev`, tmpfs `/tmp` and fake
//!    home, the project (ro, overlay or rw), protected and hidden paths.
//! 4. **Namespaced setup**: when the spec asks, a TUN device as the default
//!    route (created before the new root hides `/dev/net/tun`) or the egress
//!    proxy's listening socket on `127.0.0.1`, handed to the supervisor;
//!    loopback up, hostname, a fresh session keyring.
//! 5. **Lockdown** ([`confine`]): nested user namespace (locks the mounts),
//!    rlimits, every capability dropped, `no_new_privs`, Landlock, and the
//!    seccomp filter last ([`seccomp`]). Init becomes non-dumpable.
//! 6. **Init** starts the agent (vfork-style clone: new session, own pty or
//!    inherited stdio, scrubbed environment, `execve`), reaps zombies and
//!    relays signals; when the agent exits, init kills and reaps everything
//!    else in the pid namespace, reports the status, and exits with it (or,
//!    holding descriptors for the supervisor, waits for its parent-death
//!    signal: [`Launch::go_holding`]).
//!
//! Any failing step aborts the launch with a [`StageError`] naming the stage;
//! nothing ever runs half-confined.
//!
//! Non-goals: this crate does not decide *what* to allow (that is the policy
//! and session layers) and does not filter network traffic (the sandbox's
//! network namespace has only loopback; the supervisor's egress engine in
//! `cordon-net` serves the listening socket). Threat notes: the supervisor runs
//! outside the sandbox with the user's privileges; the sandbox can only talk
//! to it through the socketpair, whose messages are parsed as untrusted JSON.

pub mod cgroup;
mod child;
mod confine;
mod exec_audit;
pub mod freeze;
mod mounts;
pub mod probe;
mod protocol;
mod pty;
pub mod seccomp;
pub mod spec;
mod supervise;
mod sys;

use std::io;

use serde::{Deserialize, Serialize};

pub use exec_audit::{exit_info_supported, ExecListener, Notice, MAX_ARGS, MAX_ARG_LEN};
pub use protocol::Msg;
pub use spec::{
    LandlockMode, LandlockSpec, Limits, Mount, SandboxSpec, SeccompSpec, Terminal, TunSpec,
};
pub use supervise::{
    run, with_relayed_signals_blocked, Event, Exit, Launch, LaunchError, Prelaunch,
};

/// A setup stage that failed, with the error and, when known, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{stage}: {what}: {message}{}", hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
pub struct StageError {
    /// Which stage (`userns`, `mounts`, `landlock`, `seccomp`, ...).
    pub stage: String,
    /// What was being done.
    pub what: String,
    /// The OS error text.
    pub message: String,
    /// The raw errno, when there was one.
    pub errno: Option<i32>,
    /// How to fix it, when known.
    pub hint: Option<String>,
}

impl StageError {
    pub(crate) fn new(stage: &str, what: impl Into<String>, err: io::Error) -> StageError {
        let errno = err.raw_os_error();
        let hint = errno.and_then(|e| default_hint(stage, e));
        StageError {
            stage: stage.to_owned(),
            what: what.into(),
            message: err.to_string(),
            errno,
            hint,
        }
    }

    pub(crate) fn with_hint(mut self, hint: &str) -> StageError {
        self.hint = Some(hint.to_owned());
        self
    }

    pub(crate) fn hint_if_noent(self, path: &std::path::Path) -> StageError {
        if self.errno == Some(libc::ENOENT) {
            let hint = format!("{} does not exist on this host; fix the path in the profile or on the command line", path.display());
            self.with_hint(&hint)
        } else {
            self
        }
    }
}

fn default_hint(stage: &str, errno: i32) -> Option<String> {
    match (stage, errno) {
        ("clone", libc::EPERM) | ("clone", libc::ENOSPC) | ("userns", libc::EPERM) => Some(
            "unprivileged user namespaces are blocked on this host (check \
             kernel.unprivileged_userns_clone, user.max_user_namespaces and \
             kernel.apparmor_restrict_unprivileged_userns); run `cordon doctor`"
                .into(),
        ),
        ("mounts", libc::EPERM) => {
            Some("the kernel refused a mount inside the user namespace; run `cordon doctor`".into())
        }
        _ => None,
    }
}
