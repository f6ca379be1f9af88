use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable reason codes for every refusal cordon makes.
///
/// The string form (`as_str`) is part of cordon's interface: it appears in CLI
/// errors, in `x-cordon-reason` headers and in audit events, and must never
/// change meaning once released. Add new codes; do not rename old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// A layer the profile requires is not available on this host.
    LayerUnavailable,
    /// A sandbox setup step failed; the session did not start.
    SetupFailed,
    /// The profile is invalid.
    ProfileInvalid,
    /// An environment variable was withheld because it looks like a credential.
    EnvCredentialDropped,
    /// A path is protected (read-only in every mode).
    PathProtected,
    /// A path matches a `hide` rule and is unreadable inside the sandbox.
    PathHidden,
    /// A network destination name is malformed.
    NetBadName,
    /// A `deny` rule matches the destination host.
    NetHostDenied,
    /// No `allow` rule matches the destination host.
    NetHostNotAllowed,
    /// A connection to an IP address that no `allow_cidr` rule covers.
    NetIpLiteral,
    /// The destination address is loopback, private, link-local (cloud
    /// metadata) or otherwise not public, and the profile does not name it.
    NetAddressBlocked,
    /// The name inside the connection (TLS SNI or HTTP `Host`) is not the
    /// name the connection was allowed for (domain fronting).
    NetNameMismatch,
    /// The agent's proxy request or first bytes could not be understood.
    NetBadRequest,
    /// The destination was allowed but could not be reached (resolution or
    /// connection failed, or the upstream proxy refused).
    NetUpstreamFailed,
    /// An inspected host's TLS certificate did not verify (against the
    /// system's roots and the profile's `upstream_ca`), or its TLS
    /// handshake failed: cordon does not talk to it on the agent's behalf.
    NetUpstreamUntrusted,
    /// A request carried a secret's placeholder to a host the secret is
    /// not bound to: someone is trying to move the credential.
    NetSecretWrongHost,
    /// A secret fetched on its first use could not be fetched (its Vault
    /// or store failed): the request that needed it is not sent.
    NetSecretUnavailable,
    /// A request to an inspected host that the profile's `[network.http]`
    /// rules for that host do not allow (method and path).
    NetHttpDenied,
    /// An inspected request carried a credential, a canary or (with `pii`)
    /// personal data, and the profile's DLP action is `block`.
    NetDlpBlocked,
    /// UDP other than DNS to cordon's resolver (QUIC included) is dropped.
    NetUdpBlocked,
    /// A DNS query type that is not answered (only A and AAAA are).
    NetDnsRefused,
    /// A name (or a burst of lookups) that looks like data smuggled out
    /// through DNS.
    NetDnsTunnel,
    /// The session was contained (`cordon contain`): all its egress is cut.
    NetSessionContained,
    /// The host is on cordon's block list (`cordon block`), which no
    /// profile overrides.
    NetHostBlocked,
}

impl ReasonCode {
    /// The stable machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::LayerUnavailable => "layer_unavailable",
            ReasonCode::SetupFailed => "setup_failed",
            ReasonCode::ProfileInvalid => "profile_invalid",
            ReasonCode::EnvCredentialDropped => "env_credential_dropped",
            ReasonCode::PathProtected => "path_protected",
            ReasonCode::PathHidden => "path_hidden",
            ReasonCode::NetBadName => "net_bad_name",
            ReasonCode::NetHostDenied => "net_host_denied",
            ReasonCode::NetHostNotAllowed => "net_host_not_allowed",
            ReasonCode::NetIpLiteral => "net_ip_literal",
            ReasonCode::NetAddressBlocked => "net_address_blocked",
            ReasonCode::NetNameMismatch => "net_name_mismatch",
            ReasonCode::NetBadRequest => "net_bad_request",
            ReasonCode::NetUpstreamFailed => "net_upstream_failed",
            ReasonCode::NetUpstreamUntrusted => "net_upstream_untrusted",
            ReasonCode::NetSecretWrongHost => "net_secret_wrong_host",
            ReasonCode::NetSecretUnavailable => "net_secret_unavailable",
            ReasonCode::NetHttpDenied => "net_http_denied",
            ReasonCode::NetDlpBlocked => "net_dlp_blocked",
            ReasonCode::NetUdpBlocked => "net_udp_blocked",
            ReasonCode::NetDnsRefused => "net_dns_refused",
            ReasonCode::NetDnsTunnel => "net_dns_tunnel",
            ReasonCode::NetSessionContained => "net_session_contained",
            ReasonCode::NetHostBlocked => "net_host_blocked",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_equals_stable_string() {
        for code in [
            ReasonCode::LayerUnavailable,
            ReasonCode::SetupFailed,
            ReasonCode::ProfileInvalid,
            ReasonCode::EnvCredentialDropped,
            ReasonCode::PathProtected,
            ReasonCode::PathHidden,
            ReasonCode::NetBadName,
            ReasonCode::NetHostDenied,
            ReasonCode::NetHostNotAllowed,
            ReasonCode::NetIpLiteral,
            ReasonCode::NetAddressBlocked,
            ReasonCode::NetNameMismatch,
            ReasonCode::NetBadRequest,
            ReasonCode::NetUpstreamFailed,
            ReasonCode::NetUpstreamUntrusted,
            ReasonCode::NetSecretWrongHost,
            ReasonCode::NetSecretUnavailable,
            ReasonCode::NetHttpDenied,
            ReasonCode::NetDlpBlocked,
            ReasonCode::NetUdpBlocked,
            ReasonCode::NetDnsRefused,
            ReasonCode::NetDnsTunnel,
            ReasonCode::NetSessionContained,
            ReasonCode::NetHostBlocked,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
