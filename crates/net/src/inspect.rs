//! TLS inspection of one allowed flow to a host the profile marks
//! `inspect`: cordon completes the agent's TLS handshake itself, with a
//! leaf for the host from the session's CA (which the sandbox trusts), and
//! opens its own TLS connection to the real server, verified against the
//! system's roots. Between the two it reads each HTTP request: the request
//! must name the host the flow was allowed for (no domain fronting inside
//! TLS), it is recorded (method, host, path, response status), and it is
//! passed on with its body streamed in both directions, never buffered
//! (server-sent events and chunked responses arrive as they are sent).
//!
//! The real server is asked first, with the protocols the agent offered
//! (ALPN `h2`, `http/1.1`); the agent's handshake then completes with the
//! one the server chose, so both sides speak the same protocol: HTTP/2
//! streams map one to one, and an HTTP/1.1 WebSocket upgrade becomes a
//! byte relay once both sides have switched.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cordon_types::ReasonCode;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::credentials::{replace_all, BoxError, Credential, Rewriting, Rule};
use crate::events::NetEvent;
use crate::proxy::{self, FlowGuard, HEAD_TIMEOUT};
use crate::tls::SessionCa;
use crate::upstream::{Dest, Refusal, Target};
use crate::{peek, Shared};

/// What inspection needs: the session's CA and the upstream trust.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The session's certificate authority.
    pub ca: Arc<SessionCa>,
    /// How upstream servers are verified.
    pub upstream: Arc<UpstreamTrust>,
    /// The secrets injected into requests to their hosts.
    pub credentials: Arc<Vec<Credential>>,
    /// Data loss prevention on every inspected request.
    pub dlp: Arc<crate::dlp::Dlp>,
}

/// How upstream servers are verified, made on the first inspected
/// connection: loading the system's roots takes milliseconds that a
/// session which never opens one need not pay at its start.
pub struct UpstreamTrust {
    make: UpstreamConfig,
    made: tokio::sync::OnceCell<Result<Arc<rustls::ClientConfig>, String>>,
}

/// Makes the client configuration for upstream servers (on a blocking
/// thread), or says why it cannot.
pub type UpstreamConfig = Box<dyn Fn() -> Result<Arc<rustls::ClientConfig>, String> + Send + Sync>;

impl std::fmt::Debug for UpstreamTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTrust")
            .field("made", &self.made.initialized())
            .finish_non_exhaustive()
    }
}

impl UpstreamTrust {
    /// Trust that `make` makes when it is first needed.
    pub fn new(make: UpstreamConfig) -> UpstreamTrust {
        UpstreamTrust {
            make,
            made: tokio::sync::OnceCell::new(),
        }
    }

    async fn config(self: &Arc<Self>) -> Result<Arc<rustls::ClientConfig>, String> {
        let this = Arc::clone(self);
        self.made
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || (this.make)())
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            })
            .await
            .clone()
    }
}

type Body = BoxBody<Bytes, BoxError>;
/// What goes upstream: the agent's body, rewritten as it streams.
type UpBody = Rewriting<Outgoing>;

