//! `cordon scan`: walks files and directories (honouring `.gitignore`,
//! `.ignore` and git's excludes, as ripgrep does), skips binary and huge
//! files with a note, scans the rest with `cordon-detect` on every core,
//! and renders the findings as text, JSON or SARIF 2.1.0. Findings carry a
//! masked preview, never the secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cordon_detect::{Confidence, Detector, Finding, Kind};
use serde::Serialize;

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files and directories.
    pub paths: Vec<PathBuf>,
    /// Files larger than this are skipped with a note.
    pub max_size: u64,
    /// Findings below this confidence are left out.
    pub min_confidence: Confidence,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// One finding in one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFinding {
    /// The file.
    pub path: String,
    /// 1-based line of the secret's start.
    pub line: usize,
    /// 1-based column (in characters) of the secret's start.
    pub column: usize,
    /// 1-based line of the secret's end.
    pub end_line: usize,
    /// 1-based column just after the secret's end.
    pub end_column: usize,
    /// Byte offsets in the file.
    pub start: usize,
    /// End byte offset.
    pub end: usize,
    /// The rule.
    pub rule: String,
    /// Secret, PII or canary.
    pub kind: Kind,
    /// How sure.
    pub confidence: Confidence,
    /// The masked value.
    pub preview: String,
}

/// A file that was not scanned, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// `binary`, `too large (N bytes)` or the read error.
    pub reason: String,
}

/// The result of a scan.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Findings, by path then position.
    pub findings: Vec<FileFinding>,
    /// Files left out.
    pub skipped: Vec<Skipped>,
    /// Files scanned.
    pub files: usize,
    /// Bytes scanned.
    pub bytes: u64,
}

/// Errors that stop a scan.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A path given does not exist.
    #[error("{0}: no such file or directory")]
    Missing(String),
}

/// Scans `opts.paths` with `detector`.
pub fn scan(detector: &Arc<Detector>, opts: &ScanOptions) -> Result<Report, ScanError> {
    for p in &opts.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(ScanError::Missing(p.display().to_string()));
        }
    }
    let mut walk = ignore::WalkBuilder::new(&opts.paths[0]);
    for p in &opts.paths[1..] {
        walk.add(p);
    }
    walk.hidden(false)
        .git_ignore(true)
        .git_global(true)
        .git_exclude(true)
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .threads(opts.threads);
    let report = Arc::new(Mutex::new(Report::default()));
    walk.build_parallel().run(|| {
        let detector = Arc::clone(detector);
        let report = Arc::clone(&report);
        let max_size = opts.max_size;
        let min = opts.min_confidence;
        Box::new(move |entry| {
            let Ok(entry) = entry else {
                return ignore::WalkState::Continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return ignore::WalkState::Continue;
            }
            let outcome = scan_file(&detector, entry.path(), max_size, min);
            if let Ok(mut r) = report.lock() {
                match outcome {
                    Ok((bytes, found)) => {
                        r.files += 1;
                        r.bytes += bytes;
                        r.findings.extend(found);
                    }
                    Err(reason) => r.skipped.push(Skipped {
                        path: entry.path().display().to_string(),
                        reason,
                    }),
                }
            }
            ignore::WalkState::Continue
        })
    });
    let mut report = match Arc::try_unwrap(report) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner())),
    };
    report
        .findings
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.start.cmp(&b.start)));
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Scans one file: its size and findings, or why it was skipped.
fn scan_file(
    detector: &Detector,
    path: &Path,
    max_size: u64,
    min: Confidence,
) -> Result<(u64, Vec<FileFinding>), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > max_size {
        return Err(format!("too large ({} bytes; see --max-size)", meta.len()));
    }
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    if data[..data.len().min(8192)].contains(&0) {
        return Err("binary".into());
    }
    let shown = path.display().to_string();
    let findings = detector.scan_path(Some(&shown), &data);
    let mut lines = LineIndex::new(&data);
    let out = findings
        .into_iter()
        .filter(|f| f.confidence >= min)
        .map(|f| file_finding(&shown, &data, &mut lines, &f))
        .collect();
    Ok((data.len() as u64, out))
}

fn file_finding(path: &str, data: &[u8], lines: &mut LineIndex, f: &Finding) -> FileFinding {
    let (line, column) = lines.position(data, f.start);
    let (end_line, end_column) = lines.position(data, f.end);
    FileFinding {
        path: path.to_owned(),
        line,
        column,
        end_line,
        end_column,
        start: f.start,
        end: f.end,
        rule: f.rule.to_string(),
        kind: f.kind,
        confidence: f.confidence,
        preview: f.preview(data),
    }
}

/// Line starts of a file, for offsets → (line, column).
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(data: &[u8]) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            data.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of `offset`.
    fn position(&mut self, data: &[u8], offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = String::from_utf8_lossy(&data[start..offset])
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

/// The report as text lines: `path:line:col: rule (kind, confidence): preview`.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{}:{}:{}: {} ({}, {} confidence): {}\n",
            f.path,
            f.line,
            f.column,
            f.rule,
            kind_name(f.kind),
            confidence_name(f.confidence),
            f.preview
        ));
    }
    out
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Secret => "secret",
        Kind::Pii => "pii",
        Kind::Canary => "canary",
    }
}

fn confidence_name(c: Confidence) -> &'static str {
    match c {
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
    }
}

/// The report as a SARIF 2.1.0 log (one run, tool `cordon`), as code
/// scanning tools load it.
pub fn render_sarif(report: &Report, detector: &Detector) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = detector
        .rule_ids()
        .map(|id| {
            serde_json::json!({
                "id": id,
                "shortDescription": { "text": detector.rule_title(id).unwrap_or(id) },
                "defaultConfiguration": { "level": "error" },
            })
        })
        .collect();
    for pii in [
        "email",
        "phone",
        "credit-card",
        "iban",
        "us-ssn",
        "ipv4",
        "ipv6",
        "canary",
    ] {
        if report.findings.iter().any(|f| f.rule == pii) {
            rules.push(serde_json::json!({
                "id": pii,
                "shortDescription": { "text": pii },
                "defaultConfiguration": { "level": if pii == "canary" { "error" } else { "warning" } },
            }));
        }
    }
    let results: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "ruleId": f.rule,
                "level": match (f.kind, f.confidence) {
                    (Kind::Pii, _) | (_, Confidence::Low) => "warning",
                    _ => "error",
                },
                "message": {
                    "text": format!("{} {} found ({} confidence): {}", kind_name(f.kind), f.rule, confidence_name(f.confidence), f.preview)
                },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.path) },
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.column,
                            "endLine": f.end_line,
                            "endColumn": f.end_column,
                        }
                    }
                }],
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "cordon",
                "informationUri": "https://example.invalid/cordon",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

/// A relative URI for a path (SARIF artifact locations).
fn uri(path: &str) -> String {
    let p = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
