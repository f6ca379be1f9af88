//! cordon-detect: finds credentials, personal data and registered canary
//! values in bytes, and redacts them, also in streams.
//!
//! Sans-IO: a [`Detector`] takes bytes and returns [`Finding`]s; a
//! [`Redactor`] takes chunks and returns safe chunks. It is the engine of
//! cordon's egress DLP, of the redaction of prompts sent to model APIs, and
//! of the incident canaries; `cordon scan` and `cordon redact` put it on the
//! command line.
//!
//! How it stays fast: every credential rule names literals (keywords),
//! found by a few SIMD passes (see `prefilter`); a rule's regex (bytes,
//! ASCII classes) only runs in a window around its keywords' hits. Personal data is found by hand-written scanners with checksums
//! (Luhn, mod-97), and canaries by a second automaton over every encoding
//! of each registered value.
//!
//! What it does not do: it does not decode compressed or encrypted content,
//! and it finds a credential only in a format some rule describes (the
//! generic rule needs a `key`/`secret`/`token`/`password`-like name next to
//! a random-looking quoted value). Findings never carry the secret itself
//! in their text output; [`Finding::preview`] masks it.

#![forbid(unsafe_code)]

mod canary;

pub use canary::MIN_CANARY;
pub mod check;
mod json;
mod pii;
mod prefilter;
mod redact;
pub mod rules;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use json::{redact_json, NotJson};
pub use redact::{redact, Placeholders, Redactor, Style};
pub use rules::RuleSpec;

/// What was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A credential.
    Secret,
    /// Personal data.
    Pii,
    /// A registered canary (honeytoken or injected real secret).
    Canary,
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// The format fits but its own check fails (a test fixture, most
    /// likely).
    Low,
    /// The value fits a format that needs context to be sure.
    Medium,
    /// A distinctive format, checked where it can be.
    High,
}

/// One finding: a byte span of the scanned text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id (`github-pat`, `email`, `canary`, ...).
    pub rule: Arc<str>,
    /// Secret, PII or canary.
    pub kind: Kind,
    /// Start of the secret (byte offset).
    pub start: usize,
    /// End of the secret (exclusive).
    pub end: usize,
    /// Start of the whole match, with the context the rule needed before
    /// the secret (a `password = ` before the value); at most `start`.
    #[serde(skip)]
    pub match_start: usize,
    /// How sure it is.
    pub confidence: Confidence,
}

impl Finding {
    /// A masked preview of the secret in `hay`: a few leading characters
    /// and the length, never the whole value.
    pub fn preview(&self, hay: &[u8]) -> String {
        mask(hay.get(self.start..self.end).unwrap_or_default())
    }
}

/// Every form in which a canary `value` is looked for: itself, base64 and
/// base64url at each alignment (the characters that depend on it alone),
/// URL-encoded and hex.
pub fn canary_forms(value: &[u8]) -> Vec<Vec<u8>> {
    canary::forms(value)
}

/// A masked form of `secret`: its first characters (4 of a long one, 2 of
/// a shorter one, none of a short one), then its length.
pub fn mask(secret: &[u8]) -> String {
    let keep = match secret.len() {
        0..=7 => 0,
        8..=19 => 2,
        _ => 4,
    };
    let shown: String = secret[..keep]
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    format!("{shown}**** ({} bytes)", secret.len())
}

/// Errors in building a detector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rules file does not parse.
    #[error("{origin}: {message}")]
    Rules {
        /// Where the rules came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A rule's regex does not compile.
    #[error("rule {rule}: its {what} is not valid: {message}")]
    Regex {
        /// The rule.
        rule: String,
        /// Which of its patterns.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// Two rules share an id.
    #[error("rule id {0} is defined twice")]
    DuplicateRule(String),
    /// The keyword automaton could not be built.
    #[error("cannot build the keyword automaton: {0}")]
    Automaton(String),
    /// A canary is too short to be matched without false positives.
    #[error("a canary must be at least {min} bytes long (got {got})")]
    ShortCanary {
        /// The minimum.
        min: usize,
        /// Its length.
        got: usize,
    },
}

/// What a detector looks for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The built-in credential rules.
    pub builtin: bool,
    /// More credential rules (a user's file, gitleaks rules).
    pub extra_rules: Vec<RuleSpec>,
    /// Personal data: email, phone, card numbers, IBAN, US SSN.
    pub pii: bool,
    /// IP addresses as personal data (off by default: they are everywhere
    /// in logs and configs).
    pub ip: bool,
    /// Exact values to find in every encoding: raw, base64, URL-encoded,
    /// hex.
    pub canaries: Vec<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            builtin: true,
            extra_rules: Vec::new(),
            pii: false,
            ip: false,
            canaries: Vec::new(),
        }
    }
}

