//! Controlled egress with real clients inside real sandboxes (curl, git,
//! python, node) against a real HTTPS server on the host's loopback, reached
//! only through cordon's explicit proxy. Names map to the server with the
//! profile's `resolve` table; the test CA is handed to each client with
//! `--env` (SSL_CERT_FILE, GIT_SSL_CAINFO, curl's --cacert).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::both;
use crate::suite::harness::{ok, stderr, stdout, Env};

/// A test CA and a server certificate for api.test, git.test,
/// evil.test and 127.0.0.1 (the audit sinks), made once per test run with the openssl CLI.
pub(crate) struct Pki {
    _dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cordon test CA",
        ]);
        openssl(&ca, d);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=api.test",
        ]);
        openssl(&csr, d);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:api.test,DNS:git.test,DNS:evil.test,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            d,
        );
        Pki {
            ca: d.join("ca.crt"),
            cert: d.join("srv.crt"),
            key: d.join("srv.key"),
            _dir: dir,
        }
    })
}

/// The HTTPS test server (crates/cli/tests/fixtures/https_server.py) on
/// 127.0.0.1; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(git_root: Option<&Path>) -> Server {
        let pki = pki();
        let mut c = Command::new("/usr/bin/python3");
        c.arg(Self::SCRIPT).arg(&pki.cert).arg(&pki.key);
        if let Some(g) = git_root {
            c.arg(g);
        }
        Self::spawn(c)
    }

    /// The server, its git repositories open only to HTTP Basic
    /// credentials with `token` as the password.
    pub(crate) fn start_with_git_token(git_root: &Path, token: &str) -> Server {
        let pki = pki();
        let mut c = Command::new("/usr/bin/python3");
        c.arg(Self::SCRIPT)
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(git_root)
            .env("GIT_TOKEN", token);
        Self::spawn(c)
    }

    /// The same server speaking plain HTTP.
    fn start_plain() -> Server {
        let mut c = Command::new("/usr/bin/python3");
        c.arg(Self::SCRIPT).arg("--plain");
        Self::spawn(c)
    }

    const SCRIPT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/https_server.py"
    );

    fn spawn(mut c: Command) -> Server {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A profile `net` allowing api.test and git.test (mapped to `srv`) in
/// explicit-proxy mode, and the CA copied into the project as `ca.crt`
/// (`*.pem` files are hidden).
fn setup(env: &Env, srv: &Server, extra: &str) -> String {
    setup_mode(env, srv, "proxy", extra)
}

pub(crate) fn setup_mode(env: &Env, srv: &Server, mode: &str, extra: &str) -> String {
    std::fs::copy(&pki().ca, env.project.join("ca.crt")).unwrap();
    env.profile(
        "net",
        &format!(
            "extends = \"default\"\n[network]\nmode = \"{mode}\"\n\
             allow = [\"api.test\", \"git.test\"]\n\
             resolve = {{ \"api.test\" = \"127.0.0.1:{p}\", \"git.test\" = \"127.0.0.1:{p}\", \
             \"evil.test\" = \"127.0.0.1:{p}\" }}\n{extra}",
            p = srv.port
        ),
    );
    env.project.join("ca.crt").display().to_string()
}

/// Whether the environment's uid can open /dev/net/tun (transparent
/// capture); skips the test visibly when it cannot.
pub(crate) fn tun_or_skip(env: &Env, test: &str) -> bool {
    let ok = env
        .command("sh", ["-c", "exec 3<>/dev/net/tun"])
        .output()
        .unwrap()
        .status
        .success();
    if !ok {
        crate::suite::harness::skip(
            test,
            "this uid cannot open /dev/net/tun (mode 0600 on this host): transparent \
             capture is unavailable, explicit-proxy mode is covered by the other tests",
        );
    }
    ok
}

pub(crate) fn net_events(env: &Env) -> Vec<serde_json::Value> {
    let log = env.last_session().join("net.jsonl");
    std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

both!(curl_reaches_an_allowed_host_and_nothing_else, |env| {
    let srv = Server::start(None);
    let ca = setup(env, &srv, "");
    let script = format!(
        "curl -sS --cacert {ca} https://api.test/hello; \
         curl -sS --cacert {ca} -o /dev/null https://evil.test/hello 2>&1; echo \"evil=$?\"; \
         env -u NO_PROXY -u no_proxy curl -sS --cacert {ca} -o /dev/null \
         https://127.0.0.1:{p}/hello 2>&1; echo \"ip=$?\"; \
         curl -s http://evil.test/ -D - -o /dev/null | tr -d '\\r' | grep -i '^x-cordon-reason'; \
         unset HTTPS_PROXY https_proxy ALL_PROXY all_proxy; \
         curl -sS --cacert {ca} https://api.test/hello 2>&1; echo \"unset=$?\"; \
         curl -sS --noproxy '*' --cacert {ca} https://127.0.0.1:{p}/hello 2>&1; echo \"direct=$?\"",
        p = srv.port
    );
    let o = env.sh(&["--profile", "net"], &script);
    let out = ok(&o);
    assert!(
        out.contains("hello over TLS, Host=api.test"),
        "allowed request failed:\n{out}\n{}",
        stderr(&o)
    );
    // curl reports the proxy's 403 to CONNECT as exit 56.
    assert!(out.contains("evil=56"), "{out}");
    assert!(out.contains("ip=56"), "{out}");
    assert!(
        out.contains("x-cordon-reason: net_host_not_allowed"),
        "{out}"
    );
    // Without the proxy there is no way out: no resolver, no route.
    assert!(!out.contains("unset=0"), "{out}");
    assert!(out.contains("unset=6"), "{out}");
    assert!(!out.contains("direct=0"), "{out}");
    let err = stderr(&o);
    assert!(err.contains("blocked 3 connection attempt(s)"), "{err}");
    let ev = net_events(env);
    let denied: Vec<(String, String)> = ev
        .iter()
        .filter(|e| e["kind"] == "flow.denied")
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        denied.contains(&("evil.test".into(), "net_host_not_allowed".into())),
        "{denied:?}"
    );
    assert!(
        denied.contains(&("127.0.0.1".into(), "net_ip_literal".into())),
        "{denied:?}"
    );
    let closed = ev
        .iter()
        .find(|e| e["kind"] == "flow.closed" && e["host"] == "api.test")
        .expect("a closed flow to api.test");
    assert!(closed["bytes_down"].as_u64().unwrap() > 100, "{closed}");
});

both!(python_and_git_go_through_the_proxy, |env| {
    let repos = tempfile::tempdir().unwrap();
    let bare = repos.path().join("demo.git");
    let git = |args: &[&str], dir: &Path| {
        let o = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {o:?}");
    };
    let work = repos.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&["init", "-q", "-b", "main"], &work);
    std::fs::write(work.join("file.txt"), "from the test server\n").unwrap();
    git(&["add", "file.txt"], &work);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "one",
        ],
        &work,
    );
    git(
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
        repos.path(),
    );
    let srv = Server::start(Some(repos.path()));
    let ca = setup(env, &srv, "");
    let script = "set -e; \
        python3 -c 'import urllib.request; print(urllib.request.urlopen(\"https://api.test/hello\").read().decode().strip())'; \
        cd /tmp && git clone -q https://git.test/git/demo.git && cat demo/file.txt; \
        python3 -c 'import urllib.request; urllib.request.urlopen(\"https://evil.test/hello\")' 2>&1 | tail -1 || true";
    let o = env.sh(
        &[
            "--profile",
            "net",
            "--env",
            &format!("SSL_CERT_FILE={ca}"),
            "--env",
            &format!("GIT_SSL_CAINFO={ca}"),
        ],
        script,
    );
    let out = ok(&o);
    assert!(out.contains("hello over TLS, Host=api.test"), "{out}");
    assert!(out.contains("from the test server"), "{out}");
    assert!(
        out.contains("403"),
        "python should see the proxy's 403: {out}"
    );
    // Everyday tools raise no alarm: git over HTTPS opens no decoy.
    let o = env
        .cordon(["audit", "show", "last", "--class", "finding"])
        .output()
        .unwrap();
    assert_eq!(ok(&o).trim(), "", "false alarms");
});

