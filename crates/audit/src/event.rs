//! The event model: OCSF 1.x-shaped objects (class, activity, severity,
//! actor, time), built by the producers and sealed into the chain by
//! [`crate::Chain`]. The mapping is documented in docs/audit-format.md.

use serde_json::{json, Map, Value};

/// The OCSF version the records follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// The OCSF event classes cordon writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// File System Activity (1001): writes in the project, denied reads.
    FileSystem,
    /// Process Activity (1007): exec and exit.
    Process,
    /// Detection Finding (2004): a detection rule fired.
    DetectionFinding,
    /// Authorize Session (3003): grants and approvals.
    AuthorizeSession,
    /// Network Activity (4001): connections allowed, denied, closed.
    Network,
    /// HTTP Activity (4002): plain-HTTP requests through allowed flows.
    Http,
    /// DNS Activity (4003): lookups answered or refused.
    Dns,
    /// Application Lifecycle (6002): the session starts, ends, is contained.
    Lifecycle,
}

impl Class {
    /// The OCSF class id.
    pub fn uid(self) -> u32 {
        match self {
            Class::FileSystem => 1001,
            Class::Process => 1007,
            Class::DetectionFinding => 2004,
            Class::AuthorizeSession => 3003,
            Class::Network => 4001,
            Class::Http => 4002,
            Class::Dns => 4003,
            Class::Lifecycle => 6002,
        }
    }

    /// The OCSF class name.
    pub fn name(self) -> &'static str {
        match self {
            Class::FileSystem => "File System Activity",
            Class::Process => "Process Activity",
            Class::DetectionFinding => "Detection Finding",
            Class::AuthorizeSession => "Authorize Session",
            Class::Network => "Network Activity",
            Class::Http => "HTTP Activity",
            Class::Dns => "DNS Activity",
            Class::Lifecycle => "Application Lifecycle",
        }
    }

    /// The OCSF category id (the class id's thousands).
    pub fn category(self) -> u32 {
        self.uid() / 1000
    }

    /// The short name `cordon audit show --class` takes.
    pub fn short(self) -> &'static str {
        match self {
            Class::FileSystem => "file",
            Class::Process => "process",
            Class::DetectionFinding => "finding",
            Class::AuthorizeSession => "authorization",
            Class::Network => "network",
            Class::Http => "http",
            Class::Dns => "dns",
            Class::Lifecycle => "session",
        }
    }

    /// Every class.
    pub const ALL: [Class; 8] = [
        Class::FileSystem,
        Class::Process,
        Class::DetectionFinding,
        Class::AuthorizeSession,
        Class::Network,
        Class::Http,
        Class::Dns,
        Class::Lifecycle,
    ];

    /// The class with OCSF id or short name `s`.
    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL
            .into_iter()
            .find(|c| c.short() == s || c.uid().to_string() == s)
    }
}

/// OCSF severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// 1.
    Informational,
    /// 2.
    Low,
    /// 3.
    Medium,
    /// 4.
    High,
    /// 5.
    Critical,
}

impl Severity {
    fn id(self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }
}

/// The process an event is about or done by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Process id (as the supervisor sees it).
    pub pid: Option<u32>,
    /// Parent process id.
    pub ppid: Option<u32>,
    /// Executable path.
    pub exe: Option<String>,
    /// Arguments.
    pub argv: Option<Vec<String>>,
    /// Working directory.
    pub cwd: Option<String>,
    /// User id inside the sandbox.
    pub uid: Option<u32>,
}

impl Process {
    fn to_json(&self) -> Value {
        let mut p = Map::new();
        if let Some(pid) = self.pid {
            p.insert("pid".into(), pid.into());
        }
        if let Some(ppid) = self.ppid {
            p.insert("parent_process".into(), json!({ "pid": ppid }));
        }
        if let Some(exe) = &self.exe {
            let name = exe.rsplit('/').next().unwrap_or(exe);
            p.insert("name".into(), name.into());
            p.insert("file".into(), json!({ "path": exe, "name": name }));
        }
        if let Some(argv) = &self.argv {
            p.insert("cmd_line".into(), argv.join(" ").into());
            p.insert("unmapped".into(), json!({ "argv": argv }));
        }
        if let Some(cwd) = &self.cwd {
            p.insert("working_directory".into(), cwd.clone().into());
        }
        if let Some(uid) = self.uid {
            p.insert("user".into(), json!({ "uid": uid.to_string() }));
        }
        Value::Object(p)
    }
}

