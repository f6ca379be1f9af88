//! Egress policy: which hosts the agent may reach, and which addresses the
//! supervisor may connect to on its behalf. Sans-IO: the network crate asks,
//! this module answers with a [`Verdict`] carrying a stable reason code.
//!
//! Rules:
//! * a name is allowed when an `allow` pattern matches it (and the port) and
//!   no `deny` pattern does: deny wins;
//! * `*.example.com` matches every name *below* `example.com`, not the name
//!   itself; a pattern without a port matches every port;
//! * IP literals are denied unless an `allow_cidr` rule (or an `allow_local`
//!   address) covers them;
//! * whatever the name, the address the supervisor connects to must be public
//!   ([`AddrClass`]) unless the profile names that exact address: in
//!   `allow_local`, or as the target of a `resolve` entry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cordon_types::ReasonCode;

use crate::values::{PathRule, RuleValue};

/// A host name pattern, optionally with a port: `api.example.com`,
/// `*.example.com:443`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    /// `*.` prefix: matches names below `name`.
    pub wildcard: bool,
    /// Lower-case ASCII name without a trailing dot.
    pub name: String,
    /// The only port allowed; `None` means any.
    pub port: Option<u16>,
}

/// One entry of `allow`/`deny`: a host pattern or a preset (`@npm`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostEntry {
    /// A pattern.
    Host(HostPattern),
    /// A built-in list of hosts.
    Preset(String),
}

/// Validates a DNS name (lower-cased, trailing dot removed): LDH labels of
/// 1–63 characters, 253 in all, and not an IP address.
pub fn normalize_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if !name.is_ascii() {
        return Err(format!(
            "{s:?} is not ASCII: write internationalised names in their xn-- form"
        ));
    }
    if name.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{s:?} is an IP address, not a name: use allow_cidr (or allow_local for a \
             service on this machine)"
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{s:?} is not a valid host name (labels of 1-63 letters, digits, '-' or '_')"
            ));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{s:?} is not a valid host name (numeric top-level label)"
        ));
    }
    Ok(name)
}

fn parse_port(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "{whole:?}: port {s:?} is not a number from 1 to 65535"
        )),
    }
}