/// A compiled set of detectors; cheap to share (`Arc`) between threads.
#[derive(Debug)]
pub struct Detector {
    rules: Vec<rules::Rule>,
    keywords: Option<prefilter::Keywords>,
    /// For each keyword pattern, the rules it wakes.
    by_keyword: Vec<Vec<usize>>,
    /// Rules without keywords (run over everything).
    always: Vec<usize>,
    canaries: Option<canary::Canaries>,
    pii: Option<pii::Pii>,
    max_len: usize,
    /// The shortest finding: shorter text is not searched.
    min_len: usize,
    /// Values that are never findings (the placeholders cordon hands out
    /// look like the credentials they stand for).
    ignored: Vec<Vec<u8>>,
}

impl Detector {
    /// Builds a detector.
    pub fn new(opts: Options) -> Result<Detector, Error> {
        let mut specs = if opts.builtin {
            rules::builtin()?
        } else {
            Vec::new()
        };
        // Built-in keywords are matched as written (words also capitalized
        // and in upper case); imported ones case-insensitively.
        let exact_rules = specs.len();
        specs.extend(opts.extra_rules);
        let mut rules = Vec::with_capacity(specs.len());
        let mut seen = std::collections::HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.id.clone()) {
                return Err(Error::DuplicateRule(spec.id.clone()));
            }
            rules.push(rules::Rule::compile(spec)?);
        }
        // (text, how it is matched): exact, a word (three cases), folded.
        let mut keywords: Vec<(String, prefilter::Case)> = Vec::new();
        let mut by_keyword: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.keywords.is_empty() && r.words.is_empty() {
                always.push(i);
            }
            let imported = i >= exact_rules;
            let all = r
                .keywords
                .iter()
                .map(|k| {
                    if imported {
                        (k.to_ascii_lowercase(), prefilter::Case::Folded)
                    } else {
                        (k.clone(), prefilter::Case::Exact)
                    }
                })
                .chain(
                    r.words
                        .iter()
                        .map(|w| (w.to_ascii_lowercase(), prefilter::Case::Word)),
                );
            for k in all {
                match keywords.iter().position(|t| *t == k) {
                    Some(p) => by_keyword[p].push(i),
                    None => {
                        keywords.push(k);
                        by_keyword.push(vec![i]);
                    }
                }
            }
        }
        // The search reports one keyword per start position (the longest):
        // a hit also stands for every keyword inside it ("sk-" in "sk-or-").
        let by_keyword: Vec<Vec<usize>> = keywords
            .iter()
            .map(|(p, _)| {
                let p = p.to_ascii_lowercase();
                let mut all: Vec<usize> = keywords
                    .iter()
                    .enumerate()
                    .filter(|(_, (q, _))| p.contains(&q.to_ascii_lowercase()))
                    .flat_map(|(j, _)| by_keyword[j].iter().copied())
                    .collect();
                all.sort_unstable();
                all.dedup();
                all
            })
            .collect();
        let keywords = if keywords.is_empty() {
            None
        } else {
            Some(prefilter::Keywords::new(&keywords)?)
        };
        let canaries = if opts.canaries.is_empty() {
            None
        } else {
            Some(canary::Canaries::new(&opts.canaries)?)
        };
        let max_len = rules
            .iter()
            .map(|r| r.back + r.window)
            .chain(canaries.as_ref().map(canary::Canaries::max_len))
            .chain(Some(pii::MAX_LEN))
            .max()
            .unwrap_or(0);
        let min_len = rules
            .iter()
            .map(|r| r.min_len)
            .chain(canaries.as_ref().map(canary::Canaries::min_len))
            .chain(opts.pii.then(|| pii::min_len(opts.ip)))
            .min()
            .unwrap_or(usize::MAX)
            .max(1);
        Ok(Detector {
            rules,
            keywords,
            by_keyword,
            always,
            canaries,
            pii: opts.pii.then_some(pii::Pii { ip: opts.ip }),
            max_len,
            min_len,
            ignored: Vec::new(),
        })
    }

    /// The same detector, never reporting a finding whose secret is
    /// exactly one of `values`.
    pub fn ignoring(mut self, values: Vec<Vec<u8>>) -> Detector {
        self.ignored = values;
        self
    }

    /// The built-in credential rules only.
    pub fn builtin() -> Result<Detector, Error> {
        Detector::new(Options::default())
    }

    /// The ids of the credential rules, in order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.id)
    }

    /// The title of rule `id`, if it has one.
    pub fn rule_title(&self, id: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| &*r.id == id)
            .map(|r| r.title.as_str())
            .filter(|t| !t.is_empty())
    }

    /// The longest stretch of bytes one finding (with the context it needs)
    /// can span: what a streaming redactor must hold back.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The fewest bytes a finding takes: shorter text has none.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// Everything found in `hay`, ordered by position, without overlaps
    /// (where two findings overlap the stronger stays: a canary over a
    /// credential over personal data, then the more confident, then the
    /// longer).
    pub fn scan(&self, hay: &[u8]) -> Vec<Finding> {
        self.scan_path(None, hay)
    }

    /// [`Detector::scan`] for the contents of the file at `path`: rules
    /// whose allowlist names the path are skipped.
    pub fn scan_path(&self, path: Option<&str>, hay: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        if hay.len() < self.min_len {
            return out;
        }
        let skip = |r: &rules::Rule| path.is_some_and(|p| r.allowed_path(p));
        if let Some(kw) = &self.keywords {
            // Windows around keyword hits, merged per rule so that no byte
            // is searched twice by the same rule.
            let mut windows: Vec<(usize, usize, usize)> = Vec::new();
            kw.each(hay, |k, start, end| {
                for &i in &self.by_keyword[k] {
                    let r = &self.rules[i];
                    windows.push((
                        i,
                        start.saturating_sub(r.back),
                        (end + r.window).min(hay.len()),
                    ));
                }
            });
            windows.sort_unstable();
            let mut current: Option<(usize, usize, usize)> = None;
            for (i, lo, hi) in windows {
                match &mut current {
                    Some((ci, _, chi)) if *ci == i && lo <= *chi => *chi = (*chi).max(hi),
                    slot => {
                        if let Some((ci, clo, chi)) = slot.replace((i, lo, hi)) {
                            if !skip(&self.rules[ci]) {
                                self.rules[ci].find(hay, clo, chi, &mut out);
                            }
                        }
                    }
                }
            }
            if let Some((ci, clo, chi)) = current {
                if !skip(&self.rules[ci]) {
                    self.rules[ci].find(hay, clo, chi, &mut out);
                }
            }
        }
        for &i in &self.always {
            if !skip(&self.rules[i]) {
                self.rules[i].find(hay, 0, hay.len(), &mut out);
            }
        }
        if let Some(p) = &self.pii {
            p.scan(hay, &mut out);
        }
        if let Some(c) = &self.canaries {
            c.scan(hay, &mut out);
        }
        if !self.ignored.is_empty() {
            out.retain(|f| {
                let secret = hay.get(f.start..f.end).unwrap_or_default();
                !self.ignored.iter().any(|v| v.as_slice() == secret)
            });
        }
        resolve(out)
    }
}

/// Orders findings and removes overlaps, keeping the stronger of two.
fn resolve(mut all: Vec<Finding>) -> Vec<Finding> {
    all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    all.dedup_by(|a, b| a.start == b.start && a.end == b.end && a.rule == b.rule);
    let rank = |k: Kind| match k {
        Kind::Canary => 2,
        Kind::Secret => 1,
        Kind::Pii => 0,
    };
    let strength = |f: &Finding| (rank(f.kind), f.confidence, f.end - f.start);
    let mut out: Vec<Finding> = Vec::with_capacity(all.len());
    for f in all {
        match out.last_mut() {
            Some(last) if f.start < last.end => {
                if strength(&f) > strength(last) {
                    *last = f;
                    // The replacement may now overlap earlier ones too.
                    while out.len() >= 2 {
                        let n = out.len();
                        if out[n - 2].end <= out[n - 1].start {
                            break;
                        }
                        if strength(&out[n - 1]) > strength(&out[n - 2]) {
                            out.remove(n - 2);
                        } else {
                            out.pop();
                        }
                    }
                }
            }
            _ => out.push(f),
        }
    }
    out
}

#[cfg(test)]
mod tests;