/// One event, before it is sealed (given its `seq`, `prev`, session and
/// metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The class.
    pub class: Class,
    /// The class's activity id (OCSF: 1 Launch / Open / Allow…).
    pub activity_id: u8,
    /// The activity's name.
    pub activity: &'static str,
    /// Nanoseconds since the Unix epoch; 0 means "when sealed".
    pub time_ns: u64,
    /// Severity.
    pub severity: Severity,
    /// Success (`Some(true)`), failure or refusal (`Some(false)`).
    pub success: Option<bool>,
    /// cordon's stable reason code, for refusals and failures.
    pub reason: Option<String>,
    /// A sentence for people.
    pub message: Option<String>,
    /// The acting process.
    pub actor: Option<Process>,
    /// The class's own attributes (`dst_endpoint`, `query`, `file`, …).
    pub fields: Map<String, Value>,
    /// More of them, written as JSON already (for records made often:
    /// cheaper than `fields`).
    members: Members,
    /// Members of `unmapped`, written as JSON already.
    unmapped: Members,
}

/// JSON object members written as they are added (`"key":value`, comma
/// separated, without braces): a record's attributes without a map and
/// its allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(Vec<u8>);

impl Members {
    /// None yet.
    pub fn new() -> Members {
        Members(Vec::with_capacity(256))
    }

    fn key(&mut self, k: &str) {
        // The first member of this object, or of one just opened, has no
        // comma before it.
        if !matches!(self.0.last(), None | Some(b'{')) {
            self.0.push(b',');
        }
        string(&mut self.0, k);
        self.0.push(b':');
    }

    /// A string member.
    pub fn str(&mut self, k: &str, v: &str) -> &mut Members {
        self.key(k);
        string(&mut self.0, v);
        self
    }

