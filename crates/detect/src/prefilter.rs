//! Finding the rules' keywords in a few fast passes: SIMD "Teddy"
//! searchers (slim, 8 buckets, literals matched exactly) for the built-in
//! keywords, and an Aho-Corasick automaton (ASCII case-insensitive) for
//! imported rules' keywords, as gitleaks matches them. Built-in keywords
//! that are lower-case words (`token`, `secret`) are also looked for
//! capitalized and in upper case; the others are formats' own prefixes
//! (`ghp_`, `AKIA`), matched as written.

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::Error;

/// The most fingerprints (see [`fingerprint`]) one Teddy searcher gets.
/// A pass costs about the same whatever it holds until its buckets crowd:
/// with the built-in keywords in searchers of at most 20, 28 and 40 the
/// source scan ran ~820, ~670 and ~750 MiB/s (criterion, interleaved;
/// docs/PERFORMANCE.md).
const FINGERPRINT_MAX: usize = 20;

#[derive(Debug)]
pub(crate) struct Keywords {
    packed: Vec<(packed::Searcher, Vec<usize>)>,
    /// Keywords shorter than three bytes, each found on its own (in a
    /// Teddy group one would cut the group's filter to two bytes).
    short: Vec<(memchr::memmem::Finder<'static>, usize)>,
    general: Option<(AhoCorasick, Vec<usize>)>,
}

/// How a keyword is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// As written (a format's own prefix).
    Exact,
    /// A lower-case word: as written, capitalized and in upper case.
    Word,
    /// ASCII case-insensitively (imported rules).
    Folded,
}

/// What Teddy filters a literal on: the low halves of its first four
/// bytes. Literals with the same one share a bucket (the forms of a word
/// do: case is in the high half), so it is these, not the literals, that
/// crowd a searcher.
fn fingerprint(p: &[u8]) -> Vec<u8> {
    p.iter().take(4).map(|b| b & 0x0f).collect()
}

/// Splits `class` into the fewest searchers of at most [`FINGERPRINT_MAX`]
/// fingerprints each, evened out.
fn groups(mut class: Vec<(Vec<u8>, usize)>) -> Vec<Vec<(Vec<u8>, usize)>> {
    class.sort_by(|a, b| fingerprint(&a.0).cmp(&fingerprint(&b.0)).then(a.cmp(b)));
    class.dedup();
    let mut prints: Vec<Vec<u8>> = class.iter().map(|(p, _)| fingerprint(p)).collect();
    prints.dedup();
    let n = prints.len().div_ceil(FINGERPRINT_MAX).max(1);
    let per = prints.len().div_ceil(n).max(1);
    let mut out: Vec<Vec<(Vec<u8>, usize)>> = vec![Vec::new(); n];
    let mut index = 0;
    let mut last: Option<Vec<u8>> = None;
    for lit in class {
        let f = fingerprint(&lit.0);
        if last.as_ref().is_some_and(|l| *l != f) {
            index += 1;
        }
        last = Some(f);
        out[index / per].push(lit);
    }
    out.retain(|g| !g.is_empty());
    out
}

/// The forms of a word that are looked for.
fn word_forms(word: &str) -> Vec<Vec<u8>> {
    let mut cap = word.as_bytes().to_vec();
    if let Some(first) = cap.first_mut() {
        *first = first.to_ascii_uppercase();
    }
    vec![
        word.as_bytes().to_vec(),
        cap,
        word.to_ascii_uppercase().into_bytes(),
    ]
}

impl Keywords {
    /// Builds the searchers for `keywords` (text, how it is matched); a
    /// hit reports the keyword's index.
    pub fn new(keywords: &[(String, Case)]) -> Result<Keywords, Error> {
        let mut exact: Vec<(Vec<u8>, usize)> = Vec::new();
        let mut short = Vec::new();
        let mut leftover: Vec<(Vec<u8>, usize)> = Vec::new();
        for (id, (k, case)) in keywords.iter().enumerate() {
            match case {
                Case::Exact if k.len() < 3 => {
                    short.push((memchr::memmem::Finder::new(k.as_bytes()).into_owned(), id));
                }
                Case::Exact => exact.push((k.as_bytes().to_vec(), id)),
                Case::Word => exact.extend(word_forms(k).into_iter().map(|f| (f, id))),
                Case::Folded => leftover.push((k.as_bytes().to_vec(), id)),
            }
        }
        // Teddy filters on the first min(4, shortest literal) bytes of its
        // literals, so three-byte literals get their own searchers rather
        // than weakening the filter of the longer ones.
        let (three, long): (Vec<_>, Vec<_>) = exact.into_iter().partition(|(p, _)| p.len() == 3);
        let mut packed_searchers = Vec::new();
        for class in [three, long] {
            for group in groups(class) {
                // Slim Teddy (8 buckets, 32 bytes a step) even past 32
                // literals: the fingerprints, not the literals, fill the
                // buckets, and fat Teddy steps 16 bytes.
                let mut builder = packed::Config::new()
                    .match_kind(packed::MatchKind::LeftmostLongest)
                    .only_teddy_fat(Some(false))
                    .builder();
                builder.extend(group.iter().map(|(p, _)| p));
                match builder.build() {
                    Some(s) => {
                        packed_searchers.push((s, group.iter().map(|(_, k)| *k).collect()));
                    }
                    // No SIMD here: the automaton takes them.
                    None => leftover.extend(group.iter().cloned()),
                }
            }
        }
        let general = if leftover.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(leftover.iter().map(|(p, _)| p))
                .map_err(|e| Error::Automaton(e.to_string()))?;
            Some((ac, leftover.iter().map(|(_, k)| *k).collect()))
        };
        Ok(Keywords {
            packed: packed_searchers,
            short,
            general,
        })
    }

    /// Calls `f(keyword id, start, end)` for every keyword occurrence (one
    /// per start position and group: the longest).
    pub fn each(&self, hay: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        for (s, ids) in &self.packed {
            let mut from = 0;
            while from < hay.len() {
                let Some(m) = s.find_in(hay, aho_corasick::Span::from(from..hay.len())) else {
                    break;
                };
                f(ids[m.pattern().as_usize()], m.start(), m.end());
                from = m.start() + 1;
            }
        }
        for (finder, id) in &self.short {
            let n = finder.needle().len();
            for at in finder.find_iter(hay) {
                f(*id, at, at + n);
            }
        }
        if let Some((ac, ids)) = &self.general {
            let mut from = 0;
            while let Some(m) = ac.find(aho_corasick::Input::new(hay).span(from..hay.len())) {
                f(ids[m.pattern().as_usize()], m.start(), m.end());
                from = m.start() + 1;
            }
        }
    }
}