impl HostPattern {
    /// Parses `name`, `*.name`, with an optional `:port`.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p, s)?)),
            None => (s, None),
        };
        if host == "*" {
            return Err(format!(
                "{s:?} would allow every host; list the hosts (or a preset such as @github)"
            ));
        }
        let (wildcard, rest) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if rest.contains('*') {
            return Err(format!(
                "{s:?}: '*' is only allowed as the whole first label (*.example.com)"
            ));
        }
        let name = normalize_name(rest).map_err(|e| format!("{s:?}: {e}"))?;
        if wildcard && !name.contains('.') {
            return Err(format!(
                "{s:?} would match every name under a top-level domain"
            ));
        }
        Ok(HostPattern {
            wildcard,
            name,
            port,
        })
    }

    /// Whether `host` (normalised) on `port` matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.matches_name(host)
    }

    /// Whether `host` (normalised) matches, whatever the port.
    pub fn matches_name(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl RuleValue for HostEntry {
    const KEY: &'static str = "host";
    fn parse(s: &str) -> Result<Self, String> {
        match s.strip_prefix('@') {
            Some(name) => {
                if preset(name).is_none() {
                    return Err(format!(
                        "unknown preset {s:?} (presets: {})",
                        PRESETS
                            .iter()
                            .map(|p| format!("@{}", p.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(HostEntry::Preset(name.to_owned()))
            }
            None => HostPattern::parse(s).map(HostEntry::Host),
        }
    }
    fn render(&self) -> String {
        match self {
            HostEntry::Host(h) => h.to_string(),
            HostEntry::Preset(p) => format!("@{p}"),
        }
    }
}

/// A range of IP addresses: `203.0.113.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(v: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        v & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask128(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl RuleValue for Cidr {
    const KEY: &'static str = "cidr";
    fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be 0 to {max}")),
            },
        };
        if prefix == 0 {
            return Err(format!("{s:?} would allow every address"));
        }
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask32(u32::from(a), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask128(u128::from(a), prefix))),
        };
        if masked != addr {
            return Err(format!(
                "{s:?} has host bits set; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
    fn render(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

/// An exact address and port (`127.0.0.1:5432`, `[::1]:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint(pub SocketAddr);

impl RuleValue for Endpoint {
    const KEY: &'static str = "addr";
    fn parse(s: &str) -> Result<Self, String> {
        let a: SocketAddr = s.parse().map_err(|_| {
            format!("{s:?} is not an address with a port (127.0.0.1:5432, [::1]:8080)")
        })?;
        if a.port() == 0 {
            return Err(format!("{s:?}: port 0"));
        }
        Ok(Endpoint(a))
    }
    fn render(&self) -> String {
        self.0.to_string()
    }
}

/// A host name used as a key (`resolve`): validated and normalised like
/// [`normalize_name`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(pub String);

impl<'de> serde::Deserialize<'de> for HostName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        normalize_name(&s)
            .map(HostName)
            .map_err(serde::de::Error::custom)
    }
}

/// An enterprise HTTP proxy that allowed traffic is sent through:
/// `http://host:port`. Only plain-HTTP proxies (CONNECT for TLS) exist so
/// far; credentials are not accepted in the URL, where they would sit in a
/// profile file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl RuleValue for ProxyUrl {
    const KEY: &'static str = "url";
    fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("upstream proxy {s:?} must look like http://host:port"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(format!(
                "upstream proxy {s:?}: credentials do not belong in a profile file"
            ));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!(
                "upstream proxy {s:?}: no path, only http://host:port"
            ));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (h, p) = v6
                    .split_once("]:")
                    .ok_or_else(|| format!("upstream proxy {s:?} needs a port"))?;
                let ip: Ipv6Addr = h
                    .parse()
                    .map_err(|_| format!("upstream proxy {s:?}: bad IPv6 address"))?;
                (ip.to_string(), p)
            }
            None => {
                let (h, p) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("upstream proxy {s:?} needs a port"))?;
                let host = match h.parse::<Ipv4Addr>() {
                    Ok(ip) => ip.to_string(),
                    Err(_) => normalize_name(h).map_err(|e| format!("upstream proxy: {e}"))?,
                };
                (host, p)
            }
        };
        Ok(ProxyUrl {
            host,
            port: parse_port(port, s)?,
        })
    }
    fn render(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// A credential read from the host's environment when a session starts
/// (`env:NAME`): the profile names where it is, never the value, and the
/// value never enters the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvCredential(pub String);

impl RuleValue for EnvCredential {
    const KEY: &'static str = "source";
    fn parse(s: &str) -> Result<Self, String> {
        let name = s.strip_prefix("env:").ok_or_else(|| {
            format!("{s:?}: write where the credential is, as env:NAME (never the value itself)")
        })?;
        let ok = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(format!(
                "{s:?}: {name:?} is not an environment variable name"
            ));
        }
        Ok(EnvCredential(name.to_owned()))
    }
    fn render(&self) -> String {
        format!("env:{}", self.0)
    }
}

/// What kind of address an IP is, for the upstream check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Routable on the internet.
    Public,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10 (also Alibaba's metadata service).
    SharedCgnat,
    /// 169.254/16, fe80::/10 (also most clouds' metadata services).
    LinkLocal,
    /// 224/4, ff00::/8, 255.255.255.255.
    Multicast,
    /// fc00::/7 (also AWS's IPv6 metadata address).
    UniqueLocal,
    /// 192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4, documentation ranges and
    /// other addresses not meant to be reached.
    Reserved,
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses, and the IPv4 addresses
/// embedded in NAT64 (64:ff9b::/96) and 6to4 (2002::/16), are judged as
/// the IPv4 address they lead to.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                IpAddr::V4(Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                ))
            };
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return embedded(s[6], s[7]);
            }
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]);
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Classifies an address (see [`canonical`] for IPv6 forms of IPv4).
pub fn classify(ip: IpAddr) -> AddrClass {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            let v = u32::from(a);
            let within = |net: u32, prefix: u8| mask32(v, prefix) == net;
            if o[0] == 0 {
                AddrClass::Unspecified
            } else if o[0] == 127 {
                AddrClass::Loopback
            } else if o[0] == 10 || within(0xac10_0000, 12) || within(0xc0a8_0000, 16) {
                AddrClass::Private
            } else if within(0x6440_0000, 10) {
                AddrClass::SharedCgnat
            } else if within(0xa9fe_0000, 16) {
                AddrClass::LinkLocal
            } else if within(0xe000_0000, 4) || v == u32::MAX {
                AddrClass::Multicast
            } else if within(0xc000_0000, 24)
                || within(0xc000_0200, 24)
                || within(0xc612_0000, 15)
                || within(0xc633_6400, 24)
                || within(0xcb00_7100, 24)
                || within(0xf000_0000, 4)
            {
                AddrClass::Reserved
            } else {
                AddrClass::Public
            }
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            let within = |net: u128, prefix: u8| mask128(v, prefix) == net;
            if a.is_unspecified() {
                AddrClass::Unspecified
            } else if a.is_loopback() {
                AddrClass::Loopback
            } else if within(0xfe80 << 112, 10) {
                AddrClass::LinkLocal
            } else if within(0xfc00 << 112, 7) {
                AddrClass::UniqueLocal
            } else if within(0xff00 << 112, 8) {
                AddrClass::Multicast
            } else if within(0x2001_0db8 << 96, 32)
                || within(0x0100 << 112, 64)
                || within(0x2001 << 112, 23)
                || within(0xfec0 << 112, 10)
                || within(0, 96)
                || !within(0x2000 << 112, 3)
            {
                // Documentation, discard, IETF protocol assignments (incl.
                // Teredo), site-local, IPv4-compatible, and everything outside
                // the global unicast range 2000::/3.
                AddrClass::Reserved
            } else {
                AddrClass::Public
            }
        }
    }
}

