//! The explicit proxy against real sockets on loopback: a stand-in for the
//! sandbox's listener, real upstream servers, raw clients (the e2e suite
//! drives it with curl, git, python and node from inside real sandboxes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use cordon_net::{Config, Engine};
use cordon_policy::network::{HostPattern, NetworkPolicy};
use cordon_policy::PathRule;

struct Setup {
    engine: Engine,
    proxy: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(policy: NetworkPolicy) -> Setup {
    setup_with(policy, Config::RESPONSE_TIMEOUT)
}

fn setup_with(policy: NetworkPolicy, response_timeout: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("net.jsonl");
    let engine = Engine::start(Config {
        policy,
        log: log.clone(),
        upstream_auth: None,
        response_timeout,
        forward: None,
        inspection: None,
        blocked: Vec::new(),
    })
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = l.local_addr().unwrap();
    engine.serve_proxy(OwnedFd::from(l)).unwrap();
    Setup {
        engine,
        proxy,
        log,
        _dir: dir,
    }
}

fn allow(hosts: &[&str]) -> Vec<PathRule<HostPattern>> {
    hosts
        .iter()
        .map(|h| PathRule::new(HostPattern::parse(h).unwrap()))
        .collect()
}

/// A server that answers each connection with what it received (up to the
/// end of an HTTP head, or the first read), prefixed by `greeting`: for
/// protocols other than HTTP.
fn server(greeting: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.write_all(greeting);
                let mut got = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if got.starts_with(b"\x16")
                        || got.starts_with(b"SSH-")
                        || got.windows(4).any(|w| w == b"\r\n\r\n")
                    {
                        break;
                    }
                }
                let _ = s.write_all(b"ECHO ");
                let _ = s.write_all(&got);
            });
        }
    });
    addr
}

