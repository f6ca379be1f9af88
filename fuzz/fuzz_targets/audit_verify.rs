//! The audit verifier on untrusted bytes: it never panics, and any change
//! to a signed, closed log (bytes replaced, inserted or removed anywhere)
//! is never reported as verified.
//!
//! `cargo +nightly fuzz run audit_verify` (from the repository root).
#![no_main]

use std::sync::OnceLock;

use cordon_audit::{verify, Chain, Class, Context, Event, HostKey, Process, Verdict};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static HostKey {
    static K: OnceLock<HostKey> = OnceLock::new();
    K.get_or_init(|| HostKey::from_seed([3; 32]))
}

/// A closed log: 12 events, a checkpoint after every 5.
fn log() -> &'static [u8] {
    static L: OnceLock<Vec<u8>> = OnceLock::new();
    L.get_or_init(|| {
        let mut c = Chain::new(Context {
            session: "20261130-000000-fuzz00".into(),
            profile_digest: "sha256:00".into(),
        });
        let mut out = Vec::new();
        for i in 0..12u32 {
            let ev = Event::new(Class::Process, 1, "Launch").actor(Process {
                pid: Some(100 + i),
                argv: Some(vec!["sh".into(), "-c".into(), format!("echo {i}")]),
                ..Process::default()
            });
            c.seal(&ev, 1_000 + u64::from(i), &mut out);
            if i % 5 == 4 {
                c.checkpoint(key(), false, 2_000, &mut out);
            }
        }
        c.checkpoint(key(), true, 3_000, &mut out);
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let trusted = key().public_hex();
    // Arbitrary input: no panic.
    let _ = verify(data, &trusted);
    // A change to the signed log: never verified.
    let l = log();
    if data.len() < 3 {
        return;
    }
    let at = usize::from(u16::from_le_bytes([data[0], data[1]])) % (l.len() + 1);
    let mut changed = l.to_vec();
    match data[2] % 3 {
        0 => {
            // Replace bytes.
            for (i, &b) in data[3..].iter().enumerate() {
                if let Some(x) = changed.get_mut(at + i) {
                    *x = b;
                }
            }
        }
        1 => {
            // Insert bytes.
            changed.splice(at..at, data[3..].iter().copied());
        }
        _ => {
            // Remove bytes.
            let n = data[3..].len().min(l.len() - at);
            changed.drain(at..at + n);
        }
    }
    if changed != l {
        assert_ne!(
            verify(&changed, &trusted).verdict(),
            Verdict::Verified,
            "a changed log verified"
        );
    }
});
