//! TLS inspection with real clients inside real sandboxes (curl, python,
//! node) against a real HTTP/2 + HTTP/1.1 server on the host's loopback
//! (crates/cli/tests/fixtures/h2_server.js, node). The clients trust the
//! session's CA through what cordon injects (no --cacert); cordon trusts
//! the test server through the profile's `upstream_ca`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::both;
use crate::suite::egress::{net_events, pki, tun_or_skip};
use crate::suite::harness::{ok, stderr, Env};

/// The node server; killed on drop. `log` receives one JSON line per
/// request it got.
struct H2Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl H2Server {
    fn start() -> H2Server {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/h2_server.js"
            ))
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (apt-get install nodejs)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        H2Server {
            child,
            port: line.trim().parse().unwrap(),
            log,
            _dir: dir,
        }
    }

    /// What the server received.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A profile `insp` in `mode` allowing and inspecting api.test (mapped to
/// the server); `upstream_ca` names the test CA unless `trust` is false.
fn profile(env: &Env, srv: &H2Server, mode: &str, trust: bool) {
    let ca = env.home.join("test-ca.crt");
    std::fs::copy(&pki().ca, &ca).unwrap();
    env.own(&ca);
    let upstream = if trust {
        "upstream_ca = [\"~/test-ca.crt\"]\n"
    } else {
        ""
    };
    env.profile(
        "insp",
        &format!(
            "extends = \"default\"\n[network]\nmode = \"{mode}\"\n\
             allow = [\"api.test\"]\ninspect = [\"api.test\"]\n{upstream}\
             resolve = {{ \"api.test\" = \"127.0.0.1:{p}\" }}\n",
            p = srv.port
        ),
    );
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            found.push(p);
        }
    }
    found
}

both!(
    inspected_https_works_for_curl_and_python_and_every_request_is_recorded,
    |env| {
        let srv = H2Server::start();
        profile(env, &srv, "proxy", true);
        let p = srv.port;
        std::fs::write(
            env.project.join("blob"),
            (0..3_000_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let script = format!(
            "curl -sS https://api.test:{p}/hello; \
         curl -sS --http1.1 https://api.test:{p}/hello; \
         curl -sS --data-binary @blob https://api.test:{p}/echo; \
         sha256sum blob; \
         python3 -c \"import urllib.request; \
print(urllib.request.urlopen('https://api.test:{p}/hello').read().decode().strip())\"; \
         grep -c 'cordon session' \"$SSL_CERT_FILE\"; echo \"node=$NODE_EXTRA_CA_CERTS\""
        );
        let o = env.sh(&["--profile", "insp"], &script);
        let out = ok(&o);
        assert!(
            out.contains(&format!("hello over h2, host=api.test:{p}")),
            "{out}\n{}",
            stderr(&o)
        );
        assert!(
            out.contains(&format!("hello over http/1.1, host=api.test:{p}")),
            "{out}"
        );
        // The 3 MB body arrived whole.
        let lines: Vec<&str> = out.lines().collect();
        let echo = lines
            .iter()
            .find(|l| l.starts_with("3000000 "))
            .expect(&out);
        let sum = lines
            .iter()
            .find(|l| l.ends_with("  blob"))
            .expect(&out)
            .split_whitespace()
            .next()
            .unwrap();
        assert_eq!(echo.split_whitespace().nth(1), Some(sum), "{out}");
        // Trust came from cordon: the system bundle with the session CA added.
        assert!(out.contains("\n1\n"), "{out}");
        assert!(
            out.contains("node=/etc/ssl/certs/ca-certificates.crt"),
            "{out}"
        );
        // The server saw both protocols, for the right host.
        let got = srv.requests();
        assert!(got.iter().any(|r| r["protocol"] == "h2"), "{got:?}");
        assert!(got.iter().any(|r| r["protocol"] == "http/1.1"), "{got:?}");
        assert!(
            got.iter().all(|r| r["host"] == format!("api.test:{p}")),
            "{got:?}"
        );
        // Every request is an event with its status; flows say they were inspected.
        let ev = net_events(env);
        let requests: Vec<&serde_json::Value> = ev
            .iter()
            .filter(|e| e["kind"] == "http.request" && e["tls"] == "inspected")
            .collect();
        assert_eq!(requests.len(), 4, "{ev:#?}");
        assert!(requests.iter().all(|e| e["status"] == 200), "{requests:#?}");
        assert!(requests
            .iter()
            .any(|e| e["method"] == "POST" && e["path"] == "/echo"));
        let alpn: Vec<&str> = ev
            .iter()
            .filter(|e| e["kind"] == "flow.allowed")
            .map(|e| e["alpn"].as_str().unwrap_or(""))
            .collect();
        assert!(
            alpn.contains(&"h2") && alpn.contains(&"http/1.1"),
            "{alpn:?}"
        );
        // The audit record has them as HTTP Activity.
        let audit = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
        let http: Vec<serde_json::Value> = audit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["class_uid"] == 4002)
            .collect();
        assert_eq!(http.len(), 4, "{audit}");
        assert!(http.iter().all(|r| r["http_response"]["code"] == 200
            && r["unmapped"]["tls"] == "inspected"
            && r["http_request"]["url"]["hostname"] == "api.test"));
        // The CA's private key was never written anywhere.
        assert!(
            files_containing(&env.last_session(), b"PRIVATE KEY").is_empty(),
            "a private key on disk"
        );
    }
);

both!(server_sent_events_stream_through_inspection, |env| {
    let srv = H2Server::start();
    profile(env, &srv, "proxy", true);
    // The server sends "one", waits 1.5 s, sends "two": buffering would
    // hold "one" back until the end.
    let script = format!(
        "python3 -c \"
import time, urllib.request
t = time.time()
for line in urllib.request.urlopen('https://api.test:{p}/sse'):
    if line.strip():
        print(line.decode().strip(), round(time.time() - t, 3))
\"",
        p = srv.port
    );
    let o = env.sh(&["--profile", "insp"], &script);
    let out = ok(&o);
    let at = |what: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("data: {what} ")))
            .unwrap_or_else(|| panic!("no {what}: {out}\n{}", stderr(&o)))
            .parse()
            .unwrap()
    };
    let (one, two) = (at("one"), at("two"));
    assert!(two - one > 1.0, "{out}");
    assert!(
        one < two - 1.0,
        "the first event waited for the second: {out}"
    );
});