both!(node_without_proxy_support_cannot_get_out, |env| {
    // Node 20's fetch ignores HTTPS_PROXY: in explicit-proxy mode it has no
    // way out at all (no resolver, no route), rather than a way around.
    let srv = Server::start(None);
    let _ = setup(env, &srv, "");
    let o = env.sh(
        &["--profile", "net"],
        "node -e 'fetch(\"https://api.test/hello\").then(()=>console.log(\"REACHED\"),e=>console.log(\"failed:\",e.cause&&e.cause.code))'",
    );
    let out = ok(&o);
    assert!(!out.contains("REACHED"), "{out}");
    assert!(out.contains("failed:"), "{out}");
});

both!(
    names_that_resolve_to_private_addresses_and_fronting_are_refused,
    |env| {
        let srv = Server::start(None);
        let ca = setup(env, &srv, "");
        // `localhost` is allowed by name but resolves (on the host) to loopback.
        let fronting = r#"
import socket, ssl
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n')
print(s.recv(100).split(b'\r\n')[0].decode())
ctx = ssl.create_default_context(cafile='CA')
try:
    t = ctx.wrap_socket(s, server_hostname='evil.test')
    print('FRONTED', t.version())
except (ssl.SSLError, OSError) as e:
    print('cut:', type(e).__name__)
"#
        .replace("CA", &ca);
        let o = env.sh(
            &["--profile", "net", "--allow-host", "localhost"],
            &format!(
                "env -u NO_PROXY -u no_proxy curl -s -o /dev/null -D - --cacert {ca} \
             http://localhost:{p}/hello | tr -d '\\r' | grep -i '^x-cordon-reason'; \
             python3 -c \"{fronting}\"",
                p = srv.port
            ),
        );
        let out = ok(&o);
        assert!(
            out.contains("x-cordon-reason: net_address_blocked"),
            "{out}\n{}",
            stderr(&o)
        );
        assert!(out.contains("HTTP/1.1 200"), "{out}");
        assert!(!out.contains("FRONTED"), "{out}");
        assert!(out.contains("cut:"), "{out}");
        let ev = net_events(env);
        assert!(
            ev.iter()
                .any(|e| e["code"] == "net_name_mismatch" && e["sni"] == "evil.test"),
            "{ev:?}"
        );
    }
);

