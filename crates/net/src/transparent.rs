//! Transparent capture: the sandbox's TUN device carries every IPv4 packet it
//! sends off loopback to a userspace TCP/IP stack here ([`Stack`], smoltcp
//! behind it). Each TCP connection is a flow: its destination is a fake IP
//! (which names the host the agent looked up through cordon's DNS) or an IP
//! literal; it is decided, connected and relayed like an explicit CONNECT,
//! including the SNI/Host check. UDP carries DNS to the gateway only; every
//! other datagram (QUIC included) is dropped, so clients fall back to TCP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon_types::ReasonCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dns::{self, FakeIps};
use crate::events::NetEvent;
use crate::peek::{self, Peek};
use crate::upstream::{Dest, Refusal, Target};
use crate::Shared;

/// The TUN's MTU: larger packets mean fewer trips through the stack and
/// fewer system calls (a 1 GiB download: ~470 MiB/s at 16 KiB, ~550 at
/// 32 KiB, ~590 at 65 000; docs/PERFORMANCE.md).
pub const MTU: u16 = 65000;
/// How long a denied connection may take to show whether it is HTTP (and
/// so gets a readable 403) before it is simply closed.
const DENY_PEEK: Duration = Duration::from_secs(2);
/// What a userspace stack hands over: TCP connections and UDP datagram
/// streams from the sandbox, each with destination. The implementation is
/// [`crate::smol::SmolStack`]; the trait keeps the rest of the engine
/// independent of it.
pub(crate) trait Stack: Send {
    /// The next connection or datagram stream; `None` when the device is
    /// gone.
    fn accept(
        &mut self,
    ) -> Pin<Box<dyn std::future::Future<Output = Option<Captured>> + Send + '_>>;
}

/// A captured stream.
pub(crate) enum Captured {
    /// A TCP connection (already accepted by the stack).
    Tcp {
        stream: Box<dyn Duplex>,
        dst: SocketAddr,
    },
}

/// A bidirectional byte (or datagram) stream.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Serves the TUN device until it is gone.
pub(crate) fn spawn(shared: Arc<Shared>, tun: OwnedFd) -> io::Result<()> {
    let raw = tun.as_raw_fd();
    let for_udp = Arc::clone(&shared);
    let datagrams = Box::new(move |_src, dst, payload: &[u8]| datagram(&for_udp, dst, payload));
    let mut stack = crate::smol::SmolStack::new(
        tun,
        usize::from(MTU),
        shared.finishing.subscribe(),
        datagrams,
    )
    .map_err(|e| io::Error::other(format!("userspace stack on TUN fd {raw}: {e}")))?;
    tokio::spawn(async move {
        while let Some(c) = stack.accept().await {
            let shared = Arc::clone(&shared);
            let Captured::Tcp { stream, dst } = c;
            let handling = shared.handling();
            tokio::spawn(async move {
                crate::control::until_cut(&shared, tcp_flow(&shared, stream, dst)).await;
                drop(handling);
            });
        }
    });
    Ok(())
}

/// The target a captured connection stands for.
fn target_of(shared: &Shared, dst: SocketAddr) -> Target {
    if let IpAddr::V4(v4) = dst.ip() {
        if let Some(name) = shared
            .fake
            .lock()
            .ok()
            .and_then(|f| f.name_of(v4).map(str::to_owned))
        {
            return Target {
                dest: Dest::Name(name),
                port: dst.port(),
            };
        }
    }
    Target {
        dest: Dest::Ip(dst.ip()),
        port: dst.port(),
    }
}

async fn tcp_flow(shared: &Arc<Shared>, client: Box<dyn Duplex>, dst: SocketAddr) {
    let flow = shared.next_flow();
    let t = target_of(shared, dst);
    let mut ev = NetEvent {
        via: "tun",
        flow,
        host: t.host(),
        port: t.port,
        ..Default::default()
    };
    let unassigned_fake =
        matches!(dst.ip(), IpAddr::V4(v4) if FakeIps::in_pool(v4)) && matches!(t.dest, Dest::Ip(_));
    let admitted = if unassigned_fake {
        Err(Refusal {
            status: 403,
            code: ReasonCode::NetIpLiteral,
            message: format!("{dst} is not an address cordon's DNS gave out"),
            hint: "look the host name up first".into(),
        })
    } else {
        crate::proxy::admit(shared, &t, true, &mut ev).await
    };
    let up = match admitted {
        Ok(up) => up,
        Err(r) => return refuse(shared, client, ev, r).await,
    };
    // Nothing has been read yet: `through` peeks the first bytes.
    crate::proxy::through(shared, client, Vec::new(), up.stream, &t, ev).await;
}

