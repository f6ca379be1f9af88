//! Governance against real sandboxes: agent binary pins (`cordon trust`,
//! the profile's `[agent]`), with minisign signatures made by the real
//! minisign CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::both;
use crate::suite::harness::{stderr, stdout, Env};

/// An agent script in the project's `bin/`, on PATH for the runs.
fn agent(env: &Env, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.project.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("agent");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.own(&dir);
    p
}

fn path(env: &Env) -> String {
    format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        env.project.join("bin").display()
    )
}

fn run_agent(env: &Env, profile: &str) -> Output {
    env.cordon(["run", "--no-tty", "-p", profile, "--", "agent"])
        .env("PATH", path(env))
        .output()
        .unwrap()
}

fn trust(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["trust"];
    all.extend_from_slice(args);
    env.cordon(all).env("PATH", path(env)).output().unwrap()
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    stdout(&o).split_whitespace().next().unwrap().to_owned()
}

both!(a_pinned_agent_that_changed_is_refused, |env| {
    env.profile("plain", "extends = \"default\"\n");
    let exe = agent(env, "echo agent-ran");
    let o = trust(env, &["pin", "agent"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&sha256(&exe)), "{}", stdout(&o));
    let o = run_agent(env, "plain");
    assert!(stdout(&o).contains("agent-ran"), "{}", stderr(&o));
    // The digest is in the session's audit record.
    let audit = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
    assert!(audit.contains(&sha256(&exe)), "{audit}");
    // A changed agent is refused, naming both digests and the way out.
    agent(env, "echo tampered");
    let o = run_agent(env, "plain");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("does not match its pin"), "{err}");
    assert!(err.contains(&sha256(&exe)), "{err}");
    assert!(err.contains("cordon trust pin agent"), "{err}");
    assert!(!stdout(&o).contains("tampered"));
    // Pinned again (after review), it runs.
    assert!(trust(env, &["pin", "agent"]).status.success());
    assert!(stdout(&run_agent(env, "plain")).contains("tampered"));
    // A pinned agent that cannot be read (so not checked) is refused, not
    // run unchecked. (Root reads it whatever its mode.)
    if env.who == crate::suite::harness::As::Nobody {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o111)).unwrap();
        let o = run_agent(env, "plain");
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains("is pinned"), "{}", stderr(&o));
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let list = stdout(&trust(env, &["list"]));
    assert!(list.contains("agent"), "{list}");
    assert!(trust(env, &["rm", "agent"]).status.success());
    assert_eq!(trust(env, &["rm", "agent"]).status.code(), Some(2));
});

both!(a_profile_pins_its_agent_by_digest, |env| {
    let exe = agent(env, "echo agent-ran");
    env.profile(
        "wrong",
        &format!(
            "extends = \"default\"\n[agent]\nsha256 = \"{}\"\n",
            "0".repeat(64)
        ),
    );
    let o = run_agent(env, "wrong");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("[agent] sha256"), "{}", stderr(&o));
    env.profile(
        "right",
        &format!(
            "extends = \"default\"\n[agent]\nsha256 = \"{}\"\n",
            sha256(&exe)
        ),
    );
    let o = run_agent(env, "right");
    assert!(stdout(&o).contains("agent-ran"), "{}", stderr(&o));
    env.profile("bad", "extends = \"default\"\n[agent]\nsha256 = \"xyz\"\n");
    let o = run_agent(env, "bad");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("64 hex digits"), "{}", stderr(&o));
});

both!(a_profile_pins_its_agent_by_minisign_key, |env| {
    if Command::new("minisign").arg("-v").output().is_err() {
        crate::suite::harness::skip(
            module_path!(),
            "no minisign CLI (apt-get install minisign): signatures are not tested",
        );
        return;
    }
    let exe = agent(env, "echo signed-agent");
    let keys = tempfile::tempdir().unwrap();
    let (pubkey, seckey) = (keys.path().join("k.pub"), keys.path().join("k.sec"));
    let o = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pubkey)
        .arg("-s")
        .arg(&seckey)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let sign = || {
        let o = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&seckey)
            .arg("-m")
            .arg(&exe)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        env.own(&env.project.join("bin"));
    };
    sign();
    let key = std::fs::read_to_string(&pubkey).unwrap();
    let key = key.lines().nth(1).unwrap();
    env.profile(
        "signed",
        &format!("extends = \"default\"\n[agent]\nminisign_key = \"{key}\"\n"),
    );
    let o = run_agent(env, "signed");
    assert!(stdout(&o).contains("signed-agent"), "{}", stderr(&o));
    // Changed after signing: refused.
    agent(env, "echo unsigned-change");
    let o = run_agent(env, "signed");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
    // No signature at all: refused, naming the file it looked for.
    std::fs::remove_file(env.project.join("bin/agent.minisig")).unwrap();
    let o = run_agent(env, "signed");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("agent.minisig"), "{}", stderr(&o));
    sign();
    assert!(stdout(&run_agent(env, "signed")).contains("unsigned-change"));
});

