//! Canaries: exact registered values (honeytokens, and every real secret
//! the broker injects), found raw and in the encodings an exfiltration
//! would use: base64 and base64url (at each of the three alignments a value
//! can have inside a longer encoded text), URL-encoding (upper- and
//! lower-case hex), and hex.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::{check, Confidence, Error, Finding, Kind};

/// Shorter values would be found by chance.
pub const MIN_CANARY: usize = 8;

#[derive(Debug)]
pub(crate) struct Canaries {
    ac: AhoCorasick,
    longest: usize,
    shortest: usize,
    id: Arc<str>,
}

/// Every form of `v` to look for.
pub(crate) fn forms(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![v.to_vec()];
    for shift in 0..3usize {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(v);
        let enc = check::base64_encode(&padded);
        // Characters that depend only on `v`'s bytes: skip those mixed with
        // the unknown bytes before (the shift) and after (a partial group).
        let first = match shift {
            0 => 0,
            1 => 2,
            _ => 3,
        };
        let last = padded.len() / 3 * 4;
        if last > first + 4 {
            let stable = enc.as_bytes()[first..last].to_vec();
            let url: Vec<u8> = stable
                .iter()
                .map(|&b| match b {
                    b'+' => b'-',
                    b'/' => b'_',
                    b => b,
                })
                .collect();
            if url != stable {
                out.push(url);
            }
            out.push(stable);
        }
    }
    for upper in [true, false] {
        // RFC 3986 unreserved characters left as they are, and every
        // non-alphanumeric encoded (encoders differ).
        let mut pct = Vec::with_capacity(v.len() * 3);
        let mut strict = Vec::with_capacity(v.len() * 3);
        let mut hex = Vec::with_capacity(v.len() * 2);
        for &b in v {
            let digits = if upper {
                b"0123456789ABCDEF"
            } else {
                b"0123456789abcdef"
            };
            let enc = [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]];
            hex.extend_from_slice(&enc);
            if b.is_ascii_alphanumeric() {
                pct.push(b);
                strict.push(b);
            } else {
                strict.push(b'%');
                strict.extend_from_slice(&enc);
                if b"-._~".contains(&b) {
                    pct.push(b);
                } else {
                    pct.push(b'%');
                    pct.extend_from_slice(&enc);
                }
            }
        }
        out.push(hex);
        for form in [pct, strict] {
            if form != v {
                out.push(form);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Canaries {
    pub fn new(values: &[Vec<u8>]) -> Result<Canaries, Error> {
        let mut patterns = Vec::new();
        for v in values {
            if v.len() < MIN_CANARY {
                return Err(Error::ShortCanary {
                    min: MIN_CANARY,
                    got: v.len(),
                });
            }
            patterns.extend(forms(v));
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let shortest = patterns.iter().map(Vec::len).min().unwrap_or(0);
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| Error::Automaton(e.to_string()))?;
        Ok(Canaries {
            ac,
            longest,
            shortest,
            id: Arc::from("canary"),
        })
    }

    pub fn max_len(&self) -> usize {
        self.longest
    }

    pub fn min_len(&self) -> usize {
        self.shortest
    }

    pub fn scan(&self, hay: &[u8], out: &mut Vec<Finding>) {
        for m in self.ac.find_iter(hay) {
            out.push(Finding {
                rule: Arc::clone(&self.id),
                kind: Kind::Canary,
                start: m.start(),
                end: m.end(),
                match_start: m.start(),
                confidence: Confidence::High,
            });
        }
    }
}
