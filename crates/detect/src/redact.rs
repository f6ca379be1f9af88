//! Redaction: findings replaced by placeholders that are consistent for a
//! session and can be mapped back; a streaming redactor that finds secrets
//! across chunk boundaries in bounded memory; and a JSON-aware mode that
//! redacts inside string values and emits valid JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::{Detector, Finding};

/// How a finding is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Style {
    /// `[REDACTED:github-pat#1]`: the rule and a number, the same number
    /// for the same secret throughout the session.
    #[default]
    Typed,
    /// A stand-in of the same length and shape: letters stay letters of
    /// the same case, digits stay digits, punctuation and a leading prefix
    /// (`ghp_`, `sk-ant-api03-`) stay as they are, so that parsers and SDKs
    /// still accept the text.
    FormatPreserving,
}

/// The session's map between secrets and their placeholders. Secret bytes
/// are overwritten when the map is dropped.
pub struct Placeholders {
    key: [u8; 32],
    by_secret: HashMap<Vec<u8>, Vec<u8>>,
    by_placeholder: HashMap<Vec<u8>, Vec<u8>>,
    counters: HashMap<String, u32>,
}

impl std::fmt::Debug for Placeholders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placeholders")
            .field("entries", &self.by_secret.len())
            .finish_non_exhaustive()
    }
}

impl Placeholders {
    /// A map whose format-preserving stand-ins are derived from `key`
    /// (random per session).
    pub fn with_key(key: [u8; 32]) -> Placeholders {
        Placeholders {
            key,
            by_secret: HashMap::new(),
            by_placeholder: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    /// A map keyed from the process's random hasher seed.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Placeholders {
        use std::hash::{BuildHasher, Hasher};
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x636f_7264_6f6e);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        Placeholders::with_key(key)
    }

    /// How many secrets have a placeholder.
    pub fn len(&self) -> usize {
        self.by_secret.len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.by_secret.is_empty()
    }

    /// The placeholder for `secret` found by `rule`.
    pub fn placeholder(&mut self, rule: &str, secret: &[u8], style: Style) -> Vec<u8> {
        if let Some(p) = self.by_secret.get(secret) {
            return p.clone();
        }
        let p = match style {
            Style::Typed => {
                let n = self.counters.entry(rule.to_owned()).or_insert(0);
                *n += 1;
                format!("[REDACTED:{rule}#{n}]").into_bytes()
            }
            Style::FormatPreserving => self.stand_in(secret),
        };
        self.by_secret.insert(secret.to_vec(), p.clone());
        self.by_placeholder.insert(p.clone(), secret.to_vec());
        p
    }

    fn stand_in(&self, secret: &[u8]) -> Vec<u8> {
        let keep = secret
            .iter()
            .take(16)
            .rposition(|&b| b == b'_' || b == b'-')
            .map_or(0, |i| i + 1);
        let mut out = secret.to_vec();
        for attempt in 0u32.. {
            let mut stream = Vec::new();
            let mut block = 0u32;
            for (i, b) in out.iter_mut().enumerate().skip(keep) {
                if i - keep >= stream.len() {
                    let mut h = Sha256::new();
                    h.update(self.key);
                    h.update(secret);
                    h.update(attempt.to_le_bytes());
                    h.update(block.to_le_bytes());
                    block += 1;
                    stream.extend_from_slice(&h.finalize());
                }
                let r = stream[i - keep];
                let orig = secret[i];
                *b = if orig.is_ascii_digit() {
                    b'0' + r % 10
                } else if orig.is_ascii_lowercase() {
                    b'a' + r % 26
                } else if orig.is_ascii_uppercase() {
                    b'A' + r % 26
                } else {
                    orig
                };
            }
            if out != secret && !self.by_placeholder.contains_key(&out) {
                break;
            }
        }
        out
    }

    /// The longest placeholder given out so far (0 for none): what a
    /// stream being rehydrated must hold back.
    pub fn longest(&self) -> usize {
        self.by_placeholder.keys().map(Vec::len).max().unwrap_or(0)
    }

