//! Detection rules over audit records: data, not code. A rule names the
//! record classes it looks at, conditions on record fields (equality, a
//! list of values, a glob, a regex, presence, a canary value), and
//! optionally a count of matching records within a time window. When it
//! fires, the caller writes a Detection Finding and carries out the rule's
//! action (`alert`, or `contain`).
//!
//! The engine is sans-IO: records go in as JSON values, findings come out.
//! Detection Finding records themselves are never matched (a finding that
//! quotes a canary would otherwise fire again).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::{Class, Severity};

/// The built-in rules (crates/audit/rules/builtin.toml).
pub const BUILTIN: &str = include_str!("../rules/builtin.toml");

/// Findings one rule may raise in a session; later ones are counted, not
/// written (a loop of `curl` must not flood the record).
pub const MAX_FINDINGS: u32 = 100;

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Write a Detection Finding and tell the user.
    Alert,
    /// That, and stop the session's processes.
    Contain,
}

impl Action {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Contain => "contain",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    severity: String,
    #[serde(default = "alert")]
    action: Action,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    tiers: Vec<String>,
    #[serde(default, rename = "match")]
    conditions: Vec<CondSpec>,
    count: Option<u32>,
    window: Option<String>,
}

fn alert() -> Action {
    Action::Alert
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CondSpec {
    field: String,
    equals: Option<Value>,
    any_of: Option<Vec<Value>>,
    glob: Option<String>,
    regex: Option<String>,
    exists: Option<bool>,
    canary: Option<bool>,
    #[serde(default)]
    not: bool,
}

/// A rule, checked and compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its id (lower-case letters, digits and `-`).
    pub id: String,
    /// One line for people.
    pub title: String,
    /// More words, for the finding.
    pub description: String,
    /// The finding's severity.
    pub severity: Severity,
    /// What firing does.
    pub action: Action,
    /// The classes it looks at (all but findings when empty).
    pub classes: Vec<Class>,
    /// The risk tiers it applies in (all when empty).
    pub tiers: Vec<String>,
    conditions: Arc<[Cond]>,
    /// Matching records needed within `window_ns` (1: every one).
    pub count: u32,
    /// The window, in nanoseconds.
    pub window_ns: u64,
}

#[derive(Debug)]
struct Cond {
    path: Vec<String>,
    op: Op,
    not: bool,
}

#[derive(Debug)]
enum Op {
    Equals(String),
    AnyOf(Vec<String>),
    Glob(globset::GlobMatcher),
    /// Matched against a field's string, or (as bytes, with no UTF-8
    /// check of each record) against the whole record.
    Regex(regex::Regex, regex::bytes::Regex),
    Exists(bool),
    Canary,
}

/// The risk tiers a rule may name.
pub const TIERS: &[&str] = &["experiment", "approved", "high-risk"];

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `30s`, `5m`, `1h`, `250ms`.
fn duration_ns(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit).filter(|&v| v > 0)
}

