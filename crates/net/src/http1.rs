//! Plain HTTP/1 through cordon, one request at a time, with connections
//! kept alive: every request on a connection is checked, not only the
//! first, so a kept-alive connection cannot carry a later request to
//! another site (a `Host` or absolute-form target naming another name).
//!
//! Two uses: the explicit proxy (absolute-form requests, each naming its
//! destination; the connection to a destination is reused while requests
//! keep naming it) and a connection that is already allowed for one name
//! (a transparently captured flow or a CONNECT tunnel that carries plain
//! HTTP; requests are passed on byte for byte).
//!
//! Bodies are passed on as they come, in their own framing
//! (`Content-Length` or chunked): cordon only follows the framing to find
//! where the next request starts, and refuses requests whose framing is
//! ambiguous (both `Transfer-Encoding` and `Content-Length`, several
//! lengths, codings other than chunked), the ingredients of request
//! smuggling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cordon_types::ReasonCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::events::NetEvent;
use crate::peek;
use crate::proxy::{self, FlowGuard};
use crate::upstream::{Dest, Refusal, Target};
use crate::Shared;

/// The longest request head accepted.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The longest response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// How long a kept-alive client connection may sit between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest chunk extension and the most trailer bytes accepted.
const MAX_CHUNK_EXT: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// The longest path recorded in an event.
const MAX_EVENT_PATH: usize = 512;

/// A request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub target: String,
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn is(&self, method: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
    }

    /// Whether the client asks for the connection to end after this
    /// request (HTTP/1.0, or `Connection: close`).
    fn wants_close(&self) -> bool {
        self.minor_version == 0 || has_token(self.values("connection"), "close")
    }

    /// Whether the client asks to switch protocols.
    fn wants_upgrade(&self) -> bool {
        self.values("upgrade").next().is_some() && has_token(self.values("connection"), "upgrade")
    }

    /// Whether the upgrade asked for is WebSocket, the only one passed:
    /// after a 101 the bytes are no longer read, and HTTP/2 (`h2c`) would
    /// carry requests for any host in frames cordon does not parse.
    fn upgrade_is_websocket(&self) -> bool {
        let mut up = self.values("upgrade");
        matches!((up.next(), up.next()), (Some(v), None) if v.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    }
}

/// Reads a request head into `buf` (which may already hold some of it).
/// `None`: the connection closed (or failed) before a whole head came: the
/// client went away, which is not a request to answer or record. `Err`: the
/// head does not parse or is too long.
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<Head>, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; peek::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                if len > MAX_REQUEST_HEAD {
                    return Err("request head longer than 16 KiB".into());
                }
                // A server that splits lines on CRLF only would read such a
                // head differently (one header where cordon saw two).
                if buf[..len]
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
                {
                    return Err("a line in the request head ends without CR".into());
                }
                return Ok(Some(Head {
                    method: req.method.unwrap_or_default().to_owned(),
                    target: req.path.unwrap_or_default().to_owned(),
                    minor_version: req.version.unwrap_or(1),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_vec()))
                        .collect(),
                    len,
                }));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() >= MAX_REQUEST_HEAD {
            return Err("request head longer than 16 KiB".into());
        }
        buf.reserve(4096);
        match r.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Whether any comma-separated token of the header values is `token`.
fn has_token<'a>(values: impl Iterator<Item = &'a [u8]>, token: &str) -> bool {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// How a message body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunked),
    /// Until the sender closes (responses only).
    UntilClose,
}

impl Framing {
    /// The framing of a request body (RFC 9112 §6.3), refusing the
    /// ambiguous cases.
    fn of_request(h: &Head) -> Result<Framing, &'static str> {
        let te: Vec<&[u8]> = h.values("transfer-encoding").collect();
        let cl: Vec<&[u8]> = h.values("content-length").collect();
        if !te.is_empty() {
            if !cl.is_empty() {
                return Err("both Transfer-Encoding and Content-Length");
            }
            // Exactly `chunked`: other codings, lists and repeats are read
            // differently by different servers.
            return match te.as_slice() {
                [v] if v.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
                    Ok(Framing::Chunked(Chunked::default()))
                }
                _ => Err("a Transfer-Encoding other than exactly chunked"),
            };
        }
        match content_length(&cl)? {
            Some(0) | None => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
        }
    }

    /// The framing of a response body to a request with `method`.
    fn of_response(
        method_head: bool,
        status: u16,
        headers: &[httparse::Header<'_>],
    ) -> Result<Framing, &'static str> {
        if method_head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Framing::Empty);
        }
        let values = |name: &str| -> Vec<&[u8]> {
            headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect()
        };
        let te = values("transfer-encoding");
        if !te.is_empty() {
            return Ok(match last_coding(&te) {
                Some(c) if c.eq_ignore_ascii_case(b"chunked") => {
                    Framing::Chunked(Chunked::default())
                }
                _ => Framing::UntilClose,
            });
        }
        match content_length(&values("content-length"))? {
            Some(0) => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
            None => Ok(Framing::UntilClose),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Framing::Empty => true,
            Framing::Length(n) => *n == 0,
            Framing::Chunked(c) => c.state == ChunkState::Done,
            Framing::UntilClose => false,
        }
    }

    /// How many leading bytes of `buf` belong to the body (they are passed
    /// on as they are).
    fn take(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        match self {
            Framing::Empty => Ok(0),
            Framing::Length(n) => {
                let k = (*n).min(buf.len() as u64);
                *n -= k;
                Ok(k as usize)
            }
            Framing::Chunked(c) => c.take(buf),
            Framing::UntilClose => Ok(buf.len()),
        }
    }
}

