//! The explicit proxy: HTTP `CONNECT host:port` and absolute-form requests
//! (`GET http://host/path`), as sent by clients that honour `HTTPS_PROXY`
//! and `HTTP_PROXY`. Each request is decided by the profile's policy; an
//! allowed one is connected by [`crate::upstream`], and the first bytes the
//! client sends through it must name the same host (TLS SNI or HTTP `Host`):
//! no domain fronting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon_types::ReasonCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::events::NetEvent;
use crate::peek::{self, Peek};
use crate::upstream::{self, Dest, Refusal, Target};
use crate::{http1, Handling, Shared};

/// How long a client may take to send its request head, or to finish the
/// first bytes through a tunnel once it has started them.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Relay buffer per direction: large reads mean fewer syscalls per byte
/// (a 1 GiB HTTPS download ran at ~850-900 MiB/s with 128-256 KiB, ~800
/// with 32 KiB, ~720 with splice(2) through a pipe; docs/PERFORMANCE.md).
/// Pages are only touched as far as reads fill them.
pub(crate) const RELAY_BUF: usize = 128 * 1024;

/// Serves one client connection of the sandbox: a CONNECT tunnel, or plain
/// HTTP requests (see [`http1`]).
pub(crate) async fn serve(shared: Arc<Shared>, mut client: TcpStream, _handling: Handling) {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let read = tokio::time::timeout(HEAD_TIMEOUT, http1::read_request(&mut client, &mut buf));
    let head = match read.await {
        Ok(Ok(Some(h))) => h,
        // Closed before a request: nothing to record.
        Ok(Ok(None)) => return,
        Ok(Err(why)) => {
            let r = Refusal {
                status: 400,
                code: ReasonCode::NetBadRequest,
                message: format!("cordon's egress proxy could not read the request: {why}"),
                hint: String::new(),
            };
            let _ = client.write_all(&refusal_response(&r)).await;
            return;
        }
        Err(_) => return,
    };
    if head.method.eq_ignore_ascii_case("CONNECT") {
        let rest = buf.split_off(head.len);
        connect_flow(&shared, client, head, rest).await;
    } else {
        http1::serve_proxy(&shared, client, buf, head).await;
    }
}

/// The 403/400/502 reply: the same explanation for a person reading curl's
/// output and for an agent reading the body.
pub(crate) fn refusal_response(r: &Refusal) -> Vec<u8> {
    let reason = match r.status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Bad Gateway",
    };
    let mut body = format!(
        "cordon blocked this request: {}\nreason: {}\n",
        r.message,
        r.code.as_str()
    );
    if !r.hint.is_empty() {
        body.push_str(&format!("to allow it: {}\n", r.hint));
    }
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         x-cordon-reason: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        r.status,
        r.code.as_str(),
        body.len()
    )
    .into_bytes()
}

/// The policy's decision on `t`: the allowing rule, or the refusal.
pub(crate) fn decide(shared: &Shared, t: &Target) -> Result<String, Refusal> {
    if let Some(v) = crate::control::gate(shared, &t.host()) {
        return Refusal::check(v);
    }
    Refusal::check(match &t.dest {
        Dest::Name(n) => shared.policy.check_name(n, t.port),
        Dest::Ip(ip) => shared.policy.check_ip(*ip, t.port),
    })
}

/// Decides `t` and, when it is allowed, connects to it (`tunnel`: see
/// [`upstream::connect`]); records the allowing rule and the address in `ev`.
pub(crate) async fn admit(
    shared: &Shared,
    t: &Target,
    tunnel: bool,
    ev: &mut NetEvent,
) -> Result<upstream::Upstream, Refusal> {
    let rule = decide(shared, t)?;
    let up = upstream::connect(shared, t, tunnel).await?;
    ev.addr = Some(up.addr);
    ev.rule = Some(rule);
    Ok(up)
}

fn base_event(flow: u64, t: &Target, method: &str) -> NetEvent {
    NetEvent {
        via: "proxy",
        flow,
        host: t.host(),
        port: t.port,
        method: Some(method.to_owned()),
        ..Default::default()
    }
}