/// Inspects the flow `t`, already allowed and connected (`up`); `first`
/// holds the agent's ClientHello, already read.
pub(crate) async fn serve<C>(
    shared: Arc<Shared>,
    client: C,
    first: Vec<u8>,
    up: TcpStream,
    t: Target,
    mut ev: NetEvent,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(inspection) = shared.inspection.clone() else {
        return;
    };
    let expected = t.host();
    let hello = tokio_rustls::LazyConfigAcceptor::new(
        rustls::server::Acceptor::default(),
        Rewind::new(first, client),
    );
    let start = match tokio::time::timeout(HEAD_TIMEOUT, hello).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let r = Refusal {
                status: 400,
                code: ReasonCode::NetBadRequest,
                message: format!("the TLS handshake to {expected} failed: {e}"),
                hint: String::new(),
            };
            return proxy::denied(&shared, ev, &r);
        }
        Err(_) => return,
    };
    let offered: Vec<Vec<u8>> = start
        .client_hello()
        .alpn()
        .map(|protocols| {
            protocols
                .filter(|p| *p == b"h2" || *p == b"http/1.1")
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    let up_bytes = Arc::new(AtomicU64::new(0));
    let down_bytes = Arc::new(AtomicU64::new(0));
    let counted = Counting {
        io: up,
        up: Arc::clone(&up_bytes),
        down: Arc::clone(&down_bytes),
    };
    let name = match &t.dest {
        Dest::Name(n) => rustls::pki_types::ServerName::try_from(n.clone()).ok(),
        Dest::Ip(ip) => Some(rustls::pki_types::ServerName::IpAddress((*ip).into())),
    };
    let trust = inspection.upstream.config().await;
    let connected = match (name, trust) {
        (_, Err(why)) => Err(format!("no trust for upstream servers: {why}")),
        (Some(name), Ok(trust)) => {
            let mut config = (*trust).clone();
            config.alpn_protocols = offered.clone();
            let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, counted);
            match tokio::time::timeout(HEAD_TIMEOUT, connect).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no TLS handshake within 30 s".into()),
            }
        }
        (None, Ok(_)) => Err(format!("{expected} is not a name TLS can verify")),
    };
    let upstream = match connected {
        Ok(s) => s,
        Err(why) => {
            let r = Refusal {
                status: 502,
                code: ReasonCode::NetUpstreamUntrusted,
                message: format!(
                    "cordon inspects {expected}, and its TLS connection there failed: {why}"
                ),
                hint: "if the server's CA is a private one, name its certificate in \
                       [network] upstream_ca; if the host pins its certificate or needs a \
                       client certificate, name it in [network] no_inspect"
                    .into(),
            };
            proxy::denied(&shared, ev, &r);
            return refuse_inside(&inspection.ca, start, &expected, &offered, r).await;
        }
    };
    let alpn = upstream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let server_config = match inspection.ca.server_config(&expected, alpn.as_deref()) {
        Ok(c) => c,
        Err(why) => {
            let r = Refusal::failed(format!("cordon could not make a certificate: {why}"));
            return proxy::denied(&shared, ev, &r);
        }
    };
    let client = match tokio::time::timeout(HEAD_TIMEOUT, start.into_stream(server_config)).await {
        Ok(Ok(c)) => c,
        // The agent refused cordon's certificate (it does not trust the
        // session CA, or pins another): nothing was sent.
        Ok(Err(e)) => {
            let r = Refusal {
                status: 400,
                code: ReasonCode::NetBadRequest,
                message: format!(
                    "the agent's TLS handshake with cordon's certificate for {expected} \
                     failed: {e}"
                ),
                hint: "the client must trust the session CA (cordon sets SSL_CERT_FILE and \
                       the like); a client that pins certificates needs the host in \
                       [network] no_inspect"
                    .into(),
            };
            return proxy::denied(&shared, ev, &r);
        }
        Err(_) => return,
    };
    let h2 = alpn.as_deref() == Some(b"h2");
    ev.tls = Some("inspected");
    ev.alpn = Some(if h2 { "h2" } else { "http/1.1" }.into());
    let guard = FlowGuard::open(&shared, ev, 0, 0);
    let flow = Arc::new(guard.ev.clone());
    let ctx = Arc::new(Ctx {
        shared: Arc::clone(&shared),
        expected,
        flow,
        credentials: Arc::clone(&inspection.credentials),
        dlp: Arc::clone(&inspection.dlp),
    });
    if h2 {
        serve_h2(ctx, client, upstream).await;
    } else {
        serve_h1(ctx, client, upstream).await;
    }
    guard
        .up
        .store(up_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    guard
        .down
        .store(down_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// What every request of a flow is checked against and recorded with.
struct Ctx {
    shared: Arc<Shared>,
    expected: String,
    flow: Arc<NetEvent>,
    credentials: Arc<Vec<Credential>>,
    dlp: Arc<crate::dlp::Dlp>,
}

/// HTTP/2 flow-control window per stream (twice that per connection).
const H2_WINDOW: u32 = 4 << 20;

type ClientTls<C> = tokio_rustls::server::TlsStream<Rewind<C>>;
type UpstreamTls = tokio_rustls::client::TlsStream<Counting<TcpStream>>;

async fn serve_h2<C>(ctx: Arc<Ctx>, client: ClientTls<C>, upstream: UpstreamTls)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Windows large enough that a fast download is not paced by
    // WINDOW_UPDATE round trips (the defaults hold a stream to 64 KiB in
    // flight); grown further as the link allows.
    let Ok((sender, conn)) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW * 2)
        .adaptive_window(true)
        .handshake(TokioIo::new(upstream))
        .await
    else {
        return;
    };
    let driver = tokio::spawn(conn);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        let mut sender: hyper::client::conn::http2::SendRequest<UpBody> = sender.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                forward(&ctx, req, |r| async move { sender.send_request(r).await }).await,
            )
        }
    });
    // Boxed as a Send future: the compiler cannot see it is one through
    // the service's higher-ranked lifetimes.
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW * 2)
        .adaptive_window(true)
        .serve_connection(TokioIo::new(client), service)
        .await;
    driver.abort();
}

