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

    /// Adds a class attribute.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// The OCSF object, with the session's context; `seq` and `prev` are
    /// written before it by the chain.
    pub(crate) fn to_json(&self, ctx: &Context, seq: u64, time_ns: u64) -> Map<String, Value> {
        let mut o = self.fields.clone();
        o.insert("class_uid".into(), self.class.uid().into());
        o.insert("class_name".into(), self.class.name().into());
        o.insert("category_uid".into(), self.class.category().into());
        o.insert("activity_id".into(), self.activity_id.into());
        o.insert("activity_name".into(), self.activity.into());
        o.insert(
            "type_uid".into(),
            (u64::from(self.class.uid()) * 100 + u64::from(self.activity_id)).into(),
        );
        o.insert("severity_id".into(), self.severity.id().into());
        o.insert("time".into(), (time_ns / 1_000_000).into());
        o.insert("time_ns".into(), time_ns.into());
        if let Some(ok) = self.success {
            o.insert("status_id".into(), if ok { 1 } else { 2 }.into());
            o.insert(
                "status".into(),
                if ok { "Success" } else { "Failure" }.into(),
            );
        }
        if let Some(r) = &self.reason {
            o.insert("status_detail".into(), r.clone().into());
        }
        if let Some(m) = &self.message {
            o.insert("message".into(), m.clone().into());
        }
        let mut actor = Map::new();
        actor.insert("session".into(), json!({ "uid": ctx.session }));
        if let Some(p) = &self.actor {
            actor.insert("process".into(), p.to_json());
        }
        o.insert("actor".into(), Value::Object(actor));
        o.insert(
            "metadata".into(),
            json!({
                "version": OCSF_VERSION,
                "product": { "name": "cordon", "vendor_name": "cordon", "version": env!("CARGO_PKG_VERSION") },
                "log_name": "cordon-audit",
                "correlation_uid": ctx.session,
                "uid": format!("{}-{seq}", ctx.session),
            }),
        );
        let mut unmapped = match o.remove("unmapped") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        unmapped.insert("profile_digest".into(), ctx.profile_digest.clone().into());
        o.insert("unmapped".into(), Value::Object(unmapped));
        o
    }
}

/// What every record of a session carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The session id.
    pub session: String,
    /// The digest of the effective profile.
    pub profile_digest: String,
}
