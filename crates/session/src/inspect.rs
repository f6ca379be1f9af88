//! TLS inspection's session side: the session's CA, the trust the sandbox
//! gets for it, and how upstream servers are verified.
//!
//! The sandbox trusts the CA through a combined bundle (the system's roots
//! followed by the session CA), bound read-only over the distribution's CA
//! bundle, with the variables tools read pointed at it. The CA's private
//! key stays in the supervisor's memory; the bundle holds certificates
//! only.
//!
//! The profile's `[[secrets]]` are read here, when the session starts
//! (from cordon's store, or the host's environment), and each gets its
//! placeholder, which is all the agent sees. The supervisor then makes
//! itself non-dumpable: no core file or debugger attach by the user's
//! other processes can read the CA key or the values.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_net::credentials::{placeholder, Credential};
use cordon_net::inspect::Inspection;
use cordon_net::tls::SessionCa;
use cordon_policy::profile::Profile;
use cordon_policy::secrets::SecretSource;
use cordon_sandbox::Mount;

use crate::Error;

/// Where distributions keep the system's CA bundle, most common first.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The variables tools read a CA bundle from; each points at the combined
/// bundle (Node.js adds it to its own roots).
pub const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "NPM_CONFIG_CAFILE",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// A session's inspection, ready to start.
#[derive(Debug)]
pub struct Prepared {
    /// What the egress engine needs.
    pub inspection: Inspection,
    /// The combined bundle's path inside the sandbox (and on the host: the
    /// bind covers the system's file).
    pub bundle_dest: PathBuf,
    /// The combined bundle, PEM.
    bundle: Vec<u8>,
    /// Each secret's variable and the placeholder the agent gets in it.
    pub placeholders: Vec<(String, String)>,
    /// Tokens made for this session (revoked at its end).
    pub leases: Vec<crate::vault::Lease>,
    /// The server that made them, to renew and revoke them.
    pub vault: Option<crate::vault::Vault>,
}

/// Where the secrets of `store:` sources are, and how to open them.
#[derive(Debug, Clone)]
pub struct StoreAccess {
    /// The store file.
    pub path: PathBuf,
    /// Its key file (for a store protected by one).
    pub key: PathBuf,
    /// cordon's state directory (the host key signs JWT logins).
    pub state: PathBuf,
}

impl StoreAccess {
    /// The user's store: `<state>/secrets.store`, its key in
    /// `<config>/secrets.key` (apart, so that a copy of one directory
    /// opens nothing).
    pub fn of(dirs: &crate::Dirs) -> StoreAccess {
        StoreAccess {
            path: dirs.state.join("secrets.store"),
            key: dirs.config.join("secrets.key"),
            state: dirs.state.clone(),
        }
    }
}

/// The passphrase of a passphrase-protected store, for `cordon run`.
pub const PASSPHRASE_ENV: &str = "CORDON_SECRETS_PASSPHRASE";

