//! Quality on the labeled corpus that `scripts/gen-corpus.py` generates:
//! every planted secret and personal datum is found by its own detector
//! (recall 1.0 per detector), and the hard negatives (UUIDs, hashes, git
//! SHAs, base64 images, minified JS, lockfiles, fixtures with placeholder
//! values) stay under one false positive per 10 MB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cordon_detect::{Confidence, Detector, Options};

fn generate(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gen-corpus.py");
    let st = Command::new("python3")
        .arg(&script)
        .args(["--out"])
        .arg(out)
        .args(["--negative-mb", "12", "--seed", "1"])
        .status()
        .expect("python3 runs scripts/gen-corpus.py (apt-get install python3)");
    assert!(st.success());
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_detector_finds_all_it_should_and_negatives_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let labels: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("labels.json")).unwrap()).unwrap();
    let d = Detector::new(Options {
        pii: true,
        ..Options::default()
    })
    .unwrap();
    let min = Confidence::Medium;

    // Recall, per detector.
    let mut per_rule: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut missed = Vec::new();
    let mut unlabeled = Vec::new();
    for path in files(&dir.path().join("positive")) {
        let data = std::fs::read(&path).unwrap();
        let name = format!("positive/{}", path.file_name().unwrap().to_string_lossy());
        let findings: Vec<_> = d
            .scan(&data)
            .into_iter()
            .filter(|f| f.confidence >= min)
            .collect();
        let mine: Vec<&serde_json::Value> = labels.iter().filter(|l| l["file"] == name).collect();
        for l in &mine {
            let rule = l["rule"].as_str().unwrap();
            let value = l["value"].as_str().unwrap().as_bytes();
            let at = memfind(&data, value).unwrap_or_else(|| panic!("{name}: {rule} not planted"));
            // The finding of that rule covers the planted value (or, for a
            // labeled context like a webhook URL, lies within it).
            let found = findings.iter().any(|f| {
                &*f.rule == rule
                    && ((f.start <= at && at + value.len() <= f.end)
                        || (at <= f.start && f.end <= at + value.len()))
            });
            let e = per_rule.entry(rule.to_owned()).or_default();
            e.0 += 1;
            if found {
                e.1 += 1;
            } else {
                missed.push(format!("{name}: {rule}"));
            }
        }
        for f in &findings {
            let covered = mine.iter().any(|l| {
                let v = l["value"].as_str().unwrap().as_bytes();
                memfind(&data, v).is_some_and(|at| overlaps(f.start, f.end, at, at + v.len()))
            });
            if !covered {
                unlabeled.push(format!("{name}: {} {}", f.rule, f.preview(&data)));
            }
        }
    }
    for (rule, (planted, found)) in &per_rule {
        eprintln!("recall {rule}: {found}/{planted}");
    }
    assert!(per_rule.len() >= 60, "{} detectors planted", per_rule.len());
    assert!(missed.is_empty(), "missed: {missed:#?}");
    assert!(
        unlabeled.is_empty(),
        "findings with no label: {unlabeled:#?}"
    );

    // False positives of the credential detectors on the hard negatives
    // (personal data is left out: the negatives hold real-looking emails,
    // as git logs do).
    let secrets_only = Detector::builtin().unwrap();
    let mut bytes = 0usize;
    let mut fps = Vec::new();
    for path in files(&dir.path().join("negative")) {
        let data = std::fs::read(&path).unwrap();
        bytes += data.len();
        for f in secrets_only
            .scan(&data)
            .into_iter()
            .filter(|f| f.confidence >= min)
        {
            fps.push(format!(
                "{}: {} {}",
                path.file_name().unwrap().to_string_lossy(),
                f.rule,
                f.preview(&data)
            ));
        }
    }
    let per_10mb = fps.len() as f64 / (bytes as f64 / 10e6);
    eprintln!(
        "false positives: {} in {bytes} bytes ({per_10mb:.2} per 10 MB)",
        fps.len()
    );
    assert!(bytes >= 10_000_000);
    assert!(per_10mb <= 1.0, "{fps:#?}");
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn overlaps(a0: usize, a1: usize, b0: usize, b1: usize) -> bool {
    a0 < b1 && b0 < a1
}