both!(udp_and_dns_have_no_way_out, |env| {
    let srv = Server::start(None);
    let _ = setup(env, &srv, "");
    let probe = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b'x', ('192.0.2.1', 53))
    print('udp: sent')
except OSError as e:
    print('udp:', e.errno)
try:
    socket.getaddrinfo('api.test', 443)
    print('dns: resolved')
except OSError:
    print('dns: failed')
"#;
    let o = env.sh(&["--profile", "net"], &format!("python3 -c \"{probe}\""));
    let out = ok(&o);
    // ENETUNREACH: the sandbox has loopback only.
    assert!(out.contains("udp: 101"), "{out}");
    assert!(out.contains("dns: failed"), "{out}");
});

both!(bad_allow_host_values_are_refused, |env| {
    env.refused(&["--allow-host", "*"], "would allow every host");
    env.refused(&["--allow-host", "10.0.0.1"], "IP address");
    env.refused(&["--allow-host", "a.test:99999"], "port");
});

both!(profile_show_lists_the_effective_network_rules, |env| {
    env.profile(
        "web",
        "extends = \"default\"\n[network]\nallow = [\"@pypi\", { host = \"api.test\", \
         reason = \"our API\" }]\ndeny = [\"upload.pypi.org\"]\n",
    );
    let out = ok(&env.cordon(["profile", "show", "web"]).output().unwrap());
    assert!(out.contains("[network]"), "{out}");
    assert!(out.contains("pypi.org"), "{out}");
    assert!(out.contains("@pypi: "), "{out}");
    assert!(out.contains("our API"), "{out}");
    let o = env.cordon(["profile", "show", "default"]).output().unwrap();
    assert!(
        stdout(&o).contains("allow = []"),
        "the default profile reaches nothing: {}",
        stdout(&o)
    );
});