pub(crate) fn denied(shared: &Shared, mut ev: NetEvent, r: &Refusal) {
    ev.kind = "flow.denied";
    ev.code = Some(r.code);
    ev.message = Some(r.message.clone());
    shared.log.record(ev);
}

async fn refuse(shared: &Shared, client: &mut TcpStream, ev: NetEvent, r: Refusal) {
    denied(shared, ev, &r);
    let _ = client.write_all(&refusal_response(&r)).await;
    close(client).await;
}

pub(crate) async fn connect_flow(
    shared: &Arc<Shared>,
    mut client: TcpStream,
    head: http1::Head,
    rest: Vec<u8>,
) {
    let flow = shared.next_flow();
    let t = match Target::parse(&head.target, None) {
        Ok(t) => t,
        Err(why) => {
            let ev = NetEvent {
                via: "proxy",
                flow,
                host: head.target.clone(),
                method: Some(head.method.clone()),
                ..Default::default()
            };
            let r = Refusal {
                status: 400,
                code: ReasonCode::NetBadRequest,
                message: format!("CONNECT needs host:port: {why}"),
                hint: String::new(),
            };
            return refuse(shared, &mut client, ev, r).await;
        }
    };
    let mut ev = base_event(flow, &t, &head.method);
    let up = match admit(shared, &t, true, &mut ev).await {
        Ok(up) => up,
        Err(r) => return refuse(shared, &mut client, ev, r).await,
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    through(shared, client, rest, up.stream, &t, ev).await;
}

/// The rest of an allowed tunnel (explicit CONNECT or a transparently
/// captured connection): the client's first bytes must name the host it was
/// allowed for (bytes the server sends first, SSH or SMTP banners, flow
/// meanwhile); then the flow is recorded and relayed.
pub(crate) async fn through<C>(
    shared: &Arc<Shared>,
    mut client: C,
    first: Vec<u8>,
    mut up: TcpStream,
    t: &Target,
    mut ev: NetEvent,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut first = first;
    let mut down_early = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut sbuf = vec![0u8; 16 * 1024];
    let verdict = loop {
        match peek::peek(&first) {
            Peek::NeedMore => {}
            decided => break Some(decided),
        }
        if !first.is_empty() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + HEAD_TIMEOUT);
        }
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client.read_buf(&mut first) => match r {
                Ok(0) | Err(_) => break None,
                Ok(_) => {}
            },
            r = up.read(&mut sbuf) => match r {
                Ok(0) | Err(_) => break None,
                Ok(n) => {
                    if client.write_all(&sbuf[..n]).await.is_err() {
                        break None;
                    }
                    down_early += n as u64;
                }
            },
            () = wait => break Some(Peek::Malformed("the first bytes did not arrive in time")),
        }
    };
    let Some(verdict) = verdict else {
        // Closed before the client said anything that could be checked:
        // recorded as an allowed flow that carried nothing upward.
        drop(FlowGuard::open(shared, ev, 0, down_early));
        return;
    };
    drop(sbuf);
    let expected = t.host();
    let inspected = shared.policy.inspects(&expected, t.port).is_some();
    let mismatch = |what: &str, got: &str| Refusal {
        status: 403,
        code: ReasonCode::NetNameMismatch,
        message: format!(
            "the connection was allowed for {expected} but its {what} names {got} (domain \
             fronting is refused)"
        ),
        hint: format!("connect to {got} directly, if the profile allows it"),
    };
    let refusal = match &verdict {
        Peek::Tls { sni } => {
            ev.sni = sni.clone();
            match sni {
                Some(s) if *s != expected => Some(mismatch("TLS server name", s)),
                _ if inspected => {
                    if shared.inspection.is_none() {
                        Some(Refusal::failed(format!(
                            "cordon must inspect {expected}, and TLS inspection is not running"
                        )))
                    } else {
                        return crate::inspect::serve(
                            Arc::clone(shared),
                            client,
                            first,
                            up,
                            t.clone(),
                            ev,
                        )
                        .await;
                    }
                }
                _ => None,
            }
        }
        // Every request is checked, not only the first.
        Peek::Http { .. } => return http1::serve_pinned(shared, client, first, up, t, ev).await,
        Peek::Malformed(why) => Some(Refusal {
            status: 403,
            code: ReasonCode::NetBadRequest,
            message: format!("the first bytes through the tunnel to {expected}: {why}"),
            hint: String::new(),
        }),
        // What cordon cannot read must not reach a host it inspects.
        Peek::Other | Peek::NeedMore if inspected => Some(Refusal {
            status: 403,
            code: ReasonCode::NetBadRequest,
            message: format!(
                "cordon inspects {expected}: only TLS and HTTP may go there, and these bytes                  are neither"
            ),
            hint: format!("remove {expected} from [network] inspect to let other protocols through"),
        }),
        Peek::Other | Peek::NeedMore => None,
    };
    if let Some(r) = refusal {
        // Inside an established tunnel there is no HTTP reply to give: the
        // connection is closed cleanly and the event explains.
        denied(shared, ev, &r);
        close(&mut client).await;
        return;
    }
    if up.write_all(&first).await.is_err() {
        return;
    }
    let guard = FlowGuard::open(shared, ev, first.len() as u64, down_early);
    relay(client, up, &guard).await;
}