fn codings<'a>(te: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    te.iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty())
}

fn last_coding<'a>(te: &'a [&'a [u8]]) -> Option<&'a [u8]> {
    codings(te).last()
}

/// The one `Content-Length` all the header's values agree on.
fn content_length(values: &[&[u8]]) -> Result<Option<u64>, &'static str> {
    let mut found: Option<u64> = None;
    for v in values.iter().flat_map(|v| v.split(|&b| b == b',')) {
        let v = v.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err("a Content-Length that is not a number");
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a Content-Length that is not a number")?;
        match found {
            Some(m) if m != n => return Err("several different Content-Length values"),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Where a chunked body's parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows a chunked body (RFC 9112 §7.1) to find its end, strictly: CRLF
/// line ends, at most 16 hex digits of size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    extra: usize,
}

impl Chunked {
    fn take(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            if self.state == Done {
                break;
            }
            if self.state == Data {
                let k = self.size.min((buf.len() - i) as u64);
                self.size -= k;
                i += k as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    // At most 15 hex digits: no size wraps around in a
                    // server that keeps it in 64 bits.
                    if self.digits == 15 {
                        return Err("a chunk size of more than 15 hex digits");
                    }
                    self.digits += 1;
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size << 4 | u64::from(d);
                    Size
                }
                (Size, _) if self.digits == 0 => return Err("a chunk without a size"),
                (Size | SizeWs, b'\r') => SizeLf,
                (Size | SizeWs, b' ' | b'\t') => SizeWs,
                (Size | SizeWs, b';') => {
                    self.extra = 0;
                    Ext
                }
                (Size | SizeWs, _) => return Err("a malformed chunk size line"),
                (Ext, b'\r') => SizeLf,
                // Extensions are tokens, quoted strings and whitespace:
                // printable ASCII.
                (Ext, b' ' | b'\t' | 0x21..=0x7e) => {
                    self.extra += 1;
                    if self.extra > MAX_CHUNK_EXT {
                        return Err("a chunk extension longer than 4 KiB");
                    }
                    Ext
                }
                (Ext, _) => return Err("a chunk extension that is not text"),
                (SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 {
                        self.extra = 0;
                        TrailerStart
                    } else {
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataCr, _) => return Err("chunk data longer than its size"),
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => EndLf,
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, b'\n') => return Err("a trailer line without CRLF"),
                (TrailerStart | Trailer, _) => {
                    self.extra += 1;
                    if self.extra > MAX_TRAILERS {
                        return Err("trailers longer than 16 KiB");
                    }
                    Trailer
                }
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => Done,
                (SizeLf | DataLf | TrailerLf | EndLf, _) => {
                    return Err("a chunked line without CRLF")
                }
                (Data | Done, _) => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

/// What became of a connection after one exchange.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Ready for the next request.
    KeepAlive,
    /// To be closed (either side asked, a body was cut short, or an error
    /// was answered).
    Close,
    /// The server switched protocols (101): bytes flow freely from now on.
    Upgraded,
}

/// A connection to a destination, with the flow it is recorded as.
pub(crate) struct Up<'a> {
    target: Target,
    /// Plain HTTP to an upstream proxy: requests go in absolute form.
    via_proxy: bool,
    fixed: Option<std::net::SocketAddr>,
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
    buf: Vec<u8>,
    guard: FlowGuard<'a>,
}

/// Relay buffer growth step (see [`proxy::RELAY_BUF`]).
fn reserve(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(proxy::RELAY_BUF);
    }
}

/// Passes one body from `r` (after what `buf` holds) to `w`. Bytes after
/// the body stay in `buf`.
async fn pass_body<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    framing: &mut Framing,
    count: &AtomicU64,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !buf.is_empty() {
            let n = framing.take(buf)?;
            if n > 0 {
                w.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
                count.fetch_add(n as u64, Ordering::Relaxed);
                buf.drain(..n);
            }
        }
        if framing.is_done() {
            return Ok(());
        }
        reserve(buf);
        match r.read_buf(buf).await {
            Ok(0) if *framing == Framing::UntilClose => return Ok(()),
            Ok(0) => return Err("the connection closed inside a body".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How the response to one request ended.
struct Response {
    close: bool,
    upgraded: bool,
}

/// Failure while passing a response on.
struct ResponseError {
    /// Whether part of the response already reached the client (then it can
    /// only be cut, not answered).
    started: bool,
    why: String,
}

/// Reads the response to a request from the destination and passes it on:
/// interim 1xx responses, then the final one with its body.
/// What the response to a request may be, and how it is passed on.
struct Expect {
    /// The request was HEAD: no body.
    head_request: bool,
    /// The request asked for a (WebSocket) upgrade.
    upgrade_asked: bool,
    /// The connection ends after this response: say so in it.
    close_after: bool,
    /// How long the destination may take to start it.
    timeout: Duration,
}

async fn pass_response<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    expect: Expect,
    count: &AtomicU64,
) -> Result<Response, ResponseError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut started = false;
    let fail = |started: bool, why: String| ResponseError { started, why };
    let Expect {
        head_request,
        upgrade_asked,
        close_after,
        timeout,
    } = expect;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (len, status, mut framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let framing = Framing::of_response(head_request, status, resp.headers)
                        .map_err(|e| fail(started, format!("the response has {e}")))?;
                    let conn = resp
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                        .map(|h| h.value);
                    let close = resp.version == Some(0) || has_token(conn, "close");
                    break (len, status, framing, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(fail(started, format!("malformed response: {e}"))),
            }
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(fail(started, "response head longer than 64 KiB".into()));
            }
            buf.reserve(4096);
            match tokio::time::timeout_at(deadline, r.read_buf(buf)).await {
                Ok(Ok(0)) => {
                    return Err(fail(
                        started,
                        "the server closed the connection without a response".into(),
                    ))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(fail(started, e.to_string())),
                Err(_) => {
                    return Err(fail(
                        started,
                        format!("no response within {} s", timeout.as_secs()),
                    ))
                }
            }
        };
        // The head goes out with the part of the body already read, in one
        // write: a write each would wake the client twice per response (on
        // loopback that alone cost a quarter of the requests per second).
        let body_now = framing
            .take(&buf[len..])
            .map_err(|e| fail(started, format!("the response body: {e}")))?;
        let n = len + body_now;
        let written = if close_after && status >= 200 {
            // The connection ends after this response: say so, so that the
            // client does not send its next request on it.
            let mut out = Vec::with_capacity(n + 19);
            out.extend_from_slice(&buf[..len - 2]);
            out.extend_from_slice(b"connection: close\r\n\r\n");
            out.extend_from_slice(&buf[len..n]);
            w.write_all(&out).await
        } else {
            w.write_all(&buf[..n]).await
        };
        written.map_err(|e| fail(true, e.to_string()))?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        buf.drain(..n);
        started = true;
        if status == 101 {
            if !upgrade_asked {
                return Err(fail(true, "101 to a request that asked no upgrade".into()));
            }
            return Ok(Response {
                close: false,
                upgraded: true,
            });
        }
        if (100..200).contains(&status) {
            continue;
        }
        let until_close = framing == Framing::UntilClose;
        pass_body(r, buf, w, &mut framing, count)
            .await
            .map_err(|why| fail(true, why))?;
        // Bytes past the response (a body sent with a 204, say) would be
        // taken as the next request's response: the connection ends.
        return Ok(Response {
            close: close || until_close || !buf.is_empty(),
            upgraded: false,
        });
    }
}

