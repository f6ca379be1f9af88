//! A session's audit record: what the supervisor writes to the session's
//! `audit.jsonl` (OCSF-shaped, hash-chained, signed by the host key in the
//! state directory), and how a session's log is found and checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_audit::{AuditLog, Class, Config, Context, Event, HostKey, Process, Severity};
use cordon_net::NetEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::overlay::{Change, Kind};
use crate::record::Record;
use crate::Error;

/// The log's file name in the session directory.
pub const FILE: &str = "audit.jsonl";

/// Where a closed log ends, kept in the session record so that a log cut
/// back to an earlier checkpoint is caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last record's seq.
    pub seq: u64,
    /// Its SHA-256, hex.
    pub hash: String,
}

/// The host key, made on first use in the state directory.
pub fn host_key(state: &Path) -> Result<HostKey, Error> {
    crate::dirs::create_private_dir(state)?;
    HostKey::load_or_create(state).map_err(|e| Error::Audit(e.to_string()))
}

/// The trusted public key (hex) from the state directory.
pub fn trusted_key(state: &Path) -> Result<String, Error> {
    let path = state.join(cordon_audit::PUB_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("read the audit public key {}", path.display()), e))?;
    cordon_audit::parse_public(&text).ok_or_else(|| {
        Error::Audit(format!(
            "{} is not an audit public key (64 hex digits)",
            path.display()
        ))
    })
}

/// Opens a new session's log.
pub fn open(session_dir: &Path, record: &Record, key: HostKey) -> Result<Arc<AuditLog>, Error> {
    let path: PathBuf = session_dir.join(FILE);
    AuditLog::create(
        &path,
        Context {
            session: record.id.as_str().to_owned(),
            profile_digest: record.profile_digest.clone(),
        },
        Arc::new(key),
        Config::default(),
    )
    .map_err(|e| Error::io(format!("create the audit log {}", path.display()), e))
}

/// An Application Lifecycle event about cordon itself.
fn lifecycle(activity_id: u8, activity: &'static str) -> Event {
    Event::new(Class::Lifecycle, activity_id, activity).field(
        "app",
        json!({ "name": "cordon", "version": env!("CARGO_PKG_VERSION") }),
    )
}

/// The session starts (Application Lifecycle: Start).
pub fn started(r: &Record, sandbox_pid: Option<i32>) -> Event {
    let mut e = lifecycle(3, "Start")
        .success(true)
        .message(format!("session {} started", r.id))
        .field(
            "unmapped",
            json!({
                "profile": r.profile,
                "project": r.project.to_string_lossy(),
                "mode": r.mode,
                "command": r.command,
                "env_withheld": r.env_withheld,
                "supervisor_pid": r.supervisor_pid,
                "agent": r.agent,
            }),
        );
    if let Some(pid) = sandbox_pid.and_then(|p| u32::try_from(p).ok()) {
        e = e.actor(Process {
            pid: Some(pid),
            argv: Some(r.command.clone()),
            ..Process::default()
        });
    }
    e
}

/// An incident-response action on the session (Application Lifecycle:
/// Other): `contain`, `resume`, `kill`, `block`, `evidence`; `by` is the
/// uid that asked.
pub fn response(action: &str, by: u32, message: String, detail: serde_json::Value) -> Event {
    let severity = match action {
        "contain" | "kill" => Severity::High,
        _ => Severity::Informational,
    };
    lifecycle(99, "Other")
        .success(true)
        .severity(severity)
        .message(message)
        .field(
            "unmapped",
            json!({ "response": action, "by_uid": by, "detail": detail }),
        )
}

/// Something the command line granted for this session beyond its
/// profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `read`, `write`, `host` or `env`.
    pub kind: &'static str,
    /// The path, host pattern or variable name (never a value).
    pub value: String,
    /// The option that granted it.
    pub source: &'static str,
}