fn request(proxy: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Reads a response head, byte by byte so that nothing after it (a
/// server's banner) is consumed; returns it.
fn head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

fn events(log: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn with_resolve(mut p: NetworkPolicy, name: &str, addr: SocketAddr) -> NetworkPolicy {
    p.resolve.insert(name.into(), addr);
    p
}

#[test]
fn connect_to_an_allowed_name_tunnels_and_is_recorded() {
    let srv = http_server();
    let policy = with_resolve(
        NetworkPolicy {
            allow: allow(&["api.example.test"]),
            ..Default::default()
        },
        "api.example.test",
        srv,
    );
    let s = setup(policy);
    let mut c = request(
        s.proxy,
        b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n",
    );
    let h = head(&mut c);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    c.write_all(b"GET /?q=1 HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let body = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(
        body.contains("conn=1 GET /?q=1 HTTP/1.1 host=api.example.test"),
        "{body}"
    );
    drop(c);
    let summary = s.engine.finish(Duration::from_secs(2));
    assert_eq!(summary.allowed, 1);
    assert_eq!(summary.denied_total(), 0);
    let ev = events(&s.log);
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["flow.allowed", "http.request", "flow.closed"]);
    assert_eq!(ev[0]["host"], "api.example.test");
    assert_eq!(ev[0]["http_host"], "api.example.test");
    assert_eq!(ev[1]["path"], "/", "the query is not recorded");
    assert_eq!(ev[1]["flow"], ev[0]["flow"]);
    assert_eq!(ev[0]["addr"], srv.to_string());
    assert!(ev[2]["bytes_down"].as_u64().unwrap() > 20, "{:?}", ev[2]);
}

#[test]
fn names_outside_the_allowlist_get_a_403_that_explains() {
    let s = setup(NetworkPolicy {
        allow: allow(&["api.example.test"]),
        ..Default::default()
    });
    let mut c = request(s.proxy, b"CONNECT evil.example.test:443 HTTP/1.1\r\n\r\n");
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403 Forbidden"), "{resp}");
    assert!(
        resp.contains("x-cordon-reason: net_host_not_allowed"),
        "{resp}"
    );
    assert!(resp.contains("--allow-host evil.example.test"), "{resp}");
    let mut c = request(s.proxy, b"CONNECT 192.0.2.1:443 HTTP/1.1\r\n\r\n");
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.contains("x-cordon-reason: net_ip_literal"), "{resp}");
    let summary = s.engine.finish(Duration::from_secs(1));
    assert_eq!(summary.denied_total(), 2);
    let line = summary.blocked_line().unwrap();
    assert!(line.contains("evil.example.test:443"), "{line}");
    let ev = events(&s.log);
    assert_eq!(ev[0]["kind"], "flow.denied");
    assert_eq!(ev[0]["code"], "net_host_not_allowed");
}

#[test]
fn an_allowed_name_that_resolves_to_loopback_is_refused() {
    // `localhost` resolves (through /etc/hosts) to 127.0.0.1 and ::1.
    let s = setup(NetworkPolicy {
        allow: allow(&["localhost"]),
        ..Default::default()
    });
    let srv = server(b"");
    let req = format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", srv.port());
    let mut c = request(s.proxy, req.as_bytes());
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(
        resp.contains("x-cordon-reason: net_address_blocked"),
        "{resp}"
    );
    assert!(resp.contains("allow_local"), "{resp}");
}

#[test]
fn a_tls_server_name_other_than_the_connect_host_is_cut() {
    let srv = server(b"");
    let policy = with_resolve(
        NetworkPolicy {
            allow: allow(&["good.test"]),
            ..Default::default()
        },
        "good.test",
        srv,
    );
    let s = setup(policy);
    let mut c = request(s.proxy, b"CONNECT good.test:443 HTTP/1.1\r\n\r\n");
    assert!(head(&mut c).starts_with("HTTP/1.1 200"));
    c.write_all(&client_hello("evil.test")).unwrap();
    let rest = read_all(&mut c);
    assert!(rest.is_empty(), "the server was reached: {rest:?}");
    // The same tunnel with the right name passes.
    let mut c = request(s.proxy, b"CONNECT good.test:443 HTTP/1.1\r\n\r\n");
    assert!(head(&mut c).starts_with("HTTP/1.1 200"));
    c.write_all(&client_hello("GOOD.test")).unwrap();
    assert!(read_all(&mut c).starts_with(b"ECHO \x16"));
    drop(c);
    s.engine.finish(Duration::from_secs(1));
    let ev = events(&s.log);
    let denied: Vec<_> = ev.iter().filter(|e| e["kind"] == "flow.denied").collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["code"], "net_name_mismatch");
    assert_eq!(denied[0]["sni"], "evil.test");
}

#[test]
fn server_first_protocols_pass_their_banner_before_the_client_speaks() {
    let srv = server(b"SSH-2.0-test\r\n");
    let policy = with_resolve(
        NetworkPolicy {
            allow: allow(&["git.test:22"]),
            ..Default::default()
        },
        "git.test",
        srv,
    );
    let s = setup(policy);
    let mut c = request(s.proxy, b"CONNECT git.test:22 HTTP/1.1\r\n\r\n");
    assert!(head(&mut c).starts_with("HTTP/1.1 200"));
    let mut banner = [0u8; 14];
    c.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-test\r\n");
    c.write_all(b"SSH-2.0-client\r\n").unwrap();
    assert_eq!(read_all(&mut c), b"ECHO SSH-2.0-client\r\n");
}

#[test]
fn deny_wins_over_allow() {
    let s = setup(NetworkPolicy {
        allow: allow(&["*.example.test"]),
        deny: allow(&["gist.example.test"]),
        ..Default::default()
    });
    let mut c = request(s.proxy, b"CONNECT gist.example.test:443 HTTP/1.1\r\n\r\n");
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.contains("x-cordon-reason: net_host_denied"), "{resp}");
}

