//! `redact_json` keeps a JSON document valid JSON, and a registered canary
//! in any string value (however it is escaped) never survives it.
//!
//! `cargo +nightly fuzz run redact_json` (from the repository root).
#![no_main]

use std::sync::OnceLock;

use cordon_detect::{redact_json, Detector, Options, Placeholders, Style};
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "cordon-fuzz-canary-4f9a2b7c";

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| {
        Detector::new(Options {
            pii: true,
            canaries: vec![CANARY.as_bytes().to_vec()],
            ..Options::default()
        })
        .expect("detector")
    })
}

/// Every string in a JSON value, keys included.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                out.push(k.clone());
                strings(x, out);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    // A document from the input: its bytes as one string, with the canary
    // planted (escaped character by character when `how` says so).
    let text = String::from_utf8_lossy(rest);
    let at = usize::from(how) % (text.chars().count() + 1);
    let mut planted: String = text.chars().take(at).collect();
    planted.push_str(CANARY);
    planted.extend(text.chars().skip(at));
    let mut body =
        serde_json::to_string(&serde_json::json!({"messages": [{"content": planted}], "n": 1}))
            .expect("serialize");
    if how & 1 == 1 {
        let escaped: String = CANARY
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        body = body.replacen(CANARY, &escaped, 1);
    }
    let mut map = Placeholders::with_key([5; 32]);
    let (out, _) =
        redact_json(detector(), &mut map, Style::Typed, body.as_bytes()).expect("valid JSON in");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON out");
    let mut all = Vec::new();
    strings(&v, &mut all);
    for s in all {
        assert!(!s.contains(CANARY), "the canary survived in {s:?}");
    }
});