/// A grant (Authorize Session: Assign Privileges).
pub fn granted(g: &Grant) -> Event {
    let what = match g.kind {
        "read" => format!("read access to {}", g.value),
        "write" => format!("write access to {}", g.value),
        "host" => format!("egress to {}", g.value),
        "secret" => format!("the secret {}", g.value),
        _ => format!("the host's variable {}", g.value),
    };
    Event::new(Class::AuthorizeSession, 1, "Assign Privileges")
        .success(true)
        .message(format!("granted {what} ({})", g.source))
        .field("privileges", json!([format!("{}:{}", g.kind, g.value)]))
        .field(
            "unmapped",
            json!({ "grant": g.kind, "value": g.value, "source": g.source }),
        )
}

/// A secret fetched on its first use, for a request to `host` (Authorize
/// Session), or the failure to: its name and source, never its value.
pub fn fetched(name: &str, source: &str, host: &str, result: Result<(), &str>) -> Event {
    let message = match result {
        Ok(()) => format!("fetched the secret {name} ({source}) on its first use, for {host}"),
        Err(e) => format!("could not fetch the secret {name} ({source}) for {host}: {e}"),
    };
    Event::new(Class::AuthorizeSession, 1, "Assign Privileges")
        .success(result.is_ok())
        .message(message)
        .field("privileges", json!([format!("secret:{name}")]))
        .field(
            "unmapped",
            json!({ "secret": { "name": name, "source": source, "host": host, "fetch": "first-use" } }),
        )
}

/// A token made for the session (Authorize Session), or its revocation:
/// the secret's name and the token's accessor, never the token.
pub fn lease(l: &crate::vault::Lease, revoked: Result<(), &str>, issued: bool) -> Event {
    // A dynamic secret's lease, or a token.
    let (what, id_of) = if l.lease_id.is_empty() {
        ("token", format!("accessor {}", l.accessor))
    } else {
        ("lease", format!("lease {}", l.lease_id))
    };
    let (id, name, message) = if issued {
        let made = if l.lease_id.is_empty() {
            "made a token for"
        } else {
            "leased"
        };
        (
            1,
            "Assign Privileges",
            format!("{made} the secret {} ({id_of})", l.name),
        )
    } else {
        match revoked {
            Ok(()) => (
                99,
                "Revoke",
                format!("revoked the {what} of the secret {} ({id_of})", l.name),
            ),
            Err(e) => (
                99,
                "Revoke",
                format!(
                    "could not revoke the {what} of the secret {} ({id_of}): {e}",
                    l.name
                ),
            ),
        }
    };
    Event::new(Class::AuthorizeSession, id, name)
        .success(revoked.is_ok())
        .message(message)
        .field(
            "unmapped",
            json!({ "lease": {
                "secret": l.name,
                "accessor": l.accessor,
                "lease_id": l.lease_id,
                "server": l.addr,
            } }),
        )
}

/// The session ends (Application Lifecycle: Stop), with how.
pub fn ended(r: &Record) -> Event {
    let ok = r.error.is_none();
    let mut e = lifecycle(4, "Stop").success(ok).field(
        "unmapped",
        json!({
            "status": r.status,
            "exit_code": r.exit_code,
            "signal": r.signal,
            "warnings": r.warnings,
            "error": r.error,
            "contained": r.contained,
            "findings": r.findings.len(),
        }),
    );
    e = match (&r.error, r.exit_code) {
        (Some(err), _) => e
            .severity(Severity::Medium)
            .reason("setup_failed")
            .message(format!("session {} failed: {err}", r.id)),
        (None, Some(code)) => e.message(format!("session {} ended: exit {code}", r.id)),
        (None, None) => e.message(format!("session {} ended", r.id)),
    };
    e
}

