//! Sealing events into the hash chain (sans-IO): each record is one JSON
//! line that starts with its `seq` (1, 2, …) and `prev`, the SHA-256 of the
//! previous line's bytes (64 zeros for the first). Every so often a
//! checkpoint record signs the chain's head with the host key; the last
//! record of a closed log is a closing checkpoint.

use sha2::{Digest, Sha256};

use crate::event::{Context, Event};
use crate::key::HostKey;

/// The hash `prev` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut out);
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `bytes` in lower-case hex.
fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// The hash the next record names as `prev`: SHA-256 of a record's line
/// without its newline.
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Sha256::digest(line).into()
}

/// The seq a record line starts with (`{"seq":N,`), without parsing the
/// rest.
pub fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What a checkpoint signs.
pub fn checkpoint_message(
    session: &str,
    seq: u64,
    head: &str,
    closing: bool,
    time_ns: u64,
) -> Vec<u8> {
    format!("cordon-audit-checkpoint-v1\n{session}\n{seq}\n{head}\n{closing}\n{time_ns}")
        .into_bytes()
}

/// A checkpoint's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its seq.
    pub seq: u64,
    /// The session.
    pub session: String,
    /// The hash of the record before it (also its `prev`).
    pub head: String,
    /// Whether it closes the log.
    pub closing: bool,
    /// The signer's public key, hex.
    pub key: String,
    /// The signature, hex.
    pub sig: String,
    /// When it was written.
    pub time_ns: u64,
}

impl Checkpoint {
    /// Its line, newline excluded: exactly what the writer writes, so the
    /// verifier can compare every byte (nothing after a closing checkpoint
    /// hashes it).
    pub fn line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(400);
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(b"\",");
        body_after_header(
            &mut out,
            &serde_json::json!({
                "checkpoint": {
                    "session": self.session,
                    "head": self.head,
                    "closing": self.closing,
                    "key": self.key,
                    "sig": self.sig,
                },
                "time_ns": self.time_ns,
            }),
        );
        out
    }
}

/// Appends the JSON object `body` without its opening brace: the record
/// is `{"seq":…,"prev":"…",` followed by the event's own members.
fn body_after_header(out: &mut Vec<u8>, body: &impl serde::Serialize) {
    let at = out.len();
    // Serializing a JSON map or value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, body);
    if out.get(at) == Some(&b'{') {
        out.remove(at);
    }
}

/// The chain's state: the next `seq` and the hash of the last line.
#[derive(Debug, Clone)]
pub struct Chain {
    ctx: Context,
    seq: u64,
    prev: [u8; 32],
}

impl Chain {
    /// A new chain for a session.
    pub fn new(ctx: Context) -> Chain {
        Chain {
            ctx,
            seq: 1,
            prev: GENESIS,
        }
    }

    /// The session's context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The seq of the last sealed record (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.seq - 1
    }

    /// The hash of the last sealed record, in hex.
    pub fn head(&self) -> String {
        hex(&self.prev)
    }

    /// Seals `ev` into the next record; its line, newline included, is
    /// appended to `out`. `now_ns` stamps events without a time.
    pub fn seal(&mut self, ev: &Event, now_ns: u64, out: &mut Vec<u8>) {
        let time = if ev.time_ns == 0 { now_ns } else { ev.time_ns };
        let start = out.len();
        self.header(out);
        ev.write_members(&self.ctx, self.seq, time, out);
        out.push(b'}');
        self.finish(start, out);
    }

    /// Seals a checkpoint signed with `key`; `closing` marks the end of the
    /// log.
    pub fn checkpoint(&mut self, key: &HostKey, closing: bool, now_ns: u64, out: &mut Vec<u8>) {
        let head = hex(&self.prev);
        let msg = checkpoint_message(&self.ctx.session, self.seq, &head, closing, now_ns);
        let cp = Checkpoint {
            seq: self.seq,
            session: self.ctx.session.clone(),
            head,
            closing,
            key: key.public_hex(),
            sig: hex(&key.sign(&msg)),
            time_ns: now_ns,
        };
        let start = out.len();
        out.extend_from_slice(&cp.line());
        self.finish(start, out);
    }

    fn header(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{{\"seq\":{}", self.seq);
        out.extend_from_slice(b",\"prev\":\"");
        hex_into(&self.prev, out);
        out.extend_from_slice(b"\",");
    }

    fn finish(&mut self, start: usize, out: &mut Vec<u8>) {
        self.prev = line_hash(&out[start..]);
        out.push(b'\n');
        self.seq += 1;
    }
}
