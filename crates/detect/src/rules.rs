//! Rules: cordon's own format (the built-in set in `data/secrets.toml`),
//! rules imported from a gitleaks TOML configuration, and their compiled
//! form. A rule is a byte regex (ASCII classes, no Unicode tables) that is
//! only run near one of its keywords.

use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};
use regex_automata::{meta, util::syntax, Input};
use serde::Deserialize;

use crate::{check, Confidence, Error, Finding, Kind};

/// A rule as written (cordon's format; see `data/secrets.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable identifier.
    pub id: String,
    /// What it detects.
    #[serde(default)]
    pub title: String,
    /// Literals one of which must occur near a match; none: the regex runs
    /// over everything (slow, for imported rules only).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Lower-case words that, as written, capitalized or in upper case,
    /// also wake the rule.
    #[serde(default)]
    pub words: Vec<String>,
    /// The format.
    pub regex: String,
    /// The capture group that is the secret.
    #[serde(default)]
    pub group: Option<usize>,
    /// Minimum Shannon entropy of the secret.
    #[serde(default)]
    pub entropy: Option<f64>,
    /// A validity check the format carries.
    #[serde(default)]
    pub check: Option<Check>,
    /// How sure a match is.
    #[serde(default)]
    pub confidence: Option<Confidence>,
    /// Secrets containing one of these are placeholders.
    #[serde(default)]
    pub stopwords: Vec<String>,
    /// Regexes that, matching the secret (or the match, or its line, per
    /// `allow_target`), make it allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// What `allow` applies to.
    #[serde(default)]
    pub allow_target: AllowTarget,
    /// Regexes over file paths where the rule does not apply.
    #[serde(default)]
    pub allow_paths: Vec<String>,
    /// Bytes searched before a keyword.
    #[serde(default)]
    pub back: Option<usize>,
    /// Bytes searched after a keyword.
    #[serde(default)]
    pub window: Option<usize>,
    /// Texts the rule must find a secret in (checked by the tests).
    #[serde(default)]
    pub examples: Vec<String>,
    /// Texts the rule must find nothing in.
    #[serde(default)]
    pub not_examples: Vec<String>,
}

/// A format's own validity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// GitHub's CRC-32 suffix; a miss lowers the confidence to low.
    GithubCrc32,
    /// A JWT header that decodes to JSON with `alg`; a miss drops the match.
    Jwt,
}

/// What an allowlist regex is matched against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowTarget {
    /// The secret.
    #[default]
    Secret,
    /// The whole match.
    Match,
    /// The line the match is on.
    Line,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RuleSpec>,
}

/// The built-in rules.
pub fn builtin() -> Result<Vec<RuleSpec>, Error> {
    parse(include_str!("../data/secrets.toml"), "built-in rules")
}

