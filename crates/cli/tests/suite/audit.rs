//! The session's audit log: written by the supervisor for every run,
//! OCSF-shaped, verified by `cordon audit verify`, read with `cordon audit
//! show`, and any tampering named.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::both;
use crate::suite::harness::{ok, stderr, stdout, As, Env};

fn records(env: &Env) -> Vec<Value> {
    let o = env
        .cordon(["audit", "show", "last", "--json", "--checkpoints"])
        .output()
        .unwrap();
    ok(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The last session's records of one OCSF class.
fn records_of(env: &Env, class_uid: u64) -> Vec<Value> {
    records(env)
        .into_iter()
        .filter(|r| r["class_uid"] == class_uid)
        .collect()
}

fn verify(env: &Env, target: &str) -> (Option<i32>, String) {
    let o = env.cordon(["audit", "verify", target]).output().unwrap();
    (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
}

both!(every_session_leaves_a_verified_ocsf_record, |env| {
    env.profile(
        "net",
        "extends = \"default\"\n[network]\nmode = \"proxy\"\nallow = [\"api.test\"]\n",
    );
    let o = env.sh(
        &["--profile", "net", "--mode", "overlay"],
        "echo new > added.txt; echo more >> README.md; \
         curl -s --max-time 5 http://evil.test/ >/dev/null; echo done",
    );
    assert_eq!(ok(&o).trim(), "done");

    // The host key: private, made on first use.
    let key = env.state.join("cordon/audit-key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("verified:"), "{text}");

    let all = records(env);
    let class = |v: &Value| v["class_uid"].as_u64();
    let session = all[0]["actor"]["session"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    for r in &all {
        if r.get("checkpoint").is_none() {
            assert_eq!(r["actor"]["session"]["uid"], session.as_str());
            assert!(r["time_ns"].as_u64().unwrap() > 0);
            assert!(r["unmapped"]["profile_digest"].as_str().unwrap().len() > 10);
        }
    }
    // Start and stop, first and last (before the closing checkpoint).
    assert_eq!(class(&all[0]), Some(6002));
    assert_eq!(all[0]["activity_name"], "Start");
    assert!(all[0]["actor"]["process"]["pid"].as_u64().is_some());
    let stop = &all[all.len() - 2];
    assert_eq!(stop["activity_name"], "Stop");
    assert_eq!(stop["unmapped"]["exit_code"], 0);
    assert_eq!(all.last().unwrap()["checkpoint"]["closing"], true);
    // The refused connection, with its reason code.
    let refused = all
        .iter()
        .find(|r| class(r) == Some(4001) && r["activity_name"] == "Refuse")
        .unwrap_or_else(|| panic!("no refused connection in {all:#?}"));
    assert_eq!(refused["dst_endpoint"]["hostname"], "evil.test");
    assert_eq!(refused["status_detail"], "net_host_not_allowed");
    // The overlay's changes, with the new content's digest.
    let created = all
        .iter()
        .find(|r| class(r) == Some(1001) && r["file"]["path"] == "added.txt")
        .unwrap_or_else(|| panic!("no file record in {all:#?}"));
    assert_eq!(created["activity_name"], "Create");
    assert_eq!(created["file"]["size"], 4);
    assert_eq!(
        created["file"]["hashes"][0]["value"],
        cordon_hex(&Sha256::digest(b"new\n"))
    );
    assert!(all.iter().any(|r| class(r) == Some(1001)
        && r["file"]["path"] == "README.md"
        && r["activity_name"] == "Update"));

    // For people, and filtered.
    let o = env
        .cordon(["audit", "show", "last", "--class", "network"])
        .output()
        .unwrap();
    let text = ok(&o);
    assert!(
        text.contains("network") && text.contains("evil.test:80"),
        "{text}"
    );
    assert!(!text.contains("Start"), "{text}");
    let o = env
        .cordon(["audit", "show", "last", "--class", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a class"), "{}", stderr(&o));
});

fn cordon_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

both!(tampering_with_the_record_is_named, |env| {
    let o = env.sh(
        &["--mode", "overlay"],
        "echo a > a.txt; echo b > b.txt; echo done",
    );
    assert_eq!(ok(&o).trim(), "done");
    let path = env.last_session().join("audit.jsonl");
    let original = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 4, "{}", String::from_utf8_lossy(&original));

    // A record's first byte flipped: no longer a record.
    let mut flipped = original.clone();
    flipped[lines[0].len()] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("TAMPERED: line 2"), "{text}");
    // A record edited into other valid JSON (the file record of a.txt):
    // the next one no longer names its hash.
    let k = lines
        .iter()
        .position(|l| String::from_utf8_lossy(l).contains("\"path\":\"a.txt\""))
        .unwrap();
    let target = String::from_utf8(lines[k].to_vec()).unwrap();
    let edited: Vec<u8> = [
        lines[..k].concat(),
        target.replace("a.txt", "x.txt").into_bytes(),
        lines[k + 1..].concat(),
    ]
    .concat();
    std::fs::write(&path, &edited).unwrap();
    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("TAMPERED: line {}", k + 2))
            && text.contains(&format!("record {} was altered", k + 1)),
        "{text}"
    );

    // A deleted record.
    let mut deleted: Vec<u8> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i != 1 {
            deleted.extend_from_slice(l);
        }
    }
    std::fs::write(&path, &deleted).unwrap();
    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("were deleted"), "{text}");

    // Cut back to its first records: the chain alone is intact, but the
    // session record knows where the log ended.
    let cut: Vec<u8> = lines[..2].concat();
    std::fs::write(&path, &cut).unwrap();
    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cut back or replaced"), "{text}");
    // The same file on its own: intact as far as it goes, not closed.
    let copy = env.project.join("copy.jsonl");
    std::fs::write(&copy, &cut).unwrap();
    let (code, text) = verify(env, copy.to_str().unwrap());
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("not closed"), "{text}");
    // A torn last line (a crash mid-write) is reported, not counted.
    let mut torn = cut.clone();
    torn.extend_from_slice(&lines[2][..lines[2].len() / 2]);
    std::fs::write(&copy, &torn).unwrap();
    let (code, text) = verify(env, copy.to_str().unwrap());
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("torn tail"), "{text}");

    // Another key is not trusted.
    std::fs::write(&path, &original).unwrap();
    let o = env
        .cordon(["audit", "verify", "--key", &"ab".repeat(32), "last"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("not the trusted"), "{}", stdout(&o));
    // And the original verifies again.
    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(0), "{text}");
});