impl Prepared {
    /// Makes the session CA and the upstream trust for `profile`'s
    /// inspected hosts. Fails, naming the problem, when the system has no
    /// CA bundle to extend or an `upstream_ca` file is unusable.
    pub fn new(
        session: &str,
        profile: &Profile,
        home: &Path,
        store: &StoreAccess,
    ) -> Result<Prepared, Error> {
        let refused = |message: String, hint: &str| Error::Refused {
            message,
            hint: hint.into(),
        };
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(|e| Error::io("make cordon non-dumpable", e.into()))?;
        let Made {
            creds: credentials,
            shown: placeholders,
            leases,
            vault,
        } = credentials(profile, store, home, session)?;
        // The real values are canaries for DLP (the agent never holds
        // them), and the placeholders are never findings.
        let dlp = cordon_net::dlp::Dlp::new(
            profile.dlp.clone(),
            credentials.iter().map(|c| c.value.clone()).collect(),
            credentials.iter().map(|c| c.placeholder.clone()).collect(),
        );
        let system = SYSTEM_BUNDLES
            .iter()
            .map(Path::new)
            .find_map(|p| std::fs::canonicalize(p).ok().filter(|r| r.is_file()))
            .ok_or_else(|| {
                refused(
                    format!(
                        "TLS inspection ([network] inspect) needs the system's CA bundle, and \
                         none of {} exists",
                        SYSTEM_BUNDLES.join(", ")
                    ),
                    "install the ca-certificates package, or name the inspected hosts in [network] no_inspect",
                )
            })?;
        let mut bundle = std::fs::read(&system)
            .map_err(|e| Error::io(format!("read {}", system.display()), e))?;
        let ca = SessionCa::new(session).map_err(|e| {
            refused(
                format!("the session's TLS inspection CA could not be made: {e}"),
                "name the inspected hosts in [network] no_inspect",
            )
        })?;
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(
            format!("# cordon session {session}: TLS inspection CA\n").as_bytes(),
        );
        bundle.extend_from_slice(ca.cert_pem().as_bytes());
        let extra: Vec<PathBuf> = profile
            .network
            .upstream_ca
            .iter()
            .map(|r| r.value.resolve(home))
            .collect();
        let extra_refs: Vec<&Path> = extra.iter().map(PathBuf::as_path).collect();
        let upstream = cordon_audit::http::client_config(&extra_refs, "upstream_ca")
            .map_err(|e| refused(e, "fix [network] upstream_ca in the profile"))?;
        Ok(Prepared {
            inspection: Inspection {
                ca: Arc::new(ca),
                upstream,
                credentials: Arc::new(credentials),
                dlp: Arc::new(dlp),
            },
            bundle_dest: system,
            bundle,
            placeholders,
            leases,
            vault,
        })
    }

    /// Adds the session's decoy values to what DLP always blocks.
    pub fn add_canaries(&mut self, values: &[Vec<u8>]) {
        if let Some(dlp) = Arc::get_mut(&mut self.inspection.dlp) {
            dlp.add_canaries(values.iter().cloned());
        }
    }

    /// Writes the bundle into the session's directory and returns the
    /// read-only bind that puts it over the system's bundle.
    pub fn mount(&self, session_dir: &Path) -> Result<Mount, Error> {
        let path = session_dir.join("tls-ca-bundle.pem");
        std::fs::write(&path, &self.bundle)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(Mount::Bind {
            src: path,
            dest: self.bundle_dest.clone(),
            writable: false,
            optional: false,
            dev: false,
        })
    }
}

/// What reading the profile's secrets gave.
struct Made {
    creds: Vec<Credential>,
    shown: Vec<(String, String)>,
    leases: Vec<crate::vault::Lease>,
    vault: Option<crate::vault::Vault>,
}