/// A change the agent made in the overlay (File System Activity), with the
/// new content's size and SHA-256.
pub fn file_change(c: &Change, upper: &Path) -> Event {
    let (id, name) = match c.kind {
        Kind::Added => (1, "Create"),
        Kind::Modified => (3, "Update"),
        Kind::ModeChanged => (5, "Set Attributes"),
        Kind::Deleted => (4, "Delete"),
    };
    let mut file = json!({
        "path": c.path.to_string_lossy(),
        "name": c.path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "type": c.entry,
    });
    if c.kind != Kind::Deleted && c.entry == "file" {
        if let Ok((size, sha)) = digest(&upper.join(&c.path)) {
            file["size"] = size.into();
            file["hashes"] = json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": sha }]);
        }
    }
    if let Some(m) = c.new_mode {
        file["mode"] = format!("{m:o}").into();
    }
    Event::new(Class::FileSystem, id, name)
        .success(true)
        .field("file", file)
        .message(format!("{} {}", c.kind.as_str(), c.path.display()))
}

/// The size and SHA-256 (hex) of a file's content.
pub(crate) fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    digest_reader(std::fs::File::open(path)?)
}

/// How many bytes `r` yields and their SHA-256 (hex).
pub(crate) fn digest_reader(mut r: impl std::io::Read) -> std::io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, cordon_audit::hex(&h.finalize())))
}

/// An exec or exit the sandbox's exec audit saw (Process Activity: Launch
/// or Terminate). `agent` is the command the session started, for an exec
/// whose memory could not be read (the agent's own first exec when cordon
/// runs unprivileged).
pub fn exec_notice(n: &cordon_sandbox::Notice, agent: Option<&[String]>) -> Event {
    match n {
        cordon_sandbox::Notice::Exec {
            pid,
            ppid,
            path,
            argv,
            cwd,
            uid,
            unreadable,
        } => {
            let (exe, argv, note) = match (unreadable, agent) {
                (false, _) => (path.clone(), argv.clone(), None),
                (true, Some(cmd)) => (
                    cmd.first().cloned().unwrap_or_default(),
                    cmd.to_vec(),
                    Some("the session's command (its memory is not readable)"),
                ),
                (true, None) => (String::new(), Vec::new(), Some("arguments not readable")),
            };
            let mut e = Event::new(Class::Process, 1, "Launch")
                .success(true)
                .actor(Process {
                    pid: Some(*pid),
                    ppid: *ppid,
                    exe: Some(exe),
                    argv: Some(argv),
                    cwd: cwd.clone(),
                    uid: *uid,
                });
            if let Some(note) = note {
                e = e.field("unmapped", json!({ "argv_source": note }));
            }
            e
        }
        cordon_sandbox::Notice::Exit {
            pid,
            status,
            signal,
        } => {
            let mut e = Event::new(Class::Process, 2, "Terminate")
                .success(*status == 0)
                .actor(Process {
                    pid: Some(*pid),
                    ..Process::default()
                })
                .field("exit_code", *status);
            if let Some(sig) = signal {
                e = e.field("unmapped", json!({ "signal": sig }));
            }
            e
        }
    }
}