/// Parses rules in cordon's format; `origin` names the text in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<RuleSpec>, Error> {
    toml::from_str::<RuleFile>(text)
        .map(|f| f.rule)
        .map_err(|e| Error::Rules {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
}

/// A gitleaks configuration, the parts cordon reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksFile {
    #[serde(default)]
    rules: Vec<GitleaksRule>,
    #[serde(default)]
    allowlist: Option<GitleaksAllow>,
    #[serde(default)]
    allowlists: Vec<GitleaksAllow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksRule {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlist: Option<GitleaksAllow>,
    #[serde(default)]
    allowlists: Vec<GitleaksAllow>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GitleaksAllow {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regex_target: Option<String>,
}

/// Rules read from a gitleaks TOML configuration (`[[rules]]` with `id`,
/// `regex`, `secretGroup`, `entropy`, `keywords` and allowlists; global
/// allowlists apply to every rule). Rules without a regex (file-name
/// rules) are skipped and named in the returned notes.
pub fn from_gitleaks(text: &str, origin: &str) -> Result<(Vec<RuleSpec>, Vec<String>), Error> {
    let file: GitleaksFile = toml::from_str(text).map_err(|e| Error::Rules {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let global: Vec<GitleaksAllow> = file.allowlist.into_iter().chain(file.allowlists).collect();
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for r in file.rules {
        let Some(regex) = r.regex else {
            notes.push(format!(
                "{origin}: rule {} has no regex (a file-name rule): skipped",
                r.id
            ));
            continue;
        };
        let mut spec = RuleSpec {
            id: r.id,
            title: r.description,
            keywords: r.keywords,
            words: Vec::new(),
            regex,
            group: r.secret_group.filter(|&g| g > 0),
            entropy: r.entropy,
            check: None,
            confidence: Some(Confidence::Medium),
            stopwords: Vec::new(),
            allow: Vec::new(),
            allow_target: AllowTarget::Secret,
            allow_paths: Vec::new(),
            back: None,
            window: None,
            examples: Vec::new(),
            not_examples: Vec::new(),
        };
        for a in r.allowlist.iter().chain(&r.allowlists).chain(&global) {
            spec.stopwords.extend(a.stopwords.iter().cloned());
            spec.allow.extend(a.regexes.iter().cloned());
            spec.allow_paths.extend(a.paths.iter().cloned());
            spec.allow_target = match a.regex_target.as_deref() {
                Some("match") => AllowTarget::Match,
                Some("line") => AllowTarget::Line,
                _ => spec.allow_target,
            };
        }
        out.push(spec);
    }
    Ok((out, notes))
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: Arc<str>,
    pub title: String,
    pub keywords: Vec<String>,
    pub words: Vec<String>,
    regex: meta::Regex,
    group: usize,
    entropy: f64,
    check: Option<Check>,
    confidence: Confidence,
    stopwords: Vec<Vec<u8>>,
    allow: Vec<Regex>,
    allow_target: AllowTarget,
    allow_paths: Vec<Regex>,
    pub back: usize,
    pub window: usize,
    /// The fewest bytes a match of the regex takes.
    pub min_len: usize,
}

fn compile(pattern: &str, what: &str, id: &str) -> Result<Regex, Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(16 << 20)
        .build()
        .map_err(|e| Error::Regex {
            rule: id.to_owned(),
            what: what.to_owned(),
            message: e.to_string(),
        })
}

impl Rule {
    pub fn compile(spec: &RuleSpec) -> Result<Rule, Error> {
        if spec.id.is_empty()
            || !spec
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Regex {
                rule: spec.id.clone(),
                what: "id".into(),
                message: "a rule id is letters, digits, '-' and '_'".into(),
            });
        }
        let back = spec.back.unwrap_or(128);
        let window = spec.window.unwrap_or(512);
        // A rule woken by words (`token`, `secret`: everywhere in code)
        // searches its few hundred bytes with the lazy DFA alone: the
        // regex's own literal search would only find the word again
        // (12 % fewer instructions on source code, measured with
        // cachegrind; docs/PERFORMANCE.md).
        let prefilter = spec.words.is_empty() || back + window > 1024;
        let regex = meta::Regex::builder()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(
                meta::Config::new()
                    .utf8_empty(false)
                    .nfa_size_limit(Some(16 << 20))
                    .auto_prefilter(prefilter),
            )
            .build(&spec.regex)
            .map_err(|e| Error::Regex {
                rule: spec.id.clone(),
                what: "regex".into(),
                message: e
                    .syntax_error()
                    .map_or_else(|| e.to_string(), ToString::to_string),
            })?;
        let groups = regex
            .group_info()
            .group_len(regex_automata::PatternID::ZERO);
        let group = spec.group.unwrap_or(if groups > 1 { 1 } else { 0 });
        let min_len = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&spec.regex)
            .ok()
            .and_then(|h| h.properties().minimum_len())
            .unwrap_or(0);
        if group >= groups {
            return Err(Error::Regex {
                rule: spec.id.clone(),
                what: "group".into(),
                message: format!("the regex has no capture group {group}"),
            });
        }
        Ok(Rule {
            id: Arc::from(spec.id.as_str()),
            title: spec.title.clone(),
            keywords: spec.keywords.clone(),
            words: spec.words.clone(),
            regex,
            group,
            entropy: spec.entropy.unwrap_or(0.0),
            check: spec.check,
            confidence: spec.confidence.unwrap_or(Confidence::High),
            stopwords: spec
                .stopwords
                .iter()
                .map(|s| s.to_ascii_lowercase().into_bytes())
                .collect(),
            allow: spec
                .allow
                .iter()
                .map(|a| compile(a, "allowlist regex", &spec.id))
                .collect::<Result<_, _>>()?,
            allow_target: spec.allow_target,
            allow_paths: spec
                .allow_paths
                .iter()
                .map(|a| compile(a, "allowlist path", &spec.id))
                .collect::<Result<_, _>>()?,
            back,
            window,
            min_len,
        })
    }

    /// Whether the rule is switched off for files at `path`.
    pub fn allowed_path(&self, path: &str) -> bool {
        self.allow_paths.iter().any(|r| r.is_match(path.as_bytes()))
    }

    /// Finds the rule's secrets whose match starts in `lo..hi` of `hay`
    /// (the text before `lo` is context for `\b`; matches end by `hi`).
    pub fn find(&self, hay: &[u8], lo: usize, hi: usize, out: &mut Vec<Finding>) {
        let hay = &hay[..hi];
        let mut caps = self.regex.create_captures();
        let mut at = lo;
        while at <= hay.len() {
            self.regex
                .search_captures(&Input::new(hay).range(at..), &mut caps);
            let Some(m) = caps.get_match() else {
                break;
            };
            let (ms, me) = (m.start(), m.end());
            at = if me > ms { me } else { me + 1 };
            let Some(span) = caps.get_group(self.group) else {
                continue;
            };
            let (ss, se) = (span.start, span.end);
            if let Some(confidence) = self.judge(hay, (ms, me), (ss, se)) {
                out.push(Finding {
                    rule: Arc::clone(&self.id),
                    kind: Kind::Secret,
                    start: ss,
                    end: se,
                    match_start: ms,
                    confidence,
                });
            }
        }
    }

    /// Applies entropy, stopwords, allowlists and the format check to a
    /// match; its confidence if it stands.
    fn judge(&self, hay: &[u8], m: (usize, usize), s: (usize, usize)) -> Option<Confidence> {
        let secret = &hay[s.0..s.1];
        if secret.is_empty() || check::entropy(secret) < self.entropy {
            return None;
        }
        if !self.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            if self
                .stopwords
                .iter()
                .any(|w| memchr::memmem::find(&lower, w).is_some())
            {
                return None;
            }
        }
        if !self.allow.is_empty() {
            let target = match self.allow_target {
                AllowTarget::Secret => secret,
                AllowTarget::Match => &hay[m.0..m.1],
                AllowTarget::Line => {
                    let start = memchr::memrchr(b'\n', &hay[..m.0]).map_or(0, |i| i + 1);
                    let end = memchr::memchr(b'\n', &hay[m.1..]).map_or(hay.len(), |i| m.1 + i);
                    &hay[start..end]
                }
            };
            if self.allow.iter().any(|r| r.is_match(target)) {
                return None;
            }
        }
        match self.check {
            Some(Check::GithubCrc32) if !check::github_crc32(secret) => Some(Confidence::Low),
            Some(Check::Jwt) if !check::jwt(secret) => None,
            _ => Some(self.confidence),
        }
    }
}
