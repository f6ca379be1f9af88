use std::sync::{Arc, Mutex};

use pretty_assertions::assert_eq;

use super::*;

fn github_token(prefix: &str, random: &str) -> String {
    format!(
        "{prefix}{random}{}",
        check::base62(check::crc32(random.as_bytes()), 6)
    )
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| &*f.rule).collect()
}

#[test]
fn every_builtin_rule_finds_its_examples_and_not_its_counter_examples() {
    let specs = rules::builtin().unwrap();
    assert!(specs.len() >= 50, "{} rules", specs.len());
    let d = Detector::builtin().unwrap();
    for spec in &specs {
        for ex in &spec.examples {
            let found = d.scan(ex.as_bytes());
            assert!(
                found.iter().any(|f| *f.rule == spec.id),
                "{}: not found in {ex:?}: {found:?}",
                spec.id
            );
        }
        for ex in &spec.not_examples {
            let found = d.scan(ex.as_bytes());
            assert!(
                !found.iter().any(|f| *f.rule == spec.id),
                "{}: found in {ex:?}",
                spec.id
            );
        }
    }
}

#[test]
fn github_tokens_are_checked_by_their_crc() {
    let d = Detector::builtin().unwrap();
    let good = github_token("ghp_", "kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    let text = format!("export GITHUB_TOKEN={good}\n");
    let found = d.scan(text.as_bytes());
    assert_eq!(ids(&found), ["github-pat"]);
    assert_eq!(found[0].confidence, Confidence::High);
    assert_eq!(
        &text.as_bytes()[found[0].start..found[0].end],
        good.as_bytes()
    );
    let bad = format!("token: ghp_{}", "kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5AAAAAA");
    let found = d.scan(bad.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].confidence, Confidence::Low);
}

#[test]
fn a_finding_never_shows_the_whole_secret() {
    let d = Detector::builtin().unwrap();
    let t = github_token("ghp_", "kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    let found = d.scan(t.as_bytes());
    let preview = found[0].preview(t.as_bytes());
    assert_eq!(preview, "ghp_**** (40 bytes)");
    assert_eq!(mask(b"short"), "**** (5 bytes)");
}

#[test]
fn keywords_match_in_any_case_and_formats_keep_theirs() {
    let d = Detector::builtin().unwrap();
    let body: String = "kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5dE9gH2jK4lM7nP1qS3tV6wX8zA0cD2fG5hJ7kL9mN1pQ3rS5tU7vW9xY1zA3bC5dE7fG9hJ1kL3m"
        .chars()
        .take(93)
        .collect();
    let t = format!("Authorization: Bearer sk-ant-api03-{body}AA");
    assert_eq!(ids(&d.scan(t.as_bytes())), ["anthropic-api-key"]);
    let upper = t.to_ascii_uppercase();
    assert!(!ids(&d.scan(upper.as_bytes())).contains(&"anthropic-api-key"));
}

#[test]
fn personal_data_is_found_with_its_checksums() {
    let d = Detector::new(Options {
        pii: true,
        ..Options::default()
    })
    .unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("mail jane.doe+x@example.co.uk now", &["email"]),
        ("not an email: a@b, x@y.z1, @home", &[]),
        ("card 4111 1111 1111 1111 exp", &["credit-card"]),
        ("card 4111-1111-1111-1111.", &["credit-card"]),
        ("amex 3782 822463 10005", &["credit-card"]),
        ("luhn fails 4111 1111 1111 1112", &[]),
        ("order 1234567890123456 shipped", &[]),
        ("ssn 123-45-6789", &["us-ssn"]),
        ("ssn 666-45-6789 000-12-3456 123-00-4567 912-34-5678", &[]),
        (
            "call +44 20 7946 0958 or (212) 555-0147",
            &["phone", "phone"],
        ),
        ("version 1.2.3.4 and 2024-01-15", &[]),
        ("IBAN GB82 WEST 1234 5698 7654 32 ok", &["iban"]),
        ("iban DE89370400440532013000", &["iban"]),
        ("bad DE89370400440532013001", &[]),
    ];
    for (text, want) in cases {
        let found = d.scan(text.as_bytes());
        assert_eq!(&ids(&found), want, "{text:?}");
    }
    let ip = Detector::new(Options {
        pii: true,
        ip: true,
        ..Options::default()
    })
    .unwrap();
    assert_eq!(
        ids(&ip.scan(b"from 10.1.2.3 and fe80::1:2")),
        ["ipv4", "ipv6"]
    );
    assert!(
        d.scan(b"from 10.1.2.3").is_empty(),
        "IPs are off by default"
    );
}