async fn serve_h1<C>(ctx: Arc<Ctx>, client: ClientTls<C>, upstream: UpstreamTls)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
    else {
        return;
    };
    let driver: Pin<Box<dyn std::future::Future<Output = hyper::Result<()>> + Send>> =
        Box::pin(conn.with_upgrades());
    // HTTP/1.1 carries one request at a time; the server side asks for the
    // next only once this one's response is under way.
    let sender: Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<UpBody>>> =
        Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        let sender = Arc::clone(&sender);
        async move {
            Ok::<_, std::convert::Infallible>(
                forward(&ctx, req, |r| async move {
                    let mut s = sender.lock().await;
                    s.ready().await?;
                    s.send_request(r).await
                })
                .await,
            )
        }
    });
    let server: Pin<Box<dyn std::future::Future<Output = hyper::Result<()>> + Send>> = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(client), service)
            .with_upgrades(),
    );
    // Both connections run in this one task: a request and its response
    // cross without waking another task (measured: +8 % requests/s). The
    // upstream side ends once the agent's does (its sender goes with the
    // service).
    let _ = tokio::join!(server, driver);
}

/// Hop-by-hop headers (RFC 9110, 7.6.1): for one connection, not passed on
/// (except those of a WebSocket upgrade). Names made once, not parsed again
/// for every request.
static HOP_BY_HOP: [hyper::header::HeaderName; 7] = [
    hyper::header::HeaderName::from_static("keep-alive"),
    hyper::header::HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
];

