//! Overlay mode: copy-on-write, `cordon diff`, `cordon apply`.

use std::os::unix::fs::PermissionsExt;

use crate::both;
use crate::suite::harness::{ok, stderr, stdout};

fn prepare(env: &crate::suite::harness::Env) {
    let p = &env.project;
    std::fs::write(p.join("old-name.txt"), "rename me\n").unwrap();
    std::fs::write(p.join("delete-me.txt"), "bye\n").unwrap();
    std::fs::write(p.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::create_dir_all(p.join("gone/sub")).unwrap();
    std::fs::write(p.join("gone/sub/f"), "x\n").unwrap();
    std::fs::create_dir_all(p.join("redo/old")).unwrap();
    std::fs::write(p.join("redo/keep-name"), "old\n").unwrap();
    std::fs::write(p.join("redo/old/f"), "old\n").unwrap();
    env.own(p);
}

const AGENT: &str = "set -e; echo 'hello, world' > README.md; echo new > added.txt; \
    rm delete-me.txt; mv old-name.txt new-name.txt; chmod +x script.sh; \
    printf '\\000\\001\\002binary' > blob.bin; rm -r gone; mkdir -p deep/er; echo d > deep/er/file; \
    ln -s README.md link; rm -r redo; mkdir redo; echo new > redo/keep-name; echo n > redo/fresh; \
    echo done";

both!(overlay_diff_and_apply, |env| {
    prepare(env);
    let before = std::fs::read_to_string(env.project.join("README.md")).unwrap();
    let o = env.sh(&["--mode", "overlay"], AGENT);
    assert_eq!(ok(&o).trim(), "done");
    assert!(stderr(&o).contains("cordon diff"), "{}", stderr(&o));
    // Nothing reached the real project yet.
    assert_eq!(
        std::fs::read_to_string(env.project.join("README.md")).unwrap(),
        before
    );
    assert!(env.project.join("delete-me.txt").exists());

    let stat = ok(&env.cordon(["diff", "last", "--stat"]).output().unwrap());
    let mut lines: Vec<&str> = stat.lines().collect();
    lines.sort();
    let mut want = vec![
        "added        added.txt",
        "added        blob.bin",
        "added        deep/er/file",
        "added        link",
        "added        new-name.txt",
        "deleted      delete-me.txt",
        "deleted      gone",
        "deleted      gone/sub",
        "deleted      gone/sub/f",
        "deleted      old-name.txt",
        "mode_changed script.sh",
        "modified     README.md",
        // `redo` was deleted and recreated: an opaque directory in the upper
        // layer, so nothing of the old one survives.
        "deleted      redo/old",
        "deleted      redo/old/f",
        "modified     redo/keep-name",
        "added        redo/fresh",
    ];
    want.sort();
    pretty_assertions::assert_eq!(lines, want);

    let diff = ok(&env.cordon(["diff", "last"]).output().unwrap());
    assert!(diff.contains("-hello\n+hello, world\n"), "{diff}");
    assert!(
        diff.contains("Binary files /dev/null and b/blob.bin differ"),
        "{diff}"
    );
    assert!(diff.contains("old mode 100644\nnew mode 100755"), "{diff}");
    assert!(diff.contains("deleted file mode 100644"), "{diff}");

    // Without a terminal, apply wants --yes.
    let o = env.cordon(["apply", "last"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    ok(&o);
    let p = &env.project;
    assert_eq!(
        std::fs::read_to_string(p.join("README.md")).unwrap(),
        "hello, world\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("added.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("new-name.txt")).unwrap(),
        "rename me\n"
    );
    assert_eq!(
        std::fs::read(p.join("blob.bin")).unwrap(),
        b"\x00\x01\x02binary"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("deep/er/file")).unwrap(),
        "d\n"
    );
    assert_eq!(
        std::fs::read_link(p.join("link")).unwrap(),
        std::path::Path::new("README.md")
    );
    assert!(!p.join("delete-me.txt").exists() && !p.join("old-name.txt").exists());
    assert!(!p.join("gone").exists());
    assert!(!p.join("redo/old").exists());
    assert_eq!(
        std::fs::read_to_string(p.join("redo/keep-name")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("redo/fresh")).unwrap(),
        "n\n"
    );
    let mode = std::fs::metadata(p.join("script.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Placeholders for protected paths never reach the project.
    for ph in [".envrc", ".vscode", ".gitmodules", ".idea", ".cordon"] {
        assert!(!p.join(ph).exists(), "{ph} was applied");
    }
    // A second apply is refused.
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already applied"), "{}", stderr(&o));
});

both!(diff_refuses_non_overlay_sessions, |env| {
    ok(&env.sh(&[], "true"));
    let id = env
        .last_session()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let o = env.cordon(["diff", &id]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("only overlay sessions"),
        "{}",
        stderr(&o)
    );
    // `last` means the newest overlay session of this project.
    let o = env.cordon(["diff", "last"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no overlay session for"),
        "{}",
        stderr(&o)
    );
    let o = env.cordon(["diff", "nosuchsession"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty());
});

both!(apply_waits_for_a_live_session_but_not_a_dead_one, |env| {
    let mut child = env
        .cordon([
            "run",
            "--no-tty",
            "--mode",
            "overlay",
            "--",
            "sh",
            "-c",
            "echo new > added.txt; echo ready; sleep 30",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("still running"), "{}", stderr(&o));
    // A supervisor killed outright leaves a "running" record behind; its lock
    // dies with it, so the session can be applied.
    child.kill().unwrap();
    child.wait().unwrap();
    let o = env.cordon(["apply", "last", "--yes"]).output().unwrap();
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(env.project.join("added.txt")).unwrap(),
        "new\n"
    );
});