#[test]
fn canaries_are_found_in_every_encoding() {
    let canary = b"cordon-canary-7f3a9b2c1d".to_vec();
    let d = Detector::new(Options {
        builtin: false,
        canaries: vec![canary.clone()],
        ..Options::default()
    })
    .unwrap();
    let pct: String = canary
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let hex: String = canary.iter().map(|b| format!("{b:02x}")).collect();
    let mut texts = vec![
        format!("raw {} end", String::from_utf8_lossy(&canary)),
        format!("q=x&k={pct}&z=1"),
        format!("hex {hex}"),
    ];
    for prefix in ["", "a", "ab", "abc", "user:"] {
        let mut plain = prefix.as_bytes().to_vec();
        plain.extend_from_slice(&canary);
        plain.extend_from_slice(b" trailing");
        texts.push(format!(
            "Authorization: Basic {}",
            check::base64_encode(&plain)
        ));
    }
    for t in &texts {
        let found = d.scan(t.as_bytes());
        assert_eq!(ids(&found), ["canary"], "{t}");
        assert_eq!(found[0].kind, Kind::Canary);
    }
    assert!(matches!(
        Detector::new(Options {
            canaries: vec![b"short".to_vec()],
            ..Options::default()
        }),
        Err(Error::ShortCanary { .. })
    ));
}

/// A text with secrets of several kinds, some longer than a chunk.
fn planted() -> (Vec<u8>, Vec<u8>) {
    let canary = b"honeytoken-5a8d1e2f9c".to_vec();
    let mut t = Vec::new();
    for i in 0..40 {
        t.extend_from_slice(
            format!("line {i}: some ordinary text with a key word and data\n").as_bytes(),
        );
        if i % 7 == 0 {
            t.extend_from_slice(
                github_token("ghp_", &format!("kF3q9XcV2bN7mL1pR8sT4uW6yZ0a{i:02}")).as_bytes(),
            );
            t.push(b'\n');
        }
        if i % 9 == 0 {
            t.extend_from_slice(b"password = \"Zq8vR2mK9xL4pW7tN3yB\"\n");
        }
        if i % 11 == 0 {
            t.extend_from_slice(b"-----BEGIN RSA PRIVATE KEY-----\n");
            for _ in 0..30 {
                t.extend_from_slice(
                    b"MIIEowIBAAKCAQEA7yn3bRHQ5FHMQ2Ay0DkB9zpDw8TRyRCf0XW2dwKPQtfhU8Z4\n",
                );
            }
            t.extend_from_slice(b"-----END RSA PRIVATE KEY-----\n");
        }
        if i % 13 == 0 {
            t.extend_from_slice(b"leak: ");
            t.extend_from_slice(&canary);
            t.extend_from_slice(b" and ");
            t.extend_from_slice(check::base64_encode(&canary).as_bytes());
            t.push(b'\n');
        }
    }
    (t, canary)
}

