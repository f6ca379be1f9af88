//! A small blocking HTTP/1.1 client for the HTTP sinks (and the session's
//! Vault reads): one request per connection (`Connection: close`), over
//! TCP or TLS (rustls, verifying against the system's roots plus an
//! optional extra CA file; never weakened). Only what acknowledging a
//! batch or reading a small document needs: the status and the first
//! 64 KiB of the response body.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How much of a response body is kept (for error messages and OTLP's
/// partial-success answer).
const BODY_MAX: usize = 64 * 1024;
/// How much of a response head is read before giving up on it.
const HEAD_MAX: usize = 64 * 1024;

/// Where a request goes: `http://HOST[:PORT]/PATH` or `https://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// TLS or not.
    pub tls: bool,
    /// The host as written (a name, an IPv4 address or `[IPv6]`).
    pub host: String,
    /// The port (80 or 443 when not written).
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` or `https://` URL; no user info, no fragment.
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("url {url:?}: expected http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "url {url:?}: credentials do not belong in the URL (use token_file)"
            ));
        }
        if path.contains('#') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "url {url:?}: the path has a fragment, a space or a control character"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("url {url:?}: unclosed '['"))?;
            let port = &v6[end + 1..];
            (format!("[{}]", &v6[..end]), port.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("url {url:?}: no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("url {url:?}: bad port {p:?}"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Url {
            tls,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// The `Host` header's value.
    fn authority(&self) -> String {
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The host without IPv6 brackets (for connecting and for TLS).
    fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

/// The TLS settings of a client: the system's roots, plus the
/// certificates of `ca_file` when one is given.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let extra: Vec<&Path> = ca_file.into_iter().collect();
    client_config(&extra, "ca_file")
}

/// The TLS settings of a client: the system's roots plus every
/// certificate in the PEM files `extra` (named `label` in errors). Fails
/// when a file holds no certificate, or when no root is left at all;
/// verification itself is never weakened.
pub fn client_config(extra: &[&Path], label: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    client_config_with(&extra_roots(extra, label)?, label)
}

/// The certificates of the PEM files `extra` (`label` names them in
/// errors): each must hold at least one that rustls accepts as a root.
pub fn extra_roots(extra: &[&Path], label: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for path in extra {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{label} {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{label} {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{label} {}: no PEM certificate in it",
                path.display()
            ));
        }
        let mut check = rustls::RootCertStore::empty();
        for c in certs {
            check
                .add(c.clone())
                .map_err(|e| format!("{label} {}: {e}", path.display()))?;
            out.push(c);
        }
    }
    Ok(out)
}

/// [`client_config`] with its extra roots read already.
pub fn client_config_with(
    extra: &[CertificateDer<'static>],
    label: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for c in extra {
        roots.add(c.clone()).map_err(|e| format!("{label}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "no trusted CA certificates: the system has none (install ca-certificates) \
             and no {label} is set"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A response: its status and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Up to 64 KiB of the body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the server took the request (2xx).
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The status and the first line of the body, for messages.
    pub fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let first: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        if first.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {first}", self.status)
        }
    }
}

/// Sends `POST url` with `headers` and `body`; waits for the response.
pub fn post(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    request("POST", url, tls, headers, body, timeout)
}

/// Sends `METHOD url` with `headers` and `body`; waits for the response.
pub fn request(
    method: &str,
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("HTTP method {method:?}"),
        ));
    }
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: cordon/{}\r\n",
        url.path,
        url.authority(),
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("header {name}: the value has a line break"),
            ));
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let addr = (url.bare_host(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{}: no address", url.host)))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    if url.tls {
        let config = tls.ok_or_else(|| io::Error::other("https without a TLS configuration"))?;
        let name = ServerName::try_from(url.bare_host().to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn =
            rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        exchange(&mut stream, head.as_bytes(), body)
    } else {
        let mut stream = tcp;
        exchange(&mut stream, head.as_bytes(), body)
    }
}

/// The longest one request may take in all (a server answering a byte at a
/// time stays under every per-read timeout).
const DEADLINE: Duration = Duration::from_secs(30);

fn exchange<S: Read + Write>(s: &mut S, head: &[u8], body: &[u8]) -> io::Result<Response> {
    let started = std::time::Instant::now();
    let late = || {
        (started.elapsed() > DEADLINE).then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete answer within {} s", DEADLINE.as_secs()),
            )
        })
    };
    s.write_all(head)?;
    s.write_all(body)?;
    s.flush()?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    // The head.
    let (status, body_start, length, chunked) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(at)) => {
                let status = r.code.unwrap_or(0);
                let mut length = None;
                let mut chunked = false;
                for h in r.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = String::from_utf8_lossy(h.value)
                            .to_ascii_lowercase()
                            .contains("chunked");
                    }
                }
                // 1xx answers come before the real one.
                if (100..200).contains(&status) {
                    buf.drain(..at);
                    continue;
                }
                break (status, at, length, chunked);
            }
            Ok(httparse::Status::Partial) if buf.len() < HEAD_MAX => {
                if let Some(e) = late() {
                    return Err(e);
                }
                let n = read_some(s, &mut chunk)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection without answering",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok(httparse::Status::Partial) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the response head is too long",
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not an HTTP response: {e}"),
                ))
            }
        }
    };
    let mut raw = buf.split_off(body_start);
    let want = if chunked {
        None
    } else {
        Some(length.unwrap_or(usize::MAX).min(BODY_MAX))
    };
    // The body, up to what is kept.
    loop {
        let done = match want {
            Some(w) => raw.len() >= w,
            None => chunked_end(&raw) || raw.len() >= BODY_MAX,
        };
        if done {
            break;
        }
        if let Some(e) = late() {
            return Err(e);
        }
        match read_some(s, &mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A server that closes without TLS close_notify, after its
            // body, is no failure of the request.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    let mut body = if chunked { dechunk(&raw) } else { raw };
    body.truncate(BODY_MAX);
    Ok(Response { status, body })
}

fn read_some<S: Read>(s: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Whether a chunked body has reached its last chunk.
fn chunked_end(raw: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let Some(nl) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let line = String::from_utf8_lossy(&raw[at..at + nl]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            return true;
        };
        if size == 0 {
            return true;
        }
        // A size no body of ours reaches ends the reading (the server's
        // numbers are not trusted to fit).
        let Some(next) = (at + nl + 2)
            .checked_add(size)
            .and_then(|x| x.checked_add(2))
        else {
            return true;
        };
        if next > raw.len() {
            return next > BODY_MAX;
        }
        at = next;
    }
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(nl) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&raw[at..at + nl]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        at += nl + 2;
        if size == 0 {
            break;
        }
        let end = at.saturating_add(size).min(raw.len());
        out.extend_from_slice(&raw[at..end]);
        at = end + 2;
        if at >= raw.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_checked() {
        let u = Url::parse("https://siem.example:8088/services/collector/event").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "siem.example", 8088, "/services/collector/event")
        );
        assert_eq!(u.authority(), "siem.example:8088");
        let u = Url::parse("http://[::1]/v1/logs?x=1").unwrap();
        assert_eq!(
            (u.bare_host(), u.port, u.path.as_str()),
            ("::1", 80, "/v1/logs?x=1")
        );
        assert_eq!(Url::parse("https://h").unwrap().path, "/");
        for bad in [
            "ftp://h/",
            "h:80/x",
            "http://user:pw@h/",
            "http://h:0/",
            "http://h:x/",
            "http:///x",
            "http://h/a b",
            "http://h/#f",
            "http://[::1/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_are_read() {
        let raw = b"4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n";
        assert!(chunked_end(raw));
        assert!(!chunked_end(&raw[..10]));
        assert_eq!(dechunk(raw), b"abcdefg");
        // Sizes a server sends to overflow or to keep us reading.
        let huge = b"FFFFFFFFFFFFFFEC\r\nabc";
        assert!(chunked_end(huge));
        assert_eq!(dechunk(huge), b"abc");
        let big = b"7FFFFFFF\r\nabc";
        assert!(chunked_end(big));
    }

    /// A real exchange over loopback: the request as the server saw it,
    /// and a chunked answer read back.
    #[test]
    fn posts_reach_a_server_and_answers_come_back() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.ends_with(b"{\"a\":1}") {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nbusy \r\n3\r\nnow\r\n0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8(got).unwrap()
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/in")).unwrap();
        let r = post(
            &url,
            None,
            &[("Content-Type", "application/json")],
            b"{\"a\":1}",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, b"busy now".as_slice()));
        assert!(!r.ok());
        assert_eq!(r.describe(), "HTTP 503: busy now");
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /in HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
        assert!(req.contains("Content-Length: 7\r\n"), "{req}");
        assert!(req.contains("Content-Type: application/json\r\n"), "{req}");
        let e = post(&url, None, &[("X", "a\r\nb")], b"", Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
}