    /// `text` with every placeholder this map gave out replaced by its
    /// secret again (for responses that echo them).
    pub fn rehydrate(&self, text: &[u8]) -> Vec<u8> {
        if self.by_placeholder.is_empty() {
            return text.to_vec();
        }
        let keys: Vec<&Vec<u8>> = self.by_placeholder.keys().collect();
        let Ok(ac) = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&keys)
        else {
            return text.to_vec();
        };
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for m in ac.find_iter(text) {
            out.extend_from_slice(&text[at..m.start()]);
            out.extend_from_slice(&self.by_placeholder[keys[m.pattern().as_usize()]]);
            at = m.end();
        }
        out.extend_from_slice(&text[at..]);
        out
    }
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        for (mut s, _) in self.by_secret.drain() {
            s.fill(0);
            std::hint::black_box(&s);
        }
        for (_, mut s) in self.by_placeholder.drain() {
            s.fill(0);
            std::hint::black_box(&s);
        }
    }
}

/// Writes `text` with `findings` (ordered, not overlapping, inside it)
/// replaced.
fn replace(
    text: &[u8],
    findings: &[Finding],
    map: &mut Placeholders,
    style: Style,
    out: &mut Vec<u8>,
) {
    let mut at = 0;
    for f in findings {
        out.extend_from_slice(&text[at..f.start]);
        out.extend_from_slice(&map.placeholder(&f.rule, &text[f.start..f.end], style));
        at = f.end;
    }
    out.extend_from_slice(&text[at..]);
}

/// Redacts a stream fed in chunks of any size. Bytes are held back until
/// no secret can span them and the bytes still to come (at most the
/// detector's [`Detector::max_len`] plus one step), so a secret split
/// across chunks is found whole; memory stays bounded however long the
/// stream is.
#[derive(Debug)]
pub struct Redactor {
    detector: Arc<Detector>,
    map: Arc<Mutex<Placeholders>>,
    style: Style,
    held: Vec<u8>,
    hold: usize,
    step: usize,
    found: usize,
}

impl Redactor {
    /// A redactor using `map` (shared by the session's redactors).
    pub fn new(detector: Arc<Detector>, map: Arc<Mutex<Placeholders>>, style: Style) -> Redactor {
        let hold = detector.max_len();
        Redactor {
            detector,
            map,
            style,
            held: Vec::new(),
            hold,
            step: (hold / 2).max(4096),
            found: 0,
        }
    }

    /// How many findings were replaced so far.
    pub fn found(&self) -> usize {
        self.found
    }

    /// Feeds a chunk; appends to `out` what is safe to pass on.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.held.extend_from_slice(chunk);
        if self.held.len() >= self.hold + self.step {
            self.emit(false, out);
        }
    }

    /// Ends the stream: appends the rest.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.emit(true, out);
    }

    fn emit(&mut self, last: bool, out: &mut Vec<u8>) {
        let findings = self.detector.scan(&self.held);
        let safe = if last {
            self.held.len()
        } else {
            self.held.len() - self.hold
        };
        // A match whose secret is not wholly before `safe` is scanned again
        // next time from its start (its context included).
        let cut = findings
            .iter()
            .filter(|f| f.end > safe)
            .map(|f| f.match_start.min(f.start))
            .fold(safe, usize::min);
        let done: Vec<Finding> = findings.into_iter().filter(|f| f.end <= cut).collect();
        self.found += done.len();
        match self.map.lock() {
            Ok(mut map) => replace(&self.held[..cut], &done, &mut map, self.style, out),
            Err(poisoned) => replace(
                &self.held[..cut],
                &done,
                &mut poisoned.into_inner(),
                self.style,
                out,
            ),
        }
        self.held.drain(..cut);
    }
}

/// Redacts a whole text at once; returns it and what was replaced.
pub fn redact(
    detector: &Detector,
    map: &mut Placeholders,
    style: Style,
    text: &[u8],
) -> (Vec<u8>, Vec<Finding>) {
    let findings = detector.scan(text);
    let mut out = Vec::with_capacity(text.len());
    replace(text, &findings, map, style, &mut out);
    (out, findings)
}