#[test]
fn streaming_redaction_matches_whole_text_redaction_for_any_chunking() {
    let (text, canary) = planted();
    let d = Arc::new(
        Detector::new(Options {
            canaries: vec![canary.clone()],
            ..Options::default()
        })
        .unwrap(),
    );
    let mut whole_map = Placeholders::with_key([7; 32]);
    let (whole, findings) = redact(&d, &mut whole_map, Style::Typed, &text);
    assert!(findings.len() >= 12, "{}", findings.len());
    assert!(memchr::memmem::find(&whole, &canary).is_none());
    assert!(memchr::memmem::find(&whole, b"PRIVATE KEY-----\nMII").is_none());
    let mut seed = 0x9e37_79b9_u32;
    for sizes in [vec![1usize], vec![7], vec![4096], vec![3, 1000, 17, 65536]] {
        for round in 0..3 {
            let map = Arc::new(Mutex::new(Placeholders::with_key([7; 32])));
            let mut r = Redactor::new(Arc::clone(&d), map, Style::Typed);
            let mut out = Vec::new();
            let mut at = 0;
            let mut k = 0;
            while at < text.len() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let n = if round == 0 {
                    sizes[k % sizes.len()]
                } else {
                    1 + (seed as usize % (sizes[k % sizes.len()] * 2))
                };
                let end = (at + n).min(text.len());
                r.push(&text[at..end], &mut out);
                at = end;
                k += 1;
            }
            r.finish(&mut out);
            assert!(memchr::memmem::find(&out, &canary).is_none(), "{sizes:?}");
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&whole),
                "{sizes:?} round {round}"
            );
        }
    }
}

#[test]
fn placeholders_are_consistent_and_map_back() {
    let d = Detector::builtin().unwrap();
    let t1 = github_token("ghp_", "kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    let t2 = github_token("ghp_", "zZ3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    let text = format!("a={t1} b={t2} c={t1}");
    let mut map = Placeholders::with_key([1; 32]);
    let (out, _) = redact(&d, &mut map, Style::Typed, text.as_bytes());
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "a=[REDACTED:github-pat#1] b=[REDACTED:github-pat#2] c=[REDACTED:github-pat#1]"
    );
    assert_eq!(map.rehydrate(&out), text.as_bytes());
    let mut fp = Placeholders::with_key([1; 32]);
    let (out, _) = redact(&d, &mut fp, Style::FormatPreserving, text.as_bytes());
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.len(), text.len());
    assert!(!out.contains(&t1) && !out.contains(&t2), "{out}");
    assert!(out.starts_with("a=ghp_"), "{out}");
    assert_eq!(fp.rehydrate(out.as_bytes()), text.as_bytes());
}

