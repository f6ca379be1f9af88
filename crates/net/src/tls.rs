//! TLS inspection's keys and trust: a certificate authority made for one
//! session, whose private key never leaves the supervisor's memory, and the
//! leaf certificates it issues for inspected hosts (one key pair for all of
//! them, each leaf made once and cached). Upstream connections verify the
//! real server against the system's roots (plus the profile's
//! `upstream_ca`; the session builds that client configuration); that
//! check is never weakened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// How long the session CA and its leaves are valid: longer than any
/// session is expected to run, short enough that a leaked certificate is
/// soon useless (the key itself never leaves memory).
pub const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Clocks inside and outside may disagree a little.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The leaves cached at most (a flow to a new host beyond it mints anew).
const MAX_LEAVES: usize = 4096;

/// The session's certificate authority.
pub struct SessionCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// One key for every leaf (made once: key generation is the slow part).
    leaf_key: KeyPair,
    provider: Arc<rustls::crypto::CryptoProvider>,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for SessionCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCa").finish_non_exhaustive()
    }
}

fn window() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - BACKDATE, now + VALIDITY)
}

impl SessionCa {
    /// A new CA named after `session`.
    pub fn new(session: &str) -> Result<SessionCa, String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "cordon");
        dn.push(
            DnType::CommonName,
            format!("cordon session {session} (TLS inspection)"),
        );
        params.distinguished_name = dn;
        // It signs leaves, nothing else: no intermediate CAs below it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = window();
        let key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("CA certificate: {e}"))?;
        let leaf_key = KeyPair::generate().map_err(|e| format!("leaf key: {e}"))?;
        Ok(SessionCa {
            cert,
            key,
            leaf_key,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM (what the sandbox trusts).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The certificate chain and key presented for `host` (a name or an IP
    /// address), made on first use.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, String> {
        let mut cache = self
            .leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = cache.get(host) {
            return Ok(Arc::clone(k));
        }
        let mut params = CertificateParams::new(vec![host.to_string()])
            .map_err(|e| format!("a certificate for {host}: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = window();
        let leaf = params
            .signed_by(&self.leaf_key, &self.cert, &self.key)
            .map_err(|e| format!("a certificate for {host}: {e}"))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let signing = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| format!("the leaf key: {e}"))?;
        let certified = Arc::new(CertifiedKey::new(
            vec![leaf.der().clone(), self.cert.der().clone()],
            signing,
        ));
        if cache.len() >= MAX_LEAVES {
            cache.clear();
        }
        cache.insert(host.to_string(), Arc::clone(&certified));
        Ok(certified)
    }

    /// The server side of an inspected connection to `host`, offering
    /// `alpn` (the protocol the real server chose, so both sides speak the
    /// same one).
    pub fn server_config(
        &self,
        host: &str,
        alpn: Option<&[u8]>,
    ) -> Result<Arc<rustls::ServerConfig>, String> {
        let key = self.leaf(host)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
        if let Some(p) = alpn {
            config.alpn_protocols = vec![p.to_vec()];
        }
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn leaves_chain_to_the_session_ca_and_are_cached() {
        let ca = SessionCa::new("s1").unwrap();
        let a = ca.leaf("api.example.test").unwrap();
        let b = ca.leaf("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.cert.len(), 2);
        assert_eq!(a.cert[1], ca.cert_der());
        // A client trusting only the session CA accepts the leaf for its
        // name, and not for another.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        let name = |n: &str| rustls::pki_types::ServerName::try_from(n.to_string()).unwrap();
        assert!(verifier
            .verify_server_cert(
                &a.cert[0],
                &a.cert[1..],
                &name("api.example.test"),
                &[],
                now
            )
            .is_ok());
        assert!(verifier
            .verify_server_cert(&a.cert[0], &a.cert[1..], &name("other.test"), &[], now)
            .is_err());
        let ip = ca.leaf("127.0.0.1").unwrap();
        assert!(verifier
            .verify_server_cert(&ip.cert[0], &ip.cert[1..], &name("127.0.0.1"), &[], now)
            .is_ok());
        // Another session's CA is not trusted for this one's leaves.
        let other = SessionCa::new("s2").unwrap();
        let c = other.leaf("api.example.test").unwrap();
        assert!(verifier
            .verify_server_cert(
                &c.cert[0],
                &c.cert[1..],
                &name("api.example.test"),
                &[],
                now
            )
            .is_err());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
