//! `cordon scan` and `cordon redact` on real files and pipes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::harness::cordon_bin;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A GitHub token with a valid checksum (built here, independently of the
/// detector's own code).
fn github_token(random: &str) -> String {
    let mut n = crc32(random.as_bytes());
    let mut sum = Vec::new();
    for _ in 0..6 {
        sum.push(BASE62[(n % 62) as usize]);
        n /= 62;
    }
    sum.reverse();
    format!("ghp_{random}{}", String::from_utf8(sum).unwrap())
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn cordon(args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(cordon_bin());
    c.args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Written from another thread: the child's output is read meanwhile.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn scan_reports_secrets_with_masked_previews_and_honours_gitignore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = github_token("kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    write(
        &d.join("src/app.py"),
        format!("import os\nTOKEN = \"{token}\"\nAWS = \"AKIAQYLPMN5HHHFPZAM2\"\n").as_bytes(),
    );
    write(&d.join(".gitignore"), b"build/\n");
    write(
        &d.join("build/out.py"),
        format!("T = '{token}'\n").as_bytes(),
    );
    let mut binary = b"\x00\x01\x02".to_vec();
    binary.extend_from_slice(token.as_bytes());
    write(&d.join("blob.bin"), &binary);
    write(&d.join("big.log"), &vec![b'a'; 5000]);
    std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(d)
        .status()
        .unwrap();
    let o = cordon(&["scan", "--max-size", "4096", "."], d, None);
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("src/app.py:2:10: github-pat (secret, high confidence): ghp_****"),
        "{out}"
    );
    assert!(out.contains("src/app.py:3:8: aws-access-key-id"), "{out}");
    assert!(!out.contains("build/"), "ignored by .gitignore: {out}");
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the value itself is never shown"
    );
    assert!(err.contains("skipped 1 binary file(s)"), "{err}");
    assert!(err.contains("too large (5000 bytes"), "{err}");

    let o = cordon(&["scan", "--sarif", "src"], d, None);
    assert_eq!(o.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], "github-pat");
    let loc = &results[0]["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], "src/app.py");
    assert_eq!(loc["region"]["startLine"], 2);
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    assert!(rules.len() >= 50);

    let o = cordon(&["scan", "--json", "src/app.py"], d, None);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["findings"][0]["line"], 2);
    assert_eq!(report["files"], 1);

    write(&d.join("clean/readme.md"), b"nothing to see\n");
    let o = cordon(&["scan", "clean"], d, None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("0 finding(s)"));

    let o = cordon(&["scan", "no-such-dir"], d, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no-such-dir: no such file or directory"));
}

#[test]
fn scan_takes_gitleaks_rules_and_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("team.toml"),
        br#"
[[rules]]
id = "acme-token"
description = "ACME token"
regex = '''acme_live_([a-z0-9]{24})'''
secretGroup = 1
keywords = ["acme_live_"]
"#,
    );
    write(
        &d.join("data/users.csv"),
        b"name,email,card\njane,jane.doe@example.com,4111 1111 1111 1111\nkey,acme_live_k3q9xcv2bn7ml1pr8st4uw6y\n",
    );
    let o = cordon(&["scan", "--rules", "team.toml", "--pii", "data"], d, None);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    for rule in ["email", "credit-card", "acme-token"] {
        assert!(out.contains(rule), "{rule}: {out}");
    }
    write(&d.join("bad.toml"), b"[[rules]]\nid = 3\n");
    let o = cordon(&["scan", "--rules", "bad.toml", "data"], d, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("bad.toml"), "{}", text(&o.stderr));
}

#[test]
fn redact_filters_a_stream_and_json_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = github_token("zZ3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    // A long stream with the token several times, far apart.
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend_from_slice(format!("log line {i}\n").as_bytes());
        if i % 5000 == 0 {
            input.extend_from_slice(format!("auth with {token} ok\n").as_bytes());
        }
    }
    let o = cordon(&["redact"], d, Some(&input));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains(&token));
    assert_eq!(
        out.matches("auth with [REDACTED:github-pat#1] ok").count(),
        4
    );
    assert_eq!(
        out.len(),
        input.len() - 4 * (token.len() - "[REDACTED:github-pat#1]".len())
    );
    assert!(text(&o.stderr).contains("redacted 4 finding(s)"));

    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"use {token}\nmail jane@example.com"}}]}}"#
    );
    let o = cordon(
        &["redact", "--json-body", "--pii", "-"],
        d,
        Some(body.as_bytes()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["messages"][0]["content"],
        "use [REDACTED:github-pat#1]\nmail [REDACTED:email#1]"
    );
    let o = cordon(&["redact", "--json-body"], d, Some(b"{not json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not valid JSON"),
        "{}",
        text(&o.stderr)
    );
}