impl Rule {
    fn compile(s: RuleSpec) -> Result<Rule, String> {
        let id = s.id.clone();
        let fail = |m: String| format!("rule {id}: {m}");
        if s.id.is_empty()
            || !s
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "rule id {:?}: use lower-case letters, digits and '-'",
                s.id
            ));
        }
        if s.title.trim().is_empty() {
            return Err(fail("the title is empty".into()));
        }
        let severity = match s.severity.as_str() {
            "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            other => {
                return Err(fail(format!(
                    "severity {other:?}: one of informational, low, medium, high, critical"
                )))
            }
        };
        let mut classes = Vec::new();
        for c in &s.classes {
            let class = Class::parse(c).ok_or_else(|| {
                let names: Vec<&str> = Class::ALL.iter().map(|c| c.short()).collect();
                fail(format!("class {c:?}: one of {}", names.join(", ")))
            })?;
            if class == Class::DetectionFinding {
                return Err(fail("rules never look at findings".into()));
            }
            classes.push(class);
        }
        for t in &s.tiers {
            if !TIERS.contains(&t.as_str()) {
                return Err(fail(format!("tier {t:?}: one of {}", TIERS.join(", "))));
            }
        }
        if s.conditions.is_empty() {
            return Err(fail(
                "no conditions: a rule needs at least one `match`".into(),
            ));
        }
        let mut conditions = Vec::new();
        for c in s.conditions {
            conditions.push(Cond::compile(c).map_err(fail)?);
        }
        let count = s.count.unwrap_or(1);
        if count == 0 {
            return Err(fail("count 0: use 1 or more".into()));
        }
        let window_ns = match (&s.window, count) {
            (Some(w), _) => duration_ns(w).ok_or_else(|| {
                fail(format!(
                    "window {w:?}: a number with ms, s, m or h (\"30s\")"
                ))
            })?,
            (None, 1) => 0,
            (None, _) => return Err(fail("count needs a window (\"30s\")".into())),
        };
        Ok(Rule {
            id: s.id,
            title: s.title,
            description: s.description,
            severity,
            action: s.action,
            classes,
            tiers: s.tiers,
            conditions: conditions.into(),
            count,
            window_ns,
        })
    }

    fn matches(&self, record: &Seen<'_>, line: &[u8], canary: Option<&CanaryCheck>) -> bool {
        self.conditions
            .iter()
            .all(|c| c.holds(record, line, canary))
    }
}

impl Cond {
    fn compile(c: CondSpec) -> Result<Cond, String> {
        let field = c.field.clone();
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(format!(
                "field {field:?}: a dotted path such as actor.process.name, or *"
            ));
        }
        let path: Vec<String> = if field == "*" {
            Vec::new()
        } else {
            field.split('.').map(str::to_owned).collect()
        };
        let mut ops = Vec::new();
        if let Some(v) = c.equals {
            ops.push(Op::Equals(scalar(&v).ok_or(format!(
                "field {field}: equals takes a string, number or boolean"
            ))?));
        }
        if let Some(vs) = c.any_of {
            let mut out = Vec::new();
            for v in vs {
                out.push(scalar(&v).ok_or(format!(
                    "field {field}: any_of takes strings, numbers or booleans"
                ))?);
            }
            ops.push(Op::AnyOf(out));
        }
        if let Some(g) = c.glob {
            let glob =
                globset::Glob::new(&g).map_err(|e| format!("field {field}: glob {g:?}: {e}"))?;
            ops.push(Op::Glob(glob.compile_matcher()));
        }
        if let Some(r) = c.regex {
            let re = regex::Regex::new(&r).map_err(|e| format!("field {field}: regex: {e}"))?;
            let bytes =
                regex::bytes::Regex::new(&r).map_err(|e| format!("field {field}: regex: {e}"))?;
            ops.push(Op::Regex(re, bytes));
        }
        if let Some(e) = c.exists {
            ops.push(Op::Exists(e));
        }
        if c.canary == Some(true) {
            ops.push(Op::Canary);
        } else if c.canary == Some(false) {
            return Err(format!(
                "field {field}: canary = false means nothing; use not = true"
            ));
        }
        if ops.len() != 1 {
            return Err(format!(
                "field {field}: give exactly one of equals, any_of, glob, regex, exists, canary"
            ));
        }
        let op = ops.remove(0);
        if path.is_empty() && !matches!(op, Op::Canary | Op::Regex(..)) {
            return Err("field \"*\" (the whole record) takes only regex or canary".into());
        }
        Ok(Cond {
            path,
            op,
            not: c.not,
        })
    }

    fn holds(&self, record: &Seen<'_>, line: &[u8], canary: Option<&CanaryCheck>) -> bool {
        let found = if self.path.is_empty() {
            match &self.op {
                Op::Canary => canary.is_some_and(|c| c(written_by_event(line))),
                Op::Regex(_, re) => re.is_match(line),
                _ => false,
            }
        } else {
            let mut leaves = Vec::new();
            collect(record.value(), &self.path, &mut leaves);
            match &self.op {
                Op::Exists(want) => leaves.iter().any(|v| !v.is_null()) == *want,
                op => leaves.iter().filter_map(|v| scalar(v)).any(|s| match op {
                    Op::Equals(want) => s == *want,
                    Op::AnyOf(set) => set.contains(&s),
                    Op::Glob(g) => g.is_match(&s),
                    Op::Regex(re, _) => re.is_match(&s),
                    Op::Canary => canary.is_some_and(|c| c(s.as_bytes())),
                    Op::Exists(_) => false,
                }),
            }
        };
        found != self.not
    }
}

