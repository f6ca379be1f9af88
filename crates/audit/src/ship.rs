//! Shipping a session's log to sinks, at least once and without ever
//! holding up the agent: the log file itself is the spool. A shipper reads
//! the complete records after its cursor, delivers them, and only then
//! moves its cursor (a small file beside the log, replaced atomically). A
//! sink that is down is retried while the session runs; what it missed is
//! delivered by the next `cordon audit ship`.
//!
//! Sinks: syslog (RFC 5424 over a unix datagram socket, UDP, or TCP with
//! octet counting, RFC 6587); HTTP POSTs of JSON batches, generic or in
//! Splunk HEC's event format; OTLP/HTTP logs in OTLP's JSON encoding (with
//! the `otlp` feature). An HTTP batch counts as delivered when the server
//! answers 2xx.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::http;

/// Records per HTTP request unless `batch` says otherwise.
pub const DEFAULT_BATCH: usize = 500;
/// The most records one HTTP request carries.
pub const MAX_BATCH: usize = 10_000;
/// An HTTP request is closed once its body passes this many bytes.
const BATCH_BYTES: usize = 1 << 20;

/// One sink, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// A name of letters, digits, `-` and `_` (names the cursor file).
    pub name: String,
    /// `syslog`, `http`, `splunk-hec` or `otlp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// syslog: `tcp://HOST:PORT`, `udp://HOST:PORT` or `unix:///PATH`.
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: the facility number (default 16, local0).
    #[serde(default)]
    pub facility: Option<u8>,
    /// HTTP sinks: where batches are POSTed (`http://` or `https://`).
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP sinks: a file (mode 0600) holding the token
    /// (`Authorization: Bearer …`, or `Splunk …` for splunk-hec).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTP sinks: the environment variable holding the token instead.
    #[serde(default)]
    pub token_env: Option<String>,
    /// HTTP sinks: a PEM file of CA certificates trusted besides the
    /// system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// HTTP sinks: records per request (default 500, at most 10000).
    #[serde(default)]
    pub batch: Option<usize>,
}

/// The sinks file (`audit.toml` in cordon's configuration directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksFile {
    /// The sinks.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkSpec>,
}

impl SinksFile {
    /// Parses and checks a sinks file (without reading the files it
    /// names: [`Sink::open`] does).
    pub fn parse(text: &str) -> Result<SinksFile, String> {
        let f: SinksFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = std::collections::HashSet::new();
        for s in &f.sinks {
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "sink name {:?}: use letters, digits, '-' and '_'",
                    s.name
                ));
            }
            if !seen.insert(s.name.clone()) {
                return Err(format!("sink {:?} is defined twice", s.name));
            }
            s.check().map_err(|e| format!("sink {}: {e}", s.name))?;
        }
        Ok(f)
    }
}

impl SinkSpec {
    fn check(&self) -> Result<Kind, String> {
        let http_only = [
            ("url", self.url.is_some()),
            ("token_file", self.token_file.is_some()),
            ("token_env", self.token_env.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("batch", self.batch.is_some()),
        ];
        let format = match self.kind.as_str() {
            "syslog" => {
                if let Some((k, _)) = http_only.iter().find(|(_, set)| *set) {
                    return Err(format!("{k} is for HTTP sinks, not syslog"));
                }
                let address = self
                    .address
                    .as_deref()
                    .ok_or("a syslog sink needs an address")?;
                return Ok(Kind::Syslog(
                    Target::parse(address)?,
                    self.facility.unwrap_or(16),
                ));
            }
            "http" => Format::Json,
            "splunk-hec" => Format::SplunkHec,
            "otlp" if cfg!(feature = "otlp") => Format::Otlp,
            "otlp" => {
                return Err(
                    "type \"otlp\": this cordon was built without the otlp feature".to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "type {other:?} is not supported (syslog, http, splunk-hec, otlp)"
                ))
            }
        };
        if self.address.is_some() || self.facility.is_some() {
            return Err("address and facility are for syslog sinks; HTTP sinks take a url".into());
        }
        let url = http::Url::parse(self.url.as_deref().ok_or("an HTTP sink needs a url")?)?;
        if self.token_file.is_some() && self.token_env.is_some() {
            return Err("set token_file or token_env, not both".into());
        }
        if format == Format::SplunkHec && self.token_file.is_none() && self.token_env.is_none() {
            return Err("a splunk-hec sink needs its HEC token (token_file or token_env)".into());
        }
        if self.ca_file.is_some() && !url.tls {
            return Err("ca_file is set but the url is not https://".into());
        }
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(format!("batch {batch}: use 1 to {MAX_BATCH}"));
        }
        Ok(Kind::Http { url, format, batch })
    }
}