/// An egress engine event as an OCSF record (Network, HTTP or DNS
/// Activity).
pub fn net_event(ev: &NetEvent) -> Event {
    let (class, id, name) = match ev.kind {
        "flow.allowed" => (Class::Network, 1, "Open"),
        "flow.closed" => (Class::Network, 2, "Close"),
        "flow.denied" => (Class::Network, 5, "Refuse"),
        "http.request" => match ev.method.as_deref() {
            Some("CONNECT") => (Class::Http, 1, "Connect"),
            Some("DELETE") => (Class::Http, 2, "Delete"),
            Some("GET") => (Class::Http, 3, "Get"),
            Some("HEAD") => (Class::Http, 4, "Head"),
            Some("OPTIONS") => (Class::Http, 5, "Options"),
            Some("POST") => (Class::Http, 6, "Post"),
            Some("PUT") => (Class::Http, 7, "Put"),
            Some("TRACE") => (Class::Http, 8, "Trace"),
            Some("PATCH") => (Class::Http, 9, "Patch"),
            _ => (Class::Http, 99, "Other"),
        },
        "dns.allowed" | "dns.denied" => (Class::Dns, 2, "Response"),
        "dns.burst" => (Class::Dns, 6, "Traffic"),
        _ => (Class::Network, 99, "Other"),
    };
    let denied = ev.kind.ends_with(".denied");
    let mut e = Event::new(class, id, name)
        .at(ev.time_ms.saturating_mul(1_000_000))
        .success(!denied);
    if denied {
        e = e.severity(Severity::Low);
    }
    if ev.kind == "dns.burst" {
        e = e.severity(Severity::Medium);
    }
    if let Some(code) = ev.code {
        e = e.reason(code.as_str());
    }
    if let Some(m) = &ev.message {
        e = e.message(m.clone());
    }
    // Written directly, not through JSON values: an inspected flow makes
    // one of these per HTTP request.
    let mut m = cordon_audit::Members::new();
    let mut cordon = cordon_audit::Members::new();
    cordon
        .str("kind", ev.kind)
        .str("via", ev.via)
        .num("flow", ev.flow);
    if let Some(r) = &ev.rule {
        cordon.str("rule", r);
    }
    if let Some(t) = ev.tls {
        cordon.str("tls", t);
    }
    if let Some(a) = &ev.alpn {
        cordon.str("alpn", a);
    }
    if let Some(d) = &ev.dlp {
        cordon.str("dlp", d);
    }
    match class {
        Class::Dns => {
            m.obj("query", |q| {
                q.str("hostname", &ev.host)
                    .str("type", ev.method.as_deref().unwrap_or_default());
            });
            if denied {
                m.str("rcode", "Refused");
            }
        }
        Class::Http => {
            m.obj("http_request", |r| {
                match &ev.method {
                    Some(method) => r.str("http_method", method),
                    None => r.null("http_method"),
                };
                r.obj("url", |u| {
                    u.str("hostname", ev.http_host.as_deref().unwrap_or(&ev.host));
                    match &ev.path {
                        Some(p) => u.str("path", p),
                        None => u.null("path"),
                    };
                    u.num("port", u64::from(ev.port));
                });
            });
            if let Some(code) = ev.status {
                m.obj("http_response", |r| {
                    r.num("code", u64::from(code));
                });
            }
            endpoint(&mut m, ev);
        }
        _ => {
            endpoint(&mut m, ev);
            m.obj("connection_info", |c| {
                c.str("protocol_name", "tcp");
            });
            if ev.bytes_up.is_some() || ev.bytes_down.is_some() {
                m.obj("traffic", |t| {
                    match ev.bytes_up {
                        Some(n) => t.num("bytes_out", n),
                        None => t.null("bytes_out"),
                    };
                    match ev.bytes_down {
                        Some(n) => t.num("bytes_in", n),
                        None => t.null("bytes_in"),
                    };
                });
            }
            if let Some(d) = ev.duration_ms {
                m.num("duration", d);
            }
            if let Some(s) = &ev.sni {
                cordon.str("sni", s);
            }
            if let Some(h) = &ev.http_host {
                cordon.str("http_host", h);
            }
            if let Some(method) = &ev.method {
                cordon.str("method", method);
            }
        }
    }
    e.members(m).unmapped(cordon)
}

/// The event's `dst_endpoint`: the host as named (a name or an address),
/// its address once known, the port.
fn endpoint(m: &mut cordon_audit::Members, ev: &NetEvent) {
    m.obj("dst_endpoint", |ep| {
        let literal = ev.host.parse::<std::net::IpAddr>().is_ok();
        if !literal {
            ep.str("hostname", &ev.host);
        }
        match ev.addr {
            Some(a) => {
                ep.str("ip", &a.ip().to_string());
            }
            None if literal => {
                ep.str("ip", &ev.host);
            }
            None => {}
        }
        ep.num("port", u64::from(ev.port));
    });
}

