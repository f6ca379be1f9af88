//! A small HTTP/1.1 load generator for bench/egress.sh: the same client for
//! every path being compared (direct, squid, tinyproxy, pasta, cordon), so
//! that only the path differs.
//!
//! ```text
//! loadgen rps     TARGET [--proxy ADDR [--forward]] [--tls CAFILE] [--conns 32] [--secs 5] [--path /]
//! loadgen connect TARGET [--proxy ADDR [--forward]] [--tls CAFILE] [--n 2000] [--path /]
//! ```
//!
//! With `--tls`, each connection (through the CONNECT tunnel, if any) is
//! HTTPS: TLS with the target's host as the server name, trusting only the
//! certificates in CAFILE.
//!
//! TARGET is `host:port`, sent as the `Host` header (and as the CONNECT
//! authority through a proxy); it is connected to directly unless `--proxy`
//! names an HTTP proxy, which is then asked to `CONNECT` to it, or, with
//! `--forward`, sent plain-HTTP requests in absolute form
//! (`GET http://TARGET/path`), each of which the proxy reads and forwards.
//! `rps` keeps `--conns` connections busy with back-to-back GETs and prints
//! requests per second (a connection the server or proxy ends, with
//! `Connection: close` or by closing it between requests as tinyproxy does,
//! is opened again, and such reopenings are counted on stderr); `connect` opens `--n` new connections one after another (proxy
//! handshake, one GET, close) and prints the p50/p99 time of each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Opts {
    mode: String,
    target: String,
    proxy: Option<String>,
    conns: usize,
    secs: u64,
    n: usize,
    path: String,
    forward: bool,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

fn tls_config(ca: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(c.expect("a certificate")).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn opts() -> Opts {
    let mut a = std::env::args().skip(1);
    let mode = a.next().expect("mode: rps or connect");
    let target = a.next().expect("TARGET host:port");
    let mut o = Opts {
        mode,
        target,
        proxy: None,
        conns: 32,
        secs: 5,
        n: 2000,
        path: "/".into(),
        forward: false,
        tls: None,
    };
    while let Some(k) = a.next() {
        if k == "--forward" {
            o.forward = true;
            continue;
        }
        let v = a.next().expect("a value");
        match k.as_str() {
            "--proxy" => o.proxy = Some(v),
            "--conns" => o.conns = v.parse().unwrap(),
            "--secs" => o.secs = v.parse().unwrap(),
            "--n" => o.n = v.parse().unwrap(),
            "--path" => o.path = v,
            "--tls" => o.tls = Some(tls_config(&v)),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// A connection to the target, through the proxy if there is one, in TLS
/// with `--tls`.
async fn open(o: &Opts) -> Conn {
    let s = open_tcp(o).await;
    match &o.tls {
        None => Box::new(s),
        Some(config) => {
            let host = o
                .target
                .rsplit_once(':')
                .map_or(o.target.as_str(), |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, s)
                .await
                .expect("TLS handshake");
            Box::new(tls)
        }
    }
}

async fn open_tcp(o: &Opts) -> TcpStream {
    match &o.proxy {
        None => {
            let s = TcpStream::connect(&o.target).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        }
        Some(p) => {
            let mut s = TcpStream::connect(p).await.unwrap();
            s.set_nodelay(true).unwrap();
            if o.forward {
                return s;
            }
            let req = format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n", t = o.target);
            s.write_all(req.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(s.read_u8().await.unwrap());
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
                "proxy refused: {}",
                String::from_utf8_lossy(&head)
            );
            s
        }
    }
}

/// Sends one GET and reads the whole response (Content-Length framing).
/// `Some(keep)`: answered, and whether the connection stays open; `None`:
/// closed before any answer (a kept-alive connection the peer ended).
async fn get(s: &mut Conn, o: &Opts, buf: &mut Vec<u8>, close: bool) -> Option<bool> {
    let target = if o.forward {
        format!("http://{}{}", o.target, o.path)
    } else {
        o.path.clone()
    };
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
        o.target,
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(req.as_bytes()).await.ok()?;
    buf.clear();
    let mut chunk = [0u8; 16384];
    let (head_end, len, keep) = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            assert!(buf.is_empty(), "connection closed inside a response head");
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            assert!(
                head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"),
                "{head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            let keep = head.starts_with("http/1.1")
                && !head
                    .lines()
                    .any(|l| l.starts_with("connection:") && l.contains("close"));
            break (i + 4, len, keep);
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(keep)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = std::sync::Arc::new(opts());
    match o.mode.as_str() {
        "rps" => {
            let deadline = Instant::now() + Duration::from_secs(o.secs);
            let mut tasks = Vec::new();
            for _ in 0..o.conns {
                let o = o.clone();
                tasks.push(tokio::spawn(async move {
                    let mut s = open(&o).await;
                    let mut buf = Vec::new();
                    let (mut n, mut reopened) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        match get(&mut s, &o, &mut buf, false).await {
                            Some(true) => n += 1,
                            Some(false) => {
                                n += 1;
                                s = open(&o).await;
                            }
                            None => {
                                reopened += 1;
                                s = open(&o).await;
                            }
                        }
                    }
                    (n, reopened)
                }));
            }
            let start = Instant::now();
            let (mut total, mut reopened) = (0, 0);
            for t in tasks {
                let (n, r) = t.await.unwrap();
                total += n;
                reopened += r;
            }
            if reopened > 0 {
                eprintln!(
                    "loadgen: {reopened} connection(s) closed between requests, opened again"
                );
            }
            let secs = start.elapsed().as_secs_f64();
            println!("{:.0}", total as f64 / secs);
        }
        "connect" => {
            let mut times = Vec::with_capacity(o.n);
            let mut buf = Vec::new();
            for _ in 0..o.n {
                let t = Instant::now();
                let mut s = open(&o).await;
                get(&mut s, &o, &mut buf, true).await.expect("a response");
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
            println!("{:.3} {:.3}", p(0.5), p(0.99));
        }
        other => panic!("unknown mode {other}"),
    }
}
