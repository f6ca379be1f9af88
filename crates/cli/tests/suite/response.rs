//! Sessions and incident response against real sandboxes: the registry
//! (`cordon ps`, `show`), the control socket, `contain` (freeze, cut,
//! revoke, evidence), `resume`, `kill`, `block`, evidence verification and
//! crash marking.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both;
use crate::suite::harness::{stderr, stdout, Env};

/// A TCP server on loopback that greets each connection with `HELLO` and
/// reports on the channel when the connection is closed by the other side.
pub(crate) fn holding_server() -> (u16, mpsc::Receiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(b"HELLO\n");
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(());
            });
        }
    });
    (port, rx)
}

/// An agent that says `ready`, then tries a CONNECT to `svc.test:PORT`
/// through the proxy every 100 ms and prints each answer's status line.
pub(crate) fn connect_loop(port: u16) -> String {
    format!(
        "echo ready; while :; do python3 -c '
import socket
s = socket.create_connection((\"127.0.0.1\", 3128))
s.sendall(b\"CONNECT svc.test:{port} HTTP/1.1\\r\\nHost: svc.test:{port}\\r\\n\\r\\n\")
print(s.recv(200).split(b\"\\r\\n\")[0].decode(), flush=True)
'; sleep 0.1; done"
    )
}

/// A profile `ir` (explicit proxy, `svc.test` mapped to `port`).
pub(crate) fn profile(env: &Env, port: u16) {
    env.profile(
        "ir",
        &format!(
            "extends = \"default\"\n[project]\nmode = \"overlay\"\n[network]\nmode = \"proxy\"\n\
             allow = [\"svc.test\"]\nresolve = {{ \"svc.test\" = \"127.0.0.1:{port}\" }}\n"
        ),
    );
}

/// The agent: changes a project file, counts in /tmp/counter in the
/// background (replaced whole each time, so a frozen writer never leaves
/// it empty), opens a tunnel to svc.test through the proxy, says `ready`
/// and holds the tunnel; says `cut` when it ends.
fn agent_script(port: u16) -> String {
    format!(
        "echo changed > README.md; \
         (i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv -f /tmp/c.new /tmp/counter; done) & \
         exec python3 -c '
import socket, time
s = socket.create_connection((\"127.0.0.1\", 3128))
s.sendall(b\"CONNECT svc.test:{port} HTTP/1.1\\r\\nHost: svc.test:{port}\\r\\n\\r\\n\")
buf = b\"\"
while b\"HELLO\" not in buf:
    buf += s.recv(100)
s.sendall(b\"ping\\n\")
print(\"ready\", flush=True)
s.recv(100)
print(\"cut\", flush=True)
time.sleep(600)
'"
    )
}

struct Running {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Running {
    fn start(env: &Env, args: &[&str], script: &str) -> Running {
        Running::start_with(env, args, script, |c| c)
    }

    /// Like `start`, with the command changed by `wrap` first.
    fn start_with(
        env: &Env,
        args: &[&str],
        script: &str,
        wrap: impl FnOnce(Command) -> Command,
    ) -> Running {
        let mut all = vec!["run", "--no-tty"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "sh", "-c", script]);
        let mut child = wrap(env.cordon(all))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut r = Running { child, out };
        r.expect("ready");
        r
    }

    fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        if line.trim() != want {
            let _ = self.child.kill();
            let mut err = String::new();
            let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("expected {want:?} from the agent, got {line:?}; stderr: {err}");
        }
    }

    fn wait(mut self) -> (Option<i32>, String) {
        let st = self.child.wait().unwrap();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (st.code(), err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_of(env: &Env, args: &[&str]) -> Value {
    let o = env.cordon(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn counter(init: i64) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{init}/root/tmp/counter"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The counter's value, once it has one.
fn count_now(init: i64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(n) = counter(init) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's counter never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that the agent's counter stands still (the sandbox is frozen).
#[track_caller]
fn assert_frozen(init: i64) {
    let a = count_now(init);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(init), Some(a), "the counter moved while frozen");
}

/// Asserts that the agent's counter moves on (the sandbox runs).
#[track_caller]
fn assert_running(init: i64) {
    let b = count_now(init);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        counter(init).unwrap() > b,
        "the counter did not move after resume"
    );
}

/// Waits up to 10 s for `path` to be gone; whether it is.
fn gone(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !path.exists()
}

fn verify(env: &Env, bundle: &Path) -> (Option<i32>, String) {
    let o = env
        .cordon(["evidence", "verify", &bundle.display().to_string()])
        .output()
        .unwrap();
    (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// Exports the bundle to a fresh directory and returns it.
fn export(env: &Env, n: usize) -> PathBuf {
    let dest = env.state.join(format!("export-{n}"));
    let o = env
        .cordon(["evidence", "export", "last", &dest.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    dest
}

both!(contain_freezes_cuts_and_seals_verifiable_evidence, |env| {
    let (port, closed) = holding_server();
    profile(env, port);
    let mut run = Running::start(env, &["-p", "ir"], &agent_script(port));

    let ps = json_of(env, &["ps", "--json"]);
    let rows = ps.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{ps}");
    assert_eq!(rows[0]["status"], "running");
    assert_eq!(rows[0]["profile"], "ir");

    let o = env
        .cordon(["contain", "last", "--reason", "e2e test"])
        .output()
        .unwrap();
    let said = stdout(&o);
    assert!(o.status.success(), "{said}{}", stderr(&o));
    assert!(said.contains("contained in"), "{said}");
    assert!(said.contains("1 flow(s) closed"), "{said}");
    assert!(said.contains("evidence sealed"), "{said}");
    eprintln!(
        "cordon contain: {}",
        said.lines().next().unwrap_or_default()
    );

    // The open connection was cut: the server sees it close.
    closed
        .recv_timeout(Duration::from_secs(10))
        .expect("the tunnel was not cut");
    // The busy process tree is frozen: its counter stops.
    let show = json_of(env, &["show", "last", "--json"]);
    let init = show["control"]["init"].as_i64().unwrap();
    assert_eq!(show["control"]["frozen"], true, "{show}");
    assert_eq!(show["control"]["egress_cut"], true, "{show}");
    assert_frozen(init);
    let ps = json_of(env, &["ps", "--json"]);
    assert_eq!(ps[0]["status"], "contained", "{ps}");
    let text = stdout(&env.cordon(["show", "last"]).output().unwrap());
    assert!(
        text.contains("contained") && text.contains("e2e test"),
        "{text}"
    );

    // The bundle verifies and holds what the runbook promises.
    let bundle = PathBuf::from(show["evidence"].as_str().unwrap());
    let (code, said) = verify(env, &bundle);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("intact"), "{said}");
    let read = |p: &str| std::fs::read_to_string(bundle.join(p)).unwrap();
    assert_eq!(read("upper/README.md"), "changed\n");
    assert!(read("scratch/tmp/counter").trim().parse::<u64>().is_ok());
    let flows: Value = serde_json::from_str(&read("flows.json")).unwrap();
    assert_eq!(flows[0]["host"], "svc.test", "{flows}");
    let procs: Value = serde_json::from_str(&read("processes.json")).unwrap();
    let procs = procs.as_array().unwrap();
    assert!(
        procs
            .iter()
            .any(|p| p["argv"][0] == "python3" && p["exe_sha256"].is_string()),
        "{procs:?}"
    );
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    assert!(manifest["agent"]["sha256"].is_string(), "{manifest}");
    assert!(manifest["audit_head"]["seq"].as_u64().unwrap() > 0);
    assert!(read("audit.jsonl").contains("contained (e2e test)"));
    assert!(read("custody.log").contains("\"seal\""));

    // Tampering with any part fails verification.
    let edited = export(env, 1);
    std::fs::write(edited.join("upper/README.md"), "innocent\n").unwrap();
    let (code, said) = verify(env, &edited);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("upper/README.md: changed"), "{said}");
    let added = export(env, 2);
    std::fs::write(added.join("scratch/tmp/planted"), "x").unwrap();
    let (code, said) = verify(env, &added);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not in the manifest"), "{said}");
    let removed = export(env, 3);
    std::fs::remove_file(removed.join("audit.jsonl")).unwrap();
    let (code, said) = verify(env, &removed);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("audit.jsonl: missing"), "{said}");
    let custody = export(env, 4);
    let log = std::fs::read_to_string(custody.join("custody.log")).unwrap();
    let first = log.lines().next().unwrap().to_owned();
    std::fs::write(custody.join("custody.log"), log.replacen(&first, "", 1)).unwrap();
    let (code, said) = verify(env, &custody);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("custody.log"), "{said}");
    let resigned = export(env, 5);
    let m = std::fs::read_to_string(resigned.join("manifest.json")).unwrap();
    std::fs::write(
        resigned.join("manifest.json"),
        m.replace("e2e test", "nothing happened"),
    )
    .unwrap();
    let (code, said) = verify(env, &resigned);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("signature"), "{said}");
    // Every access is in the original's custody log.
    let custody_log = read("custody.log");
    assert!(
        custody_log.matches("\"export\"").count() >= 5,
        "{custody_log}"
    );
    assert!(custody_log.contains("\"verify\""), "{custody_log}");

    // Resume: the counter moves again, egress is the profile's again.
    let o = env.cordon(["resume", "last"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    run.expect("cut");
    assert_running(init);

    // Kill: everything ends, the overlay goes, the evidence stays.
    let o = env
        .cordon(["kill", "last", "--reason", "done"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("evidence sealed first"),
        "{}",
        stdout(&o)
    );
    let (code, err) = run.wait();
    assert_eq!(code, Some(128 + 9), "{err}");
    assert!(err.contains("overlay is removed"), "{err}");
    assert!(!env.last_session().join("upper").exists());
    let ps = json_of(env, &["ps", "--json"]);
    assert_eq!(ps, Value::Array(vec![]), "{ps}");
    let all = json_of(env, &["ps", "--all", "--json"]);
    assert_eq!(all[0]["status"], "exited", "{all}");
    let list = stdout(&env.cordon(["evidence", "list"]).output().unwrap());
    assert_eq!(list.lines().count(), 2, "{list}");
    let audit = stdout(&env.cordon(["logs", "last"]).output().unwrap());
    for action in [
        "contained (e2e test)",
        "resumed after review",
        "killed (done)",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
});

// Shells that spawn without pause: a containment often catches a child
// between dash's vfork and its exec, which leaves the parent waiting in the
// kernel, unable to stop. It is still frozen and must be reported so.
both!(
    a_containment_mid_spawn_reports_every_process_frozen,
    |env| {
        let _run = Running::start(
            env,
            &[],
            "for j in 1 2 3; do (i=0; while :; do i=$((i+1)); echo $i > /tmp/c$j; /bin/true; \
             done) & done; echo ready; exec sleep 600",
        );
        let show = json_of(env, &["show", "last", "--json"]);
        let init = show["control"]["init"].as_i64().unwrap();
        let counts = || {
            (1..=3)
                .map(|j| std::fs::read_to_string(format!("/proc/{init}/root/tmp/c{j}")))
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while counts().len() < 3 {
            assert!(Instant::now() < deadline, "the loops never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        for round in 0..4 {
            let o = env
                .cordon(["contain", "last", "--reason", "spawning"])
                .output()
                .unwrap();
            let said = format!("{}{}", stdout(&o), stderr(&o));
            assert!(o.status.success(), "round {round}: {said}");
            assert!(!said.contains("warning"), "round {round}: {said}");
            // Nothing runs: no loop counts on.
            let a = counts();
            assert_eq!(a.len(), 3, "round {round}: the counts cannot be read");
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                counts(),
                a,
                "round {round}: a loop ran while frozen: {said}"
            );
            let o = env.cordon(["resume", "last"]).output().unwrap();
            assert!(o.status.success(), "round {round}: {}", stderr(&o));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
);

/// A cgroup delegated to the environment's uid, as systemd delegates a
/// user's `user@UID.service`: made under the test's own cgroup, its
/// directory and `cgroup.procs`/`cgroup.threads`/`cgroup.subtree_control`
/// given to the uid. Removed on drop (after the cordon in it is gone).
struct Delegated(PathBuf);

impl Delegated {
    fn make(env: &Env) -> Result<Delegated, String> {
        let parent = cordon_sandbox::cgroup::own_dir()?;
        // Named after the environment's temporary directory: unique.
        let dir = parent.join(env.state.parent().unwrap().file_name().unwrap());
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot make a cgroup under {}: {e}", parent.display()))?;
        if env.who == crate::suite::harness::As::Nobody {
            for f in [
                "",
                "cgroup.procs",
                "cgroup.threads",
                "cgroup.subtree_control",
            ] {
                let st = Command::new("chown")
                    .arg("65534:65534")
                    .arg(dir.join(f))
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        }
        Ok(Delegated(dir))
    }

    /// `cmd`, started inside the delegated cgroup.
    fn wrap(&self, cmd: Command) -> Command {
        self.wrap_after(&["sh"], cmd)
    }

    /// `cmd`, started inside the delegated cgroup by `sh`, itself run by
    /// `prefix` (whose last word is `sh`).
    fn wrap_after(&self, prefix: &[&str], cmd: Command) -> Command {
        let mut w = Command::new(prefix[0]);
        w.args(&prefix[1..])
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$@\"",
                self.0.display()
            ))
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                w.env(k, v);
            }
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w.stdin(Stdio::null());
        w
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        // A failed test can leave the sandbox's cgroup inside: deepest first.
        fn remove(dir: &Path) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        remove(&self.0);
    }
}

fn events(cgroup: &Path) -> String {
    std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default()
}

// Where the user's cgroup is delegated (a systemd user session), the
// sandbox gets a cgroup of its own, and `contain` freezes it through the
// kernel: no SIGSTOP, the processes never see a stop. The sandbox sees its
// cgroup as the root of its cgroup namespace and has no cgroupfs.
both!(
    a_delegated_cgroup_freezes_the_sandbox_through_the_kernel,
    |env| {
        let deleg = match Delegated::make(env) {
            Ok(d) => d,
            Err(why) => {
                crate::suite::harness::skip(module_path!(), &format!("no cgroup v2 here: {why}"));
                return;
            }
        };
        let run = Running::start_with(
            env,
            &[],
            "(i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv -f /tmp/c.new /tmp/counter; \
         done) & grep '^0::' /proc/self/cgroup > /tmp/cgroup; test -e /sys/fs/cgroup || \
         touch /tmp/no-cgroupfs; echo ready; exec sleep 600",
            |c| deleg.wrap(c),
        );
        let show = json_of(env, &["show", "last", "--json"]);
        let freezer = &show["control"]["freezer"];
        // A host whose seccomp policy hides clone3 (some container
        // runtimes) cannot start a process in a cgroup.
        if freezer["no_cgroup"]
            .as_str()
            .is_some_and(|w| w.contains("(os error 38)"))
        {
            crate::suite::harness::skip(module_path!(), &format!("no clone3 here: {freezer}"));
            return;
        }
        assert_eq!(freezer["kind"], "cgroup", "{show}");
        let cgroup = PathBuf::from(freezer["cgroup"].as_str().unwrap());
        assert_eq!(cgroup.parent(), Some(deleg.0.as_path()), "{show}");
        let init = show["control"]["init"].as_i64().unwrap();
        count_now(init);
        assert!(events(&cgroup).contains("frozen 0"));
        // Inside, its cgroup is the root of its namespace, and no cgroupfs.
        let inside = |f: &str| PathBuf::from(format!("/proc/{init}/root/tmp/{f}"));
        assert_eq!(
            std::fs::read_to_string(inside("cgroup")).unwrap().trim(),
            "0::/"
        );
        assert!(inside("no-cgroupfs").exists());

        let o = env
            .cordon(["contain", "last", "--reason", "cgroup"])
            .output()
            .unwrap();
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "{said}");
        assert!(!said.contains("warning"), "{said}");
        assert!(events(&cgroup).contains("frozen 1"), "{}", events(&cgroup));
        assert_frozen(init);
        // Frozen by the cgroup, not stopped by a signal.
        let members = cordon_sandbox::freeze::members(init as i32).unwrap();
        for p in &members[1..] {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
            let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
            assert_ne!(state, Some('T'), "{stat}");
        }
        let audit = stdout(&env.cordon(["logs", "last", "--json"]).output().unwrap());
        assert!(audit.contains("\"freezer\":\"cgroup\""), "{audit}");

        let o = env.cordon(["resume", "last"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(events(&cgroup).contains("frozen 0"), "{}", events(&cgroup));
        assert_running(init);

        let o = env
            .cordon(["kill", "last", "--reason", "done"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let (_, err) = run.wait();
        assert!(!err.contains("left behind"), "{err}");
        // Removed at the end, or (its init still exiting) just after.
        assert!(gone(&cgroup), "the sandbox's cgroup was not removed");

        // A supervisor killed outright leaves its sandbox's cgroup (empty: the
        // sandbox died with it); the next start removes it.
        let run = Running::start_with(env, &[], "echo ready; exec sleep 600", |c| deleg.wrap(c));
        let show = json_of(env, &["show", "last", "--json"]);
        let cgroup = PathBuf::from(show["control"]["freezer"]["cgroup"].as_str().unwrap());
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&run.child),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let _ = run.wait();
        assert!(cgroup.exists());
        let o = deleg
            .wrap(env.cordon(["run", "--no-tty", "--", "true"]))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        // At once, or (the sandbox's init still exiting) just after.
        assert!(gone(&cgroup), "the crashed session's cgroup is still there");
    }
);

/// Runs the rest of its command line with `clone3` failing with ENOSYS,
/// as some container runtimes' seccomp policies make it (x86_64).
const WITHOUT_CLONE3: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def op(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)
prog = b"".join([
    op(0x20, 4),                   # ld arch
    op(0x15, 0xC000003E, 0, 3),    # x86_64, else allow
    op(0x20, 0),                   # ld nr
    op(0x15, 435, 0, 1),           # clone3, else allow
    op(0x06, 0x00050000 | 38),     # ERRNO(ENOSYS)
    op(0x06, 0x7FFF0000),          # ALLOW
])
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0, "no_new_privs"
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, "seccomp"
os.execvp(sys.argv[1], sys.argv[1:])
"#;

// Where clone3 is hidden, the sandbox cannot be born in a cgroup: the
// freeze is SIGSTOP, the show says why, and the cgroup made for it is
// gone.
both!(without_clone3_the_freeze_falls_back_to_signals, |env| {
    if !cfg!(target_arch = "x86_64") {
        crate::suite::harness::skip(module_path!(), "the clone3 filter is written for x86_64");
        return;
    }
    let deleg = match Delegated::make(env) {
        Ok(d) => d,
        Err(why) => {
            crate::suite::harness::skip(module_path!(), &format!("no cgroup v2 here: {why}"));
            return;
        }
    };
    if !deleg.0.join("cgroup.freeze").exists() {
        crate::suite::harness::skip(module_path!(), "this kernel's cgroup v2 has no freezer");
        return;
    }
    let _run = Running::start_with(
        env,
        &[],
        "(i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv -f /tmp/c.new /tmp/counter; \
         done) & echo ready; exec sleep 600",
        |c| deleg.wrap_after(&["python3", "-c", WITHOUT_CLONE3, "sh"], c),
    );
    let show = json_of(env, &["show", "last", "--json"]);
    let freezer = &show["control"]["freezer"];
    assert_eq!(freezer["kind"], "signals", "{show}");
    let why = freezer["no_cgroup"].as_str().unwrap();
    assert!(
        why.contains("clone3") && why.contains("(os error 38)"),
        "{why}"
    );
    let left: Vec<_> = std::fs::read_dir(&deleg.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let init = show["control"]["init"].as_i64().unwrap();
    let o = env
        .cordon(["contain", "last", "--reason", "no clone3"])
        .output()
        .unwrap();
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{said}");
    assert_frozen(init);
    let audit = stdout(&env.cordon(["logs", "last", "--json"]).output().unwrap());
    assert!(audit.contains("\"freezer\":\"signals\""), "{audit}");
});

both!(the_sandbox_cannot_reach_its_control_socket, |env| {
    let (port, _closed) = holding_server();
    profile(env, port);
    // The agent tries its own session's socket by every path it could
    // know: the session directory (not in its view) and the state
    // directory granted read-only (refused or still unreachable).
    let sessions = env.state.join("cordon/sessions");
    let script = format!(
        "echo ready; for d in {sessions}/*; do python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1] + \"/control.sock\")
    s.sendall(b\"{{\\\"op\\\":\\\"resume\\\"}}\\n\")
    print(\"REACHED\", s.recv(1000))
except OSError as e:
    print(\"refused:\", e)
' \"$d\"; done; ls {sessions} 2>&1 | head -1; sleep 600",
        sessions = sessions.display()
    );
    let mut run = Running::start(env, &["-p", "ir"], &script);
    let mut seen = String::new();
    for _ in 0..2 {
        let mut line = String::new();
        run.out.read_line(&mut line).unwrap();
        seen.push_str(&line);
    }
    assert!(!seen.contains("REACHED"), "{seen}");
    // The supervisor's socket works from the host.
    let st = json_of(env, &["show", "last", "--json"]);
    assert_eq!(st["control"]["frozen"], false, "{st}");
    let o = env.cordon(["kill", "last"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    drop(run);
});

both!(block_applies_to_running_and_new_sessions, |env| {
    let (port, _closed) = holding_server();
    profile(env, port);
    let mut run = Running::start(env, &["-p", "ir"], &connect_loop(port));
    run.expect("HTTP/1.1 200 Connection established");
    let o = env.cordon(["block", "svc.test"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("applied to running session"),
        "{}",
        stdout(&o)
    );
    // Within a few attempts the running session refuses it.
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        run.out.read_line(&mut line).unwrap();
        if line.starts_with("HTTP/1.1 403") {
            break;
        }
    }
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    let o = env.cordon(["kill", "last"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    drop(run);
    // A new session starts with it blocked, whatever its profile allows.
    let o = env.sh(
        &["-p", "ir"],
        &format!(
            "python3 -c '
import socket
s = socket.create_connection((\"127.0.0.1\", 3128))
s.sendall(b\"CONNECT svc.test:{port} HTTP/1.1\\r\\nHost: svc.test:{port}\\r\\n\\r\\n\")
print(s.recv(400).decode())
'"
        ),
    );
    let out = stdout(&o);
    assert!(out.contains("net_host_blocked"), "{out}{}", stderr(&o));
    assert!(env.state.join("cordon/blocked-hosts").is_file());
    let bad = env.cordon(["block", "svc.test:443"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
});

both!(a_dead_supervisor_is_noticed_and_marked, |env| {
    let (port, _closed) = holding_server();
    profile(env, port);
    let run = Running::start(env, &["-p", "ir"], "echo ready; sleep 600");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&run.child),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let (code, _) = run.wait();
    assert_eq!(code, None);
    let ps = json_of(env, &["ps", "--all", "--json"]);
    assert_eq!(ps[0]["status"], "crashed", "{ps}");
    let o = env.sh(&[], "true");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("crashed"), "{}", stderr(&o));
    let all = json_of(env, &["ps", "--all", "--json"]);
    assert_eq!(all[0]["status"], "crashed", "{all}");
    assert_eq!(all[1]["status"], "exited", "{all}");
    let show = stdout(
        &env.cordon(["show", all[0]["id"].as_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(show.contains("supervisor died"), "{show}");
});

both!(the_drill_passes_and_fails_when_a_layer_is_off, |env| {
    let o = env.cordon(["drill", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    assert!(o.status.success(), "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "{report:#}");
    for s in steps {
        assert_eq!(s["passed"], true, "{s:#}");
    }
    let exfil = steps.iter().find(|s| s["name"] == "exfil").unwrap();
    assert!(exfil["detect_ms"].as_f64().is_some(), "{exfil:#}");
    assert!(exfil["contain_ms"].as_f64().is_some(), "{exfil:#}");
    let text = stdout(&env.cordon(["drill"]).output().unwrap());
    assert!(text.contains("the playbook held"), "{text}");
    eprintln!("cordon drill: {}", text.replace('\n', " | "));
    // With the canary rule off, the canary gets out: the drill says so.
    env.profile(
        "blind",
        "extends = \"default\"\n[audit]\ndisable = [\"canary-sent\"]\n",
    );
    let o = env.cordon(["drill", "-p", "blind"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("FAIL exfil"), "{text}");
    assert!(text.contains("REACHED the host"), "{text}");
});