/// Records a denied captured connection; an HTTP client gets the 403
/// explanation, anything else a close.
async fn refuse(shared: &Shared, mut client: Box<dyn Duplex>, mut ev: NetEvent, r: Refusal) {
    let mut first = Vec::new();
    let deadline = tokio::time::Instant::now() + DENY_PEEK;
    let mut http = false;
    while first.len() < peek::MAX_PEEK {
        match tokio::time::timeout_at(deadline, client.read_buf(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
        match peek::peek(&first) {
            Peek::NeedMore => continue,
            Peek::Http { host } => {
                ev.http_host = host;
                http = true;
                break;
            }
            Peek::Tls { sni } => {
                ev.sni = sni;
                break;
            }
            _ => break,
        }
    }
    crate::proxy::denied(shared, ev, &r);
    if http {
        let _ = client.write_all(&crate::proxy::refusal_response(&r)).await;
    }
    crate::proxy::close(&mut client).await;
}

/// A UDP datagram from the sandbox: DNS to the gateway is answered;
/// everything else is dropped and recorded (once per destination).
fn datagram(shared: &Shared, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    if dst == SocketAddr::from((dns::GATEWAY, 53)) {
        return answer(shared, payload);
    }
    let first_time = shared
        .udp_dropped
        .lock()
        // Bounded: an agent spraying destinations must not grow the
        // supervisor; past the cap, drops are no longer itemised.
        .map(|mut seen| seen.len() < 4096 && seen.insert(dst))
        .unwrap_or(false);
    if first_time {
        shared.log.record(NetEvent {
            kind: "flow.denied",
            via: "tun",
            flow: shared.next_flow(),
            host: dst.ip().to_string(),
            port: dst.port(),
            method: Some("UDP".into()),
            code: Some(ReasonCode::NetUdpBlocked),
            message: Some(
                "only DNS to cordon's resolver leaves the sandbox over UDP (QUIC and \
                 other UDP are dropped; clients fall back to TCP)"
                    .into(),
            ),
            ..Default::default()
        });
    }
    None
}

/// Answers one DNS query per the policy.
pub(crate) fn answer(shared: &Shared, req: &[u8]) -> Option<Vec<u8>> {
    let q = match dns::parse_query(req) {
        Ok(q) => q,
        Err(_) => return dns::format_error(req),
    };
    let mut ev = NetEvent {
        kind: "dns.query",
        via: "tun",
        host: q.name.clone(),
        method: Some(qtype_name(q.qtype)),
        ..Default::default()
    };
    let (rcode, ip, code, message) = dns_decision(shared, &q);
    ev.code = code;
    ev.message = message;
    if let Some(ip) = ip {
        ev.addr = Some(SocketAddr::from((ip, 0)));
    }
    let denied = code.is_some();
    ev.kind = if denied { "dns.denied" } else { "dns.allowed" };
    record_dns(shared, ev, denied);
    Some(dns::response(&q, req, rcode, ip.map(|ip| (ip, 300))))
}

type DnsDecision = (
    u8,
    Option<std::net::Ipv4Addr>,
    Option<ReasonCode>,
    Option<String>,
);

fn dns_decision(shared: &Shared, q: &dns::Query) -> DnsDecision {
    let name = match cordon_policy::network::normalize_name(&q.name) {
        Ok(n) => n,
        Err(e) => {
            return (
                dns::RCODE_NXDOMAIN,
                None,
                Some(ReasonCode::NetBadName),
                Some(e),
            )
        }
    };
    if !q.is_internet() || !matches!(q.qtype, dns::TYPE_A | dns::TYPE_AAAA) {
        return (
            dns::RCODE_REFUSED,
            None,
            Some(ReasonCode::NetDnsRefused),
            Some(format!(
                "only address lookups are answered, not {}",
                qtype_name(q.qtype)
            )),
        );
    }
    let verdict =
        crate::control::gate(shared, &name).unwrap_or_else(|| shared.policy.check_dns_name(&name));
    match verdict {
        cordon_policy::network::Verdict::Deny { code, message, .. } => {
            (dns::RCODE_NXDOMAIN, None, Some(code), Some(message))
        }
        cordon_policy::network::Verdict::Allow { rule } => {
            // Only a wildcard rule lets arbitrary labels through, and so
            // data out through the supervisor's own lookup of the name.
            if rule.starts_with("*.") {
                if let Some(why) = dns::tunnel_suspect(&name) {
                    return (
                        dns::RCODE_NXDOMAIN,
                        None,
                        Some(ReasonCode::NetDnsTunnel),
                        Some(format!("{name}: {why} (DNS tunnelling)")),
                    );
                }
            }
            if q.qtype == dns::TYPE_AAAA {
                // No IPv6 inside: an empty answer makes clients use IPv4.
                return (dns::RCODE_NOERROR, None, None, None);
            }
            match shared.fake.lock().ok().and_then(|mut f| f.assign(&name)) {
                Some(ip) => (dns::RCODE_NOERROR, Some(ip), None, None),
                None => (
                    dns::RCODE_SERVFAIL,
                    None,
                    Some(ReasonCode::NetUpstreamFailed),
                    Some("the session's fake address pool is used up".into()),
                ),
            }
        }
    }
}

/// Records a DNS event. Every query is recorded, except during a burst
/// (more than 200 in 10 seconds: a tunnel or a scan), which is recorded once
/// as `dns.burst` and after which only refusals are, until the window ends.
fn record_dns(shared: &Shared, ev: NetEvent, denied: bool) {
    let now = Instant::now();
    let Ok(mut st) = shared.dns_state.lock() else {
        return;
    };
    if now.duration_since(st.window_start) > Duration::from_secs(10) {
        st.window_start = now;
        st.in_window = 0;
        st.burst_reported = false;
    }
    st.in_window += 1;
    let in_burst = st.in_window > 200;
    let report_burst = in_burst && !st.burst_reported;
    st.burst_reported |= in_burst;
    drop(st);
    if report_burst {
        shared.log.record(NetEvent {
            kind: "dns.burst",
            via: "tun",
            host: ev.host.clone(),
            code: Some(ReasonCode::NetDnsTunnel),
            message: Some(
                "more than 200 lookups in 10 seconds: a DNS tunnel or a scan; allowed \
                 lookups are not itemised until the burst ends"
                    .into(),
            ),
            ..Default::default()
        });
    }
    if denied || !in_burst {
        shared.log.record(ev);
    }
}

fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        5 => "CNAME".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        12 => "PTR".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

/// Per-session DNS bookkeeping.
#[derive(Debug)]
pub(crate) struct DnsState {
    window_start: Instant,
    in_window: u32,
    burst_reported: bool,
}

impl Default for DnsState {
    fn default() -> Self {
        DnsState {
            window_start: Instant::now(),
            in_window: 0,
            burst_reported: false,
        }
    }
}