#[test]
fn json_bodies_stay_valid_json() {
    let d = Detector::new(Options {
        pii: true,
        ..Options::default()
    })
    .unwrap();
    let key = "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\\n-----END EC PRIVATE KEY-----";
    let body = format!(
        r#"{{"model": "m", "messages": [{{"role": "user", "content": "my key is {key}\n and mail jane@example.com \"quoted\""}}], "card": 4111111111111111, "n": 3}}"#
    );
    let mut map = Placeholders::with_key([2; 32]);
    let (out, found) = redact_json(&d, &mut map, Style::Typed, body.as_bytes()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let content = v["messages"][0]["content"].as_str().unwrap();
    assert!(content.contains("[REDACTED:private-key#1]"), "{content}");
    assert!(content.contains("[REDACTED:email#1]"), "{content}");
    assert!(content.contains("\"quoted\""), "{content}");
    assert_eq!(v["card"], "[REDACTED:credit-card#1]");
    assert_eq!(v["n"], 3);
    assert_eq!(found.len(), 3);
    assert!(redact_json(&d, &mut map, Style::Typed, b"{\"a\": ").is_err());
}

#[test]
fn json_grammar_agrees_with_serde_json() {
    let d = Detector::builtin().unwrap();
    let docs: &[&[u8]] = &[
        b"{}",
        b" [ ] ",
        b"null",
        b"-0.5e+10",
        b"\"a\\u00e9\\ud83d\\ude00\\n\"",
        b"{\"a\":[1,2,{\"b\":null}],\"c\":true}",
        b"\"\\ud800\"",
        b"\"\\udc00x\"",
        b"\"\xff\xfe\"",
        b"",
        b"   ",
        b"{",
        b"{\"a\" 1}",
        b"{\"a\":1,}",
        b"[1,]",
        b"[,1]",
        b"{1:2}",
        b"[1 2]",
        b"01",
        b"1.",
        b".5",
        b"-",
        b"1e",
        b"+1",
        b"tru",
        b"nulll",
        b"\"a\tb\"",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"\"\\u12g4\"",
        b"\"abc",
        b"\"abc\\",
        b"[}",
        b"{]",
        b"[1]]",
        b"{} {}",
        b"1 2",
        b"[\"a\"\"b\"]",
        b"{\"a\":1:2}",
    ];
    for doc in docs {
        let serde = serde_json::from_slice::<serde::de::IgnoredAny>(doc).is_ok();
        let mut map = Placeholders::with_key([1; 32]);
        let ours = redact_json(&d, &mut map, Style::Typed, doc);
        assert_eq!(
            ours.is_ok(),
            serde,
            "{:?}: serde_json {serde}, redact_json {ours:?}",
            String::from_utf8_lossy(doc)
        );
        if let Ok((out, _)) = ours {
            assert_eq!(out, *doc, "nothing to redact, nothing changed");
        }
    }
}

#[test]
fn json_escapes_around_a_secret_are_replaced_whole() {
    let d = Detector::builtin().unwrap();
    let token = "ghp_kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB50ZzZzZ";
    // The token's first characters written as escapes, a multi-byte
    // character right after it.
    let body = format!("{{\"t\":\"x \\u0067\\u0068{} \\u00e9\"}}", &token[2..]);
    let mut map = Placeholders::with_key([1; 32]);
    let (out, found) = redact_json(&d, &mut map, Style::Typed, body.as_bytes()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["t"], "x [REDACTED:github-pat#1] \u{e9}");
    // The escapes before and after the secret are left as they were.
    assert!(String::from_utf8_lossy(&out).ends_with(" \\u00e9\"}"));
}

#[test]
fn gitleaks_rules_load_and_apply_their_allowlists() {
    let config = r#"
title = "team rules"
[[rules]]
id = "acme-token"
description = "ACME internal token"
regex = '''acme_(?:live|test)_([a-z0-9]{24})'''
secretGroup = 1
entropy = 3.0
keywords = ["acme_"]
[[rules.allowlists]]
regexes = ['''^0{24}$''']
stopwords = ["example"]

[[rules]]
id = "pkcs12-file"
path = '''\.p12$'''

[allowlist]
paths = ['''fixtures/''']
"#;
    let (specs, notes) = rules::from_gitleaks(config, "team.toml").unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let d = Detector::new(Options {
        builtin: false,
        extra_rules: specs,
        ..Options::default()
    })
    .unwrap();
    let hit = b"t = acme_live_k3q9xcv2bn7ml1pr8st4uw6y0a";
    let found = d.scan(hit);
    assert_eq!(ids(&found), ["acme-token"]);
    assert_eq!(
        &hit[found[0].start..found[0].end],
        b"k3q9xcv2bn7ml1pr8st4uw6y"
    );
    assert!(d.scan(b"acme_test_000000000000000000000000").is_empty());
    assert!(d.scan(b"acme_test_example0example0example0ab").is_empty());
    assert!(d.scan_path(Some("tests/fixtures/a.txt"), hit).is_empty());
    let err = rules::from_gitleaks("[[rules]]\nid = 3", "bad.toml").unwrap_err();
    assert!(err.to_string().starts_with("bad.toml:"), "{err}");
    let (bad, _) =
        rules::from_gitleaks("[[rules]]\nid = \"x\"\nregex = 'a(b'", "bad.toml").unwrap();
    let err = Detector::new(Options {
        builtin: false,
        extra_rules: bad,
        ..Options::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("unclosed group"), "{err}");
}

#[test]
fn overlapping_findings_keep_the_stronger() {
    let d = Detector::builtin().unwrap();
    let t = github_token("ghp_", "kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB5");
    let text = format!("token = \"{t}\"");
    assert_eq!(ids(&d.scan(text.as_bytes())), ["github-pat"]);
}