/// A ClientHello record with one SNI (see peek.rs for the layout).
fn client_hello(sni: &str) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend((sni.len() as u16).to_be_bytes());
    entry.extend(sni.as_bytes());
    let mut list = (entry.len() as u16).to_be_bytes().to_vec();
    list.extend(entry);
    let mut exts = 0u16.to_be_bytes().to_vec();
    exts.extend((list.len() as u16).to_be_bytes());
    exts.extend(list);
    let mut body = vec![3, 3];
    body.extend([1u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01, 1, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[test]
fn a_tunnel_closed_before_any_bytes_is_still_recorded() {
    let srv = server(b"");
    let policy = with_resolve(
        NetworkPolicy {
            allow: allow(&["quiet.test"]),
            ..Default::default()
        },
        "quiet.test",
        srv,
    );
    let s = setup(policy);
    let mut c = request(s.proxy, b"CONNECT quiet.test:443 HTTP/1.1\r\n\r\n");
    assert!(head(&mut c).starts_with("HTTP/1.1 200"));
    drop(c);
    s.engine.finish(Duration::from_secs(2));
    let ev = events(&s.log);
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["flow.allowed", "flow.closed"], "{ev:?}");
    assert_eq!(ev[1]["bytes_up"], 0);
}

/// An HTTP/1.1 server that keeps connections alive. Each response body is
/// `conn=<connection number> <request line> host=<Host> body=<body>`;
/// `/chunked` answers chunked, `/close` close-delimited, `/bye` sized but
/// then closes the kept-alive connection, `/upgrade` with 101 and then
/// echoes raw bytes prefixed by `RAW `. Request bodies may be
/// sized or chunked.
fn http_server() -> SocketAddr {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let request_line = line.trim_end().to_owned();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h == "\r\n" {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
                    }
                    let get =
                        |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let mut body = Vec::new();
                    if let Some(n) = get("content-length") {
                        body.resize(n.parse().unwrap(), 0);
                        r.read_exact(&mut body).unwrap();
                    } else if get("transfer-encoding").is_some() {
                        loop {
                            let mut size = String::new();
                            r.read_line(&mut size).unwrap();
                            let size = size.trim_end().split(';').next().unwrap();
                            let size = usize::from_str_radix(size, 16).unwrap();
                            let mut chunk = vec![0; size + 2];
                            r.read_exact(&mut chunk).unwrap();
                            if size == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..size]);
                        }
                    }
                    let path = request_line
                        .split(' ')
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let payload = format!(
                        "conn={n} {request_line} host={} body={}",
                        get("host").unwrap_or_default(),
                        String::from_utf8_lossy(&body)
                    );
                    let head_only = request_line.starts_with("HEAD ");
                    let reply = match path.as_str() {
                        "/chunked" => format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{payload}\r\n0\r\n\r\n",
                            payload.len()
                        ),
                        "/close" => format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{payload}"),
                        "/upgrade" => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_owned(),
                        _ if head_only => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", payload.len()),
                        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{payload}", payload.len()),
                    };
                    w.write_all(reply.as_bytes()).unwrap();
                    match path.as_str() {
                        "/close" | "/bye" => return,
                        "/upgrade" => {
                            let mut buf = [0u8; 4096];
                            loop {
                                match r.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(k) => {
                                        w.write_all(b"RAW ").unwrap();
                                        w.write_all(&buf[..k]).unwrap();
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response: its head and its body (sized, chunked, or until
/// close).
fn response(r: &mut std::io::BufReader<TcpStream>, head_request: bool) -> (String, String) {
    use std::io::BufRead;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_request || head.starts_with("HTTP/1.1 101") {
    } else if let Some(n) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        body.resize(n.trim().parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (head, String::from_utf8(body).unwrap())
}

fn web_policy(srv: SocketAddr) -> NetworkPolicy {
    let p = with_resolve(
        NetworkPolicy {
            allow: allow(&["web.test", "other.test"]),
            ..Default::default()
        },
        "web.test",
        srv,
    );
    with_resolve(p, "other.test", srv)
}

#[test]
fn plain_http_keeps_connections_alive_and_checks_every_request() {
    let srv = http_server();
    let s = setup(web_policy(srv));
    let c = request(s.proxy, b"");
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    // Three requests on one client connection reach the server on one
    // connection, in origin form, without the proxy's headers.
    w.write_all(
        b"GET http://web.test/a?b=1 HTTP/1.1\r\nHost: web.test\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
    )
    .unwrap();
    let (h, body) = response(&mut r, false);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(body, "conn=1 GET /a?b=1 HTTP/1.1 host=web.test body=");
    w.write_all(b"HEAD http://web.test/h HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .unwrap();
    let (h, _) = response(&mut r, true);
    assert!(h.contains("Content-Length: "), "{h}");
    // Two pipelined requests: answered in order.
    w.write_all(b"GET http://web.test/1 HTTP/1.1\r\n\r\nGET http://web.test/2 HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(response(&mut r, false)
        .1
        .starts_with("conn=1 GET /1 HTTP/1.1 host=web.test:80"));
    assert!(response(&mut r, false).1.starts_with("conn=1 GET /2 "));
    // Another allowed host on the same client connection: its own
    // upstream connection.
    w.write_all(b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n")
        .unwrap();
    assert!(response(&mut r, false).1.starts_with("conn=2 GET / "));
    // A request with a body is answered, and then the connection ends (a
    // server that did not read the body must not answer it as a request).
    w.write_all(
        b"POST http://web.test/p HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let (h, body) = response(&mut r, false);
    assert_eq!(body, "conn=3 POST /p HTTP/1.1 host=web.test body=hello");
    assert!(h.ends_with("connection: close\r\n\r\n"), "{h}");
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    let c = request(
        s.proxy,
        b"PUT http://web.test/chunked HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    );
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    assert_eq!(
        response(&mut r, false).1,
        "conn=4 PUT /chunked HTTP/1.1 host=web.test body=abcde"
    );
    // A name outside the allowlist: 403, and the connection ends.
    let c = request(
        s.proxy,
        b"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    );
    let mut r = std::io::BufReader::new(c);
    let (h, body) = response(&mut r, false);
    assert!(h.starts_with("HTTP/1.1 403"), "{h}");
    assert!(h.contains("x-cordon-reason: net_host_not_allowed"), "{h}");
    assert!(body.contains("evil.test"), "{body}");
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    s.engine.finish(Duration::from_secs(2));
    let ev = events(&s.log);
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "flow.allowed",
            "http.request",
            "http.request",
            "http.request",
            "http.request",
            "flow.closed",
            "flow.allowed",
            "http.request",
            "flow.closed",
            "flow.allowed",
            "http.request",
            "flow.closed",
            "flow.allowed",
            "http.request",
            "flow.closed",
            "flow.denied",
        ],
        "{ev:?}"
    );
    assert_eq!(ev[13]["method"], "PUT");
    assert_eq!(ev[13]["path"], "/chunked");
}

#[test]
fn a_later_request_naming_another_host_is_fronting() {
    let srv = http_server();
    let s = setup(web_policy(srv));
    for (second, code) in [
        (&b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"[..], "net_name_mismatch"),
        (b"GET http://evil.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n", "net_name_mismatch"),
        (b"GET / HTTP/1.1\r\nHost: web.test\r\nHost: web.test\r\n\r\n", "net_bad_request"),
        (b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "net_bad_request"),
        (b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n", "net_bad_request"),
        (b"GET / HTTP/1.1\r\nHost: web.test\nX: y\r\n\r\n", "net_bad_request"),
        (b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "net_bad_request"),
        (b"GET http:\\\\evil.test\\ HTTP/1.1\r\nHost: web.test\r\n\r\n", "net_bad_request"),
    ] {
        // Through a CONNECT tunnel to port 80: the same checks as on a
        // transparently captured connection.
        let c = request(s.proxy, b"CONNECT web.test:80 HTTP/1.1\r\n\r\n");
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        assert!(response(&mut r, true).0.starts_with("HTTP/1.1 200"));
        w.write_all(b"GET /one HTTP/1.1\r\nHost: web.test\r\n\r\n").unwrap();
        assert!(response(&mut r, false).1.contains("GET /one "));
        w.write_all(second).unwrap();
        let (h, _) = response(&mut r, false);
        assert!(h.starts_with("HTTP/1.1 4"), "{h}");
        assert!(h.contains(&format!("x-cordon-reason: {code}")), "{h}");
    }
    // Through the proxy, a Host naming another site is fronting too.
    let mut c = request(
        s.proxy,
        b"GET http://web.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    );
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(
        resp.contains("x-cordon-reason: net_name_mismatch"),
        "{resp}"
    );
    // Requests to the proxy itself, and garbage, are explained.
    let mut c = request(s.proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("not to it"), "{resp}");
    let mut c = request(s.proxy, b"garbage\r\n\r\n");
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.contains("x-cordon-reason: net_bad_request"), "{resp}");
    let summary = s.engine.finish(Duration::from_secs(2));
    assert_eq!(summary.denied_total(), 10, "{summary:?}");
}

#[test]
fn upgrades_chunked_and_close_delimited_responses_pass() {
    let srv = http_server();
    let s = setup(web_policy(srv));
    let c = request(s.proxy, b"");
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    w.write_all(b"GET http://web.test/chunked HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .unwrap();
    let (h, body) = response(&mut r, false);
    assert!(h.contains("Transfer-Encoding: chunked"), "{h}");
    assert!(body.starts_with("conn=1 GET /chunked "), "{body}");
    w.write_all(
        b"GET http://web.test/upgrade HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let (h, _) = response(&mut r, false);
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    w.write_all(b"frames").unwrap();
    let mut got = [0u8; 10];
    r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"RAW frames");
    drop((r, w));
    let c = request(
        s.proxy,
        b"GET http://web.test/close HTTP/1.1\r\nHost: web.test\r\n\r\n",
    );
    let mut r = std::io::BufReader::new(c);
    let (h, body) = response(&mut r, false);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(body.starts_with("conn=2 GET /close "), "{body}");
}

#[test]
fn a_destination_that_closes_an_idle_connection_is_not_a_failed_request() {
    let srv = http_server();
    let s = setup(web_policy(srv));
    // Through the proxy: the next request gets a new upstream connection.
    let c = request(
        s.proxy,
        b"GET http://web.test/bye HTTP/1.1\r\nHost: web.test\r\n\r\n",
    );
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    assert!(response(&mut r, false).1.starts_with("conn=1 GET /bye "));
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(b"GET http://web.test/again HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .unwrap();
    let (h, body) = response(&mut r, false);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}{body}");
    assert!(body.starts_with("conn=2 GET /again "), "{body}");
    // On a connection pinned to the destination, the client's connection
    // ends with it, so that the client opens a new one.
    let c = request(s.proxy, b"CONNECT web.test:80 HTTP/1.1\r\n\r\n");
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    assert!(response(&mut r, true).0.starts_with("HTTP/1.1 200"));
    w.write_all(b"GET /bye HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .unwrap();
    assert!(response(&mut r, false).1.starts_with("conn=3 GET /bye "));
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0, "{rest:?}");
    let summary = s.engine.finish(Duration::from_secs(2));
    assert_eq!(summary.denied_total(), 0, "{summary:?}");
}

#[test]
fn a_destination_that_never_answers_gets_the_client_a_502() {
    // Accepts, reads, never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let srv = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    let policy = with_resolve(
        NetworkPolicy {
            allow: allow(&["slow.test"]),
            ..Default::default()
        },
        "slow.test",
        srv,
    );
    let s = setup_with(policy, Duration::from_secs(1));
    let started = std::time::Instant::now();
    let mut c = request(
        s.proxy,
        b"GET http://slow.test/ HTTP/1.1\r\nHost: slow.test\r\n\r\n",
    );
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(
        resp.contains("x-cordon-reason: net_upstream_failed"),
        "{resp}"
    );
    assert!(resp.contains("no response within 1 s"), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn plain_http_requests_obey_the_hosts_http_rules() {
    let srv = http_server();
    let mut policy = web_policy(srv);
    policy.http.insert(
        "web.test".into(),
        vec![PathRule::new(
            <cordon_policy::network::HttpRule as cordon_policy::RuleValue>::parse("GET /ok/**")
                .unwrap(),
        )],
    );
    let s = setup(policy);
    let mut c = request(
        s.proxy,
        b"GET http://web.test/ok/a?b=1 HTTP/1.1\r\nHost: web.test\r\n\r\n",
    );
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let (h, body) = response(&mut r, false);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(body.starts_with("conn=1 GET /ok/a?b=1 "), "{body}");
    c.write_all(
        b"POST http://web.test/ok/a HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1\r\n\r\nx",
    )
    .unwrap();
    let mut refused = String::new();
    r.read_to_string(&mut refused).unwrap();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("x-cordon-reason: net_http_denied"),
        "{refused}"
    );
    assert!(
        refused.contains("POST /ok/a is not among the requests"),
        "{refused}"
    );
    // Another host without rules takes anything.
    let c = request(
        s.proxy,
        b"DELETE http://other.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    );
    let mut r = std::io::BufReader::new(c);
    assert!(response(&mut r, false).1.starts_with("conn=2 DELETE /x "));
    s.engine.finish(Duration::from_secs(1));
    let ev = events(&s.log);
    assert!(ev
        .iter()
        .any(|e| e["kind"] == "flow.denied" && e["code"] == "net_http_denied"));
}

#[test]
fn a_cut_closes_open_flows_and_refuses_new_ones_until_restored() {
    let srv = server(b"HELLO\r\n");
    let policy = with_resolve(
        NetworkPolicy {
            allow: allow(&["svc.example.test", "other.example.test"]),
            ..Default::default()
        },
        "svc.example.test",
        srv,
    );
    let policy = with_resolve(policy, "other.example.test", srv);
    let s = setup_with(policy, Duration::from_secs(5));
    let control = s.engine.control();
    let mut open = request(
        s.proxy,
        b"CONNECT svc.example.test:9 HTTP/1.1\r\nHost: svc.example.test:9\r\n\r\n",
    );
    assert!(head(&mut open).starts_with("HTTP/1.1 200"));
    let mut hello = [0u8; 7];
    open.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"HELLO\r\n");
    // A flow is recorded once the client's first bytes are checked.
    open.write_all(b"ping\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let flows = loop {
        let flows = control.open_flows();
        if !flows.is_empty() || std::time::Instant::now() > deadline {
            break flows;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].host, "svc.example.test");
    assert_eq!(control.cut(), 1);
    // The open tunnel ends: the server never sends more, the proxy closes.
    assert_eq!(read_all(&mut open), b"");
    let mut refused = request(
        s.proxy,
        b"CONNECT svc.example.test:9 HTTP/1.1\r\nHost: svc.example.test:9\r\n\r\n",
    );
    let h = head(&mut refused);
    assert!(h.starts_with("HTTP/1.1 403"), "{h}");
    assert!(h.contains("x-cordon-reason: net_session_contained"), "{h}");
    control.restore();
    let mut again = request(
        s.proxy,
        b"CONNECT svc.example.test:9 HTTP/1.1\r\nHost: svc.example.test:9\r\n\r\n",
    );
    assert!(head(&mut again).starts_with("HTTP/1.1 200"));
    control.block(HostPattern::parse("*.example.test").unwrap());
    let mut blocked = request(
        s.proxy,
        b"CONNECT other.example.test:9 HTTP/1.1\r\nHost: other.example.test:9\r\n\r\n",
    );
    let h = head(&mut blocked);
    assert!(h.contains("x-cordon-reason: net_host_blocked"), "{h}");
    drop(again);
    drop(s.engine.finish(Duration::from_millis(200)));
    let ev = events(&s.log);
    let cut = ev
        .iter()
        .find(|e| e["kind"] == "flow.closed" && e["code"] == "net_session_contained")
        .expect("the cut flow's close is recorded");
    assert_eq!(cut["host"], "svc.example.test");
}