/// Checks, records and passes on one request; the agent gets the server's
/// response, or cordon's explanation.
async fn forward<F, Fut>(ctx: &Ctx, req: Request<Incoming>, send: F) -> Response<Body>
where
    F: FnOnce(Request<UpBody>) -> Fut,
    Fut: std::future::Future<Output = hyper::Result<Response<Incoming>>>,
{
    let host = request_host(&req);
    let mut ev = NetEvent {
        kind: "http.request",
        via: ctx.flow.via,
        flow: ctx.flow.flow,
        host: ctx.flow.host.clone(),
        port: ctx.flow.port,
        addr: ctx.flow.addr,
        tls: Some("inspected"),
        method: Some(req.method().as_str().to_string()),
        http_host: host.clone(),
        path: Some(event_path(req.uri().path())),
        ..Default::default()
    };
    let refusal = match &host {
        Some(h) if *h != ctx.expected => Some(Refusal {
            status: 403,
            code: ReasonCode::NetNameMismatch,
            message: format!(
                "the connection was allowed for {} but this request names {h} (domain \
                 fronting is refused)",
                ctx.expected
            ),
            hint: format!("connect to {h} directly, if the profile allows it"),
        }),
        Some(_) => None,
        None => Some(Refusal {
            status: 400,
            code: ReasonCode::NetBadRequest,
            message: format!("a request to {} without a host", ctx.expected),
            hint: String::new(),
        }),
    };
    // The profile's HTTP rules for the host: method and path.
    let rules = !ctx.shared.policy.http.is_empty();
    let refusal = refusal.or_else(|| {
        if !rules {
            return None;
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        Refusal::check(
            ctx.shared
                .policy
                .check_http(&ctx.expected, req.method().as_str(), path),
        )
        .err()
    });
    if let Some(r) = refusal {
        proxy::denied(&ctx.shared, ev, &r);
        drain(req.into_body()).await;
        return refusal_response(&r);
    }
    let (mut parts, body) = req.into_parts();
    // DLP, on what the agent sent (before any secret is put in).
    let (body, note) = match dlp_check(ctx, &mut parts, body).await {
        Ok(v) => v,
        Err(r) => {
            proxy::denied(&ctx.shared, ev, &r);
            return refusal_response(&r);
        }
    };
    ev.dlp = note;
    let mut body = body;
    let has_body = !(http_body::Body::is_end_stream(&body)
        || http_body::Body::size_hint(&body).exact() == Some(0));
    if let Err(r) = inject(ctx, &mut parts, has_body).await {
        proxy::denied(&ctx.shared, ev, &r);
        drain(body).await;
        return refusal_response(&r);
    }
    let rehydrate = ctx.dlp.rehydrates(&ctx.expected, ctx.flow.port);
    // Every value known for this host is turned back into its placeholder
    // in whatever the server sends (a server may echo what it got, in a
    // header or in the body).
    let known: Vec<(&Credential, &[u8])> = ctx
        .credentials
        .iter()
        .filter(|c| c.bound_to(&ctx.expected, ctx.flow.port))
        .filter_map(|c| Some((c, c.value()?.as_slice())))
        .collect();
    if !known.is_empty() || rehydrate {
        // The response is rewritten (back to placeholders, or from DLP's
        // placeholders to the values): it must be readable.
        parts.headers.insert(
            hyper::header::ACCEPT_ENCODING,
            hyper::header::HeaderValue::from_static("identity"),
        );
    }
    let tripped = Arc::new(std::sync::Mutex::new(None));
    let mut rules = body_rules(ctx);
    if let Outgoing::Whole(Some(whole)) = &mut body {
        // Read whole: rewritten now, with its new length.
        if !rules.is_empty() {
            let mut b = whole.to_vec();
            if let Err(f) = crate::credentials::apply_rules(&mut b, &rules) {
                let r = wrong_host(ctx, &f.0);
                proxy::denied(&ctx.shared, ev, &r);
                return refusal_response(&r);
            }
            if b.len() != whole.len() {
                parts.headers.insert(
                    hyper::header::CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(b.len()),
                );
            }
            *whole = Bytes::from(b);
            rules.clear();
        }
    } else if rules.iter().any(crate::credentials::Rule::changes_length) {
        // Streamed: its new length is known only at its end.
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
    }
    let mut req = Request::from_parts(
        parts,
        Rewriting::new(body, rules, Some(Arc::clone(&tripped))),
    );
    let websocket = is_websocket(&req);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), websocket);
    let sent = send(req).await;
    let misuse = tripped
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(name) = misuse {
        let r = wrong_host(ctx, &name);
        proxy::denied(&ctx.shared, ev, &r);
        return refusal_response(&r);
    }
    match sent {
        Ok(mut resp) => {
            ev.status = Some(resp.status().as_u16());
            ctx.shared.log.record(ev);
            if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade {
                    let server_upgrade = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(s)) = tokio::join!(client_upgrade, server_upgrade) {
                            let mut c = TokioIo::new(c);
                            let mut s = TokioIo::new(s);
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                        }
                    });
                }
            } else {
                strip_hop_by_hop(resp.headers_mut(), false);
            }
            // Whatever the server sends back, the agent sees placeholders.
            let back: Vec<Rule> = known
                .iter()
                .map(|(c, v)| Rule::Replace {
                    from: v.to_vec(),
                    to: zeroize::Zeroizing::new(c.placeholder.clone()),
                })
                .collect();
            for h in resp.headers_mut().values_mut() {
                let mut bytes = h.as_bytes().to_vec();
                let mut changed = false;
                for (c, v) in &known {
                    changed |= replace_all(&mut bytes, v, &c.placeholder);
                }
                if changed {
                    if let Ok(nv) = hyper::header::HeaderValue::from_bytes(&bytes) {
                        *h = nv;
                    }
                }
            }
            if back.iter().any(Rule::changes_length) {
                resp.headers_mut().remove(hyper::header::CONTENT_LENGTH);
            }
            if rehydrate {
                // The values are longer or shorter than their placeholders.
                resp.headers_mut().remove(hyper::header::CONTENT_LENGTH);
                let dlp = Arc::clone(&ctx.dlp);
                resp.map(|b| {
                    crate::dlp::Rehydrating::new(Rewriting::new(b, back, None), dlp).boxed()
                })
            } else {
                resp.map(|b| Coalescing::new(Rewriting::new(b, back, None)).boxed())
            }
        }
        Err(e) => {
            let r = Refusal::failed(format!("{} did not answer: {e}", ctx.expected));
            ev.kind = "flow.denied";
            ev.code = Some(r.code);
            ev.message = Some(r.message.clone());
            ctx.shared.log.record(ev);
            refusal_response(&r)
        }
    }
}

