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
//! (from cordon's store, the host's environment or Vault), and each gets
//! its placeholder, which is all the agent sees; those fetched on first
//! use get a placeholder of their declared shape and a fetch the egress
//! engine runs when a request needs the value. The supervisor makes
//! itself non-dumpable first: no core file or debugger attach by the
//! user's other processes can read the CA key or the values.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_net::credentials::{placeholder, shaped_placeholder, Credential};
use cordon_net::inspect::Inspection;
use cordon_net::tls::SessionCa;
use cordon_policy::profile::Profile;
use cordon_policy::secrets::{Fetch, SecretBinding, SecretSource};
use zeroize::Zeroizing;

use crate::broker::Broker;
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
    /// The session's Vault server and tokens (revoked at its end).
    pub broker: Arc<Broker>,
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
        session_dir: &Path,
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
        let broker = Broker::new(session_dir, &store.state);
        let (credentials, placeholders) = credentials(profile, store, home, session, &broker)?;
        // The real values are canaries for DLP (the agent never holds
        // them; those fetched later are added then), and the placeholders
        // are never findings.
        let dlp = cordon_net::dlp::Dlp::new(
            profile.dlp.clone(),
            credentials
                .iter()
                .filter_map(|c| c.value().cloned())
                .collect(),
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
        // The profile's files are checked now; the system's roots are
        // loaded on the first inspected connection.
        let extra_roots = cordon_audit::http::extra_roots(&extra_refs, "upstream_ca")
            .map_err(|e| refused(e, "fix [network] upstream_ca in the profile"))?;
        let upstream = cordon_net::inspect::UpstreamTrust::new(Box::new(move || {
            cordon_audit::http::client_config_with(&extra_roots, "upstream_ca")
        }));
        Ok(Prepared {
            inspection: Inspection {
                ca: Arc::new(ca),
                upstream: Arc::new(upstream),
                credentials: Arc::new(credentials),
                dlp: Arc::new(dlp),
            },
            bundle_dest: system,
            bundle,
            placeholders,
            broker,
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

/// Each secret's variable and the placeholder the agent gets in it.
type Shown = Vec<(String, String)>;

/// The profile's secrets, read now (or, fetched on first use, with a
/// fetch for later), with their placeholders: each variable and what the
/// agent gets in it.
fn credentials(
    profile: &Profile,
    store: &StoreAccess,
    home: &Path,
    session: &str,
    broker: &Arc<Broker>,
) -> Result<(Vec<Credential>, Shown), Error> {
    let mut creds = Vec::new();
    let mut shown = Vec::new();
    let mut opened: Option<cordon_secrets::Store> = None;
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
        // The server is logged in to now, whenever a secret comes from
        // it: a wrong address or login stops the session before the
        // agent runs.
        if matches!(
            b.source,
            SecretSource::Vault { .. } | SecretSource::VaultToken { .. }
        ) && broker.vault().is_none()
        {
            let v = crate::vault::Vault::from_profile(
                profile,
                home,
                crate::vault::Login {
                    session,
                    state: &store.state,
                },
            )?;
            broker.connect(v)?;
        }
        let credential = if b.fetch == Fetch::FirstUse {
            let shape = b
                .shape
                .clone()
                .unwrap_or_else(|| cordon_policy::secrets::Shape::default_for(&b.name));
            let ph = shaped_placeholder(&shape.prefix, shape.length).map_err(|e| {
                refused(
                    format!("the secret {}: no placeholder: {e}", b.name),
                    "fix its prefix and length".into(),
                )
            })?;
            let fetch = first_use(b, Arc::clone(broker), store.clone(), session.to_string());
            Credential::on_first_use(b.name.clone(), ph, fetch, b.hosts.clone(), b.body)
        } else {
            let value = read_now(b, store, &mut opened, broker, session)?;
            let ph = placeholder(&value).map_err(|e| {
                refused(
                    format!("the secret {} cannot be stood in for: {e}", b.name),
                    "only values of at least 16 printable characters can be injected".into(),
                )
            })?;
            Credential::new(b.name.clone(), ph, value, b.hosts.clone(), b.body)
        };
        shown.push((
            b.name.clone(),
            String::from_utf8_lossy(&credential.placeholder).into_owned(),
        ));
        creds.push(credential);
    }
    Ok((creds, shown))
}

/// The value of a secret read when the session starts.
fn read_now(
    b: &SecretBinding,
    store: &StoreAccess,
    opened: &mut Option<cordon_secrets::Store>,
    broker: &Broker,
    session: &str,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let refused = |message: String, hint: String| Error::Refused { message, hint };
    let value = match &b.source {
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
            Zeroizing::new(v.into_vec())
        }
        SecretSource::Store(name) => {
            let s = match opened {
                Some(s) => s,
                None => opened.insert(open_store(store)?),
            };
            read_store(s, &b.name, name)?
        }
        SecretSource::VaultToken { .. } | SecretSource::Vault { .. } => {
            from_vault(b, broker, session).map_err(|e| {
                refused(
                    format!("the secret {} ({}): {e}", b.name, b.source.render()),
                    match b.source {
                        SecretSource::VaultToken { .. } => {
                            "the Vault token must be allowed to create tokens with these \
                                 policies"
                        }
                        _ => "check the path, the field and the token's policy",
                    }
                    .into(),
                )
            })?
        }
    };
    Ok(value)
}

/// The value of a `vault:` or `vault-token:` secret, from the server
/// `broker` logged in to; a token made is recorded as a lease first.
fn from_vault(
    b: &SecretBinding,
    broker: &Broker,
    session: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let v = broker
        .vault()
        .ok_or("the Vault server is not logged in to")?;
    match &b.source {
        SecretSource::VaultToken { policies } => {
            let (token, lease) = v.session_token(&b.name, &v.token_env, session, policies)?;
            broker.add_lease(lease, None)?;
            Ok(Zeroizing::new(token.as_bytes().to_vec()))
        }
        SecretSource::Vault { path, field } => {
            let (value, lease) = v.field(path, field)?;
            // A dynamic secret: its lease is recorded before the value is
            // used, renewed with the tokens, and revoked at the end.
            if let Some(lease_id) = lease {
                broker.add_lease(
                    crate::vault::Lease {
                        name: b.name.clone(),
                        addr: v.addr().to_string(),
                        token_env: v.token_env.clone(),
                        accessor: String::new(),
                        lease_id,
                        revoked: false,
                        sealed: false,
                    },
                    None,
                )?;
            }
            Ok(value)
        }
        SecretSource::Store(_) | SecretSource::Env(_) => Err("not a Vault secret".into()),
    }
}

fn read_store(
    s: &cordon_secrets::Store,
    var: &str,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let secret = s.get(name).map_err(|e| Error::Refused {
        message: format!("the secret {var} (store:{name}): {e}"),
        hint: format!("store it with `cordon secret set {name}`"),
    })?;
    Ok(Zeroizing::new(secret.expose().to_vec()))
}

/// How a secret fetched on first use is fetched; each fetch is an audit
/// record (the secret's name, source and the host that needed it).
fn first_use(
    b: &SecretBinding,
    broker: Arc<Broker>,
    store: StoreAccess,
    session: String,
) -> cordon_net::credentials::Fetch {
    let b = b.clone();
    Box::new(move |host: &str| {
        let value = match &b.source {
            SecretSource::Store(name) => open_store(&store)
                .and_then(|s| read_store(&s, &b.name, name))
                .map_err(|e| e.to_string()),
            _ => from_vault(&b, &broker, &session),
        };
        broker.record(crate::audit::fetched(
            &b.name,
            &b.source.render(),
            host,
            value.as_ref().map(|_| ()).map_err(String::as_str),
        ));
        value
    })
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
