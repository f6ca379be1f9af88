//! TLS inspection's session side: the session's CA, the trust the sandbox
//! gets for it, and how upstream servers are verified.
//!
//! The sandbox trusts the CA through a combined bundle (the system's roots
//! followed by the session CA), bound read-only over the distribution's CA
//! bundle, with the variables tools read pointed at it. The CA's private
//! key stays in the supervisor's memory; the bundle holds certificates
//! only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_net::inspect::Inspection;
use cordon_net::tls::{upstream_config, SessionCa};
use cordon_policy::profile::Profile;
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
}

impl Prepared {
    /// Makes the session CA and the upstream trust for `profile`'s
    /// inspected hosts. Fails, naming the problem, when the system has no
    /// CA bundle to extend or an `upstream_ca` file is unusable.
    pub fn new(session: &str, profile: &Profile, home: &Path) -> Result<Prepared, Error> {
        let refused = |message: String, hint: &str| Error::Refused {
            message,
            hint: hint.into(),
        };
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
                    "install the ca-certificates package, or remove [network] inspect",
                )
            })?;
        let mut bundle = std::fs::read(&system)
            .map_err(|e| Error::io(format!("read {}", system.display()), e))?;
        let ca = SessionCa::new(session).map_err(|e| {
            refused(
                format!("the session's TLS inspection CA could not be made: {e}"),
                "remove [network] inspect",
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
        let upstream = upstream_config(&extra_refs)
            .map_err(|e| refused(e, "fix [network] upstream_ca in the profile"))?;
        Ok(Prepared {
            inspection: Inspection {
                ca: Arc::new(ca),
                upstream,
            },
            bundle_dest: system,
            bundle,
        })
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