/// How much of a response body is gathered into one piece, at most.
const COALESCE: usize = 64 * 1024;

/// A body that passes on, in one piece, what its inner body has ready
/// (up to [`COALESCE`] bytes), instead of frame by frame: nginx sends
/// HTTP/2 data in 8 KiB frames, and passed on one by one each became a
/// TLS record and a `send` of its own. It never waits to gather: what is
/// ready when the inner body would wait goes at once (server-sent events
/// arrive as they are sent).
struct Coalescing<B> {
    inner: B,
    /// A frame that ended the gathering (trailers, or an error), next.
    next: Option<Result<http_body::Frame<Bytes>, BoxError>>,
    done: bool,
}

impl<B> Coalescing<B> {
    fn new(inner: B) -> Coalescing<B> {
        Coalescing {
            inner,
            next: None,
            done: false,
        }
    }
}

impl<B> http_body::Body for Coalescing<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(f) = this.next.take() {
            return Poll::Ready(Some(f));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let first = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            other => return other,
        };
        let first = match first.into_data() {
            Ok(d) => d,
            Err(f) => return Poll::Ready(Some(Ok(f))),
        };
        let mut gathered: Option<bytes::BytesMut> = None;
        let mut len = first.len();
        while len < COALESCE {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        len += d.len();
                        let g = gathered.get_or_insert_with(|| {
                            let mut g = bytes::BytesMut::with_capacity(COALESCE + 16 * 1024);
                            g.extend_from_slice(&first);
                            g
                        });
                        g.extend_from_slice(&d);
                    }
                    Err(f) => {
                        this.next = Some(Ok(f));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    this.next = Some(Err(e));
                    break;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let data = gathered.map_or(first, bytes::BytesMut::freeze);
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads and drops what the agent sends of a refused request's body (at
/// most 64 KiB, for at most 2 s), so that the refusal is answered to a
/// request that is complete: over HTTP/2, answering first resets the
/// stream, and a client may see the reset instead of the explanation.
async fn drain<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) {
    let read = async {
        let mut n = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.data_ref().map_or(0, Bytes::len);
            if n > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
}

/// The body as it goes on (read whole when it is small enough to check,
/// streamed otherwise) and what DLP found; or the refusal.
async fn dlp_check(
    ctx: &Ctx,
    parts: &mut http::request::Parts,
    body: Incoming,
) -> Result<(Outgoing, Option<String>), Refusal> {
    use http_body::Body as _;
    let max = usize::try_from(ctx.dlp.policy.max_body.0).unwrap_or(usize::MAX);
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut unchecked = None;
    let (mut bytes, rest): (Option<Vec<u8>>, Option<Incoming>) = if body.is_end_stream() {
        (Some(Vec::new()), None)
    } else if declared.is_some_and(|n| n > max as u64) {
        unchecked = Some(format!(
            "body of {} bytes not checked (max_body)",
            declared.unwrap_or(0)
        ));
        (None, Some(body))
    } else {
        let mut body = body;
        let mut read = Vec::new();
        let mut ended = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Refusal {
                status: 400,
                code: ReasonCode::NetBadRequest,
                message: format!("the request body could not be read: {e}"),
                hint: String::new(),
            })?;
            if let Ok(data) = frame.into_data() {
                read.extend_from_slice(&data);
                if read.len() > max {
                    ended = false;
                    break;
                }
            }
        }
        if ended {
            (Some(read), None)
        } else {
            unchecked = Some(format!(
                "body over {max} bytes not checked past them (max_body)"
            ));
            // What was read goes first, unchecked like the rest.
            return Ok((Outgoing::Stream(Some(Bytes::from(read)), body), unchecked));
        }
    };
    let json = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    let mut uri = parts.uri.to_string().into_bytes();
    let before_uri = uri.clone();
    let verdict = {
        let header_values: Vec<(&str, &[u8])> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        ctx.dlp.check(
            &ctx.expected,
            ctx.flow.port,
            &mut uri,
            &header_values,
            bytes.as_mut().map(|b| (b, json)),
        )
    };
    let notes = match verdict {
        crate::dlp::Verdict::Block(what) => {
            return Err(Refusal {
                status: 403,
                code: ReasonCode::NetDlpBlocked,
                message: format!("{what}: data that must not leave the sandbox"),
                hint: "remove it from the request; if it is meant to go there, the profile's \
                       [dlp] action can be redact or alert"
                    .into(),
            })
        }
        crate::dlp::Verdict::Pass { notes } => notes,
    };
    if uri != before_uri {
        if let Ok(u) = http::Uri::try_from(uri) {
            parts.uri = u;
        }
    }
    let mut all: Vec<String> = notes;
    all.extend(unchecked);
    let note = (!all.is_empty()).then(|| all.join("; "));
    let body = match (bytes, rest) {
        (Some(b), _) => {
            if declared.is_some_and(|n| n != b.len() as u64)
                || (declared.is_none() && !b.is_empty())
            {
                parts.headers.insert(
                    hyper::header::CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(b.len()),
                );
                parts.headers.remove(hyper::header::TRANSFER_ENCODING);
            }
            Outgoing::Whole(Some(Bytes::from(b)))
        }
        (None, Some(rest)) => Outgoing::Stream(None, rest),
        (None, None) => Outgoing::Whole(None),
    };
    Ok((body, note))
}

