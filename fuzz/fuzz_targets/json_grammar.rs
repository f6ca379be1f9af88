//! `redact_json` accepts exactly the documents serde_json accepts (its own
//! grammar check replaced a serde_json pass), and what it returns is valid
//! JSON.
//!
//! `cargo +nightly fuzz run json_grammar` (from the repository root).
#![no_main]

use std::sync::OnceLock;

use cordon_detect::{redact_json, Detector, Options, Placeholders, Style};
use libfuzzer_sys::fuzz_target;

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| {
        Detector::new(Options {
            pii: true,
            ..Options::default()
        })
        .expect("detector")
    })
}

fuzz_target!(|data: &[u8]| {
    let serde = serde_json::from_slice::<serde::de::IgnoredAny>(data);
    // serde_json stops at 128 levels of nesting; redact_json has no limit.
    if serde
        .as_ref()
        .is_err_and(|e| e.to_string().contains("recursion limit"))
    {
        return;
    }
    let mut map = Placeholders::with_key([7; 32]);
    let ours = redact_json(detector(), &mut map, Style::Typed, data);
    assert_eq!(
        ours.is_ok(),
        serde.is_ok(),
        "serde_json: {serde:?}, redact_json: {:?}",
        ours.as_ref().err()
    );
    if let Ok((out, _)) = ours {
        serde_json::from_slice::<serde::de::IgnoredAny>(&out).expect("valid JSON out");
    }
});
