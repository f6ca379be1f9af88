//! Shipping a session's log to sinks, at least once and without ever
//! holding up the agent: the log file itself is the spool. A shipper reads
//! the complete records after its cursor, delivers them, and only then
//! moves its cursor (a small file beside the log, replaced atomically). A
//! sink that is down is retried with back-off while the session runs; what
//! it missed is delivered by the next `cordon audit ship`.
//!
//! Sinks here: syslog (RFC 5424 over a unix datagram socket, UDP, or TCP
//! with octet counting, RFC 6587).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// One sink, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// A name of letters, digits, `-` and `_` (names the cursor file).
    pub name: String,
    /// `syslog`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `tcp://HOST:PORT`, `udp://HOST:PORT` or `unix:///PATH`.
    pub address: String,
    /// The syslog facility number (default 16, local0).
    #[serde(default)]
    pub facility: Option<u8>,
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
    /// Parses and checks a sinks file.
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
            if s.kind != "syslog" {
                return Err(format!(
                    "sink {}: type {:?} is not supported (syslog)",
                    s.name, s.kind
                ));
            }
            Target::parse(&s.address).map_err(|e| format!("sink {}: {e}", s.name))?;
        }
        Ok(f)
    }
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

/// The RFC 5424 message for one record (`line` without its newline): the
/// record's own time, the OCSF class as MSGID, the session and seq as
/// structured data, the record itself as the message.
pub fn syslog_message(line: &[u8], facility: u8, hostname: &str) -> Vec<u8> {
    let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let severity = match v.get("severity_id").and_then(Value::as_u64) {
        Some(5) => 2,
        Some(4) => 3,
        Some(3) => 4,
        Some(2) => 5,
        _ => 6,
    };
    let pri = u32::from(facility.min(23)) * 8 + severity;
    let ns = v.get("time_ns").and_then(Value::as_u64).unwrap_or(0);
    let msgid = if v.get("checkpoint").is_some() {
        "checkpoint".to_owned()
    } else {
        v.get("class_uid")
            .and_then(Value::as_u64)
            .and_then(|c| crate::Class::parse(&c.to_string()))
            .map_or("event", crate::Class::short)
            .to_owned()
    };
    let session = v
        .pointer("/actor/session/uid")
        .or_else(|| v.pointer("/checkpoint/session"))
        .and_then(Value::as_str)
        .unwrap_or("-");
    let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let mut out = format!(
        "<{pri}>1 {} {} cordon - {msgid} [cordon@32473 session=\"{}\" seq=\"{seq}\"] ",
        rfc3339(ns),
        if host.is_empty() { "-" } else { &host },
        sd_escape(session)
    )
    .into_bytes();
    out.extend_from_slice(line);
    out
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
/// after the last record that was sent (at least once: a record whose
/// sending failed is sent again next time).
pub fn ship(log: &Path, sink: &SinkSpec, hostname: &str) -> io::Result<Cursor> {
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
    let target = Target::parse(&sink.address).map_err(io::Error::other)?;
    let mut conn = connect(&target)?;
    let facility = sink.facility.unwrap_or(16);
    let mut at = 0usize;
    let mut result = Ok(());
    while let Some(nl) = data[at..].iter().position(|&b| b == b'\n') {
        let line = &data[at..at + nl];
        if let Err(e) = conn.send(&syslog_message(line, facility, hostname)) {
            result = Err(e);
            break;
        }
        at += nl + 1;
        cursor.offset += (nl + 1) as u64;
        cursor.seq = serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .unwrap_or(cursor.seq);
        // The cursor moves every 256 records and at the end: a crash
        // re-sends at most that many.
        if cursor.seq % 256 == 0 {
            write_cursor(&cpath, cursor)?;
        }
    }
    if let Conn::Tcp(s) = &mut conn {
        let _ = s.flush();
    }
    write_cursor(&cpath, cursor)?;
    result.map(|()| cursor)
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
        ] {
            assert!(SinksFile::parse(bad).is_err(), "{bad}");
        }
    }
}
