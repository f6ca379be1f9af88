//! Persistence attacks through git metadata, symlinks, special files and
//! `cordon apply` — each one found by reviewing the sandbox, kept as a test.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::harness::{ok, stderr, stdout, As, Env};
use crate::both;

fn chown(env: &Env) {
    if env.who == As::Nobody {
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&env.project)
            .status()
            .unwrap();
    }
}

/// Replaces the harness's fake `.git` with a real repository.
fn real_repo(env: &Env) {
    std::fs::remove_dir_all(env.project.join(".git")).unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(&env.project)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    ]);
    chown(env);
}

fn host_git_status(env: &Env) -> String {
    let o = Command::new("git")
        .args(["-c", "safe.directory=*", "status"])
        .current_dir(&env.project)
        .output()
        .unwrap();
    stdout(&o) + &stderr(&o)
}

const COMMONDIR_ATTACK: &str = "mkdir .evil && cp -r .git/objects .git/refs .git/HEAD .evil/ && \
    printf '[core]\\n\\tfsmonitor = \"echo PWNED >&2; false\"\\n' > .evil/config && \
    echo ../.evil > .git/commondir; echo rc=$?";

both!(git_commondir_redirect_is_not_applied, |env| {
    real_repo(env);
    ok(&env.sh(&["--mode", "overlay"], COMMONDIR_ATTACK));
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    assert!(
        stderr(&o).contains("refused .git/commondir"),
        "{}",
        stderr(&o)
    );
    assert!(!env.project.join(".git/commondir").exists());
    assert!(!host_git_status(env).contains("PWNED"));
});

both!(git_commondir_redirect_is_quarantined_in_rw_mode, |env| {
    real_repo(env);
    let o = env.sh(&["--mode", "rw"], COMMONDIR_ATTACK);
    ok(&o);
    assert!(
        !env.project.join(".git/commondir").exists(),
        "{}",
        stderr(&o)
    );
    assert!(env
        .last_session()
        .join("quarantine/.git/commondir")
        .exists());
    assert!(!host_git_status(env).contains("PWNED"));
});

both!(gitfile_cannot_be_rewritten, |env| {
    std::fs::remove_dir_all(env.project.join(".git")).unwrap();
    std::fs::write(env.project.join(".git"), "gitdir: /nonexistent/worktree\n").unwrap();
    chown(env);
    for mode in ["rw", "overlay"] {
        let out = ok(&env.sh(
            &["--mode", mode],
            "echo 'gitdir: .evil' > .git 2>/dev/null && echo WROTE; true",
        ));
        assert!(!out.contains("WROTE"), "{mode}: {out}");
    }
    assert_eq!(
        std::fs::read_to_string(env.project.join(".git")).unwrap(),
        "gitdir: /nonexistent/worktree\n"
    );
});

both!(symlinked_hooks_and_hooks_path_are_protected, |env| {
    let p = &env.project;
    std::fs::remove_dir_all(p.join(".git/hooks")).unwrap();
    std::fs::create_dir_all(p.join("githooks")).unwrap();
    std::os::unix::fs::symlink("../githooks", p.join(".git/hooks")).unwrap();
    std::fs::create_dir_all(p.join(".husky")).unwrap();
    std::fs::write(
        p.join(".git/config"),
        "[core]\n\tbare = false\n\thooksPath = .husky\n",
    )
    .unwrap();
    chown(env);
    let out = ok(&env.sh(
        &["--mode", "rw"],
        "for f in .git/hooks/pre-commit githooks/pre-commit .husky/pre-commit; do \
         (echo evil > $f) 2>/dev/null && echo WROTE $f; done; true",
    ));
    assert!(!out.contains("WROTE"), "{out}");
    assert!(!p.join("githooks/pre-commit").exists() && !p.join(".husky/pre-commit").exists());
});

both!(fifos_and_unreadable_dirs_are_masked, |env| {
    let p = &env.project;
    std::fs::remove_file(p.join(".env")).unwrap();
    let st = Command::new("mkfifo").arg(p.join(".env")).status().unwrap();
    assert!(st.success());
    std::fs::create_dir_all(p.join("locked")).unwrap();
    std::fs::write(p.join("locked/.env"), "SECRET=topsecret\n").unwrap();
    chown(env);
    std::fs::set_permissions(p.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = env.sh(
        &["--mode", "overlay"],
        "timeout 3 cat .env; echo fifo=$?; chmod 700 locked 2>/dev/null; cat locked/.env 2>&1; true",
    );
    let out = stdout(&o);
    std::fs::set_permissions(p.join("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Masked: refused at once, instead of blocking on the pipe (124).
    assert!(out.contains("fifo=1"), "{out}");
    assert!(!out.contains("topsecret"), "{out}");
});

both!(quarantine_never_follows_an_agent_symlink, |env| {
    let p = &env.project;
    std::fs::remove_dir_all(p.join(".git")).unwrap();
    let victim = env.home.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("config"), "precious\n").unwrap();
    chown(env);
    if env.who == As::Nobody {
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&victim)
            .status()
            .unwrap();
    }
    let o = env.sh(
        &["--mode", "rw"],
        &format!("ln -s {} .git", victim.display()),
    );
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(victim.join("config")).unwrap(),
        "precious\n",
        "{}",
        stderr(&o)
    );
    // The planted link itself is what moved out of the project.
    assert!(
        std::fs::symlink_metadata(p.join(".git")).is_err(),
        "{}",
        stderr(&o)
    );
});

both!(grants_cannot_cover_cordons_own_directories, |env| {
    for dir in [&env.config, &env.state] {
        let o = env
            .cordon([
                "run",
                "--no-tty",
                "--allow-write",
                dir.to_str().unwrap(),
                "--",
                "true",
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("overlaps cordon's own directory"),
            "{}",
            stderr(&o)
        );
    }
});

both!(apply_escapes_names_and_drops_setuid, |env| {
    let o = env.sh(
        &["--mode", "overlay"],
        "printf x > \"$(printf 'zz\\r\\033[2Aevil')\"; echo '#!/bin/sh' > tool; chmod 6755 tool; \
         mkdir -p sub/.git && echo x > sub/.git/config; echo 'curl x|sh' > sub/.envrc",
    );
    ok(&o);
    let stat = ok(&env.cordon(["diff", "last", "--stat"]).output().unwrap());
    assert!(stat.contains("zz\\x0d\\x1b[2Aevil"), "{stat:?}");
    assert!(!stat.contains('\u{1b}'), "raw escape in output: {stat:?}");
    let diff = ok(&env.cordon(["diff", "last"]).output().unwrap());
    assert!(diff.contains("new file mode 106755"), "{diff}");
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "some changes are refused: {}",
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("control characters"), "{err}");
    assert!(
        err.contains("refused sub/.envrc") && err.contains("refused sub/.git/config"),
        "{err}"
    );
    let mode = std::fs::metadata(env.project.join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o755,
        "setuid/setgid must not reach the host"
    );
    assert!(!env.project.join("sub/.envrc").exists());
});
