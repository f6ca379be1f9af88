//! Reaching an allowed destination: cordon resolves the name itself, checks
//! every address it got (no private, loopback or metadata addresses unless
//! the profile names them), and connects to an address it checked, so there
//! is no window for DNS rebinding. With an upstream proxy configured, the
//! proxy is asked instead (CONNECT), and it resolves.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cordon_policy::network::{ProxyUrl, Verdict};
use cordon_policy::RuleValue;
use cordon_types::ReasonCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent asked to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dest {
    /// A host name (normalised).
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

/// A destination and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub dest: Dest,
    pub port: u16,
}

impl Target {
    /// Parses `host:port`, `[v6]:port`, or `host` with `default_port`.
    pub fn parse(authority: &str, default_port: Option<u16>) -> Result<Target, String> {
        let bad = || format!("{authority:?} is not host:port");
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, p) = rest.split_once(']').ok_or_else(bad)?;
            let port = match p.strip_prefix(':') {
                Some(p) => Some(p),
                None if p.is_empty() => None,
                None => return Err(bad()),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)?,
            None => default_port.ok_or_else(bad)?,
        };
        let dest = match host.parse::<IpAddr>() {
            Ok(ip) => Dest::Ip(ip),
            Err(_) if authority.starts_with('[') => return Err(bad()),
            Err(_) => Dest::Name(crate::peek::normalize(host)),
        };
        Ok(Target { dest, port })
    }

    /// The host as text (a name or an address, IPv6 without brackets).
    pub fn host(&self) -> String {
        match &self.dest {
            Dest::Name(n) => n.clone(),
            Dest::Ip(ip) => ip.to_string(),
        }
    }

    /// `host:port` (IPv6 in brackets), for requests and messages.
    pub fn authority(&self) -> String {
        match &self.dest {
            Dest::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host(), self.port),
        }
    }
}

/// A refusal or failure, as the agent will hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: ReasonCode,
    pub message: String,
    pub hint: String,
}

impl Refusal {
    /// The allowing rule, or the 403 a denial becomes.
    pub fn check(v: Verdict) -> Result<String, Refusal> {
        match v {
            Verdict::Allow { rule } => Ok(rule),
            Verdict::Deny {
                code,
                message,
                hint,
            } => Err(Refusal {
                status: 403,
                code,
                message,
                hint,
            }),
        }
    }

    pub fn failed(message: String) -> Refusal {
        Refusal {
            status: 502,
            code: ReasonCode::NetUpstreamFailed,
            message,
            hint: String::new(),
        }
    }
}

/// A connection to the destination (or to the upstream proxy, which has
/// already been asked to CONNECT when `tunnelled`).
#[derive(Debug)]
pub(crate) struct Upstream {
    pub stream: TcpStream,
    /// The address connected to: the destination's, or the proxy's.
    pub addr: SocketAddr,
    /// Whether this is a connection to the upstream proxy that still expects
    /// a proxy request (plain HTTP is sent in absolute form).
    pub via_proxy: bool,
    /// The `resolve` address the upstream proxy is to use for the name.
    pub fixed: Option<SocketAddr>,
}