/// A checked request, ready to be sent on.
struct Outgoing<'a> {
    head: &'a Head,
    /// Its body's framing.
    framing: Framing,
    /// The head as the destination gets it.
    bytes: Vec<u8>,
}

/// Sends a request head and its body, passes the response back, and says
/// what becomes of the connection.
async fn exchange<CR, CW>(
    shared: &Shared,
    cr: &mut CR,
    cbuf: &mut Vec<u8>,
    cw: &mut CW,
    up: &mut Up<'_>,
    req: Outgoing<'_>,
) -> Outcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let Outgoing {
        head,
        mut framing,
        bytes: out,
    } = req;
    // After a request with a body the connection is not reused: a server
    // that ignores a body it was not expecting would take the body as a
    // next request, and its answer to that one must not reach the client.
    let had_body = framing != Framing::Empty;
    cbuf.drain(..head.len);
    // The head and the part of the body already read go in one write.
    let mut out = out;
    match framing.take(cbuf) {
        Ok(n) => {
            out.extend_from_slice(&cbuf[..n]);
            cbuf.drain(..n);
        }
        Err(e) => {
            let _ = cw
                .write_all(&proxy::refusal_response(&bad(format!(
                    "the request body: {e}"
                ))))
                .await;
            return Outcome::Close;
        }
    }
    if let Err(e) = up.w.write_all(&out).await {
        let r = Refusal::failed(format!("cannot send the request: {e}"));
        let _ = cw.write_all(&proxy::refusal_response(&r)).await;
        return Outcome::Close;
    }
    up.guard.up.fetch_add(out.len() as u64, Ordering::Relaxed);
    let head_request = head.is("HEAD");
    let upgrade_asked = head.wants_upgrade();
    let (sent, response) = {
        let send = pass_body(cr, cbuf, &mut up.w, &mut framing, &up.guard.up);
        let expect = Expect {
            head_request,
            upgrade_asked,
            close_after: had_body,
            timeout: shared.response_timeout,
        };
        let recv = pass_response(&mut up.r, &mut up.buf, cw, expect, &up.guard.down);
        tokio::pin!(send, recv);
        let mut sent = None;
        let mut finishing = shared.finishing.subscribe();
        let response = loop {
            // The body first: a fast answer must not find a body that was
            // complete but not yet seen to be.
            tokio::select! {
                biased;
                r = &mut send, if sent.is_none() => {
                    let failed = r.is_err();
                    sent = Some(r);
                    if failed {
                        break None;
                    }
                }
                r = &mut recv => break Some(r),
                // The agent has exited and nobody is left to read the answer.
                _ = finishing.wait_for(|f| *f), if sent.is_none() => break None,
            }
        };
        (sent, response)
    };
    match (sent, response) {
        (Some(Ok(())), Some(Ok(resp))) => {
            if resp.upgraded {
                Outcome::Upgraded
            } else if resp.close || head.wants_close() || had_body {
                Outcome::Close
            } else {
                Outcome::KeepAlive
            }
        }
        // Answered before the whole body was sent: the rest of the body
        // cannot be told from a next request.
        (_, Some(Ok(_))) => Outcome::Close,
        (_, Some(Err(e))) if !e.started => {
            let r = Refusal::failed(format!(
                "{} did not answer properly: {}",
                up.target.authority(),
                e.why
            ));
            let _ = cw.write_all(&proxy::refusal_response(&r)).await;
            Outcome::Close
        }
        _ => Outcome::Close,
    }
}