/// tinyproxy (Debian) on 127.0.0.1 as an enterprise proxy; killed on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Tinyproxy {
        Tinyproxy::with_auth(None)
    }

    /// With `BasicAuth user password` when `auth` is given.
    fn with_auth(auth: Option<(&str, &str)>) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\n\
                 MaxClients 50\nAllow 127.0.0.1\n{}",
                log.display(),
                auth.map(|(u, p)| format!("BasicAuth {u} {p}\n"))
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (apt-get install tinyproxy)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

both!(an_upstream_proxy_carries_the_allowed_traffic, |env| {
    let srv = Server::start(None);
    let tp = Tinyproxy::start();
    let ca = setup(
        env,
        &srv,
        &format!("upstream_proxy = \"http://127.0.0.1:{}\"\n", tp.port),
    );
    let o = env.sh(
        &["--profile", "net"],
        &format!(
            "curl -sS --cacert {ca} https://api.test/hello; \
             curl -sS -o /dev/null -w '%{{http_code}}\\n' https://evil.test/ 2>&1; true"
        ),
    );
    let out = ok(&o);
    assert!(
        out.contains("hello over TLS, Host=api.test"),
        "{out}\n{}",
        stderr(&o)
    );
    let log = std::fs::read_to_string(&tp.log).unwrap_or_default();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{}", srv.port)),
        "tinyproxy did not carry the tunnel:\n{log}"
    );
    assert!(
        !log.contains("evil"),
        "a denied host reached the proxy:\n{log}"
    );
    let ev = net_events(env);
    let allowed = ev
        .iter()
        .find(|e| e["kind"] == "flow.allowed")
        .expect("an allowed flow");
    assert_eq!(allowed["addr"], format!("127.0.0.1:{}", tp.port));
});

both!(
    upstream_proxy_credentials_come_from_the_host_environment,
    |env| {
        let srv = Server::start(None);
        let tp = Tinyproxy::with_auth(Some(("agent", "s3cret-proxy-pass")));
        let ca = setup(
            env,
            &srv,
            &format!(
                "upstream_proxy = \"http://127.0.0.1:{}\"\n\
             upstream_proxy_auth = \"env:CORDON_TEST_PROXY_AUTH\"\n",
                tp.port
            ),
        );
        let script = format!(
            "env | grep -c s3cret; curl -sS --cacert {ca} https://api.test/hello 2>&1; true"
        );
        let run = |auth: Option<&str>| {
            let mut c = env.cordon([
                "run",
                "--no-tty",
                "--profile",
                "net",
                "--",
                "sh",
                "-c",
                &script,
            ]);
            if let Some(a) = auth {
                c.env("CORDON_TEST_PROXY_AUTH", a);
            }
            c.output().unwrap()
        };
        let o = run(Some("agent:s3cret-proxy-pass"));
        let out = ok(&o);
        assert!(
            out.starts_with("0\n"),
            "the agent must not see the credentials: {out}"
        );
        assert!(
            out.contains("hello over TLS, Host=api.test"),
            "{out}\n{}",
            stderr(&o)
        );
        // Wrong credentials: the proxy refuses the tunnel and the agent hears why.
        let out = ok(&run(Some("agent:wrong")));
        assert!(!out.contains("hello over TLS"), "{out}");
        assert!(out.contains("502"), "{out}");
        // Missing: cordon refuses to start and names the variable.
        let o = run(None);
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("CORDON_TEST_PROXY_AUTH"),
            "{}",
            stderr(&o)
        );
        let log = std::fs::read_to_string(&tp.log).unwrap_or_default();
        assert!(!log.contains("s3cret"), "{log}");
    }
);