/// What `cordon audit verify` found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The log that was checked.
    pub path: PathBuf,
    /// The chain's verdict.
    pub report: cordon_audit::Report,
    /// When the session record knows where its log ended and the file does
    /// not end there: the log was cut back or replaced.
    pub head_mismatch: Option<String>,
}

impl Verified {
    /// The overall verdict (a head mismatch makes it tampered).
    pub fn verdict(&self) -> cordon_audit::Verdict {
        if self.head_mismatch.is_some() {
            cordon_audit::Verdict::Tampered
        } else {
            self.report.verdict()
        }
    }

    /// What to tell a person.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.head_mismatch {
            out.push(format!("TAMPERED: {m}"));
        }
        out.extend(self.report.lines());
        out
    }
}

/// Verifies the log at `path` with the trusted key; `recorded` is where
/// the session record says it ended.
pub fn verify_file(path: &Path, trusted: &str, recorded: Option<&Head>) -> Result<Verified, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("read the audit log {}", path.display()), e))?;
    let report = cordon_audit::verify(&bytes, trusted);
    let head_mismatch = recorded.and_then(|h| {
        let same = report.records == h.seq && report.head.as_deref() == Some(h.hash.as_str());
        (!same && report.problem.is_none()).then(|| {
            format!(
                "the session record says its log closed at record {} (hash {}), but the file ends at record {}{}: it was cut back or replaced",
                h.seq,
                h.hash,
                report.records,
                report.head.as_deref().map(|x| format!(" (hash {x})")).unwrap_or_default()
            )
        })
    });
    Ok(Verified {
        path: path.to_owned(),
        report,
        head_mismatch,
    })
}