/// The request's path for events: no query (it may carry tokens), bounded.
fn event_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let mut end = path.len().min(MAX_EVENT_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

/// Records one request that went through an allowed flow.
fn record_request(shared: &Shared, flow: &NetEvent, head: &Head, host: Option<String>, path: &str) {
    shared.log.record(NetEvent {
        kind: "http.request",
        via: flow.via,
        flow: flow.flow,
        host: flow.host.clone(),
        port: flow.port,
        method: Some(head.method.clone()),
        http_host: host,
        path: Some(event_path(path)),
        ..Default::default()
    });
}

/// Checks every request makes, whatever the mode: only WebSocket
/// upgrades, and no body on a method that has no use for one (a server
/// would not read it, and would take it for a next request).
fn common_checks(h: &Head, framing: &Framing) -> Result<(), Refusal> {
    if h.values("upgrade").next().is_some() && !h.upgrade_is_websocket() {
        return Err(bad(
            "only WebSocket upgrades are passed (an HTTP/2 or other upgraded connection \
             carries requests cordon does not read)"
                .into(),
        ));
    }
    if *framing != Framing::Empty && (h.is("HEAD") || h.is("TRACE")) {
        return Err(bad(format!("a {} request with a body", h.method)));
    }
    Ok(())
}

/// The single `Host` of a request, normalised (name only, lower-case).
fn host_header(head: &Head) -> Result<Option<String>, Refusal> {
    let mut hosts = head.values("host");
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(bad("several Host headers".into())),
        (None, _) => Ok(None),
        (Some(h), None) => match std::str::from_utf8(h) {
            Ok(v) => Ok(Some(peek::normalize(peek::host_of(v.trim())))),
            Err(_) => Err(bad("a Host header that is not text".into())),
        },
    }
}

fn bad(message: String) -> Refusal {
    Refusal {
        status: 400,
        code: ReasonCode::NetBadRequest,
        message,
        hint: String::new(),
    }
}

fn fronting(expected: &str, what: &str, got: &str) -> Refusal {
    Refusal {
        status: 403,
        code: ReasonCode::NetNameMismatch,
        message: format!(
            "the request goes to {expected} but its {what} names {got} (domain fronting is \
             refused)"
        ),
        hint: format!("send requests for {got} on their own connection, if the profile allows it"),
    }
}

/// Answers a refused request and records it.
async fn refuse<W: AsyncWrite + Unpin>(shared: &Shared, w: &mut W, ev: NetEvent, r: &Refusal) {
    proxy::denied(shared, ev, r);
    let _ = w.write_all(&proxy::refusal_response(r)).await;
    proxy::close(w).await;
}

/// What the wait for the next request brought.
enum Next {
    Request(Head),
    /// The client closed, stayed idle too long, or the agent has exited.
    End,
    /// A head that does not parse.
    Bad(String),
    /// The idle connection to the destination closed (or the server sent
    /// something unasked, a 408): it cannot carry the next request.
    UpstreamGone,
}