both!(two_hundred_concurrent_tunnels_all_complete, |env| {
    let srv = Server::start(None);
    let ca = setup(env, &srv, "");
    let probe = concurrent_probe(
        &ca,
        r#"s = socket.create_connection(('127.0.0.1', 3128), timeout=60)
        s.sendall(b'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n')
        head = b''
        while not head.endswith(b'\r\n\r\n'):
            head += s.recv(1)
        assert head.startswith(b'HTTP/1.1 200'), head"#,
    );
    let o = env.sh(&["--profile", "net"], &format!("python3 -c \"{probe}\""));
    let out = ok(&o);
    assert!(out.contains("done 200 []"), "{out}\n{}", stderr(&o));
    let ev = net_events(env);
    let closed = ev.iter().filter(|e| e["kind"] == "flow.closed").count();
    assert_eq!(closed, 200, "every flow is recorded when it ends");
});

/// A Python script for the sandbox: 200 threads each open a connection
/// (`connect`, Python at the indentation of a `try:` body, leaving a socket
/// `s` to api.test:443), finish TLS, wait until all have, then send one
/// request each; prints `done <count> <first errors>`.
fn concurrent_probe(ca: &str, connect: &str) -> String {
    r#"
import socket, ssl, threading
ctx = ssl.create_default_context(cafile='CA')
N = 200
barrier = threading.Barrier(N)
done = []
errors = []
def one(i):
    try:
        CONNECT
        t = ctx.wrap_socket(s, server_hostname='api.test')
        barrier.wait(timeout=60)
        t.sendall(b'GET /hello HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n')
        data = b''
        while True:
            d = t.recv(4096)
            if not d:
                break
            data += d
        if b'hello over TLS' in data:
            done.append(i)
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print('done', len(done), errors[:3])
"#
    .replace("CONNECT", connect)
    .replace("CA", ca)
}

/// The bytes of `/bytes?n=N` on the test server: 0, 1, ..., 255, repeated.
fn pattern_sha256(n: usize) -> String {
    use sha2::{Digest, Sha256};
    let block: Vec<u8> = (0..=255u8).cycle().take(1 << 16).collect();
    let mut h = Sha256::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len());
        h.update(&block[..k]);
        left -= k;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_gigabyte_download_arrives_intact_rootless() {
    use crate::suite::harness::As;
    crate::need!(As::Nobody);
    let env = Env::new(As::Nobody);
    let srv = Server::start(None);
    let ca = setup(&env, &srv, "");
    let n = 1usize << 30;
    let o = env.sh(
        &["--profile", "net"],
        &format!("curl -sS --cacert {ca} 'https://api.test/bytes?n={n}' | sha256sum"),
    );
    let out = ok(&o);
    assert_eq!(
        out.split_whitespace().next().unwrap_or_default(),
        pattern_sha256(n),
        "{}",
        stderr(&o)
    );
    let ev = net_events(&env);
    let closed = ev
        .iter()
        .find(|e| e["kind"] == "flow.closed")
        .expect("the flow's end");
    assert!(
        closed["bytes_down"].as_u64().unwrap() > n as u64,
        "{closed}"
    );
}