both!(every_exec_and_exit_is_recorded_with_its_arguments, |env| {
    std::fs::write(env.project.join("ok.sh"), "exit 3\n").unwrap();
    let o = env.sh(
        &[],
        "ls -a . > /dev/null; git status --short > /dev/null 2>&1; sh ok.sh; echo done",
    );
    assert_eq!(ok(&o).trim(), "done");
    let (code, text) = verify(env, "last");
    assert_eq!(code, Some(0), "{text}");
    let all = records(env);
    let procs: Vec<&Value> = all.iter().filter(|r| r["class_uid"] == 1007).collect();
    let launch = |argv: &[&str]| {
        procs
            .iter()
            .find(|r| {
                r["activity_name"] == "Launch"
                    && r["actor"]["process"]["unmapped"]["argv"]
                        .as_array()
                        .is_some_and(|a| {
                            a.iter()
                                .map(|x| x.as_str().unwrap())
                                .eq(argv.iter().copied())
                        })
            })
            .unwrap_or_else(|| panic!("no exec of {argv:?} in {procs:#?}"))
    };
    let sh = launch(&[
        "sh",
        "-c",
        "ls -a . > /dev/null; git status --short > /dev/null 2>&1; sh ok.sh; echo done",
    ]);
    let ls = launch(&["ls", "-a", "."]);
    let git = launch(&["git", "status", "--short"]);
    launch(&["sh", "ok.sh"]);
    // Path, working directory, parent, pid.
    assert!(
        ls["actor"]["process"]["file"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/ls"),
        "{ls:#}"
    );
    assert_eq!(
        git["actor"]["process"]["working_directory"],
        env.project.to_str().unwrap()
    );
    assert_eq!(
        ls["actor"]["process"]["parent_process"]["pid"],
        sh["actor"]["process"]["pid"]
    );
    // The host uid cordon runs as (the sandbox maps it to the agent's).
    let uid = match env.who {
        As::Me => rustix::process::getuid().as_raw(),
        As::Nobody => 65534,
    };
    assert_eq!(ls["actor"]["process"]["user"]["uid"], uid.to_string());
    // Exits, with their status: `sh ok.sh` ended with 3.
    assert!(
        procs
            .iter()
            .any(|r| r["activity_name"] == "Terminate" && r["exit_code"] == 3),
        "{procs:#?}"
    );
    let exits = procs
        .iter()
        .filter(|r| r["activity_name"] == "Terminate")
        .count();
    assert!(exits >= 4, "{procs:#?}");
    let o = env
        .cordon(["audit", "show", "last", "--class", "process"])
        .output()
        .unwrap();
    let text = ok(&o);
    assert!(text.contains("git status --short"), "{text}");
    assert!(text.contains("exit 3"), "{text}");
});

both!(a_process_killed_by_a_signal_has_its_exit_recorded, |env| {
    if !cordon_sandbox::exit_info_supported() {
        crate::suite::harness::skip(
            "audit::a_process_killed_by_a_signal_has_its_exit_recorded",
            "exits read from pidfds need Linux 6.15 (PIDFD_INFO_EXIT); older kernels notify exit_group, which a killed process never calls",
        );
        return;
    }
    // Killed once it runs sleep: its command line is exactly `sleep 30`
    // after the exec (before it, the forked shell's holds the whole
    // script, which names sleep too).
    let o = env.sh(
        &[],
        "sleep 30 & while ! tr '\\0' ' ' < /proc/$!/cmdline | grep -qx 'sleep 30 '; do :; done; \
         kill -9 $!; wait; echo done",
    );
    assert_eq!(ok(&o).trim(), "done");
    let procs: Vec<Value> = records_of(env, 1007);
    let sleep = procs
        .iter()
        .find(|r| r["activity_name"] == "Launch" && r["actor"]["process"]["cmd_line"] == "sleep 30")
        .unwrap_or_else(|| panic!("no exec of sleep in {procs:#?}"));
    let pid = &sleep["actor"]["process"]["pid"];
    let end = procs
        .iter()
        .find(|r| r["activity_name"] == "Terminate" && &r["actor"]["process"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no exit of pid {pid} in {procs:#?}"));
    assert_eq!(end["exit_code"], 137, "{end:#}");
    assert_eq!(end["unmapped"]["signal"], 9, "{end:#}");
    // And the agent's own exit, status 0.
    assert!(
        procs
            .iter()
            .any(|r| r["activity_name"] == "Terminate" && r["exit_code"] == 0),
        "{procs:#?}"
    );
});

/// A real rsyslogd on loopback (TCP with octet counting, and UDP), writing
/// every message it receives to `out.log`.
struct Rsyslog {
    dir: std::path::PathBuf,
    child: std::process::Child,
    tcp: u16,
    udp: u16,
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

impl Rsyslog {
    fn binary() -> Option<&'static str> {
        ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
    }

    fn start(dir: &std::path::Path, tcp: u16, udp: u16) -> Rsyslog {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\n\
                 module(load=\"imtcp\")\nmodule(load=\"imudp\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 ruleset(name=\"r\") {{ action(type=\"omfile\" file=\"{d}/out.log\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\") }}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\" ruleset=\"r\")\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\" ruleset=\"r\")\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(Rsyslog::binary().unwrap())
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Listening once a TCP connection is accepted.
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "rsyslogd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Rsyslog {
            dir: dir.to_owned(),
            child,
            tcp,
            udp,
        }
    }

    /// Waits until every line of `want` (audit records) arrived at least
    /// `times` times; returns what arrived.
    fn wait_for(&self, want: &[String], times: usize) -> String {
        let t = std::time::Instant::now();
        loop {
            let got = std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default();
            let ok = want
                .iter()
                .all(|l| got.matches(l.as_str()).count() >= times);
            if ok {
                return got;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(15),
                "not every record arrived {times} time(s): {} of {} lines in {got}",
                want.iter().filter(|l| got.contains(l.as_str())).count(),
                want.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

both!(
    records_reach_a_real_rsyslogd_and_survive_its_outage,
    |env| {
        if Rsyslog::binary().is_none() {
            crate::suite::harness::skip(
                "records_reach_a_real_rsyslogd_and_survive_its_outage",
                "rsyslogd is not installed (apt-get install rsyslog)",
            );
            return;
        }
        let (tcp, udp) = (free_port(false), free_port(true));
        let syslog = Rsyslog::start(&env.project.join("../rsyslog"), tcp, udp);
        let conf = env.config.join("cordon/audit.toml");
        std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
        std::fs::write(
        &conf,
        format!(
            "[[sink]]\nname = \"siem-tcp\"\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{tcp}\"\n\n\
             [[sink]]\nname = \"siem-udp\"\ntype = \"syslog\"\naddress = \"udp://127.0.0.1:{udp}\"\n"
        ),
    )
    .unwrap();
        env.own(&env.config);
        let o = env.sh(&[], "ls > /dev/null; echo done");
        assert_eq!(ok(&o).trim(), "done");
        let log = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
        let lines: Vec<String> = log.lines().map(str::to_owned).collect();
        // Both sinks: every record, the closing checkpoint included.
        let got = syslog.wait_for(&lines, 2);
        assert!(got.contains("cordon@32473"), "{got}");
        assert!(
            got.lines()
                .any(|l| l.starts_with("<134>1 ") && l.contains(" cordon - process ")),
            "{got}"
        );

        // The sink goes down: the session runs anyway, and says what to do.
        let (tcp_port, udp_port, dir) = (syslog.tcp, syslog.udp, syslog.dir.clone());
        syslog.stop();
        let o = env.sh(&[], "echo second");
        assert_eq!(ok(&o).trim(), "second");
        assert!(stderr(&o).contains("cordon audit ship"), "{}", stderr(&o));
        let second = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
        let second: Vec<String> = second.lines().map(str::to_owned).collect();
        // Back up: `cordon audit ship` delivers what it missed.
        let syslog = Rsyslog::start(&dir, tcp_port, udp_port);
        let o = env.cordon(["audit", "ship"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("delivered through record"),
            "{}",
            stdout(&o)
        );
        syslog.wait_for(&second, 1);
        // Nothing is sent twice by a ship with nothing new. rsyslogd may
        // still be writing what the first ship sent (at least once: the
        // first session's tail may come again): measure once it is quiet.
        let size = || std::fs::metadata(dir.join("out.log")).unwrap().len();
        let mut before = size();
        let quiet_until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let now = size();
            if now == before || std::time::Instant::now() > quiet_until {
                break;
            }
            before = now;
        }
        let before = before as usize;
        let o = env.cordon(["audit", "ship"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            std::fs::read_to_string(dir.join("out.log")).unwrap().len(),
            before
        );
    }
);

/// The audit collector (crates/cli/tests/fixtures/sink_server.py) on
/// 127.0.0.1, plain HTTP or HTTPS with the test CA; every record it takes
/// is a line of `out`. Killed on drop.
struct Collector {
    child: std::process::Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Collector {
    fn start(out: std::path::PathBuf, tls: bool) -> Collector {
        use std::io::BufRead;
        let mut c = std::process::Command::new("/usr/bin/python3");
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sink_server.py"
        ))
        .arg(&out);
        if tls {
            let pki = crate::suite::egress::pki();
            c.arg(&pki.cert).arg(&pki.key);
        }
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Collector { child, port, out }
    }

    /// Every row received so far, by sink type.
    fn rows(&self, sink: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["sink"] == sink)
            .collect()
    }

    /// Waits until every record of `want` arrived at `sink` at least once;
    /// returns how many times each arrived.
    fn wait_for(&self, sink: &str, want: &[Value]) -> Vec<usize> {
        let t = std::time::Instant::now();
        loop {
            let rows = self.rows(sink);
            let counts: Vec<usize> = want
                .iter()
                .map(|w| rows.iter().filter(|r| &r["record"] == w).count())
                .collect();
            if counts.iter().all(|&c| c >= 1) {
                return counts;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(15),
                "{sink}: {} of {} records arrived",
                counts.iter().filter(|&&c| c >= 1).count(),
                want.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn set_down(&self, down: bool) {
        let flag = self.out.with_extension("jsonl.down");
        if down {
            std::fs::write(flag, "").unwrap();
        } else {
            std::fs::remove_file(flag).unwrap();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_records(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.last_session().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

both!(
    records_reach_http_splunk_and_otlp_collectors_at_least_once,
    |env| {
        let dir = env.project.join("../collectors");
        std::fs::create_dir_all(&dir).unwrap();
        let plain = Collector::start(dir.join("plain.jsonl"), false);
        let tls = Collector::start(dir.join("tls.jsonl"), true);
        std::fs::write(dir.join("tls.jsonl.token"), "hec-0d2c6a\n").unwrap();
        let conf_dir = env.config.join("cordon");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let token = conf_dir.join("hec.token");
        std::fs::write(&token, "hec-0d2c6a\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ca = conf_dir.join("siem-ca.pem");
        std::fs::copy(&crate::suite::egress::pki().ca, &ca).unwrap();
        std::fs::write(
            conf_dir.join("audit.toml"),
            format!(
                "[[sink]]\nname = \"generic\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{p}/generic\"\nbatch = 3\n\n\
                 [[sink]]\nname = \"splunk\"\ntype = \"splunk-hec\"\n\
                 url = \"https://127.0.0.1:{t}/services/collector/event\"\n\
                 token_file = \"{token}\"\nca_file = \"{ca}\"\n\n\
                 [[sink]]\nname = \"otel\"\ntype = \"otlp\"\nurl = \"https://127.0.0.1:{t}/v1/logs\"\nca_file = \"{ca}\"\n",
                p = plain.port,
                t = tls.port,
                token = token.display(),
                ca = ca.display()
            ),
        )
        .unwrap();
        env.own(&env.config);
        let o = env.sh(&[], "ls > /dev/null; echo done");
        assert_eq!(ok(&o).trim(), "done");
        let first = log_records(env);
        assert!(first.len() >= 5, "{first:?}");
        plain.wait_for("generic", &first);
        tls.wait_for("hec", &first);
        tls.wait_for("otlp", &first);
        // Each format's own fields.
        let hec = tls.rows("hec");
        let e = &hec[0]["extra"];
        assert_eq!(e["sourcetype"], "cordon:ocsf", "{e}");
        assert_eq!(e["source"], "cordon", "{e}");
        let ns = hec[0]["record"]["time_ns"].as_u64().unwrap();
        let secs = e["time"].as_f64().unwrap();
        assert!((secs - ns as f64 / 1e9).abs() < 1e-3, "{secs} vs {ns}");
        let otlp = tls.rows("otlp");
        let x = &otlp[0]["extra"];
        assert_eq!(
            x["resource"]["service.name"]["stringValue"], "cordon",
            "{x}"
        );
        assert_eq!(
            x["attributes"]["cordon.session"]["stringValue"],
            otlp[0]["record"]["actor"]["session"]["uid"],
            "{x}"
        );
        assert_eq!(
            x["timeUnixNano"].as_str().unwrap(),
            otlp[0]["record"]["time_ns"].to_string(),
            "{x}"
        );

        // Both collectors go down: the session runs anyway and says what
        // to do; nothing of it is recorded.
        plain.set_down(true);
        tls.set_down(true);
        let o = env.sh(&[], "echo second");
        assert_eq!(ok(&o).trim(), "second");
        let err = stderr(&o);
        for sink in ["generic", "splunk", "otel"] {
            assert!(err.contains(&format!("audit sink {sink}")), "{err}");
        }
        assert!(err.contains("HTTP 503"), "{err}");
        assert!(err.contains("cordon audit ship"), "{err}");
        let second = log_records(env);
        let (before_plain, before_tls) = (plain.rows("generic").len(), tls.rows("hec").len());
        // While they are down `cordon audit ship` fails, naming the answer.
        let o = env.cordon(["audit", "ship"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        assert!(stdout(&o).contains("HTTP 503"), "{}", stdout(&o));
        assert_eq!(plain.rows("generic").len(), before_plain);
        assert_eq!(tls.rows("hec").len(), before_tls);

        // Back up: every record of the second session arrives, and every
        // record of both sessions is counted once or more at each sink.
        plain.set_down(false);
        tls.set_down(false);
        let o = env.cordon(["audit", "ship"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
        let all: Vec<Value> = first.iter().chain(&second).cloned().collect();
        for (c, sink) in [(&plain, "generic"), (&tls, "hec"), (&tls, "otlp")] {
            let counts = c.wait_for(sink, &all);
            assert!(counts.iter().all(|&n| n >= 1), "{sink}: {counts:?}");
        }
        // A ship with nothing new sends nothing.
        let n = plain.rows("generic").len();
        let o = env.cordon(["audit", "ship"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(plain.rows("generic").len(), n);
    }
);

both!(
    a_sink_that_cannot_be_used_stops_the_run_before_it_starts,
    |env| {
        let conf_dir = env.config.join("cordon");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let token = conf_dir.join("hec.token");
        std::fs::write(&token, "t\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let conf = conf_dir.join("audit.toml");
        let cases = [
        (
            format!(
                "[[sink]]\nname = \"s\"\ntype = \"splunk-hec\"\nurl = \"https://127.0.0.1:1/\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
            "chmod 600",
        ),
        (
            "[[sink]]\nname = \"s\"\ntype = \"splunk-hec\"\nurl = \"https://127.0.0.1:1/\"\n".to_owned(),
            "needs its HEC token",
        ),
        (
            "[[sink]]\nname = \"s\"\ntype = \"http\"\nurl = \"https://127.0.0.1:1/\"\nca_file = \"/nonexistent.pem\"\n".to_owned(),
            "/nonexistent.pem",
        ),
        (
            "[[sink]]\nname = \"s\"\ntype = \"http\"\nurl = \"127.0.0.1:1\"\n".to_owned(),
            "expected http:// or https://",
        ),
    ];
        for (text, says) in cases {
            std::fs::write(&conf, text).unwrap();
            env.own(&env.config);
            env.refused(&[], says);
        }
    }
);

both!(command_line_grants_are_authorization_records, |env| {
    let extra = env.project.join("../extra");
    std::fs::create_dir_all(&extra).unwrap();
    env.own(&extra);
    let extra = std::fs::canonicalize(&extra).unwrap();
    let o = env
        .cordon(["run", "--no-tty", "--allow-read"])
        .arg(&extra)
        .args([
            "--allow-host",
            "pypi.org",
            "--env",
            "GITHUB_TOKEN",
            "--env",
            "FOO=bar",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    ok(&o);
    let grants: Vec<Value> = records_of(env, 3003);
    let privileges: Vec<&str> = grants
        .iter()
        .map(|g| g["privileges"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        privileges,
        [
            format!("read:{}", extra.display()).as_str(),
            "host:pypi.org",
            "env:GITHUB_TOKEN"
        ]
    );
    // Names only: the variable's value is never recorded.
    let log = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
    assert!(!log.contains(crate::suite::harness::CANARY), "{log}");
    assert_eq!(grants[1]["activity_name"], "Assign Privileges");
    assert_eq!(grants[1]["unmapped"]["source"], "--allow-host");
});

both!(
    read_write_projects_have_their_changes_recorded_as_they_happen,
    |env| {
        std::fs::create_dir_all(env.project.join("src")).unwrap();
        std::fs::write(env.project.join("src/old.txt"), "old\n").unwrap();
        env.own(&env.project);
        let o = env.sh(
            &["--mode", "rw"],
            "printf new > new.txt; echo more >> src/old.txt; mkdir -p d/e; printf f > d/e/f; \
         mv new.txt renamed.txt; mv d d2; printf g > d2/e/g; rm src/old.txt; \
         printf t > tmp.txt; rm tmp.txt; printf x > \"$(printf 'bad\\377name')\"; \
         mkfifo pipe; exec 3<>pipe; exec 3>&-; ln -s /dev/zero zero; printf l > later.txt; \
         echo done",
        );
        assert_eq!(ok(&o).trim(), "done");
        let files: Vec<Value> = records_of(env, 1001);
        let seen = |activity: &str, path: &str| {
            files
                .iter()
                .find(|r| r["activity_name"] == activity && r["file"]["path"] == path)
                .cloned()
                .unwrap_or_else(|| panic!("no {activity} of {path} in {files:#?}"))
        };
        seen("Create", "new.txt");
        // Size and digest are read when the writer closes the file: new.txt
        // is renamed at once, and a busy machine may get there first (then
        // the update is recorded without them). later.txt, never renamed,
        // always has them (checked below).
        let written = seen("Update", "new.txt");
        if !written["file"]["size"].is_null() {
            assert_eq!(written["file"]["size"], 3);
            assert_eq!(
                written["file"]["hashes"][0]["value"],
                cordon_hex(&Sha256::digest(b"new"))
            );
        }
        seen("Update", "src/old.txt");
        seen("Create", "d");
        // Made before the watch on the new directory existed, or after:
        // listed when the watch was added, or seen being written (and when
        // the watch lags behind the rename, only under the new name).
        let hashed = |paths: &[&str], content: &[u8]| {
            assert!(
                files
                    .iter()
                    .any(|r| paths.iter().any(|p| r["file"]["path"] == *p)
                        && r["file"]["hashes"][0]["value"] == cordon_hex(&Sha256::digest(content))),
                "no record of {paths:?} with its digest in {files:#?}"
            );
        };
        hashed(&["d/e/f", "d2/e/f"], b"f");
        let renamed = seen("Rename", "renamed.txt");
        assert_eq!(renamed["unmapped"]["from"], "new.txt");
        assert_eq!(seen("Rename", "d2")["unmapped"]["from"], "d");
        // After the directory moved, changes inside it carry its new name.
        hashed(&["d2/e/g"], b"g");
        seen("Delete", "src/old.txt");
        // A file that lived and died during the session is on the record too.
        seen("Create", "tmp.txt");
        seen("Delete", "tmp.txt");
        assert!(files.iter().all(|r| r["unmapped"]["source"] == "inotify"));
        // A name that is not UTF-8 is written lossily; a FIFO closed after
        // writing and a symlink to a device are not read; the watch goes on.
        seen("Update", "bad\u{fffd}name");
        seen("Create", "pipe");
        assert_eq!(seen("Create", "zero")["file"]["type"], "symlink");
        let later = seen("Update", "later.txt");
        assert_eq!(later["file"]["size"], 1);
        hashed(&["later.txt"], b"l");
        let (code, text) = verify(env, "last");
        assert_eq!(code, Some(0), "{text}");
    }
);
