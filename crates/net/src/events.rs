//! The egress events of a session: one JSON object per line in the
//! session's `net.jsonl`, and a summary of what was blocked for the user.
//! The audit layer turns these into OCSF records later; the field names here
//! are the contract it reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use cordon_types::ReasonCode;
use serde::Serialize;

/// One decision or the end of an allowed flow.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `flow.allowed`, `flow.denied`, `flow.closed`, `http.request` (each
    /// plain-HTTP request through an allowed flow), `dns.allowed`,
    /// `dns.denied` or `dns.burst`.
    pub kind: &'static str,
    /// How the traffic reached cordon: `proxy` (explicit proxy) or `tun`
    /// (transparent capture).
    pub via: &'static str,
    /// Flow number within the session (allowed/closed pairs share it).
    pub flow: u64,
    /// The destination as the agent named it: a host name or an IP address.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// The proxy request's method (`CONNECT`, `GET`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The TLS server name the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The HTTP `Host` the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    /// The path of a plain-HTTP request (without its query, which may
    /// carry tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The address cordon connected to (after its own resolution and check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// The rule that allowed the flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it was denied or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ReasonCode>,
    /// The explanation given to the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes from the agent to the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    /// Bytes from the destination to the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
    /// How long the flow lasted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `inspected` when cordon terminated the flow's TLS (every request in
    /// it is then an `http.request` event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// The application protocol of an inspected flow (`h2`, `http/1.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The response status of an inspected request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What DLP found in an inspected request and did (`github-pat in the
    /// body (redacted)`), never the data itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlp: Option<String>,
}

/// What the user hears when the agent exits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Flows that were allowed.
    pub allowed: u64,
    /// Denied attempts per `(destination, reason code)`.
    pub denied: BTreeMap<(String, ReasonCode), u64>,
    /// Events that could not be written to the log.
    pub lost_events: u64,
}

impl Summary {
    /// Number of denied attempts.
    pub fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }

    /// One line, e.g. `blocked 3 connection attempts: evil.test:443 x2
    /// (net_host_not_allowed), 10.0.0.1:80 (net_ip_literal)`; `None` when
    /// nothing was blocked.
    pub fn blocked_line(&self) -> Option<String> {
        let total = self.denied_total();
        if total == 0 {
            return None;
        }
        let mut by_count: Vec<_> = self.denied.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = by_count
            .iter()
            .take(5)
            .map(|((dest, code), n)| {
                if **n > 1 {
                    format!("{dest} x{n} ({code})")
                } else {
                    format!("{dest} ({code})")
                }
            })
            .collect();
        let more = by_count.len().saturating_sub(5);
        let tail = if more > 0 {
            format!(", and {more} more destination(s)")
        } else {
            String::new()
        };
        Some(format!(
            "blocked {total} connection attempt(s): {}{tail}",
            shown.join(", ")
        ))
    }
}

/// Where the engine's events also go, each as it is recorded.
#[derive(Clone)]
pub struct Forward(pub std::sync::Arc<dyn Fn(&NetEvent) + Send + Sync>);

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forward")
    }
}

/// Lines are written out once this many bytes are waiting (and by
/// [`EventLog::flush`], which the engine calls every
/// [`EventLog::FLUSH_EVERY`] and when it stops).
const FLUSH_AT: usize = 64 * 1024;

/// The session's event log (append-only) and running summary. Lines are
/// gathered in memory and appended in batches: one `write` per event cost a
/// busy proxy a tenth of its requests per second, and the lock around it
/// made the engine's threads wait for each other.
#[derive(Debug)]
pub struct EventLog {
    forward: Option<Forward>,
    file: Mutex<File>,
    pending: Mutex<Vec<u8>>,
    summary: Mutex<Summary>,
    /// Flows allowed and not closed yet, by number.
    open: Mutex<BTreeMap<u64, crate::control::OpenFlow>>,
}

impl EventLog {
    /// Creates (or appends to) the log at `path`, private to the user.
    pub fn create(path: &Path, forward: Option<Forward>) -> io::Result<EventLog> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            // Never written through a planted symlink.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(EventLog {
            forward,
            file: Mutex::new(file),
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            summary: Mutex::new(Summary::default()),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    /// How often the engine writes out what is waiting.
    pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