/// Connects to `t` as policy allows. `tunnel` asks an upstream proxy for a
/// CONNECT tunnel (TLS and other protocols); plain HTTP passes `false`
/// and speaks to the proxy in absolute form.
pub(crate) async fn connect(
    shared: &Shared,
    t: &Target,
    tunnel: bool,
) -> Result<Upstream, Refusal> {
    if let Some(proxy) = &shared.policy.upstream_proxy {
        // A `resolve` entry still decides where the name goes; the proxy is
        // then asked for that address.
        let fixed = match &t.dest {
            Dest::Name(n) => shared.policy.resolve.get(n).map(|a| Target {
                dest: Dest::Ip(a.ip()),
                port: a.port(),
            }),
            Dest::Ip(_) => None,
        };
        return via_proxy(
            &proxy.0,
            shared.proxy_authorization.as_deref(),
            fixed.as_ref().unwrap_or(t),
            tunnel,
        )
        .await;
    }
    let candidates: Vec<SocketAddr> = match &t.dest {
        // check_ip has already limited literals to allowed, public or named
        // addresses.
        Dest::Ip(ip) => vec![SocketAddr::new(*ip, t.port)],
        Dest::Name(name) => {
            let resolved: Vec<SocketAddr> = match shared.policy.resolve.get(name) {
                Some(fixed) => vec![*fixed],
                None => tokio::net::lookup_host((name.as_str(), t.port))
                    .await
                    .map_err(|e| Refusal::failed(format!("cannot resolve {name}: {e}")))?
                    .collect(),
            };
            let mut allowed = Vec::new();
            let mut first_refusal = None;
            for addr in resolved {
                match Refusal::check(shared.policy.check_upstream(name, addr)) {
                    Ok(_) => allowed.push(addr),
                    Err(r) => {
                        first_refusal.get_or_insert(r);
                    }
                }
            }
            if allowed.is_empty() {
                return Err(first_refusal
                    .unwrap_or_else(|| Refusal::failed(format!("{name} has no address"))));
            }
            allowed
        }
    };
    let mut last = None;
    for addr in candidates {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(Upstream {
                    stream,
                    addr,
                    via_proxy: false,
                    fixed: None,
                });
            }
            Ok(Err(e)) => last = Some(format!("{addr}: {e}")),
            Err(_) => last = Some(format!("{addr}: timed out")),
        }
    }
    Err(Refusal::failed(format!(
        "cannot connect to {}: {}",
        t.authority(),
        last.unwrap_or_default()
    )))
}

async fn via_proxy(
    proxy: &ProxyUrl,
    authorization: Option<&str>,
    t: &Target,
    tunnel: bool,
) -> Result<Upstream, Refusal> {
    let fail = |what: String| Refusal::failed(format!("upstream proxy {}: {what}", proxy.render()));
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| fail(format!("cannot resolve: {e}")))?
        .collect();
    let mut stream = None;
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some((s, addr));
                break;
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    let (mut stream, addr) = stream.ok_or_else(|| fail(last))?;
    let _ = stream.set_nodelay(true);
    let fixed = match t.dest {
        Dest::Ip(ip) => Some(SocketAddr::new(ip, t.port)),
        Dest::Name(_) => None,
    };
    if !tunnel {
        return Ok(Upstream {
            stream,
            addr,
            via_proxy: true,
            fixed,
        });
    }
    let auth = t.authority();
    let credentials = authorization
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n{credentials}\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Read the reply byte by byte up to the blank line, so that nothing the
    // destination sends after it is consumed here.
    let mut head = Vec::with_capacity(256);
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(io::Error::other("reply head too long"));
            }
            let b = stream.read_u8().await?;
            head.push(b);
        }
        Ok(())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .map_err(|_| fail("no reply to CONNECT".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line).into_owned();
    let ok = status_line
        .split(' ')
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if !ok {
        return Err(fail(format!("refused CONNECT {auth}: {status_line}")));
    }
    Ok(Upstream {
        stream,
        addr,
        via_proxy: false,
        fixed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_parse() {
        let t = Target::parse("Api.Example.com:443", None).unwrap();
        assert_eq!(t.dest, Dest::Name("api.example.com".into()));
        assert_eq!(t.port, 443);
        let t = Target::parse("[::1]:8080", None).unwrap();
        assert_eq!(t.dest, Dest::Ip("::1".parse().unwrap()));
        assert_eq!(t.authority(), "[::1]:8080");
        let t = Target::parse("10.0.0.1", Some(80)).unwrap();
        assert_eq!(t.authority(), "10.0.0.1:80");
        for bad in [
            "a.test", "a.test:", "a.test:0", "a.test:x", "[::1", "[zz]:1", "[::1]x",
        ] {
            assert!(Target::parse(bad, None).is_err(), "{bad}");
        }
    }
}
