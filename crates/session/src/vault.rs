//! `vault:` secrets: fields of KV secrets read from a Vault or OpenBao
//! server with a token, when the session starts. The token comes from a
//! variable of cordon's own environment (`[vault] token_env`, default
//! `VAULT_TOKEN`), which, like every credential-looking variable, never
//! reaches the sandbox. TLS is verified against the system's roots and
//! `[vault] ca_file`.

use std::sync::Arc;
use std::time::Duration;

use cordon_audit::http::{request, tls_config, Url};
use cordon_policy::profile::Profile;
use zeroize::Zeroizing;

use crate::Error;

/// How long one request to the server may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A server and the token to ask it with.
pub struct Vault {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Zeroizing<String>,
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
    pub fn from_profile(profile: &Profile, home: &std::path::Path) -> Result<Vault, Error> {
        let v = &profile.vault;
        let addr = v.addr.clone().ok_or_else(|| {
            refused(
                "the profile names vault: secrets, and no [vault] addr".into(),
                "set [vault] addr = \"https://vault.example:8200\" in the profile",
            )
        })?;
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
        Ok(Vault {
            addr,
            tls,
            token: Zeroizing::new(token),
        })
    }

    /// Field `field` of the secret at API path `path` (KV v2:
    /// `secret/data/NAME`; a KV v1 path works too).
    pub fn field(&self, path: &str, field: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        let url = Url::parse(&format!("{}/v1/{path}", self.addr))?;
        let resp = request(
            "GET",
            &url,
            self.tls.as_ref(),
            &[("X-Vault-Token", self.token.as_str())],
            b"",
            TIMEOUT,
        )
        .map_err(|e| format!("{}: {e}", self.addr))?;
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
        match data.get(field) {
            Some(serde_json::Value::String(s)) => Ok(Zeroizing::new(s.as_bytes().to_vec())),
            Some(_) => Err(format!("{path}: the field {field} is not a string")),
            None => Err(format!("{path}: no field {field}")),
        }
    }
}