/// A request body on its way upstream: read whole (and checked), or
/// streamed, after what was already read of it.
pub(crate) enum Outgoing {
    Whole(Option<Bytes>),
    Stream(Option<Bytes>, Incoming),
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Outgoing::Whole(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            Outgoing::Stream(first, rest) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Whole(b) => b.is_none(),
            Outgoing::Stream(first, rest) => first.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Outgoing::Whole(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Outgoing::Stream(first, rest) => {
                let mut h = rest.size_hint();
                let n = first.as_ref().map_or(0, |b| b.len() as u64);
                h.set_lower(h.lower() + n);
                if let Some(u) = h.upper() {
                    h.set_upper(u + n);
                }
                h
            }
        }
    }
}

/// The refusal for a placeholder of `name` on its way to the wrong host.
fn wrong_host(ctx: &Ctx, name: &str) -> Refusal {
    Refusal {
        status: 403,
        code: ReasonCode::NetSecretWrongHost,
        message: format!(
            "this request to {} carries the placeholder of the secret {name}, which is bound \
             to other hosts",
            ctx.expected
        ),
        hint: format!(
            "send {name} only to the hosts its [[secrets]] entry names, or add {} there",
            ctx.expected
        ),
    }
}

/// Whether a header value carries `placeholder` (inside HTTP Basic
/// credentials too).
fn carries(value: &[u8], placeholder: &[u8]) -> bool {
    memchr::memmem::find(value, placeholder).is_some()
        || basic_credentials(value)
            .and_then(cordon_detect::check::base64_decode)
            .is_some_and(|plain| memchr::memmem::find(&plain, placeholder).is_some())
}