/// What a sink sends and how.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Syslog(Target, u8),
    Http {
        url: http::Url,
        format: Format,
        batch: usize,
    },
}

/// The body of an HTTP batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// A JSON array of the records.
    Json,
    /// Splunk HEC events, one JSON object per record.
    SplunkHec,
    /// An OTLP ExportLogsServiceRequest in JSON.
    Otlp,
}

/// A sink ready to deliver: its token read, its TLS roots loaded.
pub struct Sink {
    /// Its name.
    pub name: String,
    kind: Kind,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Makes a configured sink ready: reads its token (a token file that
    /// others can read, or that is not the user's, is refused) and its CA.
    pub fn open(spec: &SinkSpec) -> Result<Sink, String> {
        let fail = |e: String| format!("sink {}: {e}", spec.name);
        let kind = spec.check().map_err(fail)?;
        let token = match (&spec.token_file, &spec.token_env) {
            (Some(path), _) => Some(read_token(path).map_err(fail)?),
            (None, Some(var)) => {
                let v = std::env::var(var)
                    .map_err(|_| fail(format!("token_env {var}: the variable is not set")))?;
                let v = v.trim().to_owned();
                if v.is_empty() {
                    return Err(fail(format!("token_env {var}: the variable is empty")));
                }
                Some(v)
            }
            (None, None) => None,
        };
        let tls = match &kind {
            Kind::Http { url, .. } if url.tls => {
                Some(http::tls_config(spec.ca_file.as_deref()).map_err(fail)?)
            }
            _ => None,
        };
        Ok(Sink {
            name: spec.name.clone(),
            kind,
            token,
            tls,
        })
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    let f = File::open(path).map_err(|e| format!("token_file {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("token_file {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "token_file {} can be read by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!(
            "token_file {} belongs to another user",
            path.display()
        ));
    }
    let mut text = String::new();
    (&f).take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("token_file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!(
            "token_file {}: expected one token on one line",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Where a syslog sink sends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp(String),
    Udp(String),
    Unix(PathBuf),
}

impl Target {
    fn parse(address: &str) -> Result<Target, String> {
        if let Some(a) = address.strip_prefix("tcp://") {
            Ok(Target::Tcp(a.to_owned()))
        } else if let Some(a) = address.strip_prefix("udp://") {
            Ok(Target::Udp(a.to_owned()))
        } else if let Some(p) = address.strip_prefix("unix://") {
            Ok(Target::Unix(PathBuf::from(p)))
        } else {
            Err(format!(
                "address {address:?}: expected tcp://HOST:PORT, udp://HOST:PORT or unix:///PATH"
            ))
        }
    }
}

/// What the sinks need to know of a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Meta {
    seq: u64,
    time_ns: u64,
    severity_id: u64,
    /// The class's short name, or `checkpoint`, or `event`.
    kind: &'static str,
    session: String,
}

impl Meta {
    fn of(line: &[u8]) -> Meta {
        let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let kind = if v.get("checkpoint").is_some() {
            "checkpoint"
        } else {
            v.get("class_uid")
                .and_then(Value::as_u64)
                .and_then(|c| crate::Class::parse(&c.to_string()))
                .map_or("event", crate::Class::short)
        };
        Meta {
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
            time_ns: v.get("time_ns").and_then(Value::as_u64).unwrap_or(0),
            severity_id: v.get("severity_id").and_then(Value::as_u64).unwrap_or(1),
            kind,
            session: v
                .pointer("/actor/session/uid")
                .or_else(|| v.pointer("/checkpoint/session"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }
    }
}

/// The RFC 5424 message for one record (`line` without its newline): the
/// record's own time, the OCSF class as MSGID, the session and seq as
/// structured data, the record itself as the message.
pub fn syslog_message(line: &[u8], facility: u8, hostname: &str) -> Vec<u8> {
    syslog_with(line, &Meta::of(line), facility, hostname)
}

fn syslog_with(line: &[u8], m: &Meta, facility: u8, hostname: &str) -> Vec<u8> {
    let severity = match m.severity_id {
        5 | 6 => 2,
        4 => 3,
        3 => 4,
        2 => 5,
        _ => 6,
    };
    let pri = u32::from(facility.min(23)) * 8 + severity;
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let session = if m.session.is_empty() {
        "-"
    } else {
        &m.session
    };
    let mut out = format!(
        "<{pri}>1 {} {} cordon - {} [cordon@32473 session=\"{}\" seq=\"{}\"] ",
        rfc3339(m.time_ns),
        if host.is_empty() { "-" } else { &host },
        m.kind,
        sd_escape(session),
        m.seq
    )
    .into_bytes();
    out.extend_from_slice(line);
    out
}

/// One Splunk HEC event: the record as `event`, its own time in seconds.
fn hec_event(out: &mut Vec<u8>, line: &[u8], m: &Meta, hostname: &str) {
    out.extend_from_slice(
        format!(
            "{{\"time\":{}.{:06},\"host\":{},\"source\":\"cordon\",\"sourcetype\":\"cordon:ocsf\",\"event\":",
            m.time_ns / 1_000_000_000,
            (m.time_ns / 1000) % 1_000_000,
            Value::from(hostname)
        )
        .as_bytes(),
    );
    out.extend_from_slice(line);
    out.extend_from_slice(b"}\n");
}

/// What an OTLP collector's answer says it rejected: the count and its
/// message (`partialSuccess`; int64 fields may come as strings).
fn otlp_rejected(body: &[u8]) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let p = v.get("partialSuccess")?;
    let n = match p.get("rejectedLogRecords")? {
        Value::String(s) => s.parse().ok()?,
        other => other.as_u64()?,
    };
    let msg = p
        .get("errorMessage")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    (n > 0).then_some((n, msg))
}

/// An OTLP ExportLogsServiceRequest (JSON encoding) carrying `lines`: each
/// record is one log record whose body is the record's JSON text, with
/// the session, seq and class as attributes.
fn otlp_request(lines: &[(&[u8], Meta)], hostname: &str) -> Vec<u8> {
    let str_attr = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
    let records: Vec<Value> = lines
        .iter()
        .map(|(line, m)| {
            // OCSF severity 1..6 onto OpenTelemetry's 1..24 scale.
            let (number, text) = match m.severity_id {
                2 => (10, "INFO2"),
                3 => (13, "WARN"),
                4 => (17, "ERROR"),
                5 => (21, "FATAL"),
                6 => (22, "FATAL2"),
                _ => (9, "INFO"),
            };
            serde_json::json!({
                "timeUnixNano": m.time_ns.to_string(),
                "observedTimeUnixNano": crate::now_ns().to_string(),
                "severityNumber": number,
                "severityText": text,
                "eventName": format!("cordon.{}", m.kind),
                "body": {"stringValue": String::from_utf8_lossy(line)},
                "attributes": [
                    str_attr("cordon.session", &m.session),
                    {"key": "cordon.seq", "value": {"intValue": m.seq.to_string()}},
                    str_attr("cordon.record", m.kind),
                ],
            })
        })
        .collect();
    let request = serde_json::json!({
        "resourceLogs": [{
            "resource": {"attributes": [
                str_attr("service.name", "cordon"),
                str_attr("service.version", env!("CARGO_PKG_VERSION")),
                str_attr("host.name", hostname),
            ]},
            "scopeLogs": [{
                "scope": {"name": "cordon-audit", "version": env!("CARGO_PKG_VERSION")},
                "logRecords": records,
            }],
        }],
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339(ns: u64) -> String {
    let (y, m, d, h, mi, s) = cordon_types::civil_from_unix(ns / 1_000_000_000);
    let us = (ns / 1000) % 1_000_000;
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// A connected syslog sink.
enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

fn connect(t: &Target) -> io::Result<Conn> {
    match t {
        Target::Tcp(a) => {
            let addr = a
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other(format!("{a}: no address")))?;
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))?;
            Ok(Conn::Tcp(s))
        }
        Target::Udp(a) => {
            let addr = a
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other(format!("{a}: no address")))?;
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(addr)?;
            Ok(Conn::Udp(s))
        }
        Target::Unix(p) => Ok(Conn::Unix(UnixDatagram::unbound()?, p.clone())),
    }
}

impl Conn {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                // Octet counting (RFC 6587): "LEN SP MSG".
                let mut framed = format!("{} ", msg.len()).into_bytes();
                framed.extend_from_slice(msg);
                s.write_all(&framed)
            }
            Conn::Udp(s) => s.send(msg).map(drop),
            Conn::Unix(s, p) => s.send_to(msg, &*p).map(drop),
        }
    }
}