    /// A number member.
    pub fn num(&mut self, k: &str, v: u64) -> &mut Members {
        use std::io::Write;
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    /// A `null` member.
    pub fn null(&mut self, k: &str) -> &mut Members {
        self.key(k);
        self.0.extend_from_slice(b"null");
        self
    }

    /// A member holding an object, whose members `f` writes.
    pub fn obj(&mut self, k: &str, f: impl FnOnce(&mut Members)) -> &mut Members {
        self.key(k);
        self.0.push(b'{');
        f(self);
        self.0.push(b'}');
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Event {
    /// An informational event of `class`, activity `id`/`name`, now.
    pub fn new(class: Class, activity_id: u8, activity: &'static str) -> Event {
        Event {
            class,
            activity_id,
            activity,
            time_ns: 0,
            severity: Severity::Informational,
            success: None,
            reason: None,
            message: None,
            actor: None,
            fields: Map::new(),
            members: Members::default(),
            unmapped: Members::default(),
        }
    }

    /// Sets the time (nanoseconds since the epoch).
    pub fn at(mut self, time_ns: u64) -> Event {
        self.time_ns = time_ns;
        self
    }

    /// Sets the severity.
    pub fn severity(mut self, s: Severity) -> Event {
        self.severity = s;
        self
    }

    /// Marks it a success or a failure/refusal.
    pub fn success(mut self, ok: bool) -> Event {
        self.success = Some(ok);
        self
    }

    /// Sets the reason code.
    pub fn reason(mut self, code: impl Into<String>) -> Event {
        self.reason = Some(code.into());
        self
    }

    /// Sets the message.
    pub fn message(mut self, m: impl Into<String>) -> Event {
        self.message = Some(m.into());
        self
    }

    /// Sets the acting process.
    pub fn actor(mut self, p: Process) -> Event {
        self.actor = Some(p);
        self
    }

    /// Adds class attributes written already (they follow `fields`).
    pub fn members(mut self, m: Members) -> Event {
        self.members = m;
        self
    }

    /// Adds members to `unmapped`, written already.
    pub fn unmapped(mut self, m: Members) -> Event {
        self.unmapped = m;
        self
    }

    /// Adds a class attribute.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// Writes the OCSF object's members (without braces), with the
    /// session's context: what follows `seq` and `prev` in the record.
    /// Written directly rather than through a `serde_json::Map`: the map's
    /// allocations were a third of the writer's time.
    pub(crate) fn write_members(&self, ctx: &Context, seq: u64, time_ns: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        let uid = self.class.uid();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "\"class_uid\":{uid},\"class_name\":\"{}\",\"category_uid\":{},\"activity_id\":{},\"activity_name\":",
            self.class.name(),
            self.class.category(),
            self.activity_id
        );
        string(out, self.activity);
        let _ = write!(
            out,
            ",\"type_uid\":{},\"severity_id\":{},\"time\":{},\"time_ns\":{time_ns}",
            u64::from(uid) * 100 + u64::from(self.activity_id),
            self.severity.id(),
            time_ns / 1_000_000
        );
        if let Some(ok) = self.success {
            out.extend_from_slice(if ok {
                b",\"status_id\":1,\"status\":\"Success\""
            } else {
                b",\"status_id\":2,\"status\":\"Failure\""
            });
        }
        if let Some(r) = &self.reason {
            out.extend_from_slice(b",\"status_detail\":");
            string(out, r);
        }
        if let Some(m) = &self.message {
            out.extend_from_slice(b",\"message\":");
            string(out, m);
        }
        out.extend_from_slice(b",\"actor\":{\"session\":{\"uid\":");
        string(out, &ctx.session);
        out.push(b'}');
        if let Some(p) = &self.actor {
            out.extend_from_slice(b",\"process\":");
            value(out, &p.to_json());
        }
        out.extend_from_slice(b"},\"metadata\":{\"version\":\"");
        out.extend_from_slice(OCSF_VERSION.as_bytes());
        out.extend_from_slice(
            b"\",\"product\":{\"name\":\"cordon\",\"vendor_name\":\"cordon\",\"version\":\"",
        );
        out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        out.extend_from_slice(b"\"},\"log_name\":\"cordon-audit\",\"correlation_uid\":");
        string(out, &ctx.session);
        out.extend_from_slice(b",\"uid\":");
        string(out, &format!("{}-{seq}", ctx.session));
        out.push(b'}');
        let mut unmapped = None;
        for (k, v) in &self.fields {
            if k == "unmapped" {
                unmapped = v.as_object();
                continue;
            }
            if RESERVED.contains(&k.as_str()) {
                continue;
            }
            out.push(b',');
            string(out, k);
            out.push(b':');
            value(out, v);
        }
        if !self.members.is_empty() {
            out.push(b',');
            out.extend_from_slice(&self.members.0);
        }
        out.extend_from_slice(b",\"unmapped\":{");
        for (k, v) in unmapped.into_iter().flatten() {
            if k == "profile_digest" {
                continue;
            }
            string(out, k);
            out.push(b':');
            value(out, v);
            out.push(b',');
        }
        if !self.unmapped.is_empty() {
            out.extend_from_slice(&self.unmapped.0);
            out.push(b',');
        }
        out.extend_from_slice(b"\"profile_digest\":");
        string(out, &ctx.profile_digest);
        out.push(b'}');
    }
}

/// Members the record writes itself; an event's own field of that name is
/// dropped rather than written twice.
const RESERVED: &[&str] = &[
    "seq",
    "prev",
    "checkpoint",
    "class_uid",
    "class_name",
    "category_uid",
    "activity_id",
    "activity_name",
    "type_uid",
    "severity_id",
    "time",
    "time_ns",
    "status_id",
    "status",
    "status_detail",
    "message",
    "actor",
    "metadata",
];

fn string(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn value(out: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// What every record of a session carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The session id.
    pub session: String,
    /// The digest of the effective profile.
    pub profile_digest: String,
}