/// Waits for the next request head: the first within the head timeout,
/// later ones while the connection is idle for less than [`IDLE_TIMEOUT`]
/// and the agent is still running, watching the idle destination
/// connection `idle_up` meanwhile.
async fn next_request<R: AsyncRead + Unpin>(
    shared: &Shared,
    r: &mut R,
    buf: &mut Vec<u8>,
    first: bool,
    idle_up: Option<&mut OwnedReadHalf>,
) -> Next {
    let limit = if first {
        proxy::HEAD_TIMEOUT
    } else {
        IDLE_TIMEOUT
    };
    let waiting = buf.is_empty();
    let mut finishing = shared.finishing.subscribe();
    let upstream_gone = async {
        match idle_up {
            Some(u) => {
                let _ = u.peek(&mut [0u8; 1]).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::time::timeout(limit, read_request(r, buf)) => match r {
            Ok(Ok(Some(h))) => Next::Request(h),
            Ok(Ok(None)) | Err(_) => Next::End,
            Ok(Err(why)) => Next::Bad(why),
        },
        _ = finishing.wait_for(|f| *f), if waiting && !first => Next::End,
        () = upstream_gone, if waiting => Next::UpstreamGone,
    }
}

/// Serves plain HTTP on an explicit-proxy client connection whose first
/// request head is in `cbuf` (`head`). A later CONNECT on the same
/// connection is handed to the CONNECT path.
pub(crate) async fn serve_proxy(
    shared: &std::sync::Arc<Shared>,
    client: TcpStream,
    mut cbuf: Vec<u8>,
    head: Head,
) {
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut up: Option<Up<'_>> = None;
    let mut head = Some(head);
    loop {
        let h = match head.take() {
            Some(h) => h,
            None => match next_request(
                shared,
                &mut cr,
                &mut cbuf,
                false,
                up.as_mut().map(|u| &mut u.r),
            )
            .await
            {
                Next::Request(h) => h,
                Next::End => return,
                // The next request to it gets a new connection.
                Next::UpstreamGone => {
                    up = None;
                    continue;
                }
                Next::Bad(why) => {
                    let r = bad(format!(
                        "cordon's egress proxy could not read the request: {why}"
                    ));
                    let _ = cw.write_all(&proxy::refusal_response(&r)).await;
                    return;
                }
            },
        };
        if h.is("CONNECT") {
            drop(up.take());
            let client = cr.unsplit(cw);
            let rest = cbuf.split_off(h.len);
            return proxy::connect_flow(shared, client, h, rest).await;
        }
        let mut ev = NetEvent {
            via: "proxy",
            host: h.target.clone(),
            method: Some(h.method.clone()),
            ..Default::default()
        };
        let ProxyRequest {
            target: t,
            path,
            host,
            framing,
        } = match check_proxy_request(&h, &mut ev).and_then(|checked| {
            Refusal::check(shared.policy.check_http(
                &checked.target.host(),
                &h.method,
                &checked.path,
            ))?;
            no_placeholder(shared, &h, &checked.target.host())?;
            Ok(checked)
        }) {
            Ok(checked) => checked,
            Err(r) => {
                ev.flow = shared.next_flow();
                return refuse(shared, &mut cw, ev, &r).await;
            }
        };
        if up.as_ref().is_some_and(|u| u.target == t) {
            if let Err(r) = proxy::decide(shared, &t) {
                ev.flow = shared.next_flow();
                return refuse(shared, &mut cw, ev, &r).await;
            }
        } else {
            // The previous destination's exchange is complete: its
            // connection ends (and its flow is recorded as closed).
            drop(up.take());
            ev.flow = shared.next_flow();
            match proxy::admit(shared, &t, false, &mut ev).await {
                Ok(u) => {
                    let (r, w) = u.stream.into_split();
                    up = Some(Up {
                        target: t,
                        via_proxy: u.via_proxy,
                        fixed: u.fixed,
                        r,
                        w,
                        buf: Vec::new(),
                        guard: FlowGuard::open(shared, ev, 0, 0),
                    });
                }
                Err(r) => return refuse(shared, &mut cw, ev, &r).await,
            }
        }
        let Some(u) = up.as_mut() else { return };
        record_request(shared, &u.guard.ev, &h, host, &path);
        let req = Outgoing {
            head: &h,
            framing,
            bytes: proxy_head(shared, u, &h, &path),
        };
        match exchange(shared, &mut cr, &mut cbuf, &mut cw, u, req).await {
            Outcome::KeepAlive => {}
            Outcome::Close => {
                proxy::close(&mut cw).await;
                return;
            }
            Outcome::Upgraded => {
                let Some(u) = up.take() else { return };
                let client = cr.unsplit(cw);
                return tunnel(client, cbuf, u).await;
            }
        }
    }
}

/// A checked absolute-form proxy request.
struct ProxyRequest {
    target: Target,
    /// The origin-form path.
    path: String,
    /// Its `Host`, which names the destination if present.
    host: Option<String>,
    framing: Framing,
}

/// Checks an absolute-form proxy request: its destination, `Host` and body
/// framing; fills in `ev` (which records a refusal) as it learns.
fn check_proxy_request(h: &Head, ev: &mut NetEvent) -> Result<ProxyRequest, Refusal> {
    let (target, path) = proxy_target(h)?;
    ev.host = target.host();
    ev.port = target.port;
    let host = host_header(h)?;
    ev.http_host.clone_from(&host);
    if let Some(name) = host.as_ref().filter(|n| **n != target.host()) {
        return Err(fronting(&target.host(), "Host header", name));
    }
    let framing = Framing::of_request(h).map_err(|e| bad(format!("the request has {e}")))?;
    common_checks(h, &framing)?;
    Ok(ProxyRequest {
        target,
        path,
        host,
        framing,
    })
}

/// The destination and origin-form path of an absolute-form proxy request.
fn proxy_target(h: &Head) -> Result<(Target, String), Refusal> {
    let lower = h.target.to_ascii_lowercase();
    let Some(after) = lower.strip_prefix("http://").map(|_| &h.target[7..]) else {
        let why = if h.target.starts_with('/') {
            "this is cordon's egress proxy: send requests through it (HTTP_PROXY), not to it"
                .to_owned()
        } else {
            format!(
                "only http:// URLs and CONNECT are proxied, not {:?}",
                h.target
            )
        };
        return Err(bad(why));
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, path) = after.split_at(end);
    if authority.contains('@') {
        return Err(bad("credentials in a proxied URL are refused".into()));
    }
    let t = Target::parse(authority, Some(80)).map_err(bad)?;
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    Ok((t, path))
}

/// Headers that concern only the connection to the proxy. `Content-Length`,
/// `Transfer-Encoding` and `Host` are never dropped: the body is passed on
/// in the framing cordon followed.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
];

/// The request head as sent on: origin form to the destination (absolute
/// form to an upstream proxy), without the client's proxy headers.
fn proxy_head(shared: &Shared, u: &Up<'_>, h: &Head, path: &str) -> Vec<u8> {
    let target = if u.via_proxy {
        let authority = match (&u.target.dest, u.fixed) {
            (Dest::Name(_), Some(addr)) => addr.to_string(),
            _ => u.target.authority(),
        };
        format!("http://{authority}{path}")
    } else {
        path.to_owned()
    };
    let upgrade = h.wants_upgrade();
    let mut out = Vec::with_capacity(h.len + 64);
    out.extend_from_slice(
        format!("{} {target} HTTP/1.{}\r\n", h.method, h.minor_version).as_bytes(),
    );
    let mut has_host = false;
    for (name, value) in &h.headers {
        if HOP_BY_HOP.iter().any(|x| name.eq_ignore_ascii_case(x))
            || (!upgrade && name.eq_ignore_ascii_case("upgrade"))
        {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("host: {}\r\n", u.target.authority()).as_bytes());
    }
    if let (true, Some(a)) = (u.via_proxy, &shared.proxy_authorization) {
        out.extend_from_slice(format!("proxy-authorization: {a}\r\n").as_bytes());
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if h.wants_close() {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Serves plain HTTP on a connection allowed for `t` and connected to it
/// (`up`): a transparently captured flow or a CONNECT tunnel. `cbuf` holds
/// the first request's start. Every request must name `t` (its `Host`, and
/// its target when in absolute form); requests pass on unchanged.
pub(crate) async fn serve_pinned<C>(
    shared: &Shared,
    client: C,
    mut cbuf: Vec<u8>,
    stream: TcpStream,
    t: &Target,
    ev: NetEvent,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let expected = t.host();
    let (r, w) = stream.into_split();
    let mut flow = Some(ev);
    let mut up: Option<Up<'_>> = None;
    let mut first = true;
    let mut parts = Some((r, w));
    loop {
        let idle_up = up.as_mut().map(|u| &mut u.r);
        let h = match next_request(shared, &mut cr, &mut cbuf, first, idle_up).await {
            Next::Request(h) => h,
            Next::End => return,
            // The client's connection is this one: it ends too, and the
            // client connects again.
            Next::UpstreamGone => return proxy::close(&mut cw).await,
            Next::Bad(why) => {
                let r = bad(format!(
                    "a request to {expected} that does not parse: {why}"
                ));
                let ev = flow_event(&flow, &up);
                return refuse(shared, &mut cw, ev, &r).await;
            }
        };
        first = false;
        let mut ev = flow_event(&flow, &up);
        ev.method = Some(h.method.clone());
        let checked = pinned_check(&h, &expected).inspect(|host| {
            ev.http_host.clone_from(host);
        });
        let (host, framing) = match checked.and_then(|host| {
            let f = Framing::of_request(&h).map_err(|e| bad(format!("the request has {e}")))?;
            common_checks(&h, &f)?;
            Refusal::check(
                shared
                    .policy
                    .check_http(&expected, &h.method, origin_path(&h.target)),
            )?;
            no_placeholder(shared, &h, &expected)?;
            Ok((host, f))
        }) {
            Ok(v) => v,
            Err(r) => return refuse(shared, &mut cw, ev, &r).await,
        };
        if up.is_none() {
            let (Some(mut ev), Some((r, w))) = (flow.take(), parts.take()) else {
                return;
            };
            ev.http_host.clone_from(&host);
            up = Some(Up {
                target: t.clone(),
                via_proxy: false,
                fixed: None,
                r,
                w,
                buf: Vec::new(),
                guard: FlowGuard::open(shared, ev, 0, 0),
            });
        }
        let Some(u) = up.as_mut() else { return };
        record_request(shared, &u.guard.ev, &h, host, &h.target);
        let req = Outgoing {
            head: &h,
            framing,
            bytes: cbuf[..h.len].to_vec(),
        };
        match exchange(shared, &mut cr, &mut cbuf, &mut cw, u, req).await {
            Outcome::KeepAlive => {}
            Outcome::Close => {
                proxy::close(&mut cw).await;
                return;
            }
            Outcome::Upgraded => {
                let Some(u) = up.take() else { return };
                let client = cr.unsplit(cw);
                return tunnel(client, cbuf, u).await;
            }
        }
    }
}

/// Refuses a plain-HTTP request whose target or headers (HTTP Basic
/// decoded) carry a secret's placeholder: secrets go only into inspected
/// HTTPS requests to their hosts, never in clear text, and a placeholder
/// anywhere else is an attempt to move the credential. (Bodies of plain
/// requests are not searched.)
fn no_placeholder(shared: &Shared, h: &Head, host: &str) -> Result<(), Refusal> {
    let Some(inspection) = &shared.inspection else {
        return Ok(());
    };
    let has = |hay: &[u8], p: &[u8]| memchr::memmem::find(hay, p).is_some();
    for c in inspection.credentials.iter() {
        let p = c.placeholder.as_slice();
        let found = has(h.target.as_bytes(), p)
            || h.headers.iter().any(|(_, v)| {
                has(v, p)
                    || crate::inspect::basic_credentials(v)
                        .and_then(cordon_detect::check::base64_decode)
                        .is_some_and(|plain| has(&plain, p))
            });
        if found {
            return Err(Refusal {
                status: 403,
                code: cordon_types::ReasonCode::NetSecretWrongHost,
                message: format!(
                    "this plain-HTTP request to {host} carries the placeholder of the secret \
                     {}: secrets go only into HTTPS requests to the hosts they are bound to",
                    c.name
                ),
                hint: format!("use https:// toward the hosts {} is bound to", c.name),
            });
        }
    }
    Ok(())
}

/// The path of a request target: itself in origin form, the part after
/// the authority in absolute form (`http://host/p` is `/p`).
fn origin_path(target: &str) -> &str {
    match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

/// The flow's event before or after it was opened, for a refusal.
fn flow_event(flow: &Option<NetEvent>, up: &Option<Up<'_>>) -> NetEvent {
    let base = match (flow, up) {
        (Some(ev), _) => ev,
        (None, Some(u)) => &u.guard.ev,
        (None, None) => return NetEvent::default(),
    };
    NetEvent {
        via: base.via,
        flow: base.flow,
        host: base.host.clone(),
        port: base.port,
        addr: base.addr,
        ..Default::default()
    }
}

/// Checks that a request on a connection allowed for `expected` names it:
/// its `Host`, and its target when in absolute form (which a server must
/// prefer over `Host`). CONNECT through such a connection is refused.
fn pinned_check(h: &Head, expected: &str) -> Result<Option<String>, Refusal> {
    if h.is("CONNECT") {
        return Err(bad(format!(
            "CONNECT inside a connection to {expected} is refused"
        )));
    }
    // Origin form (`/path`) and `*` name no host. Anything else must be
    // `http(s)://` and the expected host, with nothing a URL parser could
    // read as another authority (`\`, userinfo).
    if !(h.target.starts_with('/') || h.target == "*") {
        let lower = h.target.to_ascii_lowercase();
        let Some(rest) = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"))
        else {
            return Err(bad(format!(
                "a request target cordon cannot check: {:?}",
                h.target
            )));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains(['\\', '@']) {
            return Err(bad(format!(
                "a request target cordon cannot check: {:?}",
                h.target
            )));
        }
        let name = peek::normalize(peek::host_of(authority));
        if name != expected {
            return Err(fronting(expected, "request target", &name));
        }
    }
    let host = host_header(h)?;
    match &host {
        Some(name) if name != expected => Err(fronting(expected, "Host header", name)),
        _ => Ok(host),
    }
}

/// After a 101 Switching Protocols: bytes flow both ways unexamined (the
/// destination was checked for every request before), starting with what
/// either side already sent past the exchange.
async fn tunnel<C>(mut client: C, cbuf: Vec<u8>, up: Up<'_>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Up {
        r,
        mut w,
        buf,
        guard,
        ..
    } = up;
    if !buf.is_empty() {
        if client.write_all(&buf).await.is_err() {
            return;
        }
        guard.down.fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    if !cbuf.is_empty() {
        if w.write_all(&cbuf).await.is_err() {
            return;
        }
        guard.up.fetch_add(cbuf.len() as u64, Ordering::Relaxed);
    }
    let Ok(stream) = r.reunite(w) else { return };
    proxy::relay(client, stream, &guard).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked_end(input: &[u8], step: usize) -> Result<Option<usize>, &'static str> {
        let mut c = Chunked::default();
        let mut at = 0;
        for piece in input.chunks(step) {
            let n = c.take(piece)?;
            at += n;
            if c.state == ChunkState::Done {
                return Ok(Some(at));
            }
            assert_eq!(
                n,
                piece.len(),
                "bytes are only left over once the body is done"
            );
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_end_where_they_end_whatever_the_reads() {
        let body = b"4\r\nWiki\r\n5;name=v\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - "GET / HTTP/1.1\r\n".len();
        for step in [1, 2, 3, 7, 64, body.len()] {
            assert_eq!(chunked_end(body, step), Ok(Some(end)), "step {step}");
        }
        assert_eq!(chunked_end(b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(chunked_end(b"10\r\n0123456789", 3), Ok(None));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikipedia\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"4\r\nWiki\n",
            // A size line that is also a request line.
            b"0 /x HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            b"0\t\x01\r\n\r\n",
            b"1 2\r\nx\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
        ] {
            assert!(
                chunked_end(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn head(raw: &str) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(raw.as_bytes()) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("{other:?}"),
        };
        Head {
            method: req.method.unwrap_or_default().into(),
            target: req.path.unwrap_or_default().into(),
            minor_version: req.version.unwrap_or(1),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            len,
        }
    }

    #[test]
    fn ambiguous_request_framing_is_refused() {
        let f =
            |extra: &str| Framing::of_request(&head(&format!("POST / HTTP/1.1\r\n{extra}\r\n")));
        assert_eq!(f(""), Ok(Framing::Empty));
        assert_eq!(f("Content-Length: 12\r\n"), Ok(Framing::Length(12)));
        assert_eq!(
            f("Content-Length: 12\r\nContent-Length: 12\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            f("Transfer-Encoding: Chunked \r\n"),
            Ok(Framing::Chunked(Chunked::default()))
        );
        for bad in [
            "Content-Length: 12\r\nContent-Length: 13\r\n",
            "Content-Length: 1,2\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +1\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: ,chunked\r\n",
            "Transfer-Encoding: chunked,\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
        ] {
            assert!(f(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let h = |name, value: &'static str| httparse::Header {
            name,
            value: value.as_bytes(),
        };
        let cl = [h("Content-Length", "5")];
        assert_eq!(
            Framing::of_response(false, 200, &cl),
            Ok(Framing::Length(5))
        );
        assert_eq!(Framing::of_response(true, 200, &cl), Ok(Framing::Empty));
        assert_eq!(Framing::of_response(false, 304, &cl), Ok(Framing::Empty));
        assert_eq!(Framing::of_response(false, 204, &[]), Ok(Framing::Empty));
        assert_eq!(
            Framing::of_response(false, 200, &[]),
            Ok(Framing::UntilClose)
        );
        let te = [h("Transfer-Encoding", "chunked"), h("Content-Length", "5")];
        assert_eq!(
            Framing::of_response(false, 200, &te),
            Ok(Framing::Chunked(Chunked::default()))
        );
        let gz = [h("Transfer-Encoding", "gzip")];
        assert_eq!(
            Framing::of_response(false, 200, &gz),
            Ok(Framing::UntilClose)
        );
    }

    #[test]
    fn requests_on_a_pinned_connection_must_name_its_host() {
        let ok = head("GET /x HTTP/1.1\r\nHost: Web.Test:8080\r\n\r\n");
        assert_eq!(pinned_check(&ok, "web.test"), Ok(Some("web.test".into())));
        let absolute = head("GET http://evil.test/x HTTP/1.1\r\nHost: web.test\r\n\r\n");
        let r = pinned_check(&absolute, "web.test").unwrap_err();
        assert_eq!(r.code, ReasonCode::NetNameMismatch);
        let other = head("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n");
        assert_eq!(
            pinned_check(&other, "web.test").unwrap_err().code,
            ReasonCode::NetNameMismatch
        );
        let two = head("GET / HTTP/1.1\r\nHost: web.test\r\nHost: web.test\r\n\r\n");
        assert_eq!(
            pinned_check(&two, "web.test").unwrap_err().code,
            ReasonCode::NetBadRequest
        );
        let connect = head("CONNECT web.test:443 HTTP/1.1\r\nHost: web.test\r\n\r\n");
        assert!(pinned_check(&connect, "web.test").is_err());
        // Targets a URL parser could read as another host.
        for target in [
            "http:\\\\evil.test\\",
            "http:/evil.test/",
            "http:evil.test/",
            "http://evil.test\\@web.test/",
            "http://user@web.test/",
            "ftp://web.test/",
        ] {
            let h = head(&format!("GET {target} HTTP/1.1\r\nHost: web.test\r\n\r\n"));
            assert!(pinned_check(&h, "web.test").is_err(), "{target}");
        }
        let ok = head("GET HTTPS://Web.Test/a HTTP/1.1\r\nHost: web.test\r\n\r\n");
        assert!(pinned_check(&ok, "web.test").is_ok());
        let star = head("OPTIONS * HTTP/1.1\r\nHost: web.test\r\n\r\n");
        assert!(pinned_check(&star, "web.test").is_ok());
        let bracket = head("GET / HTTP/1.1\r\nHost: [web.test]evil.test\r\n\r\n");
        assert!(pinned_check(&bracket, "web.test").is_err());
    }

    #[test]
    fn only_websocket_upgrades_and_no_bodies_on_head() {
        let h2c = head("GET / HTTP/1.1\r\nHost: w\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n");
        assert!(common_checks(&h2c, &Framing::Empty).is_err());
        let ws =
            head("GET / HTTP/1.1\r\nHost: w\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n");
        assert!(common_checks(&ws, &Framing::Empty).is_ok());
        let head_body = head("HEAD / HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\n\r\n");
        assert!(common_checks(&head_body, &Framing::Length(5)).is_err());
    }

    #[test]
    fn event_paths_drop_the_query() {
        assert_eq!(event_path("/a/b?token=x"), "/a/b");
        assert_eq!(event_path(&"é".repeat(600)).len(), MAX_EVENT_PATH);
    }
}