/// Where a sink's delivery of a log stands: the byte offset after the last
/// delivered record and that record's seq.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Offset in the log.
    pub offset: u64,
    /// The last delivered seq.
    pub seq: u64,
}

/// The cursor file of sink `name` for the log at `log`.
pub fn cursor_path(log: &Path, name: &str) -> PathBuf {
    let dir = log.parent().unwrap_or(Path::new("."));
    dir.join(format!("sink-{name}.cursor"))
}

/// Reads a cursor (none yet: the start).
pub fn read_cursor(path: &Path) -> io::Result<Cursor> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let mut it = t.split_whitespace().map(str::parse::<u64>);
            match (it.next(), it.next()) {
                (Some(Ok(offset)), Some(Ok(seq))) => Ok(Cursor { offset, seq }),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a delivery cursor", path.display()),
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cursor::default()),
        Err(e) => Err(e),
    }
}

fn write_cursor(path: &Path, c: Cursor) -> io::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    std::fs::write(&tmp, format!("{} {}\n", c.offset, c.seq))?;
    std::fs::rename(&tmp, path)
}

/// Delivers to `sink` the complete records of `log` after its cursor;
/// returns the new cursor. Stops at the first failure, with the cursor
/// after the last record that was delivered (at least once: a record
/// whose delivery failed or was not acknowledged is sent again next time).
pub fn ship(log: &Path, sink: &Sink, hostname: &str) -> io::Result<Cursor> {
    let cpath = cursor_path(log, &sink.name);
    let mut cursor = read_cursor(&cpath)?;
    let mut f = File::open(log)?;
    let len = f.metadata()?.len();
    if cursor.offset > len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the cursor of sink {} is past the end of the log (cut back?)",
                log.display(),
                sink.name
            ),
        ));
    }
    if cursor.offset == len {
        return Ok(cursor);
    }
    f.seek(SeekFrom::Start(cursor.offset))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    // Only complete records: a line still being written waits.
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines = data[..complete]
        .split_inclusive(|&b| b == b'\n')
        .map(|l| (&l[..l.len() - 1], l.len()));
    let result = match &sink.kind {
        Kind::Syslog(target, facility) => {
            ship_syslog(&mut lines, target, *facility, hostname, &cpath, &mut cursor)
        }
        Kind::Http { url, format, batch } => {
            let sending = HttpBatch {
                sink,
                url,
                format: *format,
                batch: *batch,
                hostname,
            };
            sending.ship(&mut lines, &cpath, &mut cursor)
        }
    };
    write_cursor(&cpath, cursor)?;
    result.map(|()| cursor)
}

