//! Checking a log (sans-IO): every record's `seq` follows the last one, its
//! `prev` is the hash of the line before it, every checkpoint's signature
//! verifies with the trusted key and names that hash, and all records
//! belong to one session. The first record that breaks a rule is reported
//! with its line and byte offset; a last line without its newline is a
//! torn tail (the writer stopped mid-record), reported as such.

use serde_json::Value;

use crate::chain::{checkpoint_message, hex, line_hash, Checkpoint, GENESIS};
use crate::key::verify_signature;

/// What is wrong with a log, at the first place it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line.
    pub offset: u64,
    /// What is wrong, for people.
    pub what: String,
}

/// The last line, when it has no newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes it has.
    pub len: u64,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The session the records belong to.
    pub session: Option<String>,
    /// Complete records that verified (before any problem).
    pub records: u64,
    /// Checkpoints among them whose signatures verified.
    pub checkpoints: u64,
    /// The seq of the last record covered by a verified checkpoint.
    pub signed_through: u64,
    /// Whether the log ends with a closing checkpoint.
    pub closed: bool,
    /// The hash of the last verified record (hex).
    pub head: Option<String>,
    /// A torn last line.
    pub torn: Option<Torn>,
    /// The first problem; `None` when every complete record verified.
    pub problem: Option<Problem>,
}

/// The verdict in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Intact and closed.
    Verified,
    /// Intact as far as it goes, but torn or not closed (the writer
    /// stopped), or with records after the last checkpoint.
    Incomplete,
    /// Altered: see the problem.
    Tampered,
}

impl Report {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        if self.problem.is_some() {
            Verdict::Tampered
        } else if self.closed && self.torn.is_none() {
            Verdict::Verified
        } else {
            Verdict::Incomplete
        }
    }

    /// What to tell a person, one line each.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let session = self.session.as_deref().unwrap_or("?");
        match self.verdict() {
            Verdict::Verified => out.push(format!(
                "verified: {} records of session {session}, {} signed checkpoints, closed; head {}",
                self.records,
                self.checkpoints,
                self.head.as_deref().unwrap_or("-")
            )),
            Verdict::Incomplete => {
                out.push(format!(
                    "incomplete: {} records of session {session} verify, {} signed checkpoints (signed through record {}), but the log is not closed",
                    self.records, self.checkpoints, self.signed_through
                ));
                if self.records > self.signed_through {
                    out.push(format!(
                        "records {}..{} are chained but no checkpoint signs them (the writer stopped before its next checkpoint, or they were cut off after it)",
                        self.signed_through + 1,
                        self.records
                    ));
                }
            }
            Verdict::Tampered => {
                if let Some(p) = &self.problem {
                    out.push(format!(
                        "TAMPERED: line {} (byte {}): {}",
                        p.line, p.offset, p.what
                    ));
                }
                out.push(format!(
                    "the {} records before it verify ({} signed checkpoints)",
                    self.records, self.checkpoints
                ));
            }
        }
        if let Some(t) = self.torn {
            out.push(format!(
                "torn tail: the last {} bytes (from byte {}) are an incomplete record, as a crash mid-write leaves; not counted",
                t.len, t.offset
            ));
        }
        out
    }
}

