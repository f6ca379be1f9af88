//! The streaming redactor never lets a registered canary through: whatever
//! the text around it, the form it is in (raw, base64 at any alignment,
//! URL-encoded, hex) and the way the stream is cut into chunks.
//!
//! `cargo +nightly fuzz run redact_stream` (from the repository root).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use cordon_detect::{canary_forms, check, Detector, Options, Placeholders, Redactor, Style};
use libfuzzer_sys::fuzz_target;

const CANARY: &[u8] = b"cordon-fuzz-canary-4f9a2b7c";

fn detector() -> Arc<Detector> {
    static D: OnceLock<Arc<Detector>> = OnceLock::new();
    Arc::clone(D.get_or_init(|| {
        Arc::new(
            Detector::new(Options {
                pii: true,
                canaries: vec![CANARY.to_vec()],
                ..Options::default()
            })
            .expect("detector"),
        )
    }))
}

/// The canary as an exfiltration would write it: chosen by `how`.
fn planted(how: u8, around: &[u8]) -> Vec<u8> {
    match how % 6 {
        0 => CANARY.to_vec(),
        // Base64 of the canary after 0, 1 or 2 other bytes.
        k @ 1..=3 => {
            let mut v = around[..usize::from(k - 1).min(around.len())].to_vec();
            v.extend_from_slice(CANARY);
            v.extend_from_slice(b" tail");
            check::base64_encode(&v).into_bytes()
        }
        4 => CANARY
            .iter()
            .flat_map(|b| format!("%{b:02X}").into_bytes())
            .collect(),
        _ => CANARY
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (ctl, rest) = data.split_at(4);
    let at = usize::from(u16::from_le_bytes([ctl[1], ctl[2]])) % (rest.len() + 1);
    let mut text = rest[..at].to_vec();
    text.extend_from_slice(&planted(ctl[0], rest));
    text.extend_from_slice(&rest[at..]);

    let map = Arc::new(Mutex::new(Placeholders::with_key([9; 32])));
    let mut r = Redactor::new(detector(), map, Style::Typed);
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = usize::from(ctl[3]);
    while i < text.len() {
        let n = 1 + k % 257;
        k = k.wrapping_mul(31).wrapping_add(usize::from(text[i]));
        let end = (i + n).min(text.len());
        r.push(&text[i..end], &mut out);
        i = end;
    }
    r.finish(&mut out);
    for form in canary_forms(CANARY) {
        assert!(
            !out.windows(form.len()).any(|w| w == form.as_slice()),
            "a canary form got through: {:?}",
            String::from_utf8_lossy(&form)
        );
    }
});
