//! The Vault or OpenBao server of `vault:` and `vault-token:` secrets:
//! logging in (a token from cordon's own environment, `[vault] token_env`,
//! default `VAULT_TOKEN`, which like every credential-looking variable
//! never reaches the sandbox; a JWT signed with the host key; or AppRole),
//! reading fields of KV secrets and of leased dynamic secrets, making,
//! renewing and revoking the session's tokens and leases, and revoking
//! what a session that died left behind. TLS is verified against the
//! system's roots and `[vault] ca_file`.

use std::sync::Arc;
use std::time::Duration;

use cordon_audit::http::{request, tls_config, Url};
use cordon_policy::profile::Profile;
use zeroize::Zeroizing;

use crate::Error;

/// How long one request to the server may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A server and the token to ask it with.
#[derive(Clone)]
pub struct Vault {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Zeroizing<String>,
    /// The variable of cordon's environment the token came from (token
    /// auth; empty after a login).
    pub(crate) token_env: String,
    /// The token cordon logged in for (JWT or AppRole): revoked at the
    /// end, and its children with it.
    pub login: Option<Lease>,
}

/// Who logs in with a JWT: the session and where the host key is.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The session's id (the JWT's subject).
    pub session: &'a str,
    /// cordon's state directory (the host key).
    pub state: &'a std::path::Path,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn refused(message: String, hint: &str) -> Error {
    Error::Refused {
        message,
        hint: hint.into(),
    }
}

impl Vault {
    /// The server `profile`'s `[vault]` names, with the token from cordon's
    /// environment.
    pub fn from_profile(
        profile: &Profile,
        home: &std::path::Path,
        login: Login<'_>,
    ) -> Result<Vault, Error> {
        let v = &profile.vault;
        let addr = v.addr.clone().ok_or_else(|| {
            refused(
                "the profile names vault: secrets, and no [vault] addr".into(),
                "set [vault] addr = \"https://vault.example:8200\" in the profile",
            )
        })?;
        let url = Url::parse(&format!("{addr}/v1/sys/health"))
            .map_err(|e| refused(format!("[vault] addr {addr}: {e}"), "fix [vault] addr"))?;
        let tls = if url.tls {
            let ca = v.ca_file.as_ref().map(|c| c.0.resolve(home));
            Some(
                tls_config(ca.as_deref())
                    .map_err(|e| refused(format!("[vault] {e}"), "fix [vault] ca_file"))?,
            )
        } else {
            None
        };
        match v.auth {
            cordon_policy::profile::VaultAuth::Jwt => {
                return Vault::jwt_login(profile, addr, tls, login)
            }
            cordon_policy::profile::VaultAuth::Approle => {
                return Vault::approle_login(profile, addr, tls)
            }
            cordon_policy::profile::VaultAuth::Token => {}
        }
        let token = std::env::var(&v.token_env).map_err(|_| {
            refused(
                format!(
                    "the profile names vault: secrets, and {} (the Vault token) is not set",
                    v.token_env
                ),
                &format!(
                    "set {} in the environment cordon runs in, or name another variable in \
                     [vault] token_env",
                    v.token_env
                ),
            )
        })?;
        let vault = Vault {
            addr,
            tls,
            token: Zeroizing::new(token),
            token_env: v.token_env.clone(),
            login: None,
        };
        // Checked now: a token the server refuses stops the session before
        // the agent runs, not at the first request that needs a secret.
        vault.get("auth/token/lookup-self").map_err(|e| {
            refused(
                format!("the Vault token in {} was refused: {e}", v.token_env),
                &format!("set {} to a valid token for {}", v.token_env, vault.addr),
            )
        })?;
        Ok(vault)
    }