/// An allowed flow: recorded as `flow.allowed` when opened and as
/// `flow.closed` with its byte counts when dropped (also when the engine
/// shuts down with the flow still open).
pub(crate) struct FlowGuard<'a> {
    shared: &'a Shared,
    pub ev: NetEvent,
    start: Instant,
    pub up: AtomicU64,
    pub down: AtomicU64,
}

impl<'a> FlowGuard<'a> {
    pub fn open(shared: &'a Shared, mut ev: NetEvent, up: u64, down: u64) -> FlowGuard<'a> {
        ev.kind = "flow.allowed";
        shared.log.record(ev.clone());
        FlowGuard {
            shared,
            ev,
            start: Instant::now(),
            up: AtomicU64::new(up),
            down: AtomicU64::new(down),
        }
    }
}

impl Drop for FlowGuard<'_> {
    fn drop(&mut self) {
        let mut ev = std::mem::take(&mut self.ev);
        ev.kind = "flow.closed";
        if *self.shared.cut.borrow() {
            ev.code = Some(cordon_types::ReasonCode::NetSessionContained);
            ev.message = Some("cut: the session was contained".into());
        }
        ev.bytes_up = Some(self.up.load(Ordering::Relaxed));
        ev.bytes_down = Some(self.down.load(Ordering::Relaxed));
        ev.duration_ms = Some(self.start.elapsed().as_millis() as u64);
        self.shared.log.record(ev);
    }
}

/// Copies both ways until both sides are done; a side that ends its
/// sending half has that half-close passed on. Once the engine is finishing
/// (the agent has exited), a flow whose client side is closed ends without
/// waiting for the server.
pub(crate) async fn relay<C>(client: C, mut up: TcpStream, guard: &FlowGuard<'_>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut finishing = guard.shared.finishing.subscribe();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = up.split();
    let upward = copy(&mut cr, &mut uw, &guard.up);
    let downward = copy(&mut ur, &mut cw, &guard.down);
    tokio::pin!(upward, downward);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            () = &mut upward, if !up_done => up_done = true,
            () = &mut downward, if !down_done => down_done = true,
            _ = finishing.wait_for(|f| *f), if up_done => break,
        }
    }
}

async fn copy<R, W>(r: &mut R, w: &mut W, count: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    shutdown_write(w).await;
}

/// Closes a refused connection's sending side, waiting at most two seconds.
pub(crate) async fn close<W: AsyncWrite + Unpin>(w: &mut W) {
    let _ = tokio::time::timeout(Duration::from_secs(2), shutdown_write(w)).await;
}

/// Passes a half-close on. A userspace stack (ipstack) sends its FIN only
/// when `poll_shutdown` finds the data in flight acknowledged, and wakes the
/// caller only once the whole connection is gone: so poll again on a timer
/// (backing off) until it completes, for at most a minute.
async fn shutdown_write<W: AsyncWrite + Unpin>(w: &mut W) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut every = Duration::from_millis(5);
    while tokio::time::timeout(every, w.shutdown()).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        every = (every * 2).min(Duration::from_millis(500));
    }
}