/// Verifies `log` against the trusted public key (hex).
pub fn verify(log: &[u8], trusted_key: &str) -> Report {
    let mut r = Report::default();
    let mut prev = GENESIS;
    let mut offset = 0usize;
    let mut line_no = 0u64;
    let mut closed_at: Option<u64> = None;
    while offset < log.len() {
        let Some(nl) = memchr_nl(&log[offset..]) else {
            r.torn = Some(Torn {
                offset: offset as u64,
                len: (log.len() - offset) as u64,
            });
            break;
        };
        line_no += 1;
        let line = &log[offset..offset + nl];
        let at = offset as u64;
        offset += nl + 1;
        let fail = |what: String| Problem {
            line: line_no,
            offset: at,
            what,
        };
        if let Some(c) = closed_at {
            r.problem = Some(fail(format!(
                "a record after the closing checkpoint (record {c})"
            )));
            break;
        }
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                r.problem = Some(fail(format!("not a JSON record ({e}): edited")));
                break;
            }
        };
        let expected = r.records + 1;
        let Some(seq) = v.get("seq").and_then(Value::as_u64) else {
            r.problem = Some(fail("a record without a seq".into()));
            break;
        };
        if seq > expected {
            r.problem = Some(fail(format!(
                "record {seq} where {expected} was due: record(s) {expected}..{} were deleted",
                seq - 1
            )));
            break;
        }
        if seq < expected {
            r.problem = Some(fail(format!(
                "record {seq} again where {expected} was due: a record was duplicated or moved"
            )));
            break;
        }
        if v.get("prev").and_then(Value::as_str) != Some(hex(&prev).as_str()) {
            r.problem = Some(fail(if seq == 1 {
                "the first record does not start the chain: records were cut from the start".into()
            } else {
                format!(
                    "record {seq} does not name the hash of record {}: record {} was altered, or a record was inserted or replaced here",
                    seq - 1,
                    seq - 1
                )
            }));
            break;
        }
        let session = v
            .get("checkpoint")
            .and_then(|c| c.get("session"))
            .or_else(|| v.pointer("/actor/session/uid"))
            .and_then(Value::as_str);
        match (&r.session, session) {
            (_, None) => {
                r.problem = Some(fail(format!("record {seq} names no session")));
                break;
            }
            (None, Some(s)) => r.session = Some(s.to_owned()),
            (Some(first), Some(s)) if first != s => {
                r.problem = Some(fail(format!(
                    "record {seq} belongs to session {s}, not {first}: records were spliced in"
                )));
                break;
            }
            _ => {}
        }
        if let Some(cp) = v.get("checkpoint") {
            let head = cp.get("head").and_then(Value::as_str).unwrap_or("");
            let closing = cp.get("closing").and_then(Value::as_bool).unwrap_or(false);
            let key = cp.get("key").and_then(Value::as_str).unwrap_or("");
            let sig = cp.get("sig").and_then(Value::as_str).unwrap_or("");
            if head != hex(&prev) {
                r.problem = Some(fail(format!(
                    "checkpoint {seq} signs a head that is not record {}'s hash",
                    seq - 1
                )));
                break;
            }
            if sig.bytes().any(|b| b.is_ascii_uppercase()) {
                r.problem = Some(fail(format!(
                    "checkpoint {seq}'s signature is not written as the writer writes it: it was altered"
                )));
                break;
            }
            if key != trusted_key {
                r.problem = Some(fail(format!(
                    "checkpoint {seq} is signed with key {key}, not the trusted {trusted_key}"
                )));
                break;
            }
            let time_ns = v.get("time_ns").and_then(Value::as_u64).unwrap_or(0);
            let session = r.session.clone().unwrap_or_default();
            let msg = checkpoint_message(&session, seq, head, closing, time_ns);
            if !verify_signature(trusted_key, &msg, sig) {
                r.problem = Some(fail(format!(
                    "checkpoint {seq}'s signature does not verify: it was altered"
                )));
                break;
            }
            let exact = Checkpoint {
                seq,
                session,
                head: head.to_owned(),
                closing,
                key: key.to_owned(),
                sig: sig.to_owned(),
                time_ns,
            }
            .line();
            if exact != line {
                r.problem = Some(fail(format!(
                    "checkpoint {seq} is not byte for byte what was signed: it was altered"
                )));
                break;
            }
            r.checkpoints += 1;
            r.signed_through = seq;
            if closing {
                closed_at = Some(seq);
            }
        }
        prev = line_hash(line);
        r.records = seq;
        r.head = Some(hex(&prev));
    }
    r.closed = closed_at.is_some();
    r
}

fn memchr_nl(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}