/// The profile's secrets, read (or made) now, with their placeholders.
fn credentials(
    profile: &Profile,
    store: &StoreAccess,
    home: &Path,
    session: &str,
) -> Result<Made, Error> {
    let mut creds = Vec::new();
    let mut shown = Vec::new();
    let mut leases = Vec::new();
    let mut opened: Option<cordon_secrets::Store> = None;
    let mut vault: Option<crate::vault::Vault> = None;
    let refused = |message: String, hint: String| Error::Refused { message, hint };
    // Every binding is checked before any value is read.
    for b in &profile.secrets {
        for h in &b.hosts {
            if !h.wildcard
                && profile
                    .network
                    .inspects(&h.name, h.port.unwrap_or(443))
                    .is_none()
            {
                return Err(refused(
                    format!(
                        "the secret {} is bound to {}, which [network] no_inspect excludes from \
                         inspection: its value could not be put into requests",
                        b.name, h
                    ),
                    format!("remove \"{}\" from [network] no_inspect", h.name),
                ));
            }
            if !h.wildcard
                && !profile
                    .network
                    .check_name(&h.name, h.port.unwrap_or(443))
                    .is_allowed()
            {
                return Err(refused(
                    format!(
                        "the secret {} is bound to {}, which the profile's [network] allow does \
                         not allow",
                        b.name, h
                    ),
                    format!("add \"{}\" to [network] allow", h.name),
                ));
            }
        }
    }
    for b in &profile.secrets {
        let value: zeroize::Zeroizing<Vec<u8>> = match &b.source {
            SecretSource::Env(var) => {
                use std::os::unix::ffi::OsStringExt;
                let v = std::env::var_os(var).ok_or_else(|| {
                    refused(
                        format!(
                            "the secret {} comes from the variable {var}, which is not set",
                            b.name
                        ),
                        format!("set {var} in the environment cordon runs in"),
                    )
                })?;
                zeroize::Zeroizing::new(v.into_vec())
            }
            SecretSource::VaultToken { policies } => {
                let v = connected(&mut vault, profile, home, session, &store.state)?;
                let (token, lease) = v
                    .session_token(&b.name, &profile.vault.token_env, session, policies)
                    .map_err(|e| {
                        refused(
                            format!("the secret {} ({}): {e}", b.name, b.source.render()),
                            "the token in [vault] token_env must be allowed to create tokens \
                             with these policies"
                                .into(),
                        )
                    })?;
                leases.push(lease);
                zeroize::Zeroizing::new(token.as_bytes().to_vec())
            }
            SecretSource::Vault { path, field } => {
                let v = connected(&mut vault, profile, home, session, &store.state)?;
                v.field(path, field).map_err(|e| {
                    refused(
                        format!("the secret {} ({}): {e}", b.name, b.source.render()),
                        "check the path, the field and the token's policy".into(),
                    )
                })?
            }
            SecretSource::Store(name) => {
                if opened.is_none() {
                    opened = Some(open_store(store)?);
                }
                let Some(s) = &opened else {
                    return Err(refused("the secrets store".into(), String::new()));
                };
                let secret = s.get(name).map_err(|e| {
                    refused(
                        format!("the secret {} (store:{name}): {e}", b.name),
                        format!("store it with `cordon secret set {name}`"),
                    )
                })?;
                zeroize::Zeroizing::new(secret.expose().to_vec())
            }
        };
        let ph = placeholder(&value).map_err(|e| {
            refused(
                format!("the secret {} cannot be stood in for: {e}", b.name),
                "only values of at least 16 printable characters can be injected".into(),
            )
        })?;
        shown.push((b.name.clone(), String::from_utf8_lossy(&ph).into_owned()));
        creds.push(Credential {
            name: b.name.clone(),
            placeholder: ph,
            value,
            hosts: b.hosts.clone(),
            body: b.body,
        });
    }
    // A JWT login's token is the session's first lease: revoking it
    // revokes the tokens it made.
    if let Some(login) = vault.as_ref().and_then(|v| v.login.clone()) {
        leases.insert(0, login);
    }
    Ok(Made {
        creds,
        shown,
        leases,
        vault,
    })
}

/// The Vault server of the profile, logged in on first use.
fn connected<'v>(
    vault: &'v mut Option<crate::vault::Vault>,
    profile: &Profile,
    home: &Path,
    session: &str,
    state: &Path,
) -> Result<&'v crate::vault::Vault, Error> {
    if let Some(v) = vault {
        return Ok(v);
    }
    let v =
        crate::vault::Vault::from_profile(profile, home, crate::vault::Login { session, state })?;
    Ok(vault.insert(v))
}

fn open_store(store: &StoreAccess) -> Result<cordon_secrets::Store, Error> {
    use cordon_secrets::{Protection, Secret, Store, Unlock};
    let refused = |message: String, hint: &str| Error::Refused {
        message,
        hint: hint.into(),
    };
    let protection = Store::protection(&store.path)
        .map_err(|e| refused(e.to_string(), "check the store with `cordon secret list`"))?;
    let unlock = match protection {
        None => {
            return Err(refused(
                format!(
                    "the profile names secrets from cordon's store, and there is none ({})",
                    store.path.display()
                ),
                "store them with `cordon secret set NAME`",
            ))
        }
        Some(Protection::KeyFile) => Unlock::KeyFile(store.key.clone()),
        Some(Protection::Passphrase) => {
            use std::os::unix::ffi::OsStringExt;
            let pass = std::env::var_os(PASSPHRASE_ENV).ok_or_else(|| {
                refused(
                    format!(
                        "the secrets store {} is protected by a passphrase",
                        store.path.display()
                    ),
                    "set CORDON_SECRETS_PASSPHRASE for `cordon run` (it never reaches the sandbox)",
                )
            })?;
            Unlock::Passphrase(Secret::new(pass.into_vec()))
        }
    };
    Ok(Store::new(&store.path, unlock))
}
