//! In-process, single-thread throughput of cordon-detect (criterion):
//!
//! * `scan/source-code`: the repository's own Rust sources that have no
//!   findings, repeated to 32 MiB, built-in rules, personal data off;
//! * `redact-json/request-100k`: a 100 KB model-API request body (prose,
//!   code, a few emails, phone numbers and a token) through `redact_json`
//!   with personal data on.
//!
//! `cargo bench -p cordon-detect --bench scan`; results in
//! docs/PERFORMANCE.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use cordon_detect::{redact_json, Detector, Options, Placeholders, Style};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn rust_files(dir: &Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(std::fs::read(&p).unwrap());
        }
    }
}

/// The repository's sources without findings, repeated to `size` bytes.
fn source_code(d: &Detector, size: usize) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let clean: Vec<Vec<u8>> = files.into_iter().filter(|f| d.scan(f).is_empty()).collect();
    assert!(!clean.is_empty());
    let mut out = Vec::with_capacity(size);
    'fill: loop {
        for f in &clean {
            out.extend_from_slice(f);
            if out.len() >= size {
                break 'fill;
            }
        }
    }
    out
}

fn request_body(code: &[u8]) -> Vec<u8> {
    let prose = "Please refactor the handler below so that retries back off exponentially, \
                 and keep the public API unchanged. The customer said the bug shows up when the \
                 queue is empty. ";
    let mut messages = Vec::new();
    let mut i = 0;
    let mut size = 0;
    while size < 100_000 {
        let chunk = &code[(i * 1500) % (code.len() - 2000)..][..1500];
        let mut content = format!(
            "{prose}\n```rust\n{}\n```\n",
            String::from_utf8_lossy(chunk)
        );
        if i % 5 == 0 {
            content.push_str(&format!(
                "Reported by user{i}@example.com, call back on +44 20 7946 {:04}.\n",
                1000 + i
            ));
        }
        if i == 7 {
            content.push_str("export GITHUB_TOKEN=ghp_kF3q9XcV2bN7mL1pR8sT4uW6yZ0aB50ZzZzZ\n");
        }
        size += content.len();
        messages.push(serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": content}));
        i += 1;
    }
    serde_json::to_vec(
        &serde_json::json!({"model": "claude-sonnet", "max_tokens": 1024, "messages": messages}),
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let secrets = Detector::builtin().unwrap();
    let code = source_code(&secrets, 32 << 20);
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(code.len() as u64));
    g.bench_function("source-code", |b| {
        b.iter(|| black_box(secrets.scan(black_box(&code))))
    });
    g.finish();

    let pii = Detector::new(Options {
        pii: true,
        ..Options::default()
    })
    .unwrap();
    let body = request_body(&code);
    let mut g = c.benchmark_group("redact-json");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("request-100k", |b| {
        b.iter(|| {
            let mut map = Placeholders::with_key([3; 32]);
            black_box(redact_json(&pii, &mut map, Style::Typed, black_box(&body)).unwrap())
        })
    });
    g.finish();
}

criterion_group!(scan, benches);
criterion_main!(scan);
