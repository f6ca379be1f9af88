//! What the detection rules cost per record, as the session's recorder
//! pays it: the sealed line parsed back into a JSON value, then every
//! built-in rule in force (experiment tier, so all of them) checked, with
//! a canary check over the whole line (criterion).
//!
//! `cargo bench -p cordon-audit --bench rules`; results in
//! docs/PERFORMANCE.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use cordon_audit::rules::{Engine, RuleSet};
use cordon_audit::{AuditLog, Class, Config, Context, Event, HostKey, Process};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const RECORDS: u64 = 10_000;

fn exec(i: u64) -> Event {
    Event::new(Class::Process, 1, "Launch").actor(Process {
        pid: Some(1000 + (i % 30000) as u32),
        ppid: Some(1),
        exe: Some("/usr/bin/git".into()),
        argv: Some(vec!["git".into(), "status".into(), "--short".into()]),
        cwd: Some("/home/dev/src/project".into()),
        uid: Some(1000),
    })
}

fn benches(c: &mut Criterion) {
    let key = Arc::new(HostKey::from_seed([7; 32]));
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(
        &dir.path().join("a.jsonl"),
        Context {
            session: "20261130-000000-bench0".into(),
            profile_digest: "sha256:0123456789abcdef".into(),
        },
        key,
        Config::default(),
    )
    .unwrap();
    let lines: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| log.append_seen(&exec(i)).unwrap())
        .collect();
    let set = RuleSet::builtin().unwrap();
    let canary = b"AKIAQWERTYUIOPASDFGH".to_vec();
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("exec-records-builtin-rules", |b| {
        let needle = canary.clone();
        let mut engine = Engine::new(
            &set,
            Some("experiment"),
            Some(Box::new(move |hay: &[u8]| {
                memchr::memmem::find(hay, &needle).is_some()
            })),
        );
        b.iter(|| {
            let mut found = 0;
            for line in &lines {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                found += engine.observe(&v, line).len();
            }
            assert_eq!(found, 0);
        });
    });
    g.finish();
}

criterion_group!(all, benches);
criterion_main!(all);
