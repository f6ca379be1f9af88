//! Sustained write rate of the audit log with the default policy
//! (checkpoint every 1000 records or second, sync every 200 ms in the
//! background): 100k exec-sized events per iteration, into a fresh file
//! in $TMPDIR (criterion).
//!
//! `cargo bench -p cordon-audit --bench write`; results in
//! docs/PERFORMANCE.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use cordon_audit::{AuditLog, Class, Config, Context, Event, HostKey, Process};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const EVENTS: u64 = 100_000;

fn event(i: u64) -> Event {
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
    let mut n = 0u64;
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("append-100k-default-policy", |b| {
        b.iter(|| {
            n += 1;
            let log = AuditLog::create(
                &dir.path().join(format!("a{n}.jsonl")),
                Context {
                    session: "20261130-000000-bench0".into(),
                    profile_digest: "sha256:0123456789abcdef".into(),
                },
                Arc::clone(&key),
                Config::default(),
            )
            .unwrap();
            for i in 0..EVENTS {
                log.append(&event(i));
            }
            log.close().unwrap();
            std::fs::remove_file(dir.path().join(format!("a{n}.jsonl"))).unwrap();
        })
    });
    g.finish();
}

criterion_group!(write, benches);
criterion_main!(write);