    /// Appends every line recorded so far to the file, in order.
    pub fn flush(&self) {
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        let batch = match self.pending.lock() {
            Ok(mut p) if !p.is_empty() => std::mem::replace(&mut *p, Vec::with_capacity(FLUSH_AT)),
            _ => return,
        };
        if file.write_all(&batch).is_err() {
            let lost = batch.iter().filter(|&&b| b == b'\n').count() as u64;
            drop(file);
            if let Ok(mut s) = self.summary.lock() {
                s.lost_events += lost;
            }
        }
    }

    /// Records `ev` (stamping its time) and counts it in the summary.
    pub fn record(&self, mut ev: NetEvent) {
        ev.time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let queued = match self.pending.lock() {
            Ok(mut p) => match serde_json::to_writer(&mut *p, &ev) {
                Ok(()) => {
                    p.push(b'\n');
                    Some(p.len() >= FLUSH_AT)
                }
                Err(_) => None,
            },
            Err(_) => None,
        };
        if queued == Some(true) {
            self.flush();
        }
        if let Some(f) = &self.forward {
            (f.0)(&ev);
        }
        match ev.kind {
            "flow.allowed" => {
                if let Ok(mut open) = self.open.lock() {
                    open.insert(
                        ev.flow,
                        crate::control::OpenFlow {
                            flow: ev.flow,
                            via: ev.via,
                            host: ev.host.clone(),
                            port: ev.port,
                            addr: ev.addr,
                            since_ms: ev.time_ms,
                        },
                    );
                }
            }
            "flow.closed" => {
                if let Ok(mut open) = self.open.lock() {
                    open.remove(&ev.flow);
                }
            }
            _ => {}
        }
        if let Ok(mut s) = self.summary.lock() {
            if queued.is_none() {
                s.lost_events += 1;
            }
            match ev.kind {
                "flow.allowed" => s.allowed += 1,
                // A refused name is asked for twice (A and AAAA): count it once.
                "dns.denied" if ev.method.as_deref() != Some("AAAA") => {
                    let code = ev.code.unwrap_or(ReasonCode::NetHostNotAllowed);
                    let dest = format!("{} (lookup)", ev.host);
                    *s.denied.entry((dest, code)).or_default() += 1;
                }
                "flow.denied" => {
                    let dest = if ev.host.contains(':') {
                        format!("[{}]:{}", ev.host, ev.port)
                    } else {
                        format!("{}:{}", ev.host, ev.port)
                    };
                    let code = ev.code.unwrap_or(ReasonCode::NetHostNotAllowed);
                    *s.denied.entry((dest, code)).or_default() += 1;
                }
                _ => {}
            }
        }
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        self.summary.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The flows allowed and not closed yet, oldest first.
    pub fn open_flows(&self) -> Vec<crate::control::OpenFlow> {
        self.open
            .lock()
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_lines_and_the_summary_counts_denials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.jsonl");
        let log = EventLog::create(&path, None).unwrap();
        for host in ["evil.test", "evil.test", "10.0.0.1"] {
            log.record(NetEvent {
                kind: "flow.denied",
                via: "proxy",
                host: host.into(),
                port: 443,
                code: Some(ReasonCode::NetHostNotAllowed),
                ..Default::default()
            });
        }
        log.record(NetEvent {
            kind: "flow.allowed",
            via: "proxy",
            host: "ok.test".into(),
            port: 443,
            ..Default::default()
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "batched");
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["code"], "net_host_not_allowed");
        assert!(lines[0]["time_ms"].as_u64().unwrap() > 0);
        assert!(lines[3].get("code").is_none());
        let s = log.summary();
        assert_eq!((s.allowed, s.denied_total()), (1, 3));
        let line = s.blocked_line().unwrap();
        assert!(
            line.starts_with("blocked 3 connection attempt(s): evil.test:443 x2"),
            "{line}"
        );
        assert_eq!(Summary::default().blocked_line(), None);
    }

    #[test]
    fn the_log_is_not_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("net.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(EventLog::create(&link, None).is_err());
        assert!(!target.exists());
    }
}
