//! The session's secrets broker: the Vault or OpenBao server it logged in
//! to, the tokens made for it, and the record of both.
//!
//! * Every token is written to the session's `leases.json` (accessor and
//!   server, never the token) as soon as it exists, before it is used: a
//!   crash leaves the record the next `cordon run` revokes from.
//! * A token cordon logged in for (JWT or AppRole) can only be revoked by
//!   itself, so it is also kept, encrypted, in `leases.store` in the state
//!   directory (the same protection as cordon's secrets store, under its
//!   own key file, `leases.key`), until it is revoked. Whoever can read
//!   the state directory can already sign a JWT login with the host key
//!   there; the sandbox sees neither.
//! * Tokens are renewed while the session runs and revoked at its end.
//! * Secrets fetched on first use are fetched here; issuance, fetches and
//!   revocations are audit records (names and accessors, never values).
//!   Records made before the agent starts wait for the audit log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cordon_audit::Event;

use crate::vault::{save_leases, Lease, Vault};
use crate::Error;

/// Where a record goes.
enum Sink {
    /// Not yet: the agent has not started.
    Pending(Vec<Event>),
    /// The session's audit log.
    Attached(Arc<crate::detection::Recorder>),
}

/// A session's secrets broker.
pub struct Broker {
    /// The session's directory (its `leases.json`).
    dir: PathBuf,
    /// cordon's state directory (the lease store).
    state: PathBuf,
    vault: OnceLock<Vault>,
    leases: Mutex<Vec<Lease>>,
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("dir", &self.dir)
            .field("vault", &self.vault.get())
            .finish_non_exhaustive()
    }
}

/// The store of login tokens kept for crash recovery.
pub(crate) fn lease_store(state: &Path) -> cordon_secrets::Store {
    cordon_secrets::Store::new(
        state.join("leases.store"),
        cordon_secrets::Unlock::KeyFile(state.join("leases.key")),
    )
}

impl Broker {
    /// The broker of the session whose directory is `dir`.
    pub fn new(dir: &Path, state: &Path) -> Arc<Broker> {
        Arc::new(Broker {
            dir: dir.to_path_buf(),
            state: state.to_path_buf(),
            vault: OnceLock::new(),
            leases: Mutex::new(Vec::new()),
            sink: Mutex::new(Sink::Pending(Vec::new())),
        })
    }

    /// The server, once logged in.
    pub fn vault(&self) -> Option<&Vault> {
        self.vault.get()
    }

    /// Sets the server it logged in to; its login token, if any, becomes
    /// the session's first lease (revoking it revokes every token it
    /// made).
    pub(crate) fn connect(&self, vault: Vault) -> Result<&Vault, Error> {
        if let Some(login) = vault.login.clone() {
            self.add_lease(login, Some(&vault))
                .map_err(|e| Error::Refused {
                    message: format!("the Vault login token cannot be recorded: {e}"),
                    hint: "check cordon's state directory".into(),
                })?;
        }
        Ok(self.vault.get_or_init(|| vault))
    }

    /// Records `lease` (in `leases.json`, and, for the token of a `login`,
    /// which only that token can revoke, the token in the lease store)
    /// before the token is used; if it cannot be recorded, it is revoked
    /// at once and never used.
    pub(crate) fn add_lease(&self, mut lease: Lease, login: Option<&Vault>) -> Result<(), String> {
        let kept = match login {
            Some(v) => lease_store(&self.state)
                .set(
                    &lease.accessor,
                    cordon_secrets::Secret::new(v.token().as_bytes().to_vec()),
                )
                .map_err(|e| format!("the lease store: {e}")),
            None => Ok(false),
        };
        lease.sealed = login.is_some();
        let saved = kept.and_then(|_| {
            let mut list = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            list.push(lease.clone());
            save_leases(&self.dir, &list).map_err(|e| {
                list.pop();
                e.to_string()
            })
        });
        if let Err(e) = saved {
            let revoked = match login {
                Some(v) => v.revoke_self(),
                None => self
                    .vault
                    .get()
                    .ok_or_else(|| "no server".to_string())
                    .and_then(|v| v.revoke_lease(&lease)),
            };
            self.record(crate::audit::lease(
                &lease,
                revoked.as_ref().copied().map_err(String::as_str),
                false,
            ));
            return Err(e);
        }
        self.record(crate::audit::lease(&lease, Ok(()), true));
        Ok(())
    }

    /// The session's leases, as recorded.
    pub fn leases(&self) -> Vec<Lease> {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes `ev` to the audit log, or keeps it until the log is
    /// attached.
    pub(crate) fn record(&self, ev: Event) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *sink {
            Sink::Pending(events) => events.push(ev),
            Sink::Attached(audit) => audit.append(&ev),
        }
    }

    /// From now on records go to `audit`; those made so far are written.
    pub fn attach(&self, audit: Arc<crate::detection::Recorder>) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Sink::Pending(events) = &*sink {
            for ev in events {
                audit.append(ev);
            }
        }
        *sink = Sink::Attached(audit);
    }

    /// Revokes every token of the session (after a login, revoking the
    /// login token revokes the tokens it made); returns a warning per
    /// token that could not be.
    pub fn revoke_all(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(v) = self.vault.get() else {
            return warnings;
        };
        let mut leases = self.leases();
        if leases.is_empty() {
            return warnings;
        }
        let all_gone = v.login.is_some() && v.revoke_self().is_ok();
        for l in leases.iter_mut().filter(|l| !l.revoked) {
            let result = if all_gone { Ok(()) } else { v.revoke_lease(l) };
            self.record(crate::audit::lease(
                l,
                result.as_ref().map(|_| ()).map_err(String::as_str),
                false,
            ));
            match result {
                Ok(()) => {
                    l.revoked = true;
                    if l.sealed {
                        let _ = lease_store(&self.state).remove(&l.accessor);
                    }
                }
                Err(e) => warnings.push(format!(
                    "the token of the secret {} could not be revoked ({e}); the next cordon run \
                     tries again",
                    l.name
                )),
            }
        }
        // Merged into the list as it is now: a lease recorded meanwhile (a
        // fetch in flight) stays on it, and is revoked by the next call.
        let mut list = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        for l in list.iter_mut() {
            let done = leases
                .iter()
                .any(|r| r.revoked && r.accessor == l.accessor && r.lease_id == l.lease_id);
            if done {
                l.revoked = true;
            }
        }
        if let Err(e) = save_leases(&self.dir, &list) {
            warnings.push(e.to_string());
        }
        warnings
    }
}