impl AddrClass {
    /// The stable name used in messages and events.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::SharedCgnat => "shared (CGNAT)",
            AddrClass::LinkLocal => "link-local (cloud metadata lives here)",
            AddrClass::Multicast => "multicast or broadcast",
            AddrClass::UniqueLocal => "unique-local",
            AddrClass::Reserved => "reserved",
        }
    }
}

/// A built-in list of hosts (`@npm`), shipped as data.
#[derive(Debug)]
pub struct Preset {
    /// The name after `@`.
    pub name: &'static str,
    /// Its TOML text (`profiles/network/NAME.toml`).
    pub text: &'static str,
}

/// A preset's file: what it is for, and its hosts with reasons.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetFile {
    description: String,
    hosts: Vec<PathRule<HostEntry>>,
}

macro_rules! preset {
    ($name:literal) => {
        Preset {
            name: $name,
            text: include_str!(concat!("../../../profiles/network/", $name, ".toml")),
        }
    };
}

/// The presets cordon ships.
pub const PRESETS: &[Preset] = &[
    preset!("anthropic"),
    preset!("crates"),
    preset!("github"),
    preset!("google-ai"),
    preset!("npm"),
    preset!("openai"),
    preset!("pypi"),
];

/// The preset called `name` (without `@`).
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The hosts of a preset, each with its reason prefixed by the preset name.
pub fn preset_hosts(name: &str) -> Result<(String, Vec<PathRule<HostPattern>>), String> {
    let p = preset(name).ok_or_else(|| format!("unknown preset @{name}"))?;
    let file: PresetFile =
        toml::from_str(p.text).map_err(|e| format!("preset @{name}: {}", e.message()))?;
    let mut out = Vec::new();
    for rule in file.hosts {
        match rule.value {
            HostEntry::Host(h) => out.push(PathRule {
                value: h,
                reason: Some(format!(
                    "@{name}: {}",
                    rule.reason.as_deref().unwrap_or(&file.description)
                )),
                optional: false,
            }),
            HostEntry::Preset(_) => {
                return Err(format!("preset @{name} names another preset"));
            }
        }
    }
    Ok((file.description, out))
}

/// The presets of model APIs: allowed through them, their hosts are
/// inspected by default, and DLP redacts what goes to them.
pub const MODEL_PRESETS: &[&str] = &["anthropic", "openai", "google-ai"];