both!(transparent_capture_serves_every_tool, |env| {
    if !tun_or_skip(env, "egress::transparent_capture_serves_every_tool") {
        return;
    }
    let repos = tempfile::tempdir().unwrap();
    let work = repos.path().join("work");
    std::fs::create_dir(&work).unwrap();
    for args in [
        vec!["init", "-q", "-b", "main"],
        vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "one",
        ],
        vec!["clone", "-q", "--bare", ".", "../demo.git"],
    ] {
        let o = Command::new("git")
            .args(&args)
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {o:?}");
    }
    let srv = Server::start(Some(repos.path()));
    let ca = setup_mode(env, &srv, "transparent", "");
    let script = format!(
        "env | grep -ci _proxy; \
         curl -sS --cacert {ca} https://api.test/hello; \
         SSL_CERT_FILE={ca} python3 -c 'import urllib.request; print(urllib.request.urlopen(\"https://api.test/hello\").read().decode().strip())'; \
         NODE_EXTRA_CA_CERTS={ca} node -e 'fetch(\"https://api.test/hello\").then(r=>r.text()).then(t=>console.log(\"node\",t.trim()))'; \
         cd /tmp && GIT_SSL_CAINFO={ca} git clone -q https://git.test/git/demo.git && echo cloned; \
         curl -sS --cacert {ca} https://evil.test/hello 2>&1; echo \"evil=$?\"; \
         curl -s -m 5 -o /dev/null -w 'literal=%{{http_code}}\\n' http://192.0.2.1/; \
         curl -s -m 5 http://[2001:db8::1]/ 2>&1; echo \"v6=$?\""
    );
    let o = env.sh(&["--profile", "net"], &script);
    let out = ok(&o);
    assert!(
        out.starts_with("0\n"),
        "no proxy variables in transparent mode: {out}"
    );
    assert!(
        out.contains("hello over TLS, Host=api.test\nhello over TLS, Host=api.test\nnode hello over TLS, Host=api.test"),
        "{out}\n{}",
        stderr(&o)
    );
    assert!(out.contains("cloned"), "{out}");
    assert!(out.contains("evil=6"), "cordon's DNS says NXDOMAIN: {out}");
    assert!(
        out.contains("literal=403"),
        "a readable refusal for plain HTTP: {out}"
    );
    // No IPv6 route at all: refused at once, never a way around the TUN.
    assert!(out.contains("v6=7"), "{out}");
    let ev = net_events(env);
    let has = |kind: &str, host: &str, code: Option<&str>| {
        ev.iter().any(|e| {
            e["kind"] == kind
                && e["host"] == host
                && e["via"] == "tun"
                && code.is_none_or(|c| e["code"] == c)
        })
    };
    assert!(has("dns.allowed", "api.test", None), "{ev:?}");
    assert!(has("flow.closed", "api.test", None), "{ev:?}");
    assert!(
        has("dns.denied", "evil.test", Some("net_host_not_allowed")),
        "{ev:?}"
    );
    assert!(
        has("flow.denied", "192.0.2.1", Some("net_ip_literal")),
        "{ev:?}"
    );
});