both!(
    the_session_output_is_attested_and_a_changed_subject_fails,
    |env| {
        let o = env.sh(
            &["--mode", "overlay"],
            "echo new > made.txt; echo changed >> README.md; rm src/main.rs",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let session = env.last_session();
        let att = session.join("attestation.dsse.json");
        assert!(att.is_file(), "{}", stderr(&o));
        let verify = |args: &[&str]| {
            let mut all = vec!["attest", "verify"];
            all.extend_from_slice(args);
            env.cordon(all).output().unwrap()
        };
        let v = verify(&["last"]);
        assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
        assert!(stdout(&v).contains("2 subject(s) match"), "{}", stdout(&v));
        // The statement: subjects, deletions, what produced them.
        let j = verify(&["last", "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
        let st = &r["statement"];
        assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
        let names: Vec<&str> = st["subject"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["README.md", "made.txt"], "{st}");
        assert_eq!(st["predicate"]["deleted"][0], "src/main.rs");
        assert!(st["predicate"]["project_digest"].is_string(), "{st}");
        assert!(
            st["predicate"]["agent"]["exe"]["sha256"].is_string(),
            "{st}"
        );
        assert!(st["predicate"]["audit_head"]["hash"].is_string(), "{st}");
        // A subject changed after the session: refused, naming it.
        std::fs::write(session.join("upper/made.txt"), "swapped\n").unwrap();
        let v = verify(&["last"]);
        assert_eq!(v.status.code(), Some(1));
        assert!(stdout(&v).contains("made.txt: changed"), "{}", stdout(&v));
        // An edited envelope: the signature fails.
        let text = std::fs::read_to_string(&att).unwrap();
        let mut e: serde_json::Value = serde_json::from_str(&text).unwrap();
        e["payloadType"] = "text/plain".into();
        let forged = env.state.join("forged.json");
        std::fs::write(&forged, e.to_string()).unwrap();
        env.own(&forged);
        let v = verify(&[forged.to_str().unwrap()]);
        assert_eq!(v.status.code(), Some(1));
        assert!(stdout(&v).contains("no signature"), "{}", stdout(&v));
    }
);

both!(apply_to_a_branch_commits_the_attested_output, |env| {
    let git = |args: &[&str]| {
        let o = env.command("git", args).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    let o = env.sh(
        &["--mode", "overlay"],
        "echo new > made.txt; echo changed >> README.md; rm src/main.rs",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env
        .cordon(["apply", "last", "--branch", "agent-work"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(git(&["show", "agent-work:made.txt"]), "new\n");
    assert!(git(&["show", "agent-work:README.md"]).ends_with("changed\n"));
    assert_eq!(git(&["ls-tree", "agent-work", "src/main.rs"]), "");
    let msg = git(&["log", "-1", "--format=%B", "agent-work"]);
    assert!(msg.contains("Cordon-Attestation: sha256:"), "{msg}");
    // The working tree and the current branch are untouched.
    assert_eq!(
        std::fs::read_to_string(env.project.join("README.md")).unwrap(),
        "hello\n"
    );
    assert!(env.project.join("src/main.rs").exists());
    assert_eq!(git(&["status", "--porcelain"]), "");
    // The branch exists now: refused.
    let o = env
        .cordon(["apply", "last", "--branch", "agent-work"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Output that no longer matches its attestation: refused.
    std::fs::write(env.last_session().join("upper/made.txt"), "swapped\n").unwrap();
    let o = env
        .cordon(["apply", "last", "--branch", "other"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not match its attestation"),
        "{}",
        stderr(&o)
    );
});

/// An organisation policy installed for one test: each command it wraps
/// runs in a mount namespace of its own where `/etc/cordon` holds the
/// policy (root-owned), as an administrator would install it. The test
/// runs as root; an empty `/etc/cordon` is made on the host if missing, to
/// mount over.
struct Org {
    dir: tempfile::TempDir,
}

impl Org {
    fn install(policy: &str) -> Option<Org> {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            crate::suite::harness::skip(
                module_path!(),
                "installing an organisation policy needs root (the tests' own uid)",
            );
            return None;
        }
        std::fs::create_dir_all("/etc/cordon").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        Some(Org { dir })
    }

    /// `inner` inside the policy's mount namespace.
    fn wrap(&self, inner: &Command) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/cordon && exec \"$@\"")
            .arg(self.dir.path())
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_clear();
        if let Some(d) = inner.get_current_dir() {
            c.current_dir(d);
        }
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    }
}

/// `cordon ARGS` as the environment's uid under the policy `policy`.
fn with_org_policy(env: &Env, policy: &str, args: &[&str]) -> Option<Output> {
    let org = Org::install(policy)?;
    Some(org.wrap(&env.cordon(args)).output().unwrap())
}

both!(
    the_organisation_ceiling_refuses_widening_and_names_the_rule,
    |env| {
        let policy = "[ceiling]\nhosts = [\"@github\"]\nmodes = [\"ro\", \"overlay\"]\n\
                  write_paths = false\nenv_pass = [\"GITHUB_TOKEN\"]\n";
        let Some(o) = with_org_policy(env, policy, &["run", "--no-tty", "--", "true"]) else {
            return;
        };
        assert!(o.status.success(), "within the ceiling: {}", stderr(&o));
        for (args, rule, says) in [
            (
                vec!["--allow-host", "paste.example"],
                "/etc/cordon/policy.toml [ceiling] hosts",
                "paste.example",
            ),
            (
                vec!["--mode", "rw"],
                "/etc/cordon/policy.toml [ceiling] modes",
                "rw",
            ),
            (
                vec!["--allow-write", "/tmp"],
                "/etc/cordon/policy.toml [ceiling] write_paths",
                "write access to /tmp",
            ),
            (
                vec!["-e", "AWS_SECRET_ACCESS_KEY"],
                "/etc/cordon/policy.toml [ceiling] env_pass",
                "AWS_SECRET_ACCESS_KEY",
            ),
        ] {
            let mut all = vec!["run", "--no-tty"];
            all.extend_from_slice(&args);
            all.extend_from_slice(&["--", "true"]);
            let o = with_org_policy(env, policy, &all).unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
            assert!(
                err.contains(&format!("refused by {rule}")),
                "{args:?}: {err}"
            );
            assert!(err.contains(says), "{args:?}: {err}");
        }
        // Hosts inside the ceiling pass (the preset's hosts are on port 443:
        // a host on any port would be wider).
        let o = with_org_policy(
            env,
            policy,
            &[
                "run",
                "--no-tty",
                "--allow-host",
                "api.github.com:443",
                "--",
                "true",
            ],
        )
        .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        // A policy file the user could have written is no ceiling: refused.
        let o = with_org_policy(
            env,
            "[ceiling]\nbogus = 1\n",
            &["run", "--no-tty", "--", "true"],
        )
        .unwrap();
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains("bogus"), "{}", stderr(&o));
    }
);

both!(a_tier_ceiling_holds_for_every_profile_of_the_tier, |env| {
    env.profile(
        "exp-wide",
        "extends = \"default\"\ntier = \"experiment\"\n[network]\nallow = [\"pypi.org\"]\n",
    );
    let o = env.sh(&["-p", "exp-wide"], "true");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tier experiment's ceiling (model hosts only)"),
        "{}",
        stderr(&o)
    );
    env.profile("exp", "extends = \"default\"\ntier = \"experiment\"\n");
    let o = env.sh(&["-p", "exp", "--mode", "rw"], "true");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no writes outside the overlay"),
        "{}",
        stderr(&o)
    );
    assert!(env
        .sh(&["-p", "exp", "--mode", "overlay"], "true")
        .status
        .success());
    env.profile(
        "hr",
        "extends = \"default\"\ntier = \"high-risk\"\n[network]\nallow = [\"api.test\"]\n",
    );
    let o = env.sh(&["-p", "hr"], "true");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("inspection mandatory"),
        "{}",
        stderr(&o)
    );
});

both!(an_approval_from_another_uid_lets_the_session_run, |env| {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    // The spool: root's, sticky, writable by all (under a directory both
    // uids can reach).
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = base.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The approver is the other uid of the two.
    let approver_uid = match env.who {
        crate::suite::harness::As::Me => 65534,
        crate::suite::harness::As::Nobody => 0,
    };
    let approver_home = base.path().join("approver");
    std::fs::create_dir(&approver_home).unwrap();
    std::os::unix::fs::chown(&approver_home, Some(approver_uid), Some(approver_uid)).unwrap();
    let Some(org) = Org::install(&format!(
        "[approvals]\ntiers = [\"approved\"]\nspool = \"{}\"\napprover_uids = [{approver_uid}]\n",
        spool.display()
    )) else {
        return;
    };
    env.profile("appr", "extends = \"default\"\ntier = \"approved\"\n");
    let approve = |args: &[&str]| {
        let mut c = if approver_uid == 0 {
            Command::new(crate::suite::harness::cordon_bin())
        } else {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(crate::suite::harness::cordon_bin());
            c
        };
        c.arg("approve")
            .args(args)
            .env_clear()
            .env("HOME", &approver_home)
            .env("PATH", "/usr/bin:/bin")
            .env("XDG_STATE_HOME", approver_home.join("state"))
            .env("XDG_CONFIG_HOME", approver_home.join("config"))
            .current_dir(&approver_home);
        org.wrap(&c).output().unwrap()
    };
    let start = |script: &str| {
        let mut run = org
            .wrap(&env.cordon(["run", "--no-tty", "-p", "appr", "--", "sh", "-c", script]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(run.stderr.take().unwrap());
        let mut line = String::new();
        let id = loop {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "no request was made");
            if let Some(rest) = line.split("request ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        (run, err, id)
    };
    let (run, mut err, id) = start("echo ran");
    // The requester cannot approve its own session by uid.
    let o = org.wrap(&env.cordon(["approve", &id])).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = approve(&["--list"]);
    assert!(
        stdout(&listed).contains(&id),
        "{}{}",
        stdout(&listed),
        stderr(&listed)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = approve(&[&id, "--reason", "ticket SEC-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = run.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(out.status.success(), "{rest}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let audit = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains(&format!("approved by uid {approver_uid}")),
        "{audit}"
    );
    assert!(audit.contains("ticket SEC-1"), "{audit}");
    // Denied: nothing runs.
    let (run, mut err, id) = start("echo should-not-run");
    let o = approve(&[&id, "--deny", "--reason", "not today"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = run.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(out.status.code(), Some(125), "{rest}");
    assert!(
        rest.contains("denied") && rest.contains("not today"),
        "{rest}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    // The refused run is on record: a failed session whose audit log says
    // why.
    let audit = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
    assert!(audit.contains(&format!("approval request {id}")), "{audit}");
    assert!(
        audit.contains("approval_refused") && audit.contains("not today"),
        "{audit}"
    );
    let all = env.cordon(["ps", "--all", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().last().unwrap()["status"],
        "failed",
        "{rows}"
    );
    let v = env.cordon(["audit", "verify", "last"]).output().unwrap();
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
});

both!(
    the_system_block_list_reaches_running_sessions_of_any_user,
    |env| {
        use std::io::BufRead;
        let Some(org) = Org::install("") else { return };
        let (port, _closed) = crate::suite::response::holding_server();
        crate::suite::response::profile(env, port);
        let script = crate::suite::response::connect_loop(port);
        let mut run = org
            .wrap(&env.cordon(["run", "--no-tty", "-p", "ir", "--", "sh", "-c", &script]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(run.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        line.clear();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        // Only root writes the system's list.
        if env.who == crate::suite::harness::As::Nobody {
            let o = org
                .wrap(&env.cordon(["block", "--system", "svc.test"]))
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            assert!(stderr(&o).contains("only root"), "{}", stderr(&o));
        }
        let admin = tempfile::tempdir().unwrap();
        let mut c = Command::new(crate::suite::harness::cordon_bin());
        c.args(["block", "--system", "svc.test"])
            .env_clear()
            .env("HOME", admin.path())
            .env("PATH", "/usr/bin:/bin")
            .env("XDG_STATE_HOME", admin.path().join("state"));
        let o = org.wrap(&c).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(org.dir.path().join("blocked-hosts").is_file());
        // The running session (another user's, in the uid 65534 run) refuses
        // it within a few attempts.
        let mut refused = false;
        for _ in 0..60 {
            line.clear();
            out.read_line(&mut line).unwrap();
            if line.starts_with("HTTP/1.1 403") {
                refused = true;
                break;
            }
        }
        assert!(refused, "{line}");
        // Ended through its control socket, so that its audit log is
        // closed with everything in it.
        let o = env.cordon(["kill", "last"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let _ = run.wait();
        let audit = std::fs::read_to_string(env.last_session().join("audit.jsonl")).unwrap();
        assert!(audit.contains("the system block list"), "{audit}");
    }
);

both!(a_pin_resolves_the_command_as_its_profile_will, |env| {
    agent(env, "echo agent-ran");
    // The agent is only on the profile's PATH, not on cordon's.
    env.profile(
        "withpath",
        &format!(
            "extends = \"default\"\n[env]\nset = {{ PATH = \"{}:/usr/bin:/bin\" }}\n",
            env.project.join("bin").display()
        ),
    );
    let o = env.cordon(["trust", "pin", "agent"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = env
        .cordon(["trust", "pin", "-p", "withpath", "agent"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env
        .cordon(["run", "--no-tty", "-p", "withpath", "--", "agent"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("agent-ran"), "{}", stderr(&o));
    agent(env, "echo changed");
    let o = env
        .cordon(["run", "--no-tty", "-p", "withpath", "--", "agent"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
});