/// The effective egress policy of a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkPolicy {
    /// Allowed host patterns (presets expanded).
    pub allow: Vec<PathRule<HostPattern>>,
    /// Denied host patterns (presets expanded); deny wins.
    pub deny: Vec<PathRule<HostPattern>>,
    /// Address ranges IP literals may go to.
    pub allow_cidr: Vec<PathRule<Cidr>>,
    /// Exact local addresses that may be reached despite their class.
    pub allow_local: Vec<PathRule<Endpoint>>,
    /// Fixed addresses for names, like `curl --resolve`.
    pub resolve: std::collections::BTreeMap<String, SocketAddr>,
    /// An HTTP proxy to send allowed traffic through (`http://host:port`).
    pub upstream_proxy: Option<crate::values::Bare<ProxyUrl>>,
    /// Where the upstream proxy's `user:password` is read from at launch.
    pub upstream_proxy_auth: Option<crate::values::Bare<EnvCredential>>,
    /// How the sandbox's traffic reaches the policy.
    pub mode: EgressMode,
    /// Hosts whose TLS cordon terminates (with a per-session CA the
    /// sandbox trusts) to see, check and record each HTTP request.
    pub inspect: Vec<PathRule<HostPattern>>,
    /// Hosts never inspected (tunnelled), whatever else says so: servers
    /// that need a client certificate, clients that pin their server's.
    pub no_inspect: Vec<PathRule<HostPattern>>,
    /// Certificates (PEM) trusted for inspected hosts' upstream
    /// connections besides the system's roots: a company CA, a test CA.
    pub upstream_ca: Vec<PathRule<crate::values::HostPath>>,
    /// Per host, the only requests it may get (hosts without an entry
    /// take any request). Such hosts are inspected.
    pub http: std::collections::BTreeMap<String, Vec<PathRule<HttpRule>>>,
}

impl NetworkPolicy {
    /// May a request with `method` for `path` go to `host`? Allowed when
    /// the host has no HTTP rules or one of them matches.
    pub fn check_http(&self, host: &str, method: &str, path: &str) -> Verdict {
        let Some(rules) = normalize_name(host).ok().and_then(|n| self.http.get(&n)) else {
            return Verdict::Allow {
                rule: "no HTTP rules for the host".into(),
            };
        };
        let shown = path.split(['?', '#']).next().unwrap_or("");
        match rules.iter().find(|r| r.value.matches(method, path)) {
            Some(r) => Verdict::Allow { rule: rule_text(r) },
            None => Verdict::Deny {
                code: ReasonCode::NetHttpDenied,
                message: format!(
                    "{method} {shown} is not among the requests the profile allows to {host}"
                ),
                hint: format!(
                    "add \"{method} {shown}\" (or a glob) to [network.http.\"{host}\"] allow"
                ),
            },
        }
    }

    /// The `inspect` rule matching `host` on `port`, if any.
    pub fn inspects(&self, host: &str, port: u16) -> Option<&PathRule<HostPattern>> {
        let name = normalize_name(host).ok()?;
        if self.no_inspect.iter().any(|r| r.value.matches(&name, port)) {
            return None;
        }
        self.inspect.iter().find(|r| r.value.matches(&name, port))
    }

    /// Whether any flow can be inspected.
    pub fn inspects_any(&self) -> bool {
        self.inspect
            .iter()
            .any(|r| !self.no_inspect.iter().any(|n| n.value == r.value))
    }
}

/// How the sandbox's traffic reaches cordon's egress policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    /// Transparent where the host allows it (`/dev/net/tun` usable), else
    /// the explicit proxy.
    #[default]
    Auto,
    /// Every tool's traffic, captured by a TUN device, with cordon's DNS;
    /// refuse to start where it cannot be set up.
    Transparent,
    /// Only an HTTP proxy at 127.0.0.1:3128 (`HTTPS_PROXY`): tools that
    /// ignore proxy variables have no network.
    Proxy,
}

/// A decision, with the reason code and a sentence for humans and agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; `rule` is the rule that allowed it.
    Allow {
        /// The matching rule, as written.
        rule: String,
    },
    /// Refused.
    Deny {
        /// Stable code.
        code: ReasonCode,
        /// What was refused and why.
        message: String,
        /// How to allow it, if it can be.
        hint: String,
    },
}