/// A record without what the chain writes around every event: its
/// `seq` and `prev` (a hash) at the start, and the profile's digest at the
/// end. Those cannot carry anything from the sandbox, and their hex is
/// where a search for hex-encoded canaries spends most of its time.
fn written_by_event(line: &[u8]) -> &[u8] {
    // `prev` is the record's second member (its value 64 hex digits); a
    // string inside the record has its quotes escaped and cannot look
    // like it.
    let start =
        memchr::memmem::find(line, b"\"prev\":\"").map_or(0, |i| (i + 8 + 64).min(line.len()));
    let end = memchr::memmem::rfind(line, b"\"profile_digest\":\"")
        .filter(|&e| e >= start)
        .unwrap_or(line.len());
    &line[start..end]
}

/// The values at `path` (arrays on the way fan out).
fn collect<'v>(v: &'v Value, path: &[String], out: &mut Vec<&'v Value>) {
    match (path.split_first(), v) {
        (None, Value::Array(items)) => out.extend(items.iter()),
        (None, _) => out.push(v),
        (Some(_), Value::Array(items)) => {
            for i in items {
                collect(i, path, out);
            }
        }
        (Some((key, rest)), Value::Object(m)) => {
            if let Some(child) = m.get(key) {
                collect(child, rest, out);
            }
        }
        _ => {}
    }
}

/// A record as the engine sees it: class, seq and time known, its JSON
/// text, and the parsed value made on first use.
#[derive(Debug)]
pub struct Seen<'a> {
    /// The record's class.
    pub class: Class,
    /// Its seq.
    pub seq: u64,
    /// Its time.
    pub time_ns: u64,
    /// Its line (no newline).
    pub line: &'a [u8],
    value: std::sync::OnceLock<Value>,
}

impl<'a> Seen<'a> {
    /// A record whose value is parsed from `line` when a rule needs it.
    pub fn new(class: Class, seq: u64, time_ns: u64, line: &'a [u8]) -> Seen<'a> {
        Seen {
            class,
            seq,
            time_ns,
            line,
            value: std::sync::OnceLock::new(),
        }
    }

    /// The parsed record (null if the line is not JSON).
    pub fn value(&self) -> &Value {
        self.value
            .get_or_init(|| serde_json::from_slice(self.line).unwrap_or(Value::Null))
    }

    /// Whether the line has been parsed.
    pub fn parsed(&self) -> bool {
        self.value.get().is_some()
    }
}

/// Whether some bytes hold one of the session's canary values (in any of
/// the encodings the caller checks).
pub type CanaryCheck = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A set of rules.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Parses a rules file (`[[rule]]` tables).
    pub fn parse(text: &str) -> Result<RuleSet, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut set = RuleSet::default();
        for spec in f.rules {
            let rule = Rule::compile(spec)?;
            if set.get(&rule.id).is_some() {
                return Err(format!("rule {} is defined twice", rule.id));
            }
            set.rules.push(Arc::new(rule));
        }
        Ok(set)
    }

    /// The built-in rules (a unit test checks they parse; a failure here
    /// is still an error, never an empty set).
    pub fn builtin() -> Result<RuleSet, String> {
        RuleSet::parse(BUILTIN).map_err(|e| format!("the built-in detection rules: {e}"))
    }

    /// Adds `other`'s rules; one with the id of an existing rule replaces it.
    pub fn merge(&mut self, other: RuleSet) {
        for r in other.rules {
            match self.rules.iter_mut().find(|x| x.id == r.id) {
                Some(slot) => *slot = r,
                None => self.rules.push(r),
            }
        }
    }

    /// Drops the rules with these ids; the ids that name no rule.
    pub fn disable(&mut self, ids: &[String]) -> Vec<String> {
        let unknown = ids
            .iter()
            .filter(|id| self.get(id).is_none())
            .cloned()
            .collect();
        self.rules.retain(|r| !ids.contains(&r.id));
        unknown
    }

    /// Makes the rules with these ids contain; the ids that name no rule.
    pub fn contain(&mut self, ids: &[String]) -> Vec<String> {
        let mut unknown = Vec::new();
        for id in ids {
            match self.rules.iter_mut().find(|r| &r.id == id) {
                Some(slot) => {
                    let mut r = Rule::clone(slot);
                    r.action = Action::Contain;
                    *slot = Arc::new(r);
                }
                None => unknown.push(id.clone()),
            }
        }
        unknown
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id).map(|r| &**r)
    }

    /// The rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|r| &**r)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A rule fired.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The rule.
    pub rule: Arc<Rule>,
    /// How many matching records it took (the rule's count).
    pub count: u32,
    /// The seqs of the matching records (the last ones, at most 20).
    pub evidence: Vec<u64>,
    /// The record that completed it.
    pub last: Value,
    /// Findings of this rule so far in the session, this one included.
    pub nth: u32,
}