both!(
    plain_http_keeps_connections_alive_and_checks_each_request,
    |env| {
        let srv = Server::start_plain();
        let mut modes = vec!["proxy"];
        if tun_or_skip(
            env,
            "egress::plain_http_keeps_connections_alive_and_checks_each_request (transparent part)",
        ) {
            modes.push("transparent");
        }
        // One kept-alive connection from the client: two /peer requests that
        // name the same server port went over one upstream connection too.
        let probe = r#"
import http.client, os
proxied = bool(os.environ.get('HTTP_PROXY'))
c = http.client.HTTPConnection('127.0.0.1', 3128) if proxied else http.client.HTTPConnection('api.test', 80)
base = 'http://api.test' if proxied else ''
def go(method, path, body=None, chunked=False):
    c.request(method, base + path, body=body, encode_chunked=chunked)
    r = c.getresponse()
    return r.status, r.read()
s1, p1 = go('GET', '/peer')
s3, ch = go('GET', '/chunked')
s5, p2 = go('GET', '/peer')
# After a request with a body the connection ends (cordon says so with
# Connection: close); http.client opens a new one.
s2, e = go('POST', '/echo', body=b'x' * 300000)
s4, e2 = go('POST', '/echo', body=iter([b'abc', b'de']), chunked=True)
print('statuses', s1, s2, s3, s4, s5)
print('echo', len(e), e2)
print('chunked', ch)
print('same upstream', p1 == p2)
c.putrequest('GET', base + '/hello', skip_host=True)
c.putheader('Host', 'evil.test')
c.endheaders()
r = c.getresponse()
print('fronted', r.status, r.getheader('x-cordon-reason'))
"#;
        for mode in modes {
            setup_mode(env, &srv, mode, "");
            let o = env.sh(
                &["--profile", "net"],
                &format!(
                    "python3 -c \"{probe}\"; \
                 curl -s -w '\\n' http://api.test/peer http://api.test/peer | uniq | wc -l"
                ),
            );
            let out = ok(&o);
            assert!(
                out.contains("statuses 200 200 200 200 200"),
                "{mode}: {out}"
            );
            assert!(out.contains("echo 300000 b'abcde'"), "{mode}: {out}");
            assert!(out.contains("chunked b'one,two,three'"), "{mode}: {out}");
            assert!(out.contains("same upstream True"), "{mode}: {out}");
            assert!(
                out.contains("fronted 403 net_name_mismatch"),
                "{mode}: {out}"
            );
            assert!(
                out.trim_end().ends_with("\n1"),
                "{mode}: curl's two requests shared one connection: {out}"
            );
            let ev = net_events(env);
            let count = |k: &str| ev.iter().filter(|e| e["kind"] == k).count();
            assert_eq!(count("http.request"), 7, "{mode}: {ev:?}");
            // Python's connection, its second one after a body, curl's.
            assert_eq!(count("flow.allowed"), 3, "{mode}: {ev:?}");
            assert_eq!(count("flow.denied"), 1, "{mode}: {ev:?}");
        }
    }
);

both!(
    transparent_capture_refuses_fronting_udp_and_dns_tunnels,
    |env| {
        if !tun_or_skip(
            env,
            "egress::transparent_capture_refuses_fronting_udp_and_dns_tunnels",
        ) {
            return;
        }
        let srv = Server::start(None);
        let ca = setup_mode(env, &srv, "transparent", "");
        env.profile(
            "net",
            &std::fs::read_to_string(env.config.join("cordon/profiles/net.toml"))
                .unwrap()
                .replace("allow = [", "allow = [\"*.tun.test\", "),
        );
        let probe = r#"
import socket, ssl, struct
ip = socket.gethostbyname('api.test')
s = socket.create_connection((ip, 443), timeout=10)
ctx = ssl.create_default_context(cafile='CA')
try:
    t = ctx.wrap_socket(s, server_hostname='evil.test')
    print('FRONTED', t.version())
except (ssl.SSLError, OSError) as e:
    print('cut:', type(e).__name__)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'quic?', ('192.0.2.7', 443))
print('udp sent')
def ask(name, qtype):
    q = struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    q += b'\0' + struct.pack('>HH', qtype, 1)
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.settimeout(5)
    d.sendto(q, ('198.18.0.1', 53))
    r = d.recv(512)
    return r[3] & 15, struct.unpack('>H', r[6:8])[0]
print('plain', ask('docs.tun.test', 1))
print('tunnel', ask('mzxw6ytboi2dqmbrgeztinjwg44dsmbrge.tun.test', 1))
print('txt', ask('docs.tun.test', 16))
print('aaaa', ask('api.test', 28))
# More lookups than a per-4-tuple table would hold (each from a new port).
for i in range(1100):
    ask('docs.tun.test', 1)
print('burst done')
"#
        .replace("CA", &ca);
        let o = env.sh(&["--profile", "net"], &format!("python3 -c \"{probe}\""));
        let out = ok(&o);
        assert!(!out.contains("FRONTED"), "{out}");
        assert!(out.contains("cut:"), "{out}");
        assert!(out.contains("udp sent"), "{out}");
        // NOERROR with one answer; NXDOMAIN; REFUSED; NOERROR without answers.
        assert!(out.contains("plain (0, 1)"), "{out}");
        assert!(out.contains("tunnel (3, 0)"), "{out}");
        assert!(out.contains("txt (5, 0)"), "{out}");
        assert!(out.contains("aaaa (0, 0)"), "{out}");
        let ev = net_events(env);
        let code = |c: &str| ev.iter().any(|e| e["code"] == c);
        assert!(code("net_name_mismatch"), "{ev:?}");
        assert!(code("net_udp_blocked"), "{ev:?}");
        assert!(code("net_dns_tunnel"), "{ev:?}");
        assert!(code("net_dns_refused"), "{ev:?}");
        assert!(out.contains("burst done"), "{out}");
        let itemised = ev.iter().filter(|e| e["host"] == "docs.tun.test").count();
        assert!(
            ev.iter().any(|e| e["kind"] == "dns.burst"),
            "1100 lookups in a row are flagged"
        );
        assert!(
            (150..252).contains(&itemised),
            "queries are itemised up to the burst: {itemised}"
        );
    }
);

