use std::sync::Arc;

use pretty_assertions::assert_eq;

use super::*;

fn ctx() -> Context {
    Context {
        session: "s-test".into(),
        profile_digest: "sha256:abc".into(),
    }
}

fn key() -> HostKey {
    HostKey::from_seed([9; 32])
}

fn exec(i: u64) -> Event {
    Event::new(Class::Process, 1, "Launch")
        .at(1_700_000_000_000_000_000 + i)
        .actor(Process {
            pid: Some(100 + i as u32),
            exe: Some("/usr/bin/git".into()),
            argv: Some(vec!["git".into(), "status".into()]),
            cwd: Some("/project".into()),
            ..Process::default()
        })
}

/// A closed log of `n` events with a checkpoint every `every`.
fn log(n: u64, every: u64) -> Vec<u8> {
    let k = key();
    let mut c = Chain::new(ctx());
    let mut out = Vec::new();
    for i in 0..n {
        c.seal(&exec(i), 1, &mut out);
        if (i + 1) % every == 0 {
            c.checkpoint(&k, false, 2, &mut out);
        }
    }
    c.checkpoint(&k, true, 3, &mut out);
    out
}

fn lines(log: &[u8]) -> Vec<Vec<u8>> {
    log.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn a_closed_log_verifies_and_records_are_ocsf_shaped() {
    let l = log(10, 4);
    let r = verify(&l, &key().public_hex());
    assert_eq!(r.verdict(), Verdict::Verified, "{:?}", r.lines());
    assert_eq!(r.records, 13);
    assert_eq!(r.checkpoints, 3);
    assert_eq!(r.session.as_deref(), Some("s-test"));
    let first: serde_json::Value = serde_json::from_slice(&lines(&l)[0]).unwrap();
    assert!(lines(&l)[0].starts_with(br#"{"seq":1,"prev":"0000"#));
    assert_eq!(first["class_uid"], 1007);
    assert_eq!(first["type_uid"], 100701);
    assert_eq!(first["category_uid"], 1);
    assert_eq!(first["actor"]["session"]["uid"], "s-test");
    assert_eq!(first["actor"]["process"]["cmd_line"], "git status");
    assert_eq!(first["actor"]["process"]["file"]["path"], "/usr/bin/git");
    assert_eq!(first["unmapped"]["profile_digest"], "sha256:abc");
    assert_eq!(first["time"], 1_700_000_000_000u64);
    assert_eq!(first["metadata"]["version"], OCSF_VERSION);
}

#[test]
fn every_single_byte_change_is_detected() {
    let l = log(6, 3);
    let trusted = key().public_hex();
    for at in 0..l.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut bad = l.clone();
            bad[at] ^= flip;
            let r = verify(&bad, &trusted);
            assert_ne!(
                r.verdict(),
                Verdict::Verified,
                "byte {at} ^ {flip:#x} went unnoticed"
            );
        }
    }
}

#[test]
fn deleted_duplicated_reordered_and_cut_records_are_named() {
    let l = lines(&log(8, 3));
    let trusted = key().public_hex();
    let join = |v: &[Vec<u8>]| v.concat();
    for k in 0..l.len() {
        // Deleted.
        let mut v = l.clone();
        v.remove(k);
        let r = verify(&join(&v), &trusted);
        if k + 1 < l.len() {
            assert_eq!(r.verdict(), Verdict::Tampered, "delete {k}");
            assert_eq!(r.problem.as_ref().unwrap().line, k as u64 + 1, "delete {k}");
        } else {
            // The closing checkpoint cut off: not closed.
            assert_eq!(r.verdict(), Verdict::Incomplete, "delete last");
        }
        // Duplicated.
        let mut v = l.clone();
        v.insert(k, l[k].clone());
        let r = verify(&join(&v), &trusted);
        assert_eq!(r.verdict(), Verdict::Tampered, "duplicate {k}");
        assert_eq!(
            r.problem.as_ref().unwrap().line,
            k as u64 + 2,
            "duplicate {k}"
        );
        // Swapped with the next.
        if k + 1 < l.len() {
            let mut v = l.clone();
            v.swap(k, k + 1);
            let r = verify(&join(&v), &trusted);
            assert_eq!(r.verdict(), Verdict::Tampered, "swap {k}");
            assert_eq!(r.problem.as_ref().unwrap().line, k as u64 + 1, "swap {k}");
        }
    }
    // Cut back to any earlier line: intact but not closed.
    for k in 1..l.len() {
        let r = verify(&join(&l[..k]), &trusted);
        assert_eq!(r.verdict(), Verdict::Incomplete, "cut at {k}");
        assert_eq!(r.records, k as u64);
    }
    // A record of another session spliced in, with a valid chain link.
    let mut c = Chain::new(Context {
        session: "s-other".into(),
        ..ctx()
    });
    let mut other = Vec::new();
    c.seal(&exec(0), 1, &mut other);
    let r = verify(
        &other
            .iter()
            .chain(&l[1..].concat())
            .copied()
            .collect::<Vec<u8>>(),
        &trusted,
    );
    assert_eq!(r.verdict(), Verdict::Tampered);
}

#[test]
fn a_torn_tail_is_reported_and_the_rest_verifies() {
    let l = log(5, 2);
    let all = lines(&l);
    let keep: usize = all[..4].iter().map(Vec::len).sum();
    let torn = &l[..keep + 17];
    let r = verify(torn, &key().public_hex());
    assert_eq!(r.verdict(), Verdict::Incomplete);
    assert_eq!(r.records, 4);
    assert_eq!(
        r.torn,
        Some(Torn {
            offset: keep as u64,
            len: 17
        })
    );
    assert!(
        r.lines().iter().any(|l| l.starts_with("torn tail")),
        "{:?}",
        r.lines()
    );
}

#[test]
fn another_key_is_not_trusted() {
    let l = log(3, 2);
    let r = verify(&l, &HostKey::from_seed([1; 32]).public_hex());
    assert_eq!(r.verdict(), Verdict::Tampered);
    assert_eq!(r.problem.unwrap().line, 3);
}

#[test]
fn the_host_key_is_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let k1 = HostKey::load_or_create(dir.path()).unwrap();
    let mode = std::fs::metadata(dir.path().join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(dir.path().join(PUB_FILE)).unwrap();
    assert_eq!(parse_public(&public), Some(k1.public_hex()));
    let k2 = HostKey::load_or_create(dir.path()).unwrap();
    assert_eq!(k1.public_hex(), k2.public_hex());
    std::fs::set_permissions(
        dir.path().join(KEY_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = HostKey::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(err.contains("readable by others"), "{err}");
}

#[test]
fn the_writer_checkpoints_closes_and_counts_late_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let k = Arc::new(key());
    let log = AuditLog::create(
        &path,
        ctx(),
        Arc::clone(&k),
        Config {
            checkpoint_every: 100,
            ..Config::default()
        },
    )
    .unwrap();
    for i in 0..1000 {
        log.append(&exec(i));
    }
    let head = log.close().unwrap();
    log.append(&exec(0));
    assert_eq!(log.lost(), 1);
    let bytes = std::fs::read(&path).unwrap();
    let r = verify(&bytes, &k.public_hex());
    assert_eq!(r.verdict(), Verdict::Verified, "{:?}", r.lines());
    // 1000 events, a checkpoint after every 100, the closing one.
    assert_eq!(r.records, 1011);
    assert_eq!(r.checkpoints, 11);
    assert_eq!(head.seq, 1011);
    assert_eq!(r.head.as_deref(), Some(head.hash.as_str()));
    // An existing file is never reused.
    assert!(AuditLog::create(&path, ctx(), k, Config::default()).is_err());
}

/// The log a re-executed test child writes (default policy).
fn child_log(path: &str) -> Arc<AuditLog> {
    AuditLog::create(
        std::path::Path::new(path),
        ctx(),
        Arc::new(key()),
        Config::default(),
    )
    .unwrap()
}

/// The writer killed with SIGKILL mid-stream: what reached the file
/// verifies, the log is reported incomplete (never tampered), and a torn
/// last record is named as such.
#[test]
fn a_killed_writer_leaves_a_log_that_verifies_as_far_as_it_goes() {
    if let Ok(path) = std::env::var("CORDON_AUDIT_TEST_WRITER") {
        // The child: write 100k events as fast as it can, then wait to be
        // killed.
        let log = child_log(&path);
        for i in 0..100_000 {
            log.append(&exec(i));
        }
        std::thread::sleep(std::time::Duration::from_secs(60));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_killed_writer_leaves_a_log_that_verifies_as_far_as_it_goes",
            "--nocapture",
        ])
        .env("CORDON_AUDIT_TEST_WRITER", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a few batches are on disk, while it is still writing.
    let started = std::time::Instant::now();
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let r = verify(&bytes, &key().public_hex());
    assert_eq!(r.verdict(), Verdict::Incomplete, "{:?}", r.lines());
    assert!(r.problem.is_none());
    assert!(r.records > 1000, "{}", r.records);
    assert!(r.checkpoints >= 1);
    // Every complete line is a record that verified.
    let complete = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(r.records, complete);
    // A crash inside a record leaves a torn tail, which is named and not
    // counted. (The kill itself may have landed inside a write: the kernel
    // stops a write to a file at a page boundary for a fatal signal, so the
    // file may already end torn. Cut it at its last record first.)
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut torn = bytes[..whole].to_vec();
    torn.truncate(torn.len() - 40);
    let r = verify(&torn, &key().public_hex());
    assert_eq!(r.verdict(), Verdict::Incomplete);
    assert_eq!(r.records, complete - 1);
    assert!(r.torn.is_some_and(|t| t.len > 0));
}

/// A write that fails (here: past the file size limit, as on a full disk)
/// stops the writer: it says why, counts what it could not write, and what
/// reached the file verifies as far as it goes.
#[test]
fn a_failed_write_stops_the_log_and_says_why() {
    if let Ok(path) = std::env::var("CORDON_AUDIT_TEST_FULL") {
        let log = child_log(&path);
        for i in 0..20_000 {
            log.append(&exec(i));
        }
        println!("failed={:?} lost={}", log.failed(), log.lost());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // SIGXFSZ ignored (inherited through exec), files capped at 128 KiB.
    let o = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_failed_write_stops_the_log_and_says_why",
            "--nocapture",
        ])
        .env("CORDON_AUDIT_TEST_FULL", &path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("failed=Some(FileTooLarge)"), "{out}");
    let lost: u64 = out
        .split("lost=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(lost > 10_000, "{out}");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() <= 128 * 1024);
    let r = verify(&bytes, &key().public_hex());
    assert_eq!(r.verdict(), Verdict::Incomplete, "{:?}", r.lines());
    assert!(r.problem.is_none());
}