/// One record as a line for people: time (UTC), class, activity, what.
pub fn describe(v: &serde_json::Value) -> String {
    use serde_json::Value;
    let time_ns = v.get("time_ns").and_then(Value::as_u64).unwrap_or(0);
    let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let when = utc(time_ns);
    if let Some(cp) = v.get("checkpoint") {
        let closing = cp.get("closing").and_then(Value::as_bool).unwrap_or(false);
        return format!(
            "{when} #{seq} {:<13} {}",
            "checkpoint",
            if closing {
                "closing (signed)"
            } else {
                "signed"
            }
        );
    }
    let class = v
        .get("class_uid")
        .and_then(Value::as_u64)
        .and_then(|c| Class::parse(&c.to_string()))
        .map_or("?", Class::short);
    let activity = v
        .get("activity_name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let what = match class {
        "process" => match v.get("exit_code").and_then(Value::as_i64) {
            Some(code) => format!(
                "pid {} exit {code}",
                v.pointer("/actor/process/pid")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            ),
            None => s("/actor/process/cmd_line")
                .or_else(|| s("/actor/process/file/path"))
                .unwrap_or_default(),
        },
        "network" | "http" => {
            let host = s("/dst_endpoint/hostname").or_else(|| s("/dst_endpoint/ip"));
            let port = v.pointer("/dst_endpoint/port").and_then(Value::as_u64);
            let path = s("/http_request/url/path").unwrap_or_default();
            format!(
                "{}:{}{path}",
                host.unwrap_or_default(),
                port.map(|p| p.to_string()).unwrap_or_default()
            )
        }
        "dns" => s("/query/hostname").unwrap_or_default(),
        "file" => match (s("/unmapped/from"), s("/file/path")) {
            (Some(from), Some(to)) => format!("{from} -> {to}"),
            (_, path) => path.or_else(|| s("/message")).unwrap_or_default(),
        },
        _ => s("/message").unwrap_or_default(),
    };
    let reason = s("/status_detail")
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!("{when} #{seq} {class:<13} {activity:<8} {what}{reason}")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for nanoseconds since the epoch.
fn utc(ns: u64) -> String {
    let (y, m, d, h, mi, s) = cordon_types::civil_from_unix(ns / 1_000_000_000);
    let ms = (ns / 1_000_000) % 1000;
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// The sinks in `audit.toml` in cordon's configuration directory (none
/// when there is no such file), ready to deliver: a sink whose token or CA
/// cannot be read is an error now, not a silent gap later.
pub fn sinks(config: &Path) -> Result<Vec<cordon_audit::ship::Sink>, Error> {
    let path = config.join("audit.toml");
    let specs = match std::fs::read_to_string(&path) {
        Ok(text) => cordon_audit::ship::SinksFile::parse(&text)
            .map(|f| f.sinks)
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    specs
        .iter()
        .map(|s| {
            cordon_audit::ship::Sink::open(s)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// This host's name, for syslog.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Ships a session's log to its sinks while the session runs: every
/// second, from the log itself (the spool), on a thread of its own. A sink
/// that is down is retried; whatever it has not received when the session
/// ends, `cordon audit ship` delivers later.
#[derive(Debug)]
pub struct Shipper {
    stop: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<Vec<String>>,
}

/// How long the end of a session waits for the last delivery.
const SHIP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Shipper {
    /// Starts shipping `log` to `sinks`.
    pub fn start(log: PathBuf, sinks: Vec<cordon_audit::ship::Sink>) -> std::io::Result<Shipper> {
        use std::sync::mpsc::{channel, RecvTimeoutError};
        let (stop, stopped) = channel::<()>();
        let (report, done) = channel();
        let host = hostname();
        std::thread::Builder::new()
            .name("cordon-ship".into())
            .spawn(move || {
                let mut failed: Vec<Option<String>> = vec![None; sinks.len()];
                loop {
                    // Every second, or at once when the session ends.
                    let last = !matches!(
                        stopped.recv_timeout(std::time::Duration::from_secs(1)),
                        Err(RecvTimeoutError::Timeout)
                    );
                    for (i, s) in sinks.iter().enumerate() {
                        failed[i] = cordon_audit::ship::ship(&log, s, &host)
                            .err()
                            .map(|e| format!("audit sink {}: {e}", s.name));
                    }
                    if last {
                        break;
                    }
                }
                let _ = report.send(failed.into_iter().flatten().collect());
            })?;
        Ok(Shipper { stop, done })
    }

    /// One last delivery of what the log holds now; the sinks that could
    /// not take it (their records wait for `cordon audit ship`). Waits at
    /// most 10 s: a slow sink does not hold up the end of a session.
    pub fn finish(self) -> Vec<String> {
        let _ = self.stop.send(());
        match self.done.recv_timeout(SHIP_WAIT) {
            Ok(failed) => failed,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => vec![format!(
                "audit sinks: the last delivery was still running after {} s",
                SHIP_WAIT.as_secs()
            )],
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                vec!["audit sinks: the shipping thread failed".to_owned()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes the connection and never answers does not hold
    /// up the end of a session for longer than the shipper's wait.
    #[test]
    fn a_silent_sink_does_not_hold_up_the_end() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(std::time::Duration::from_secs(40));
            drop(s);
        });
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(FILE);
        std::fs::write(&log, "{\"seq\":1,\"prev\":\"00\",\"time_ns\":1}\n").unwrap();
        let spec = cordon_audit::ship::SinksFile::parse(&format!(
            "[[sink]]\nname = \"slow\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/in\"\n"
        ))
        .unwrap()
        .sinks
        .remove(0);
        let sink = cordon_audit::ship::Sink::open(&spec).unwrap();
        let shipper = Shipper::start(log, vec![sink]).unwrap();
        let t = std::time::Instant::now();
        let warnings = shipper.finish();
        let took = t.elapsed();
        assert!(
            took < SHIP_WAIT + std::time::Duration::from_secs(3),
            "{took:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("still running")),
            "{warnings:?}"
        );
        drop(held);
    }
}