impl Verdict {
    /// Whether the verdict allows.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

fn rule_text<T: RuleValue>(r: &PathRule<T>) -> String {
    match &r.reason {
        Some(why) => format!("{} ({why})", r.value.render()),
        None => r.value.render(),
    }
}

impl RuleValue for HostPattern {
    const KEY: &'static str = "host";
    fn parse(s: &str) -> Result<Self, String> {
        HostPattern::parse(s)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// `host` normalised, or the refusal for a malformed name.
fn checked_name(host: &str) -> Result<String, Verdict> {
    normalize_name(host).map_err(|message| Verdict::Deny {
        code: ReasonCode::NetBadName,
        message,
        hint: String::new(),
    })
}

impl NetworkPolicy {
    /// Whether nothing at all may be reached (no allow rule of any kind):
    /// the sandbox then gets loopback only and no proxy.
    pub fn is_closed(&self) -> bool {
        self.allow.is_empty() && self.allow_cidr.is_empty() && self.allow_local.is_empty()
    }

    /// May the agent reach the name `host` on `port`?
    pub fn check_name(&self, host: &str, port: u16) -> Verdict {
        let name = match checked_name(host) {
            Ok(n) => n,
            Err(v) => return v,
        };
        if let Some(d) = self.deny.iter().find(|r| r.value.matches(&name, port)) {
            return Verdict::Deny {
                code: ReasonCode::NetHostDenied,
                message: format!("{name}:{port} is denied by the rule {}", rule_text(d)),
                hint: "remove the deny rule from the profile (deny wins over allow)".into(),
            };
        }
        match self.allow.iter().find(|r| r.value.matches(&name, port)) {
            Some(a) => Verdict::Allow { rule: rule_text(a) },
            None => Verdict::Deny {
                code: ReasonCode::NetHostNotAllowed,
                message: format!("{name}:{port} is not in the profile's network allowlist"),
                hint: format!(
                    "add \"{name}\" to [network] allow in the profile, or run with \
                     --allow-host {name}"
                ),
            },
        }
    }

    /// May the agent look `host` up (any port)? Allowed when some allow rule
    /// matches the name on some port and no deny rule for every port does;
    /// the port is checked when it connects. The rule named in `Allow`
    /// starts with `*.` when only a wildcard matched.
    pub fn check_dns_name(&self, host: &str) -> Verdict {
        let name = match checked_name(host) {
            Ok(n) => n,
            Err(v) => return v,
        };
        if let Some(d) = self
            .deny
            .iter()
            .find(|r| r.value.port.is_none() && r.value.matches_name(&name))
        {
            return Verdict::Deny {
                code: ReasonCode::NetHostDenied,
                message: format!("{name} is denied by the rule {}", rule_text(d)),
                hint: "remove the deny rule from the profile (deny wins over allow)".into(),
            };
        }
        let mut hits = self.allow.iter().filter(|r| r.value.matches_name(&name));
        let best = hits
            .clone()
            .find(|r| !r.value.wildcard)
            .or_else(|| hits.next());
        match best {
            Some(a) => Verdict::Allow { rule: rule_text(a) },
            None => Verdict::Deny {
                code: ReasonCode::NetHostNotAllowed,
                message: format!("{name} is not in the profile's network allowlist"),
                hint: format!(
                    "add \"{name}\" to [network] allow in the profile, or run with \
                     --allow-host {name}"
                ),
            },
        }
    }

    /// May the agent connect to the IP literal `ip` on `port`?
    pub fn check_ip(&self, ip: IpAddr, port: u16) -> Verdict {
        let addr = SocketAddr::new(ip, port);
        if let Some(l) = self.local_rule(addr) {
            return Verdict::Allow { rule: l };
        }
        match self.allow_cidr.iter().find(|r| r.value.contains(ip)) {
            Some(c) if classify(ip) == AddrClass::Public => Verdict::Allow { rule: rule_text(c) },
            Some(c) => Verdict::Deny {
                code: ReasonCode::NetAddressBlocked,
                message: format!(
                    "{addr} is a {} address; allow_cidr rule {} covers only public addresses",
                    classify(ip).as_str(),
                    rule_text(c)
                ),
                hint: format!("to reach this one service, add \"{addr}\" to [network] allow_local"),
            },
            None => Verdict::Deny {
                code: ReasonCode::NetIpLiteral,
                message: format!("connections to IP addresses ({addr}) need an allow_cidr rule"),
                hint: "use the host name (and allow it), or add the range to [network] \
                       allow_cidr"
                    .into(),
            },
        }
    }

    /// May the supervisor connect to `addr`, which `host` resolved to? The
    /// address must be public unless the profile names it (`allow_local`,
    /// or the `resolve` entry of that very name).
    pub fn check_upstream(&self, host: &str, addr: SocketAddr) -> Verdict {
        if let Some(l) = self.local_rule(addr) {
            return Verdict::Allow { rule: l };
        }
        if let Ok(name) = normalize_name(host) {
            if self.resolve.get(&name) == Some(&addr) {
                return Verdict::Allow {
                    rule: format!("resolve {name} = {addr}"),
                };
            }
        }
        match classify(addr.ip()) {
            AddrClass::Public => Verdict::Allow {
                rule: "public address".into(),
            },
            class => Verdict::Deny {
                code: ReasonCode::NetAddressBlocked,
                message: format!(
                    "{host} resolves to {addr}, a {} address: refused so that an allowed name \
                     cannot lead into your network or the cloud metadata service",
                    class.as_str()
                ),
                hint: format!(
                    "if this service is meant to be reached, add \"{addr}\" to [network] \
                     allow_local"
                ),
            },
        }
    }

    fn local_rule(&self, addr: SocketAddr) -> Option<String> {
        let want = SocketAddr::new(canonical(addr.ip()), addr.port());
        self.allow_local
            .iter()
            .find(|r| SocketAddr::new(canonical(r.value.0.ip()), r.value.0.port()) == want)
            .map(rule_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_rules_match_method_and_path_never_the_query() {
        let r = |s: &str| HttpRule::parse(s).unwrap();
        assert!(r("GET /repos/**").matches("GET", "/repos/acme/x/pulls"));
        assert!(r("GET /repos/**").matches("get", "/repos/a?x=1"));
        assert!(!r("GET /repos/**").matches("POST", "/repos/a"));
        assert!(r("POST /repos/acme/*/pulls").matches("POST", "/repos/acme/cordon/pulls"));
        assert!(!r("POST /repos/acme/*/pulls").matches("POST", "/repos/acme/a/b/pulls"));
        assert!(!r("POST /repos/acme/*/pulls").matches("POST", "/repos/evil/x/pulls"));
        assert!(r("* /**").matches("DELETE", "/anything/at/all"));
        assert!(r("GET /").matches("GET", "/"));
        assert!(r("GET /").matches("GET", "/?q=1"));
        assert!(!r("GET /").matches("GET", "/x"));
        // The query never decides.
        assert!(!r("GET /a").matches("GET", "/b?/a"));
        assert_eq!(r("get /x/*").render(), "GET /x/*");
        for bad in ["GET", "GET x", "G-T /x", "/x", "GET /[", ""] {
            assert!(HttpRule::parse(bad).is_err(), "{bad}");
        }
        let mut p = NetworkPolicy::default();
        p.http
            .insert("api.test".into(), rules(&["GET /hello", "POST /e*"]));
        assert!(p.check_http("api.test", "GET", "/hello").is_allowed());
        assert!(p.check_http("API.test.", "POST", "/echo").is_allowed());
        assert!(!p.check_http("api.test", "GET", "/sse").is_allowed());
        assert!(p.check_http("other.test", "DELETE", "/x").is_allowed());
        match p.check_http("api.test", "PUT", "/hello?token=abc") {
            Verdict::Deny {
                code,
                message,
                hint,
            } => {
                assert_eq!(code, ReasonCode::NetHttpDenied);
                assert!(!message.contains("token"), "{message}");
                assert!(hint.contains("PUT /hello"), "{hint}");
            }
            v => panic!("{v:?}"),
        }
    }

    fn rules<T: RuleValue>(v: &[&str]) -> Vec<PathRule<T>> {
        v.iter()
            .map(|s| PathRule::new(T::parse(s).unwrap()))
            .collect()
    }

    #[test]
    fn host_patterns_parse_and_match() {
        let p = HostPattern::parse("*.GitHub.com.:443").unwrap();
        assert_eq!(p.to_string(), "*.github.com:443");
        assert!(p.matches("api.github.com", 443));
        assert!(p.matches("a.b.github.com", 443));
        assert!(!p.matches("github.com", 443));
        assert!(!p.matches("evilgithub.com", 443));
        assert!(!p.matches("api.github.com", 80));
        let p = HostPattern::parse("example.com").unwrap();
        assert!(p.matches("example.com", 1));
        assert!(!p.matches("www.example.com", 443));
        for bad in [
            "*",
            "*.com",
            "a*.b.com",
            "b.*.com",
            "1.2.3.4",
            "::1",
            "ex ample.com",
            "-a.com",
            "a.com:0",
            "a.com:99999",
            "a.com:",
            "",
            "bücher.de",
            "a..com",
            "a.123",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn presets_are_valid_and_unknown_ones_are_refused() {
        for p in PRESETS {
            let (description, hosts) = preset_hosts(p.name).unwrap();
            assert!(!description.is_empty(), "@{}", p.name);
            assert!(!hosts.is_empty(), "@{}", p.name);
        }
        assert!(HostEntry::parse("@nope").unwrap_err().contains("@npm"));
    }

    #[test]
    fn deny_wins_and_misses_are_explained() {
        let n = NetworkPolicy {
            allow: rules(&["*.github.com", "github.com:443"]),
            deny: rules(&["gist.github.com"]),
            ..Default::default()
        };
        assert!(n.check_name("api.github.com", 443).is_allowed());
        assert!(n.check_name("github.com", 443).is_allowed());
        assert!(!n.check_name("github.com", 22).is_allowed());
        match n.check_name("gist.github.com", 443) {
            Verdict::Deny { code, .. } => assert_eq!(code, ReasonCode::NetHostDenied),
            v => panic!("{v:?}"),
        }
        match n.check_name("example.org", 443) {
            Verdict::Deny { code, hint, .. } => {
                assert_eq!(code, ReasonCode::NetHostNotAllowed);
                assert!(hint.contains("--allow-host example.org"), "{hint}");
            }
            v => panic!("{v:?}"),
        }
        assert!(!NetworkPolicy::default()
            .check_name("github.com", 443)
            .is_allowed());
    }

    #[test]
    fn lookups_are_allowed_for_names_some_rule_allows_on_some_port() {
        let n = NetworkPolicy {
            allow: rules(&["api.test:443", "*.cdn.test", "files.test"]),
            deny: rules(&["bad.cdn.test", "files.test:80"]),
            ..Default::default()
        };
        let rule = |h: &str| match n.check_dns_name(h) {
            Verdict::Allow { rule } => rule,
            v => panic!("{h}: {v:?}"),
        };
        assert_eq!(rule("API.test."), "api.test:443");
        assert!(rule("x.cdn.test").starts_with("*."));
        // A deny rule for one port leaves the name resolvable.
        assert_eq!(rule("files.test"), "files.test");
        for (h, code) in [
            ("bad.cdn.test", ReasonCode::NetHostDenied),
            ("cdn.test", ReasonCode::NetHostNotAllowed),
            ("other.test", ReasonCode::NetHostNotAllowed),
            ("bad name", ReasonCode::NetBadName),
        ] {
            match n.check_dns_name(h) {
                Verdict::Deny { code: c, .. } => assert_eq!(c, code, "{h}"),
                v => panic!("{h}: {v:?}"),
            }
        }
    }

    #[test]
    fn addresses_are_classified_including_ipv6_forms_of_ipv4() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("8.8.8.8"), AddrClass::Public);
        assert_eq!(c("2606:4700::1111"), AddrClass::Public);
        assert_eq!(c("127.0.0.53"), AddrClass::Loopback);
        assert_eq!(c("::1"), AddrClass::Loopback);
        assert_eq!(c("10.1.2.3"), AddrClass::Private);
        assert_eq!(c("172.31.255.255"), AddrClass::Private);
        assert_eq!(c("172.32.0.1"), AddrClass::Public);
        assert_eq!(c("192.168.1.1"), AddrClass::Private);
        assert_eq!(c("100.100.100.200"), AddrClass::SharedCgnat);
        assert_eq!(c("169.254.169.254"), AddrClass::LinkLocal);
        assert_eq!(c("fe80::1"), AddrClass::LinkLocal);
        assert_eq!(c("fd00:ec2::254"), AddrClass::UniqueLocal);
        assert_eq!(c("224.0.0.1"), AddrClass::Multicast);
        assert_eq!(c("255.255.255.255"), AddrClass::Multicast);
        assert_eq!(c("ff02::1"), AddrClass::Multicast);
        assert_eq!(c("0.0.0.0"), AddrClass::Unspecified);
        assert_eq!(c("::"), AddrClass::Unspecified);
        assert_eq!(c("::ffff:169.254.169.254"), AddrClass::LinkLocal);
        assert_eq!(c("::ffff:127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("64:ff9b::10.0.0.1"), AddrClass::Private);
        assert_eq!(c("2002:a9fe:a9fe::1"), AddrClass::LinkLocal);
        assert_eq!(c("2001:db8::1"), AddrClass::Reserved);
        assert_eq!(c("::127.0.0.1"), AddrClass::Reserved);
        assert_eq!(c("198.18.0.1"), AddrClass::Reserved);
        assert_eq!(c("240.0.0.1"), AddrClass::Reserved);
    }

    #[test]
    fn upstream_addresses_must_be_public_unless_named() {
        let mut n = NetworkPolicy {
            allow_local: rules(&["127.0.0.1:5432"]),
            ..Default::default()
        };
        n.resolve.insert(
            "api.internal.test".into(),
            "127.0.0.1:8443".parse().unwrap(),
        );
        let up = |h: &str, a: &str| n.check_upstream(h, a.parse().unwrap());
        assert!(up("example.com", "93.184.215.14:443").is_allowed());
        assert!(!up("example.com", "169.254.169.254:80").is_allowed());
        assert!(!up("example.com", "[::ffff:10.0.0.1]:443").is_allowed());
        assert!(up("db.test", "127.0.0.1:5432").is_allowed());
        assert!(up("db.test", "[::ffff:127.0.0.1]:5432").is_allowed());
        assert!(!up("db.test", "127.0.0.1:5433").is_allowed());
        assert!(up("API.internal.test", "127.0.0.1:8443").is_allowed());
        assert!(!up("other.test", "127.0.0.1:8443").is_allowed());
    }

    #[test]
    fn ip_literals_need_a_cidr_rule_and_a_public_address() {
        let n = NetworkPolicy {
            allow_cidr: rules(&["93.184.215.0/24", "203.0.113.0/24", "10.0.0.0/8"]),
            allow_local: rules(&["[::1]:8080"]),
            ..Default::default()
        };
        let ip = |s: &str, p| n.check_ip(s.parse().unwrap(), p);
        assert!(!ip("8.8.8.8", 443).is_allowed());
        assert!(ip("93.184.215.14", 443).is_allowed());
        assert!(ip("::ffff:93.184.215.14", 443).is_allowed());
        assert!(!ip("203.0.113.7", 443).is_allowed());
        assert!(!ip("10.1.1.1", 443).is_allowed());
        assert!(ip("::1", 8080).is_allowed());
        assert!(!ip("::1", 8081).is_allowed());
        match ip("1.1.1.1", 53) {
            Verdict::Deny { code, .. } => assert_eq!(code, ReasonCode::NetIpLiteral),
            v => panic!("{v:?}"),
        }
        assert!(Cidr::parse("203.0.113.1/24")
            .unwrap_err()
            .contains("203.0.113.0/24"));
        assert!(Cidr::parse("0.0.0.0/0").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("2001:db8::/32").is_ok());
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap()));
    }
}

/// One allowed kind of request to a host (`[network.http."HOST"] allow`):
/// `"GET /repos/**"`, `"POST /repos/acme/*/pulls"`, `"* /**"`. The method is
/// a token or `*` (any); the path is a glob over the request's path
/// (never its query): `*` stays within a segment, `**` crosses them, and
/// `/` alone is the root path.
#[derive(Debug, Clone)]
pub struct HttpRule {
    /// Upper-case method, or `None` for any.
    pub method: Option<String>,
    /// The path pattern as written (starting with `/`).
    pub path: String,
    /// The pattern without its leading `/`; `None` for the root path.
    compiled: Option<crate::glob::Pattern>,
}

impl PartialEq for HttpRule {
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method && self.path == other.path
    }
}

impl Eq for HttpRule {}

impl std::hash::Hash for HttpRule {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.method.hash(state);
        self.path.hash(state);
    }
}

impl HttpRule {
    /// Whether a request with `method` for `path` (its query removed, if
    /// any) is this kind.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let rest = path.strip_prefix('/').unwrap_or(path);
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && match &self.compiled {
                None => rest.is_empty(),
                Some(p) => p.is_match(rest.as_bytes()),
            }
    }
}

impl RuleValue for HttpRule {
    const KEY: &'static str = "request";
    fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "HTTP rule {s:?}: {why} (expected \"METHOD /path/glob\", e.g. \"GET /repos/**\")"
            )
        };
        let (method, path) = s.trim().split_once(' ').ok_or_else(|| bad("no path"))?;
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(bad("the path must start with /"));
        }
        let method = match method {
            "*" => None,
            m if m.bytes().all(|b| b.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            _ => return Err(bad("the method must be a word or *")),
        };
        let pattern = &path[1..];
        let compiled = if pattern.is_empty() {
            None
        } else {
            Some(crate::glob::Pattern::new(pattern).map_err(|e| bad(&e))?)
        };
        Ok(HttpRule {
            method,
            path: path.to_string(),
            compiled,
        })
    }
    fn render(&self) -> String {
        format!("{} {}", self.method.as_deref().unwrap_or("*"), self.path)
    }
}