both!(
    requests_naming_another_host_and_untrusted_upstreams_are_refused,
    |env| {
        let srv = H2Server::start();
        profile(env, &srv, "proxy", true);
        let p = srv.port;
        // Fronting inside TLS, over both protocols.
        let script = format!(
            "curl -s -i -H 'Host: evil.test' https://api.test:{p}/hello | tr -d '\\r'; \
         curl -s -i --http1.1 -H 'Host: evil.test' https://api.test:{p}/hello | tr -d '\\r'"
        );
        let o = env.sh(&["--profile", "insp"], &script);
        let out = ok(&o);
        assert_eq!(
            out.matches("x-cordon-reason: net_name_mismatch").count(),
            2,
            "{out}"
        );
        assert!(out.contains("domain fronting is refused"), "{out}");
        assert!(srv.requests().is_empty(), "{:?}", srv.requests());
        // A client that pins another CA refuses cordon's certificate: nothing
        // is sent, and the event says why.
        let ca = env.home.join("test-ca.crt");
        std::fs::copy(&ca, env.project.join("pinned.crt")).unwrap();
        env.own(&env.project.join("pinned.crt"));
        let o = env.sh(
            &["--profile", "insp"],
            &format!("curl -sS --cacert pinned.crt https://api.test:{p}/hello; echo \"rc=$?\""),
        );
        assert!(ok(&o).contains("rc=60"), "{}", stdout_err(&o));
        assert!(net_events(env).iter().any(|e| e["kind"] == "flow.denied"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("handshake with cordon's certificate"))));
        // Without upstream_ca, the test server's certificate does not verify:
        // 502 with the reason, and nothing reaches the server.
        profile(env, &srv, "proxy", false);
        let o = env.sh(
            &["--profile", "insp"],
            &format!("curl -s -i https://api.test:{p}/hello | tr -d '\\r'"),
        );
        let out = ok(&o);
        assert!(
            out.contains("x-cordon-reason: net_upstream_untrusted"),
            "{out}"
        );
        assert!(out.contains("UnknownIssuer"), "{out}");
        assert!(srv.requests().is_empty());
        // Bytes that are neither TLS nor HTTP do not reach an inspected host.
        profile(env, &srv, "proxy", true);
        let o = env.sh(
            &["--profile", "insp"],
            &format!(
                "python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'CONNECT api.test:{p} HTTP/1.1\\r\\nHost: api.test:{p}\\r\\n\\r\\n')
print(s.recv(100).split(b'\\r\\n')[0].decode())
s.sendall(b'SSH-2.0-OpenSSH_9.2\\r\\n')
print('after:', s.recv(100))
\""
            ),
        );
        let out = ok(&o);
        assert!(out.contains("200 Connection established"), "{out}");
        assert!(out.contains("after: b''"), "{out}");
        assert!(net_events(env).iter().any(|e| e["kind"] == "flow.denied"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("only TLS and HTTP"))));
        // An upstream_ca that is not a certificate stops the run before it starts.
        std::fs::write(env.home.join("test-ca.crt"), "not a certificate\n").unwrap();
        env.refused(&["--profile", "insp"], "upstream_ca");
    }
);

both!(
    transparent_capture_inspects_tools_that_ignore_proxies,
    |env| {
        if !tun_or_skip(env, module_path!()) {
            return;
        }
        let srv = H2Server::start();
        profile(env, &srv, "transparent", true);
        let p = srv.port;
        let script = format!(
        "curl -sS https://api.test:{p}/hello; \
         node -e \"fetch('https://api.test:{p}/hello').then(r => r.text()).then(t => \
console.log('node:', t.trim()), e => {{ console.log('node failed:', e.cause || e); process.exit(1) }})\""
    );
        let o = env.sh(&["--profile", "insp"], &script);
        let out = ok(&o);
        assert!(
            out.contains(&format!("hello over h2, host=api.test:{p}")),
            "{out}"
        );
        assert!(
            out.contains(&format!("node: hello over http/1.1, host=api.test:{p}")),
            "{out}"
        );
        let ev = net_events(env);
        assert!(
            ev.iter()
                .filter(|e| e["kind"] == "http.request"
                    && e["via"] == "tun"
                    && e["tls"] == "inspected")
                .count()
                >= 2,
            "{ev:#?}"
        );
    }
);

fn stdout_err(o: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