/// Puts the real values of the secrets bound to this flow's host in place
/// of their placeholders, in the URL and the headers, fetching those
/// fetched on first use (and, when the request has a body, those put into
/// bodies). A placeholder of a secret bound elsewhere, or a secret that
/// cannot be fetched, is the refusal.
async fn inject(
    ctx: &Ctx,
    parts: &mut http::request::Parts,
    has_body: bool,
) -> Result<(), Refusal> {
    if ctx.credentials.is_empty() {
        return Ok(());
    }
    let mut uri = parts.uri.to_string().into_bytes();
    let mut carried = Vec::new();
    for (i, c) in ctx.credentials.iter().enumerate() {
        let bound = c.bound_to(&ctx.expected, ctx.flow.port);
        let here = memchr::memmem::find(&uri, &c.placeholder).is_some()
            || parts
                .headers
                .values()
                .any(|v| carries(v.as_bytes(), &c.placeholder));
        if here && !bound {
            return Err(wrong_host(ctx, &c.name));
        }
        if (here || (bound && c.body && has_body)) && c.value().is_none() {
            fetch(ctx, i).await?;
        }
        if here {
            carried.push(c);
        }
    }
    for c in carried {
        let Some(value) = c.value() else {
            return Err(unavailable(ctx, &c.name));
        };
        let value: &[u8] = value;
        if replace_all(&mut uri, &c.placeholder, value) {
            let u = http::Uri::try_from(std::mem::take(&mut uri)).map_err(|_| Refusal {
                status: 400,
                code: ReasonCode::NetBadRequest,
                message: format!(
                    "the URL with the secret {} put in is not a valid URL",
                    c.name
                ),
                hint: String::new(),
            })?;
            uri = u.to_string().into_bytes();
            parts.uri = u;
        }
        for v in parts.headers.values_mut() {
            let mut bytes = v.as_bytes().to_vec();
            let mut changed = replace_all(&mut bytes, &c.placeholder, value);
            // HTTP Basic: the placeholder is inside base64.
            if let Some(encoded) = basic_credentials(&bytes) {
                if let Some(mut plain) = cordon_detect::check::base64_decode(encoded) {
                    if replace_all(&mut plain, &c.placeholder, value) {
                        let mut again = b"Basic ".to_vec();
                        again.extend_from_slice(crate::base64(&plain).as_bytes());
                        zeroize::Zeroize::zeroize(&mut plain);
                        bytes = again;
                        changed = true;
                    }
                }
            }
            if changed {
                let mut nv =
                    hyper::header::HeaderValue::from_bytes(&bytes).map_err(|_| Refusal {
                        status: 400,
                        code: ReasonCode::NetBadRequest,
                        message: format!(
                            "a header with the secret {} put in is not a valid header",
                            c.name
                        ),
                        hint: String::new(),
                    })?;
                zeroize::Zeroize::zeroize(&mut bytes);
                nv.set_sensitive(true);
                *v = nv;
            }
        }
    }
    Ok(())
}

/// Fetches the value of the `i`th secret (first use) on a blocking
/// thread; DLP blocks it from then on, like every injected value.
async fn fetch(ctx: &Ctx, i: usize) -> Result<(), Refusal> {
    let creds = Arc::clone(&ctx.credentials);
    let dlp = Arc::clone(&ctx.dlp);
    let host = ctx.expected.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        let c = &creds[i];
        let (value, now) = c.fetch_blocking(&host)?;
        if now {
            dlp.add_canary(value);
        }
        Ok::<(), String>(())
    })
    .await;
    match fetched {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(unavailable(ctx, &ctx.credentials[i].name)),
    }
}

/// The refusal for a request whose secret could not be fetched. Why is
/// in the session's audit record, not told to the agent.
fn unavailable(ctx: &Ctx, name: &str) -> Refusal {
    Refusal {
        status: 502,
        code: ReasonCode::NetSecretUnavailable,
        message: format!(
            "the secret {name} could not be fetched for this request to {}",
            ctx.expected
        ),
        hint: "the session's audit record says why; check the secret's source".into(),
    }
}

/// How a request body to this flow's host is rewritten: the bound
/// secrets that allow it are put in, every other secret's placeholder
/// stops the body.
fn body_rules(ctx: &Ctx) -> Vec<Rule> {
    ctx.credentials
        .iter()
        .filter_map(|c| {
            if c.bound_to(&ctx.expected, ctx.flow.port) {
                let value = c.value().filter(|_| c.body)?;
                Some(Rule::Replace {
                    from: c.placeholder.clone(),
                    to: value.clone(),
                })
            } else {
                Some(Rule::Forbid {
                    pattern: c.placeholder.clone(),
                    name: c.name.clone(),
                })
            }
        })
        .collect()
}

/// The base64 part of a `Basic` authorization value.
pub(crate) fn basic_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"basic")
        .then(|| rest.trim_ascii())
}

/// The host a request names: HTTP/2's `:authority` (in the URI), else
/// HTTP/1.1's `Host` header; without its port, normalised.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })?;
    if authority.contains(['@', '\\']) {
        return Some(authority);
    }
    Some(peek::normalize(peek::host_of(&authority)))
}

fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name: hyper::header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(hyper::header::CONNECTION, "upgrade") && has(hyper::header::UPGRADE, "websocket")
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap, upgrade: bool) {
    // Headers the Connection header names are hop-by-hop too.
    if headers.contains_key(hyper::header::CONNECTION) {
        let named: Vec<String> = headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .filter(|t| !t.is_empty())
            .collect();
        for n in named {
            if upgrade && n == "upgrade" {
                continue;
            }
            headers.remove(n.as_str());
        }
    }
    // Most requests carry none of them: one pass over the (few) headers
    // finds those to remove, instead of a lookup for each name.
    let found: Vec<hyper::header::HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    for n in &found {
        headers.remove(n);
    }
    if !upgrade {
        headers.remove(hyper::header::CONNECTION);
        headers.remove(hyper::header::UPGRADE);
    }
}

/// The path recorded for a request (its query may carry tokens: never).
fn event_path(path: &str) -> String {
    const MAX: usize = 512;
    let mut p = path.to_string();
    if p.len() > MAX {
        let mut end = MAX;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p.truncate(end);
        p.push_str("...");
    }
    p
}

fn refusal_response(r: &Refusal) -> Response<Body> {
    let mut body = format!(
        "cordon blocked this request: {}\nreason: {}\n",
        r.message,
        r.code.as_str()
    );
    if !r.hint.is_empty() {
        body.push_str(&format!("to allow it: {}\n", r.hint));
    }
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(r.code.as_str()) {
        h.insert("x-cordon-reason", v);
    }
    resp
}

/// The real server could not be reached safely: the agent's handshake
/// completes anyway (HTTP/1.1), and every request it sends hears why.
async fn refuse_inside<C>(
    ca: &SessionCa,
    start: tokio_rustls::StartHandshake<Rewind<C>>,
    expected: &str,
    offered: &[Vec<u8>],
    r: Refusal,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let alpn = offered
        .iter()
        .any(|p| p == b"http/1.1")
        .then_some(&b"http/1.1"[..]);
    let Ok(config) = ca.server_config(expected, alpn) else {
        return;
    };
    let Ok(Ok(client)) = tokio::time::timeout(HEAD_TIMEOUT, start.into_stream(config)).await else {
        return;
    };
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let resp = refusal_response(&r);
        async move { Ok::<_, std::convert::Infallible>(resp) }
    });
    let _ = tokio::time::timeout(
        HEAD_TIMEOUT,
        hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(TokioIo::new(client), service),
    )
    .await;
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Rewind<C> {
    prefix: Vec<u8>,
    at: usize,
    inner: C,
}

impl<C> Rewind<C> {
    fn new(prefix: Vec<u8>, inner: C) -> Rewind<C> {
        Rewind {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Rewind<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Rewind<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Vectored writes pass through: rustls writes the TLS records it has
    // ready in one call, which would otherwise become a send per record.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The upstream socket, counting the bytes of the flow (TLS included, as
/// for a tunnel).
pub(crate) struct Counting<T> {
    io: T,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.down.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.up.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.up.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames given out one per poll; `None` is a pending poll (the next
    /// poll goes on).
    struct Script(std::collections::VecDeque<Option<http_body::Frame<Bytes>>>);

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(Some(f)) => Poll::Ready(Some(Ok(f))),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }
    }

    #[test]
    fn coalescing_gathers_what_is_ready_and_never_waits() {
        let data = |n: usize, b: u8| Some(http_body::Frame::data(Bytes::from(vec![b; n])));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let script = Script(
            [
                data(8192, b'a'),
                data(8192, b'b'),
                None,
                data(10, b'c'),
                None,
                // More than COALESCE ready at once: cut at the limit.
                data(40_000, b'd'),
                data(40_000, b'e'),
                data(5, b'f'),
                Some(http_body::Frame::trailers(trailers)),
            ]
            .into_iter()
            .collect(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let frames = rt.block_on(async {
            let mut body = Coalescing::new(script);
            let mut out = Vec::new();
            while let Some(f) = body.frame().await {
                let f = f.unwrap();
                out.push(match f.into_data() {
                    Ok(d) => format!("{}{}", d.len(), char::from(d[d.len() - 1])),
                    Err(t) => format!("trailers {}", t.trailers_ref().map_or(0, |t| t.len())),
                });
            }
            out
        });
        assert_eq!(frames, ["16384b", "10c", "80000e", "5f", "trailers 1"]);
    }
}
