//! Escape attempts from inside real sandboxes.

use std::io::Read;
use std::net::TcpListener;

use crate::both;
use crate::suite::harness::{ok, stderr, stdout, CANARY};

both!(host_secrets_are_invisible, |env| {
    let script = format!(
        "echo home: $(ls -A \"$HOME\"); cat {h}/.ssh/id_ed25519 {h}/.aws/credentials 2>&1; env; \
         grep -rs {CANARY} \"$HOME\" /etc /tmp /opt {p}; true",
        h = env.home.display(),
        p = env.project.display()
    );
    let o = env.sh(&[], &script);
    let out = ok(&o);
    // The host's home files are not there, and neither is any env secret:
    // the fake home holds only cordon's decoy credentials.
    let listing = out.lines().find(|l| l.starts_with("home:")).unwrap();
    assert_eq!(
        listing.trim(),
        "home: .aws .git-credentials",
        "the fake home must start with the decoys only: {out}"
    );
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(!out.contains(CANARY), "canary visible inside:\n{out}");
    assert!(!out.contains("SOME_UNLISTED_VAR"), "{out}");
    // The user hears which credentials were withheld.
    let err = stderr(&o);
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY") && err.contains("GITHUB_TOKEN"),
        "{err}"
    );
});

both!(explicitly_passed_env_reaches_the_agent, |env| {
    let out = ok(&env.sh(
        &["--env", "GITHUB_TOKEN", "--env", "FOO=bar"],
        "echo $GITHUB_TOKEN $FOO",
    ));
    assert_eq!(out.trim(), format!("{CANARY} bar"));
});

both!(init_environ_is_not_the_hosts, |env| {
    let o = env.sh(
        &[],
        "cat /proc/1/environ; echo; tr '\\0' '\\n' < /proc/self/environ",
    );
    let out = stdout(&o);
    assert!(!out.contains(CANARY), "{out}");
    assert!(out.contains("CORDON_SESSION="), "{out}");
});

both!(host_processes_are_invisible_and_unsignalable, |env| {
    let mut host = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = host.id();
    let script = format!(
        "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; kill -0 {pid} 2>&1; echo kill=$?"
    );
    let o = env.sh(&[], &script);
    let out = stdout(&o) + &stderr(&o);
    let still_running = host.try_wait().unwrap().is_none();
    let _ = host.kill();
    let _ = host.wait();
    assert!(still_running, "the host process was killed");
    let pids: Vec<u32> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!pids.contains(&pid), "host pid {pid} visible: {out}");
    assert!(
        pids.iter().all(|&p| p < 10),
        "only sandbox pids expected: {pids:?}"
    );
    assert!(out.contains("kill=1") || out.contains("kill=2"), "{out}");
});

const SYSCALL_PROBE: &str = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {"mount": (165, 0, 0, 0, 0, 0), "unshare": (272, 0x10000000), "setns": (308, 0, 0),
         "bpf": (321, 0, 0, 0), "io_uring_setup": (425, 1, 0), "keyctl": (250, 0, 0),
         "perf_event_open": (298, 0, 0, 0, 0, 0), "userfaultfd": (323, 0),
         "ptrace": (101, 16, 1, 0, 0), "open_by_handle_at": (304, 0, 0, 0),
         "fsopen": (430, 0, 0), "clone_newuser": (56, 0x10000000, 0, 0, 0, 0),
         "clone3": (435, 0, 0), "personality": (135, 0x0008), "kexec_load": (246, 0, 0, 0, 0),
         "init_module": (175, 0, 0, 0)}
for name, args in calls.items():
    r = libc.syscall(*args)
    print(name, "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?"))
"#;

both!(dangerous_syscalls_fail_with_eperm, |env| {
    let o = env
        .cordon(["run", "--no-tty", "--", "python3", "-c", SYSCALL_PROBE])
        .output()
        .unwrap();
    let out = ok(&o);
    for line in out.lines() {
        let (name, res) = line.split_once(' ').unwrap();
        let want = if name == "clone3" { "ENOSYS" } else { "EPERM" };
        assert_eq!(res, want, "{name}: {out}");
    }
    assert_eq!(out.lines().count(), 16, "{out}");
    // And the tools users would reach for fail too.
    let o = env.sh(&[], "unshare -U true 2>&1; echo rc=$?");
    assert!(stdout(&o).contains("rc=1"), "{}", stdout(&o));
});

both!(tiocsti_is_denied, |env| {
    let py = "import fcntl, termios, errno\n\
              try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('injected')\n\
              except OSError as e:\n    print(errno.errorcode[e.errno])";
    let out = ok(&env
        .cordon(["run", "--no-tty", "--", "python3", "-c", py])
        .output()
        .unwrap());
    // The kernel would say ENOTTY for a pipe; EPERM proves the filter answered.
    assert_eq!(out.trim(), "EPERM");
});

both!(no_network_to_host_loopback, |env| {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let py = format!(
        "import socket, errno\n\
         s = socket.socket()\n\
         s.settimeout(2)\n\
         try:\n    s.connect(('127.0.0.1', {port})); print('connected')\n\
         except OSError as e:\n    print('refused', errno.errorcode.get(e.errno, e))\n\
         print(sorted(n for _, n in socket.if_nameindex()))"
    );
    let out = ok(&env
        .cordon(["run", "--no-tty", "--", "python3", "-c", &py])
        .output()
        .unwrap());
    assert!(out.contains("refused ECONNREFUSED"), "{out}");
    assert!(out.contains("['lo']"), "only loopback expected: {out}");
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
});

both!(inherited_descriptors_are_closed, |env| {
    // An open directory fd to the real home would bypass every mount rule.
    let bin = crate::suite::harness::cordon_bin();
    let script = format!(
        "exec 7<\"$HOME\"; exec {bin} run --no-tty -- sh -c 'ls /proc/self/fd | tr \"\\n\" \" \"'"
    );
    let out = ok(&env.command("sh", ["-c", &script]).output().unwrap());
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
});

both!(stdin_cannot_be_reopened_for_writing, |env| {
    let victim = env.home.join(".bashrc");
    let f = std::fs::File::open(&victim).unwrap();
    let o = env
        .cordon([
            "run",
            "--no-tty",
            "--",
            "sh",
            "-c",
            "echo pwned > /proc/self/fd/0; echo rc=$?; cat /dev/stdin | head -1",
        ])
        .stdin(f)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("rc=2") || out.contains("rc=1"),
        "{out}\n{}",
        stderr(&o)
    );
    assert!(
        out.contains("# host bashrc"),
        "reading stdin must still work: {out}"
    );
    let mut now = String::new();
    std::fs::File::open(&victim)
        .unwrap()
        .read_to_string(&mut now)
        .unwrap();
    assert_eq!(now, "# host bashrc\n");
});

both!(unix_sockets_in_the_project_are_unreachable, |env| {
    // A service socket left in the project (an ssh-agent, a database).
    let path = env.project.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    env.own(&path);
    let py = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\n\
         try:\n    s.connect('{}'); print('connected')\n\
         except OSError as e:\n    print('refused', e.errno)",
        path.display()
    );
    let out = ok(&env
        .cordon(["run", "--no-tty", "--", "python3", "-c", &py])
        .output()
        .unwrap());
    assert!(out.starts_with("refused"), "{out}");
    assert!(
        listener.accept().is_err(),
        "the host socket got a connection"
    );
});

both!(shared_directories_are_refused_as_projects, |env| {
    env.refused(&["--project", "/dev/shm"], "shared, world-writable");
});