    /// Logs in at the JWT auth method with a JWT signed for the session.
    fn jwt_login(
        profile: &Profile,
        addr: String,
        tls: Option<Arc<rustls::ClientConfig>>,
        login: Login<'_>,
    ) -> Result<Vault, Error> {
        let v = &profile.vault;
        let role = v.role.clone().ok_or_else(|| {
            refused(
                "[vault] auth = \"jwt\" needs the JWT auth method's role".into(),
                "set [vault] role in the profile",
            )
        })?;
        let key = crate::audit::host_key(login.state)?;
        let jwt = Zeroizing::new(session_jwt(&key, login.session, profile));
        let body = serde_json::json!({ "role": role, "jwt": *jwt });
        Vault::log_in(
            addr,
            tls,
            &v.jwt_mount,
            &body,
            &format!("[vault] login (role {role})"),
            "the JWT auth method must trust cordon's key (`cordon secret jwt-key` prints it) \
             and the role must accept audience \"cordon\"",
        )
    }

    /// Logs in at the AppRole auth method with the role id and secret id
    /// from cordon's environment.
    fn approle_login(
        profile: &Profile,
        addr: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Vault, Error> {
        let v = &profile.vault;
        let var = |name: &str| {
            std::env::var(name).map(Zeroizing::new).map_err(|_| {
                refused(
                    format!("[vault] auth = \"approle\" reads {name}, which is not set"),
                    &format!("set {name} in the environment cordon runs in"),
                )
            })
        };
        let role_id = var(&v.role_id_env)?;
        let secret_id = var(&v.secret_id_env)?;
        let body = serde_json::json!({ "role_id": *role_id, "secret_id": *secret_id });
        Vault::log_in(
            addr,
            tls,
            &v.approle_mount,
            &body,
            "[vault] login (AppRole)",
            "check the AppRole's role id and secret id",
        )
    }

    /// `POST /v1/auth/MOUNT/login` with `body`; the token it gives, as the
    /// session's login lease.
    fn log_in(
        addr: String,
        tls: Option<Arc<rustls::ClientConfig>>,
        mount: &str,
        body: &serde_json::Value,
        name: &str,
        hint: &str,
    ) -> Result<Vault, Error> {
        let url = Url::parse(&format!("{addr}/v1/auth/{mount}/login"))
            .map_err(|e| refused(e, "fix the [vault] mount"))?;
        let body = Zeroizing::new(body.to_string());
        let resp = request(
            "POST",
            &url,
            tls.as_ref(),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            TIMEOUT,
        )
        .map_err(|e| refused(format!("{addr}: {e}"), "check [vault] addr"))?;
        if !resp.ok() {
            return Err(refused(
                format!(
                    "the login at {addr}/v1/auth/{mount} failed: {}",
                    resp.describe()
                ),
                hint,
            ));
        }
        let doc: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| refused(format!("the login answer is not JSON: {e}"), hint))?;
        let (Some(token), Some(accessor)) = (
            doc["auth"]["client_token"].as_str(),
            doc["auth"]["accessor"].as_str(),
        ) else {
            return Err(refused("the login answer has no token".into(), hint));
        };
        Ok(Vault {
            addr: addr.clone(),
            tls,
            token: Zeroizing::new(token.to_string()),
            token_env: String::new(),
            login: Some(Lease {
                name: name.to_string(),
                addr,
                token_env: String::new(),
                accessor: accessor.to_string(),
                lease_id: String::new(),
                revoked: false,
                sealed: false,
            }),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The token it asks with.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Revokes the token cordon logged in with (its children with it).
    pub fn revoke_self(&self) -> Result<(), String> {
        self.post("auth/token/revoke-self", &serde_json::json!({}))
            .map(drop)
    }

    /// Field `field` of the secret at API path `path` (KV v2:
    /// `secret/data/NAME`; a KV v1 path, or a dynamic secret such as
    /// `database/creds/ROLE`, works too), and its lease id when the answer
    /// is leased.
    pub fn field(
        &self,
        path: &str,
        field: &str,
    ) -> Result<(Zeroizing<Vec<u8>>, Option<String>), String> {
        let resp = self.send("GET", path, None)?;
        match resp.status {
            200 => {}
            403 => return Err(format!("the token may not read {path} (HTTP 403)")),
            404 => return Err(format!("no secret at {path} (HTTP 404)")),
            _ => return Err(format!("reading {path}: {}", resp.describe())),
        }
        let doc: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("reading {path}: the answer is not JSON: {e}"))?;
        // KV v2 nests the secret's data under data.data; KV v1 has it at data.
        let data = match doc["data"].get("data") {
            Some(d) if d.is_object() => d,
            _ => &doc["data"],
        };
        let lease = doc["lease_id"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        match data.get(field) {
            Some(serde_json::Value::String(s)) => {
                Ok((Zeroizing::new(s.as_bytes().to_vec()), lease))
            }
            Some(_) => Err(format!("{path}: the field {field} is not a string")),
            None => Err(format!("{path}: no field {field}")),
        }
    }
}

/// How long a session's token lives between renewals.
pub const TOKEN_TTL_SECS: u64 = 30 * 60;

/// A token made for a session: what revoking it needs, never the token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The secret it stands behind.
    pub name: String,
    /// The server.
    pub addr: String,
    /// The variable of cordon's environment holding the token that made
    /// it (and can revoke it).
    pub token_env: String,
    /// Its accessor (names the token; cannot authenticate). Empty for a
    /// secret's lease.
    pub accessor: String,
    /// The lease of a dynamic secret (`database/creds/agent/...`): what
    /// renews and revokes it. Empty for a token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lease_id: String,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// Whether the token is kept in the lease store (a login token, which
    /// only itself can revoke).
    #[serde(default)]
    pub sealed: bool,
}

/// Where a session keeps its leases (outside the sandbox, like the rest
/// of its directory).
pub fn leases_path(session_dir: &std::path::Path) -> std::path::PathBuf {
    session_dir.join("leases.json")
}

/// Writes a session's leases (atomically: a crash leaves the old list or
/// the new one).
pub fn save_leases(session_dir: &std::path::Path, leases: &[Lease]) -> Result<(), Error> {
    let path = leases_path(session_dir);
    let tmp = session_dir.join(".leases.json.tmp");
    let data = serde_json::to_vec_pretty(leases)
        .map_err(|e| Error::io("encode the leases", std::io::Error::other(e)))?;
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

impl Vault {
    /// Makes a token for session `session` with `policies`, renewable,
    /// living [`TOKEN_TTL_SECS`]; returns it and its lease.
    pub fn session_token(
        &self,
        name: &str,
        token_env: &str,
        session: &str,
        policies: &[String],
    ) -> Result<(Zeroizing<String>, Lease), String> {
        let body = serde_json::json!({
            "policies": policies,
            "ttl": format!("{TOKEN_TTL_SECS}s"),
            "renewable": true,
            "display_name": format!("cordon-{session}"),
            "meta": { "cordon_session": session, "secret": name },
        });
        let doc = self.post("auth/token/create", &body)?;
        let token = doc["auth"]["client_token"]
            .as_str()
            .ok_or("the answer has no auth.client_token")?;
        let accessor = doc["auth"]["accessor"]
            .as_str()
            .ok_or("the answer has no auth.accessor")?;
        Ok((
            Zeroizing::new(token.to_string()),
            Lease {
                name: name.to_string(),
                addr: self.addr.clone(),
                token_env: token_env.to_string(),
                accessor: accessor.to_string(),
                lease_id: String::new(),
                revoked: false,
                sealed: false,
            },
        ))
    }

    /// Renews what `lease` names for another [`TOKEN_TTL_SECS`] (a secret's
    /// lease, or the token behind its accessor).
    pub fn renew(&self, lease: &Lease) -> Result<(), String> {
        let increment = format!("{TOKEN_TTL_SECS}s");
        if lease.lease_id.is_empty() {
            self.post(
                "auth/token/renew-accessor",
                &serde_json::json!({ "accessor": lease.accessor, "increment": increment }),
            )
        } else {
            self.post(
                "sys/leases/renew",
                &serde_json::json!({ "lease_id": lease.lease_id, "increment": increment }),
            )
        }
        .map(drop)
    }

    /// Revokes what `lease` names: a secret's lease, or the token behind
    /// its accessor (and its children). One already gone counts as
    /// revoked.
    pub fn revoke_lease(&self, lease: &Lease) -> Result<(), String> {
        if lease.lease_id.is_empty() {
            return self.revoke(&lease.accessor);
        }
        match self.post(
            "sys/leases/revoke",
            &serde_json::json!({ "lease_id": lease.lease_id }),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.contains("HTTP 400") && e.contains("invalid lease") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Vault::revoke_self`], where a token that has expired already
    /// counts as revoked.
    fn revoke_self_gone(&self) -> Result<(), String> {
        match self.revoke_self() {
            Err(e) if e.contains("HTTP 403") => Ok(()),
            r => r,
        }
    }

    /// Revokes the token behind `accessor` (and its children). A token that
    /// is already gone counts as revoked.
    pub fn revoke(&self, accessor: &str) -> Result<(), String> {
        match self.post(
            "auth/token/revoke-accessor",
            &serde_json::json!({ "accessor": accessor }),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.contains("HTTP 400") && e.contains("invalid accessor") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `METHOD /v1/PATH` with the token (and `body`, as JSON).
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<cordon_audit::http::Response, String> {
        let url = Url::parse(&format!("{}/v1/{path}", self.addr))?;
        let token = ("X-Vault-Token", self.token.as_str());
        let (headers, body): (&[(&str, &str)], Vec<u8>) = match body {
            Some(b) => (
                &[token, ("Content-Type", "application/json")],
                b.to_string().into_bytes(),
            ),
            None => (&[token], Vec::new()),
        };
        request(method, &url, self.tls.as_ref(), headers, &body, TIMEOUT)
            .map_err(|e| format!("{}: {e}", self.addr))
    }

    /// The JSON answer of a request that must succeed (`null` for none).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let resp = self.send(method, path, body)?;
        if !resp.ok() {
            return Err(format!("{path}: {}", resp.describe()));
        }
        if resp.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| format!("{path}: the answer is not JSON: {e}"))
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        self.call("POST", path, Some(body))
    }

    /// A server and token for revoking `lease` later (crash recovery): the
    /// token from the variable the lease names, trust from the system.
    fn for_lease(lease: &Lease, state: &std::path::Path) -> Result<Vault, String> {
        let token = if lease.sealed {
            let t = crate::broker::lease_store(state)
                .get(&lease.accessor)
                .map_err(|e| format!("the lease store: {e}"))?;
            String::from_utf8(t.expose().to_vec()).map_err(|_| "the kept token is not text")?
        } else if lease.token_env.is_empty() {
            return Err("no token was kept to revoke it with".into());
        } else {
            std::env::var(&lease.token_env).map_err(|_| {
                format!(
                    "{} is not set, so its token cannot be revoked",
                    lease.token_env
                )
            })?
        };
        let url = Url::parse(&format!("{}/v1/sys/health", lease.addr))?;
        let tls = if url.tls {
            Some(tls_config(None)?)
        } else {
            None
        };
        Ok(Vault {
            addr: lease.addr.clone(),
            tls,
            token: Zeroizing::new(token),
            token_env: lease.token_env.clone(),
            login: None,
        })
    }
}

/// Whether the server still knows `lease` (asked with the token that made
/// it): `Ok(true)` alive, `Ok(false)` revoked or expired; an error when the
/// server cannot be asked (no such token here, unreachable, refused).
pub fn lease_alive(lease: &Lease, state: &std::path::Path) -> Result<bool, String> {
    let mut parent = lease.clone();
    parent.sealed = false;
    let v = Vault::for_lease(&parent, state)?;
    let (path, body, gone) = if lease.lease_id.is_empty() {
        (
            "auth/token/lookup-accessor",
            serde_json::json!({ "accessor": lease.accessor }),
            "invalid accessor",
        )
    } else {
        (
            "sys/leases/lookup",
            serde_json::json!({ "lease_id": lease.lease_id }),
            "invalid lease",
        )
    };
    match v.post(path, &body) {
        Ok(_) => Ok(true),
        Err(e) if e.contains("HTTP 400") && e.contains(gone) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Revokes what sessions that died left behind: every lease still marked
/// unrevoked in a session whose supervisor is gone. Returns a notice per
/// session dealt with (or that could not be).
pub fn recover(store: &crate::Store, state: &std::path::Path) -> Vec<String> {
    let mut notices = Vec::new();
    let Ok(ids) = store.ids() else {
        return notices;
    };
    for id in ids {
        let dir = store.dir(&id);
        let Ok(data) = std::fs::read(leases_path(&dir)) else {
            continue;
        };
        let Ok(mut leases) = serde_json::from_slice::<Vec<Lease>>(&data) else {
            notices.push(format!(
                "session {id}: its leases.json is damaged; check its tokens"
            ));
            continue;
        };
        if leases.iter().all(|l| l.revoked) {
            continue;
        }
        // A session still running (its supervisor holds its lock, from
        // the moment the session exists) keeps its tokens.
        if store.is_live(&id) {
            continue;
        }
        let mut done = 0;
        // A login token revoked by itself takes the tokens it made along.
        let mut all_gone = false;
        for l in leases.iter_mut().filter(|l| !l.revoked) {
            let revoked = if all_gone && !l.sealed {
                Ok(())
            } else {
                Vault::for_lease(l, state).and_then(|v| {
                    if l.sealed {
                        v.revoke_self_gone()
                    } else {
                        v.revoke_lease(l)
                    }
                })
            };
            match revoked {
                Ok(()) => {
                    if l.sealed {
                        all_gone = true;
                        let _ = crate::broker::lease_store(state).remove(&l.accessor);
                    }
                    l.revoked = true;
                    done += 1;
                }
                Err(e) => notices.push(format!(
                    "session {id}: the token of {} could not be revoked: {e}",
                    l.name
                )),
            }
        }
        if done > 0 {
            let _ = save_leases(&dir, &leases);
            notices.push(format!(
                "revoked {done} Vault credential(s) (tokens and leases) left by session {id}, \
                 which ended without revoking them"
            ));
        }
    }
    notices
}

/// Renews a session's tokens every third of their lifetime until dropped.
#[derive(Debug)]
pub struct Renewer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Renewer {
    /// Starts renewing the tokens `broker` records, as it records them.
    pub fn start(broker: Arc<crate::broker::Broker>) -> Result<Renewer, Error> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let spawned = cordon_sandbox::with_relayed_signals_blocked(|| {
            std::thread::Builder::new()
                .name("cordon-renew".into())
                .spawn(move || loop {
                    match rx.recv_timeout(Duration::from_secs(TOKEN_TTL_SECS / 3)) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            // A failed renewal leaves the token to expire:
                            // the agent's requests then fail, nothing leaks.
                            let Some(vault) = broker.vault() else {
                                continue;
                            };
                            for l in broker.leases().iter().filter(|l| !l.revoked) {
                                let _ = vault.renew(l);
                            }
                        }
                        _ => return,
                    }
                })
        });
        let thread = match spawned {
            Ok(Ok(t)) => t,
            Ok(Err(e)) | Err(e) => return Err(Error::io("start renewing the session's tokens", e)),
        };
        Ok(Renewer {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A JWT for `session` signed with the host key (EdDSA): issuer and
/// audience `cordon`, the session as subject, the profile and its tier as
/// claims, valid five minutes.
pub fn session_jwt(key: &cordon_audit::HostKey, session: &str, profile: &Profile) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT" });
    let claims = serde_json::json!({
        "iss": "cordon",
        "aud": "cordon",
        "sub": session,
        "iat": now,
        "nbf": now.saturating_sub(60),
        "exp": now + 300,
        "cordon_session": session,
        "cordon_profile": profile.name,
        "cordon_tier": profile.tier.map(cordon_policy::profile::Tier::as_str),
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", base64url(&sig))
}

/// The host key's public half as a PEM public key (SubjectPublicKeyInfo),
/// for a JWT auth method's `jwt_validation_pubkeys`.
pub fn public_key_pem(key: &cordon_audit::HostKey) -> String {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let hex = key.public_hex();
    der.extend(
        (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()),
    );
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64std(&der)
    )
}

fn base64url(data: &[u8]) -> String {
    base64std(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn base64std(data: &[u8]) -> String {
    cordon_detect::check::base64_encode(data)
}
