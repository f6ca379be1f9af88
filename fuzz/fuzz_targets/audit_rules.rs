//! Detection rules on untrusted input: a rules file that parses compiles
//! without panicking, and the engine (built-in rules in every tier, plus
//! the rules the input makes) never panics on any record line, parsed or
//! not.
//!
//! `cargo +nightly fuzz run audit_rules` (from the repository root).
#![no_main]

use cordon_audit::rules::{Engine, RuleSet, Seen};
use cordon_audit::Class;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line, if any, is a rules file; the rest are records.
    let (rules, records) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let mut set = RuleSet::builtin().unwrap();
    if let Ok(text) = std::str::from_utf8(rules) {
        if let Ok(extra) = RuleSet::parse(text) {
            set.merge(extra);
        }
    }
    for tier in [None, Some("experiment")] {
        let mut engine = Engine::new(&set, tier, Some(Box::new(|b: &[u8]| b.len() % 7 == 3)));
        for (i, line) in records.split(|&b| b == b'\n').enumerate() {
            for class in [Class::Process, Class::Dns, Class::Network, Class::FileSystem] {
                let seen = Seen::new(class, i as u64, i as u64 * 1_000_000_000, line);
                let _ = engine.observe_seen(&seen);
            }
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                let _ = engine.observe(&v, line);
            }
        }
    }
});