struct State {
    rule: Arc<Rule>,
    hits: VecDeque<(u64, u64)>,
    fired: u32,
    suppressed: u64,
}

/// Rules applied to one session's records.
pub struct Engine {
    states: Vec<State>,
    canary: Option<CanaryCheck>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.states.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The rules of `set` that apply in `tier` (`None`: the rules without
    /// tiers only), with `canary` checking canary conditions (none: they
    /// never hold).
    pub fn new(set: &RuleSet, tier: Option<&str>, canary: Option<CanaryCheck>) -> Engine {
        let states = set
            .rules
            .iter()
            .filter(|r| r.tiers.is_empty() || tier.is_some_and(|t| r.tiers.iter().any(|x| x == t)))
            .map(|r| State {
                rule: Arc::clone(r),
                hits: VecDeque::new(),
                fired: 0,
                suppressed: 0,
            })
            .collect();
        Engine { states, canary }
    }

    /// The ids of the rules in force.
    pub fn rule_ids(&self) -> Vec<&str> {
        self.states.iter().map(|s| s.rule.id.as_str()).collect()
    }

    /// Looks at one record (`line` is its JSON text, `record` the parsed
    /// value); returns the findings it completes.
    pub fn observe(&mut self, record: &Value, line: &[u8]) -> Vec<Finding> {
        let class = record
            .get("class_uid")
            .and_then(Value::as_u64)
            .and_then(|c| Class::parse(&c.to_string()));
        let Some(class) = class else {
            return Vec::new();
        };
        let seen = Seen {
            class,
            seq: record.get("seq").and_then(Value::as_u64).unwrap_or(0),
            time_ns: record.get("time_ns").and_then(Value::as_u64).unwrap_or(0),
            line,
            value: std::sync::OnceLock::from(record.clone()),
        };
        self.observe_seen(&seen)
    }

    /// Looks at one record; its line is parsed only if a rule in force for
    /// its class needs a field (a canary search over the whole line does
    /// not).
    pub fn observe_seen(&mut self, record: &Seen<'_>) -> Vec<Finding> {
        let (class, seq, time, line) = (record.class, record.seq, record.time_ns, record.line);
        if class == Class::DetectionFinding {
            return Vec::new();
        }
        let mut out = Vec::new();
        for st in &mut self.states {
            let r = &st.rule;
            if !r.classes.is_empty() && !r.classes.contains(&class) {
                continue;
            }
            if !r.matches(record, line, self.canary.as_ref()) {
                continue;
            }
            st.hits.push_back((time, seq));
            if r.window_ns > 0 {
                while st
                    .hits
                    .front()
                    .is_some_and(|&(t, _)| time.saturating_sub(t) > r.window_ns)
                {
                    st.hits.pop_front();
                }
            }
            if st.hits.len() < r.count as usize {
                continue;
            }
            let evidence: Vec<u64> = st
                .hits
                .iter()
                .rev()
                .take(20)
                .rev()
                .map(|&(_, s)| s)
                .collect();
            st.hits.clear();
            if st.fired >= MAX_FINDINGS {
                st.suppressed += 1;
                continue;
            }
            st.fired += 1;
            out.push(Finding {
                rule: Arc::clone(r),
                count: r.count,
                evidence,
                last: record.value().clone(),
                nth: st.fired,
            });
        }
        out
    }

    /// Per rule, the findings not written because it had raised
    /// [`MAX_FINDINGS`] already.
    pub fn suppressed(&self) -> Vec<(&str, u64)> {
        self.states
            .iter()
            .filter(|s| s.suppressed > 0)
            .map(|s| (s.rule.id.as_str(), s.suppressed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exec(seq: u64, t_s: u64, name: &str, argv: &[&str]) -> Value {
        json!({
            "seq": seq, "class_uid": 1007, "activity_name": "Launch", "time_ns": t_s * 1_000_000_000,
            "actor": {"process": {"name": name, "cmd_line": argv.join(" "), "unmapped": {"argv": argv}}},
        })
    }

    fn run(engine: &mut Engine, v: &Value) -> Vec<String> {
        let line = serde_json::to_vec(v).unwrap();
        engine
            .observe(v, &line)
            .into_iter()
            .map(|f| f.rule.id.clone())
            .collect()
    }

    #[test]
    fn the_builtin_rules_parse() {
        let set = RuleSet::parse(BUILTIN).unwrap();
        assert!(set.len() >= 7);
        assert_eq!(RuleSet::builtin().unwrap().len(), set.len());
        assert_eq!(set.get("canary-sent").unwrap().action, Action::Contain);
    }

    #[test]
    fn tiers_choose_the_rules_in_force() {
        let set = RuleSet::builtin().unwrap();
        let none = Engine::new(&set, None, None);
        assert!(!none.rule_ids().contains(&"network-tool-exec"));
        let mut exp = Engine::new(&set, Some("experiment"), None);
        assert!(exp.rule_ids().contains(&"network-tool-exec"));
        assert_eq!(
            run(&mut exp, &exec(1, 1, "curl", &["curl", "-s", "http://x"])),
            ["network-tool-exec"]
        );
        assert!(run(&mut exp, &exec(2, 1, "git", &["git", "status"])).is_empty());
        let mut approved = Engine::new(&set, Some("approved"), None);
        assert!(run(&mut approved, &exec(1, 1, "curl", &["curl"])).is_empty());
    }

    #[test]
    fn conditions_of_every_kind() {
        let set = RuleSet::parse(
            r#"
[[rule]]
id = "g"
title = "glob on argv"
severity = "low"
classes = ["process"]
match = [{ field = "actor.process.unmapped.argv", glob = "*/.ssh/*" }]

[[rule]]
id = "r"
title = "regex, negated equality, existence"
severity = "high"
action = "contain"
match = [
  { field = "actor.process.cmd_line", regex = "base64 .*\\|" },
  { field = "actor.process.name", equals = "sh", not = true },
  { field = "actor.process.name", exists = true },
]

[[rule]]
id = "w"
title = "the whole record"
severity = "low"
match = [{ field = "*", regex = "evil\\.test" }]
"#,
        )
        .unwrap();
        let mut e = Engine::new(&set, None, None);
        assert_eq!(
            run(
                &mut e,
                &exec(1, 1, "cat", &["cat", "/home/u/.ssh/id_ed25519"])
            ),
            ["g"]
        );
        assert_eq!(
            run(
                &mut e,
                &exec(2, 1, "bash", &["bash", "-c", "base64 f | nc"])
            ),
            ["r"]
        );
        assert!(run(&mut e, &exec(3, 1, "sh", &["sh", "-c", "base64 f | nc"])).is_empty());
        assert_eq!(
            run(&mut e, &exec(4, 1, "curl", &["curl", "https://evil.test/"])),
            ["w"]
        );
        // Findings are never matched, even when they quote a match.
        let finding = json!({"seq": 5, "class_uid": 2004, "message": "evil.test"});
        assert!(run(&mut e, &finding).is_empty());
    }

    #[test]
    fn counts_fire_within_their_window_only() {
        let set = RuleSet::parse(
            "[[rule]]\nid = \"b\"\ntitle = \"burst\"\nseverity = \"medium\"\nclasses = [\"network\"]\n\
             match = [{ field = \"activity_name\", equals = \"Refuse\" }]\ncount = 3\nwindow = \"10s\"\n",
        )
        .unwrap();
        let mut e = Engine::new(&set, None, None);
        let refuse = |seq: u64, t: u64| json!({"seq": seq, "class_uid": 4001, "activity_name": "Refuse", "time_ns": t * 1_000_000_000});
        // Spread out: never three within ten seconds.
        for (i, t) in [0, 6, 12, 18, 24].iter().enumerate() {
            assert!(run(&mut e, &refuse(i as u64, *t)).is_empty(), "at {t}s");
        }
        assert!(run(&mut e, &refuse(10, 30)).is_empty());
        let line = serde_json::to_vec(&refuse(11, 31)).unwrap();
        let f = e.observe(&refuse(11, 31), &line);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence, [4, 10, 11]);
        // The count starts again after a finding.
        assert!(run(&mut e, &refuse(12, 32)).is_empty());
    }

    #[test]
    fn the_canary_rule_reads_a_sealed_record_but_not_the_chains_own_hashes() {
        let set = RuleSet::builtin().unwrap();
        let check: CanaryCheck = Box::new(|b: &[u8]| b.windows(8).any(|w| w == b"cafecafe"));
        let mut e = Engine::new(&set, None, Some(check));
        let seal = |digest: &str, message: &str| {
            let mut chain = crate::Chain::new(crate::Context {
                session: "s".into(),
                profile_digest: digest.into(),
            });
            let mut line = Vec::new();
            let ev = crate::Event::new(Class::Http, 3, "Get").message(message);
            chain.seal(&ev, 1, &mut line);
            line.pop();
            let v: Value = serde_json::from_slice(&line).unwrap();
            (v, line)
        };
        let ids = |e: &mut Engine, (v, line): (Value, Vec<u8>)| -> Vec<String> {
            e.observe(&v, &line)
                .into_iter()
                .map(|f| f.rule.id.clone())
                .collect()
        };
        // In the event: found.
        let hit = ids(&mut e, seal(&"0".repeat(64), "GET /x?k=cafecafe"));
        assert_eq!(hit, ["canary-sent"]);
        // In the profile's digest, which the chain writes: not looked at.
        let digest = format!("{}cafecafe", "0".repeat(56));
        assert!(ids(&mut e, seal(&digest, "GET /x")).is_empty());
    }

    #[test]
    fn canary_conditions_use_the_sessions_check() {
        let set = RuleSet::builtin().unwrap();
        let check: CanaryCheck = Box::new(|b: &[u8]| b.windows(8).any(|w| w == b"AKIACAFE"));
        let mut e = Engine::new(&set, None, Some(check));
        assert_eq!(
            run(
                &mut e,
                &exec(1, 1, "curl", &["curl", "-d", "k=AKIACAFE", "x"])
            ),
            ["canary-sent"]
        );
        let dns = json!({"seq": 2, "class_uid": 4003, "query": {"hostname": "akiacafe.x"}});
        assert!(run(&mut e, &dns).is_empty(), "the check decides encodings");
        let mut blind = Engine::new(&set, None, None);
        assert!(run(&mut blind, &exec(1, 1, "curl", &["AKIACAFE"])).is_empty());
    }

    #[test]
    fn lines_are_parsed_only_for_rules_that_need_fields() {
        let set = RuleSet::builtin().unwrap();
        let line = serde_json::to_vec(&exec(7, 1, "curl", &["curl", "x"])).unwrap();
        // No tier: only the canary rule (the whole line) looks at execs.
        let mut plain = Engine::new(&set, None, Some(Box::new(|_: &[u8]| false)));
        let seen = Seen::new(Class::Process, 7, 1, &line);
        assert!(plain.observe_seen(&seen).is_empty());
        assert!(!seen.parsed());
        // The experiment tier's tool rules read fields.
        let mut exp = Engine::new(&set, Some("experiment"), None);
        let seen = Seen::new(Class::Process, 7, 1, &line);
        assert_eq!(exp.observe_seen(&seen).len(), 1);
        assert!(seen.parsed());
        assert_eq!(crate::line_seq(br#"{"seq":42,"prev":"00"}"#), Some(42));
        assert_eq!(crate::line_seq(br#"{"prev":"00"}"#), None);
    }

    #[test]
    fn findings_per_rule_are_capped() {
        let set = RuleSet::builtin().unwrap();
        let mut e = Engine::new(&set, Some("experiment"), None);
        for i in 0..(u64::from(MAX_FINDINGS) + 5) {
            run(&mut e, &exec(i, 1, "wget", &["wget"]));
        }
        assert_eq!(e.suppressed(), [("network-tool-exec", 5)]);
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let head = "[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"low\"\n";
        for (body, says) in [
            (
                "match = [{ field = \"a\", equals = 1, regex = \"b\" }]\n",
                "exactly one",
            ),
            ("match = [{ field = \"a\", regex = \"(\" }]\n", "regex"),
            ("match = [{ field = \"a\", glob = \"[\" }]\n", "glob"),
            (
                "match = [{ field = \"a..b\", exists = true }]\n",
                "dotted path",
            ),
            (
                "match = [{ field = \"*\", equals = \"b\" }]\n",
                "whole record",
            ),
            ("match = []\n", "at least one"),
            (
                "match = [{ field = \"a\", exists = true }]\ncount = 3\n",
                "needs a window",
            ),
            (
                "match = [{ field = \"a\", exists = true }]\ncount = 3\nwindow = \"3 days\"\n",
                "window",
            ),
            (
                "match = [{ field = \"a\", exists = true }]\nclasses = [\"finding\"]\n",
                "never look at findings",
            ),
            (
                "match = [{ field = \"a\", exists = true }]\nclasses = [\"proc\"]\n",
                "class",
            ),
            (
                "match = [{ field = \"a\", exists = true }]\ntiers = [\"prod\"]\n",
                "tier",
            ),
            (
                "match = [{ field = \"a\", exists = true }]\naction = \"kill\"\n",
                "action",
            ),
            (
                "match = [{ field = \"a\", exists = true, also = 1 }]\n",
                "also",
            ),
        ] {
            let e = RuleSet::parse(&format!("{head}{body}")).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
        let e = RuleSet::parse(&format!("{head}match = [{{ field = \"a\", exists = true }}]\n{head}match = [{{ field = \"a\", exists = true }}]\n")).unwrap_err();
        assert!(e.contains("defined twice"), "{e}");
        let e = RuleSet::parse("[[rule]]\nid = \"Bad\"\ntitle = \"t\"\nseverity = \"low\"\nmatch = [{ field = \"a\", exists = true }]\n").unwrap_err();
        assert!(e.contains("lower-case"), "{e}");
    }

    #[test]
    fn user_rules_replace_builtins_and_profiles_adjust_them() {
        let mut set = RuleSet::builtin().unwrap();
        let n = set.len();
        set.merge(
            RuleSet::parse(
                "[[rule]]\nid = \"dns-burst\"\ntitle = \"mine\"\nseverity = \"low\"\nmatch = [{ field = \"a\", exists = true }]\n",
            )
            .unwrap(),
        );
        assert_eq!(set.len(), n);
        assert_eq!(set.get("dns-burst").unwrap().title, "mine");
        assert_eq!(set.disable(&["dns-burst".into(), "nope".into()]), ["nope"]);
        assert!(set.get("dns-burst").is_none());
        assert!(set.contain(&["network-tool-exec".into()]).is_empty());
        assert_eq!(
            set.get("network-tool-exec").unwrap().action,
            Action::Contain
        );
    }
}