both!(transparent_mode_refuses_to_start_without_a_tun, |env| {
    let srv = Server::start(None);
    setup_mode(env, &srv, "transparent", "");
    let can = env
        .command("sh", ["-c", "exec 3<>/dev/net/tun"])
        .output()
        .unwrap()
        .status
        .success();
    let o = env
        .cordon(["run", "--no-tty", "--profile", "net", "--", "true"])
        .output()
        .unwrap();
    if can {
        ok(&o);
    } else {
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains("/dev/net/tun"), "{}", stderr(&o));
        assert!(stderr(&o).contains("mode = \"proxy\""), "{}", stderr(&o));
    }
});

both!(
    transparent_capture_carries_concurrent_and_bulk_flows_intact,
    |env| {
        if !tun_or_skip(
            env,
            "egress::transparent_capture_carries_concurrent_and_bulk_flows_intact",
        ) {
            return;
        }
        let srv = Server::start(None);
        let ca = setup_mode(env, &srv, "transparent", "");
        let n = 64usize << 20;
        let probe = concurrent_probe(
            &ca,
            "s = socket.create_connection((socket.gethostbyname('api.test'), 443), timeout=60)",
        );
        let o = env.sh(
            &["--profile", "net"],
            &format!(
                "python3 -c \"{probe}\"; \
             curl -sS --cacert {ca} 'https://api.test/bytes?n={n}' | sha256sum"
            ),
        );
        let out = ok(&o);
        assert!(out.contains("done 200 []"), "{out}\n{}", stderr(&o));
        assert!(out.contains(&pattern_sha256(n)), "{out}");
    }
);

both!(
    auto_mode_takes_the_tun_where_it_can_and_says_when_it_cannot,
    |env| {
        let srv = Server::start(None);
        let ca = setup_mode(env, &srv, "auto", "");
        let can = env
            .command("sh", ["-c", "exec 3<>/dev/net/tun"])
            .output()
            .unwrap()
            .status
            .success();
        let o = env.sh(
            &["--profile", "net"],
            &format!(
                "echo proxy=${{HTTPS_PROXY:-none}}; curl -sS --cacert {ca} https://api.test/hello"
            ),
        );
        let out = ok(&o);
        assert!(
            out.contains("hello over TLS, Host=api.test"),
            "{out}\n{}",
            stderr(&o)
        );
        let notice = stderr(&o).contains("egress: explicit-proxy mode (/dev/net/tun:");
        if can {
            assert!(out.contains("proxy=none"), "{out}");
            assert!(!notice, "{}", stderr(&o));
            assert_eq!(net_events(env)[0]["via"], "tun");
        } else {
            assert!(out.contains("proxy=http://127.0.0.1:3128"), "{out}");
            assert!(notice, "the fallback must be said: {}", stderr(&o));
        }
    }
);
