//! Finding the rules' keywords in one fast pass per group: SIMD "Teddy"
//! searchers (at most 40 literals each, matched exactly) for the built-in
//! keywords, and an Aho-Corasick automaton (ASCII case-insensitive) for
//! imported rules' keywords, as gitleaks matches them. Built-in keywords
//! that are lower-case words (`token`, `secret`) are also looked for
//! capitalized and in upper case; the others are formats' own prefixes
//! (`ghp_`, `AKIA`), matched as written.

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::Error;

/// The most literals one Teddy searcher gets. Fewer passes over the text
/// beat smaller groups once the groups are evened out: 113 built-in
/// literals in 3 groups of 38 scanned ~510 MiB/s, in 4 of 32 ~335, in 2 of
/// 57-64 ~410 (criterion, interleaved; docs/PERFORMANCE.md).
const GROUP_MAX: usize = 40;

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
        exact.sort();
        exact.dedup();
        let mut packed_searchers = Vec::new();
        // As few groups as the limit allows, of even size.
        let groups = exact.len().div_ceil(GROUP_MAX).max(1);
        let size = exact.len().div_ceil(groups).max(1);
        for group in exact.chunks(size) {
            let mut builder = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostLongest)
                .builder();
            builder.extend(group.iter().map(|(p, _)| p));
            match builder.build() {
                Some(s) => packed_searchers.push((s, group.iter().map(|(_, k)| *k).collect())),
                // No SIMD here: the automaton takes them.
                None => leftover.extend(group.iter().cloned()),
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