fn ship_syslog<'a>(
    lines: &mut impl Iterator<Item = (&'a [u8], usize)>,
    target: &Target,
    facility: u8,
    hostname: &str,
    cpath: &Path,
    cursor: &mut Cursor,
) -> io::Result<()> {
    let mut conn = connect(target)?;
    for (line, size) in lines {
        let m = Meta::of(line);
        conn.send(&syslog_with(line, &m, facility, hostname))?;
        cursor.offset += size as u64;
        cursor.seq = m.seq;
        // The cursor moves every 256 records and at the end: a crash
        // re-sends at most that many.
        if cursor.seq % 256 == 0 {
            write_cursor(cpath, *cursor)?;
        }
    }
    if let Conn::Tcp(s) = &mut conn {
        s.flush()?;
    }
    Ok(())
}

/// Delivery to one HTTP sink.
struct HttpBatch<'a> {
    sink: &'a Sink,
    url: &'a http::Url,
    format: Format,
    batch: usize,
    hostname: &'a str,
}

impl HttpBatch<'_> {
    fn ship<'l>(
        &self,
        lines: &mut impl Iterator<Item = (&'l [u8], usize)>,
        cpath: &Path,
        cursor: &mut Cursor,
    ) -> io::Result<()> {
        let mut lines = lines.peekable();
        let mut rejected = 0u64;
        let mut why = String::new();
        while lines.peek().is_some() {
            let mut taken: Vec<(&[u8], Meta)> = Vec::new();
            let mut bytes = 0;
            let mut size = 0u64;
            while taken.len() < self.batch && bytes < BATCH_BYTES {
                let Some((line, n)) = lines.next() else { break };
                bytes += line.len();
                size += n as u64;
                taken.push((line, Meta::of(line)));
            }
            let answer = self.post(&taken)?;
            if !answer.ok() {
                return Err(io::Error::other(format!(
                    "{} refused {} record(s): {}",
                    self.url_text(),
                    taken.len(),
                    answer.describe()
                )));
            }
            cursor.offset += size;
            cursor.seq = taken.last().map_or(cursor.seq, |(_, m)| m.seq);
            write_cursor(cpath, *cursor)?;
            if self.format == Format::Otlp {
                // A collector that took the request but dropped records says
                // so in `partialSuccess`; sending them again would not help.
                if let Some((n, m)) = otlp_rejected(&answer.body) {
                    rejected += n;
                    why = m;
                }
            }
        }
        if rejected > 0 {
            return Err(io::Error::other(format!(
                "{} accepted the requests but rejected {rejected} record(s){}",
                self.url_text(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )));
        }
        Ok(())
    }

    fn post(&self, taken: &[(&[u8], Meta)]) -> io::Result<http::Response> {
        let mut body = Vec::with_capacity(taken.iter().map(|(l, _)| l.len() + 120).sum());
        let auth;
        let mut headers = vec![("Content-Type", "application/json")];
        match self.format {
            Format::Json => {
                body.push(b'[');
                for (i, (line, _)) in taken.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(line);
                }
                body.push(b']');
                if let Some(t) = &self.sink.token {
                    auth = format!("Bearer {t}");
                    headers.push(("Authorization", &auth));
                }
            }
            Format::SplunkHec => {
                for (line, m) in taken {
                    hec_event(&mut body, line, m, self.hostname);
                }
                auth = format!("Splunk {}", self.sink.token.as_deref().unwrap_or(""));
                headers.push(("Authorization", &auth));
            }
            Format::Otlp => {
                body = otlp_request(taken, self.hostname);
                if let Some(t) = &self.sink.token {
                    auth = format!("Bearer {t}");
                    headers.push(("Authorization", &auth));
                }
            }
        }
        http::post(
            self.url,
            self.sink.tls.as_ref(),
            &headers,
            &body,
            Duration::from_secs(10),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.url_text())))
    }

    fn url_text(&self) -> String {
        format!(
            "{}://{}:{}{}",
            if self.url.tls { "https" } else { "http" },
            self.url.host,
            self.url.port,
            self.url.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_messages_follow_rfc5424() {
        let line = br#"{"seq":7,"prev":"00","class_uid":4001,"severity_id":2,"time_ns":1764460800123456789,"actor":{"session":{"uid":"s-1"}}}"#;
        let m = String::from_utf8(syslog_message(line, 16, "host a")).unwrap();
        assert_eq!(
            m,
            format!(
                "<133>1 2025-11-30T00:00:00.123456Z hosta cordon - network [cordon@32473 session=\"s-1\" seq=\"7\"] {}",
                String::from_utf8_lossy(line)
            )
        );
    }

    #[test]
    fn sinks_files_are_checked() {
        assert!(SinksFile::parse(
            "[[sink]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:6514\"\n"
        )
        .is_ok());
        for bad in [
            "[[sink]]\nname = \"a b\"\ntype = \"syslog\"\naddress = \"udp://h:1\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"kafka\"\naddress = \"udp://h:1\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"syslog\"\naddress = \"h:1\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"syslog\"\naddress = \"udp://h:1\"\nport = 3\n",
            "[[sink]]\nname = \"a\"\ntype = \"syslog\"\naddress = \"udp://h:1\"\nurl = \"http://h/\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"http\"\naddress = \"udp://h:1\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"http\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://h/\"\nca_file = \"/c\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://h/\"\nbatch = 0\n",
            "[[sink]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://h/\"\ntoken_env = \"T\"\ntoken_file = \"/t\"\n",
            "[[sink]]\nname = \"a\"\ntype = \"splunk-hec\"\nurl = \"https://h/\"\n",
        ] {
            assert!(SinksFile::parse(bad).is_err(), "{bad}");
        }
        assert!(SinksFile::parse(
            "[[sink]]\nname = \"hec\"\ntype = \"splunk-hec\"\nurl = \"https://h:8088/services/collector/event\"\n\
             token_env = \"HEC\"\nbatch = 100\n\n[[sink]]\nname = \"j\"\ntype = \"http\"\nurl = \"http://[::1]:9/in\"\n"
        )
        .is_ok());
        assert_eq!(
            SinksFile::parse(
                "[[sink]]\nname = \"o\"\ntype = \"otlp\"\nurl = \"http://h:4318/v1/logs\"\n"
            )
            .is_ok(),
            cfg!(feature = "otlp")
        );
    }

    #[test]
    fn token_files_must_be_private_and_the_users_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  tok-1\n").unwrap();
        let spec = |p: &Path| SinkSpec {
            name: "s".into(),
            kind: "http".into(),
            address: None,
            facility: None,
            url: Some("http://127.0.0.1:9/".into()),
            token_file: Some(p.to_owned()),
            token_env: None,
            ca_file: None,
            batch: None,
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Sink::open(&spec(&path)).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Sink::open(&spec(&path)).unwrap();
        assert_eq!(s.token.as_deref(), Some("tok-1"));
        assert!(
            !format!("{s:?}").contains("tok-1"),
            "the token stays out of Debug"
        );
        std::fs::write(&path, "a\nb\n").unwrap();
        assert!(
            Sink::open(&spec(&path)).is_err(),
            "two lines are not one token"
        );
        let e = Sink::open(&spec(&dir.path().join("none"))).unwrap_err();
        assert!(e.contains("none"), "{e}");
    }

    /// A log of `n` event lines (what the sinks need of them).
    fn log_of(dir: &Path, n: u64) -> PathBuf {
        let mut text = String::new();
        for seq in 1..=n {
            text.push_str(&format!(
                "{{\"seq\":{seq},\"prev\":\"00\",\"class_uid\":1007,\"severity_id\":1,\"time_ns\":{},\"actor\":{{\"session\":{{\"uid\":\"s-9\"}}}}}}\n",
                1_700_000_000_000_000_000 + seq
            ));
        }
        let log = dir.join("audit.jsonl");
        std::fs::write(&log, text).unwrap();
        log
    }

    /// An HTTP server on loopback answering each request with the next of
    /// `answers`; returns its port and the bodies it was sent.
    fn server(answers: Vec<u16>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for code in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut got = Vec::new();
                let mut b = [0u8; 65536];
                let body = loop {
                    let n = s.read(&mut b).unwrap();
                    got.extend_from_slice(&b[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= len {
                            break format!("{head}\n\n{body}");
                        }
                    }
                };
                bodies.push(body);
                s.write_all(
                    format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                )
                .unwrap();
            }
            bodies
        });
        (port, t)
    }

    /// A refused batch leaves the cursor where it was; the next run
    /// resends from there, so every record arrives at least once.
    #[test]
    fn http_batches_are_acknowledged_before_the_cursor_moves() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_of(dir.path(), 7);
        let (port, t) = server(vec![200, 503, 200, 200]);
        let sink = Sink::open(&SinkSpec {
            name: "j".into(),
            kind: "http".into(),
            address: None,
            facility: None,
            url: Some(format!("http://127.0.0.1:{port}/in")),
            token_file: None,
            token_env: None,
            ca_file: None,
            batch: Some(3),
        })
        .unwrap();
        let e = ship(&log, &sink, "h").unwrap_err();
        assert!(
            e.to_string().contains("refused 3 record(s): HTTP 503"),
            "{e}"
        );
        let c = read_cursor(&cursor_path(&log, "j")).unwrap();
        assert_eq!(c.seq, 3);
        let c = ship(&log, &sink, "h").unwrap();
        assert_eq!(c.seq, 7);
        let bodies = t.join().unwrap();
        let seqs: Vec<Vec<u64>> = bodies
            .iter()
            .map(|b| {
                let json = b.split_once("\n\n").unwrap().1;
                let v: Vec<Value> = serde_json::from_str(json).unwrap();
                v.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
            })
            .collect();
        assert_eq!(
            seqs,
            vec![vec![1, 2, 3], vec![4, 5, 6], vec![4, 5, 6], vec![7]]
        );
        assert!(
            bodies[0].contains("Content-Type: application/json"),
            "{}",
            bodies[0]
        );
        // Nothing new: nothing sent (the server is gone).
        assert_eq!(ship(&log, &sink, "h").unwrap().seq, 7);
    }

    #[test]
    fn otlp_partial_success_is_read() {
        assert_eq!(
            otlp_rejected(
                br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"too old"}}"#
            ),
            Some((3, "too old".to_owned()))
        );
        assert_eq!(
            otlp_rejected(br#"{"partialSuccess":{"rejectedLogRecords":2}}"#).map(|x| x.0),
            Some(2)
        );
        assert_eq!(otlp_rejected(br#"{"partialSuccess":{}}"#), None);
        assert_eq!(otlp_rejected(b"{}"), None);
        assert_eq!(otlp_rejected(b"not json"), None);
    }

    #[test]
    fn hec_and_otlp_bodies_carry_the_records() {
        let line = br#"{"seq":4,"prev":"00","class_uid":4001,"severity_id":4,"time_ns":1700000000123456789,"actor":{"session":{"uid":"s-1"}}}"#;
        let m = Meta::of(line);
        let mut out = Vec::new();
        hec_event(&mut out, line, &m, "box");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"].as_f64().unwrap(), 1_700_000_000.123_456);
        assert_eq!(v["host"], "box");
        assert_eq!(v["event"]["seq"], 4);
        let v: Value = serde_json::from_slice(&otlp_request(&[(line, m)], "box")).unwrap();
        let r = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(r["timeUnixNano"], "1700000000123456789");
        assert_eq!(r["severityNumber"], 17);
        assert_eq!(r["eventName"], "cordon.network");
        assert_eq!(
            serde_json::from_str::<Value>(r["body"]["stringValue"].as_str().unwrap()).unwrap()
                ["seq"],
            4
        );
        assert_eq!(r["attributes"][0]["value"]["stringValue"], "s-1");
        assert_eq!(r["attributes"][1]["value"]["intValue"], "4");
    }
}
