//! Processes: exit status, signals, cleanup, limits.

use std::time::{Duration, Instant};

use crate::both;
use crate::suite::harness::{ok, stderr, stdout};

both!(exit_codes_and_signals_pass_through, |env| {
    assert_eq!(env.sh(&[], "exit 42").status.code(), Some(42));
    assert_eq!(env.sh(&[], "kill -TERM $$").status.code(), Some(128 + 15));
    assert_eq!(env.sh(&[], "kill -KILL $$").status.code(), Some(128 + 9));
    let o = env
        .cordon(["run", "--no-tty", "--", "no-such-command-xyz"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-command-xyz"), "{}", stderr(&o));
    let o = env
        .cordon(["run", "--no-tty", "--", "/etc/passwd"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
});

both!(sigterm_is_forwarded_to_the_agent, |env| {
    let mut child = env
        .cordon([
            "run",
            "--no-tty",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // setpriv execs cordon, so the child pid is cordon's.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(st.code(), Some(7), "{rest}");
    assert!(rest.contains("got-term"), "{rest}");
});

fn processes_with(marker: &str) -> Vec<String> {
    let o = std::process::Command::new("pgrep")
        .args(["-af", marker])
        .output()
        .unwrap();
    stdout(&o).lines().map(str::to_owned).collect()
}

both!(no_process_survives_the_run, |env| {
    let marker = format!(
        "{}.{}",
        1000 + std::process::id() % 1000,
        std::process::id()
    );
    let script = format!(
        "(setsid sleep {marker} </dev/null >/dev/null 2>&1 &); \
         (sleep {marker} &) ; nohup sleep {marker} >/dev/null 2>&1 & echo started"
    );
    let out = ok(&env.sh(&[], &script));
    assert!(out.contains("started"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "survivors: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
});

both!(fork_bomb_is_contained, |env| {
    if env.who == crate::suite::harness::As::Me && rustix::process::getuid().is_root() {
        crate::suite::harness::skip(
            module_path!(),
            "the kernel exempts global uid 0 from RLIMIT_NPROC and this host has no delegated \
             cgroup v2 pids controller; the uid 65534 variant covers it",
        );
        let o = env.sh(&[], "true");
        assert!(
            stderr(&o).contains("exempts uid 0"),
            "root runs must warn: {}",
            stderr(&o)
        );
        return;
    }
    env.profile("small", "extends = \"default\"\n[limits]\nnproc = 64\n");
    let py = "import os, time\n\
              n = 0\n\
              try:\n    \
                  while n < 10000:\n        \
                      pid = os.fork()\n        \
                      if pid == 0:\n            time.sleep(30); os._exit(0)\n        \
                      n += 1\n\
              except BlockingIOError:\n    print('capped', n)\n\
              else:\n    print('uncapped', n)";
    let started = Instant::now();
    let o = env
        .cordon([
            "run",
            "--no-tty",
            "--profile",
            "small",
            "--",
            "python3",
            "-c",
            py,
        ])
        .output()
        .unwrap();
    let out = ok(&o);
    let n: usize = out
        .trim()
        .strip_prefix("capped ")
        .expect(&out)
        .parse()
        .unwrap();
    assert!(n < 64, "{out}");
    // The agent exiting ended its 60-odd sleeping children at once.
    assert!(started.elapsed() < Duration::from_secs(20));
});

both!(bad_profiles_give_precise_errors, |env| {
    let bad = env.profile("bad", "description = \"x\"\n[project]\nmdoe = \"ro\"\n");
    let o = env
        .cordon(["run", "--no-tty", "--profile", "bad", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let want = format!("{}:3:1: unknown field `mdoe`", bad.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    let o = env
        .cordon(["profile", "show", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    let o = env
        .cordon(["run", "--no-tty", "--profile", "nope", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("profile \"nope\" not found"),
        "{}",
        stderr(&o)
    );
    // Usage errors of `run` use cordon's own code, never one an agent uses.
    let o = env
        .cordon(["run", "--no-tty", "--mode", "rwx", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    for bad in ["FOO*=bar", "HOME=/x"] {
        let o = env
            .cordon(["run", "--no-tty", "-e", bad, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{bad}: {}", stderr(&o));
    }
    let o = env.cordon(["profile", "show"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "other commands keep 2 for usage errors"
    );
});

both!(doctor_reports_this_host, |env| {
    let o = env.cordon(["doctor", "--json"]).output().unwrap();
    let out = ok(&o);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let probe = |id: &str| {
        v["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no probe {id}"))
            .clone()
    };
    for id in [
        "userns",
        "mountns",
        "pidns",
        "netns",
        "nested_userns",
        "seccomp",
        "landlock",
    ] {
        assert_eq!(probe(id)["ok"], true, "{id}: {}", probe(id));
    }
    // The tun probe must agree with what this uid can actually open.
    let can_open = env
        .command("sh", ["-c", "exec 3<>/dev/net/tun"])
        .output()
        .unwrap()
        .status
        .success();
    assert_eq!(probe("tun")["ok"], can_open, "{}", probe("tun"));
    let egress = v["egress"].as_str().unwrap();
    assert_eq!(
        egress.starts_with("transparent capture"),
        can_open,
        "{egress}"
    );
    assert_eq!(
        egress.starts_with("explicit-proxy mode"),
        !can_open,
        "{egress}"
    );
    assert_eq!(v["default_runs"], true);
    let default = v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .unwrap();
    assert_eq!(default["runnable"], true);
    // Human output lists every layer.
    let text = ok(&env.cordon(["doctor"]).output().unwrap());
    assert!(
        text.contains("landlock") && text.contains("can run"),
        "{text}"
    );
});

both!(profile_list_and_show, |env| {
    env.profile(
        "mine",
        "extends = \"claude-code\"\ndescription = \"my agent\"\n",
    );
    let out = ok(&env.cordon(["profile", "list"]).output().unwrap());
    for name in [
        "default",
        "claude-code",
        "codex",
        "aider",
        "gemini-cli",
        "mine",
    ] {
        assert!(out.contains(name), "{name} missing: {out}");
    }
    let out = ok(&env
        .cordon(["profile", "show", "mine", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["project"]["mode"], "overlay");
    assert_eq!(v["sources"][0], "builtin:default");
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    let toml = ok(&env.cordon(["profile", "show", "default"]).output().unwrap());
    assert!(
        toml.contains("reason = \"dotenv files hold API keys"),
        "{toml}"
    );
});

both!(a_hidden_working_directory_is_reported_not_entered, |env| {
    // `.env*` is hidden by default: the directory is masked inside.
    let dir = env.project.join(".env.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "x\n").unwrap();
    let project = env.project.to_str().unwrap();
    let o = env
        .cordon(["run", "--no-tty", "--project", project, "--", "ls"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not available inside the sandbox"),
        "{}",
        stderr(&o)
    );
});

both!(the_agent_keeps_the_cpus_cordon_was_given, |env| {
    // Init works on other CPUs than the supervisor's while it creates its
    // namespaces; the agent must still get the caller's mask, whole.
    let allowed = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mine = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let o = env.sh(&[], "cat /proc/self/status");
    ok(&o);
    assert_eq!(allowed(&stdout(&o)), mine);
    let o = env
        .command(
            "taskset",
            [
                "-c",
                "0",
                crate::suite::harness::cordon_bin(),
                "run",
                "--no-tty",
                "--",
                "cat",
                "/proc/self/status",
            ],
        )
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(allowed(&stdout(&o)), "0");
});

both!(files_other_users_could_change_are_refused, |env| {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let p = env.profile("loose", "description = \"x\"\n");
    mode(&p, 0o666);
    env.refused(&["--profile", "loose"], "is writable by other users");
    mode(&p, 0o644);
    mode(p.parent().unwrap(), 0o777);
    env.refused(&["--profile", "loose"], "is writable by other users");
    mode(p.parent().unwrap(), 0o755);
    ok(&env.sh(&["--profile", "loose"], "true"));
    // cordon's state directory: session records and overlays live there.
    let state = env.state.join("cordon");
    mode(&state, 0o777);
    env.refused(&[], "is writable by other users");
    mode(&state, 0o700);
    ok(&env.sh(&[], "true"));
});
