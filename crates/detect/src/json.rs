//! JSON-aware redaction, for model-API request bodies: every string value
//! (and key) is decoded, scanned and, where something is found, the found
//! part is replaced by its placeholder, JSON-encoded; numbers that are
//! personal data (a card number sent as a number) become placeholder
//! strings. Everything else is copied byte for byte, so the output is the
//! same document, still valid JSON.
//!
//! One pass: the document is checked against the JSON grammar (RFC 8259)
//! while it is walked, strings without escapes are scanned where they are,
//! and the output is written only where something changes.

use crate::redact::Placeholders;
use crate::{Detector, Finding, Style};

/// Why a body was not redacted as JSON.
#[derive(Debug, thiserror::Error)]
#[error("not valid JSON: {0}")]
pub struct NotJson(String);

fn bad<T>(what: &str, at: usize) -> Result<T, NotJson> {
    Err(NotJson(format!("{what} at byte {at}")))
}

/// What the grammar allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A value (the document, after ':' or after ',' in an array).
    Value,
    /// A value or ']' (just after '[').
    ValueOrClose,
    /// A key (after ',' in an object).
    Key,
    /// A key or '}' (just after '{').
    KeyOrClose,
    /// ':' after a key.
    Colon,
    /// ',' or the end of the container.
    CommaOrClose,
    /// Nothing but whitespace: the document is complete.
    End,
}

/// Redacts the JSON document `body`; returns it and the findings (their
/// spans are in the decoded strings, not in `body`).
pub fn redact_json(
    detector: &Detector,
    map: &mut Placeholders,
    style: Style,
    body: &[u8],
) -> Result<(Vec<u8>, Vec<Finding>), NotJson> {
    let mut w = Writer {
        body,
        out: Vec::new(),
        copied: 0,
    };
    let mut all = Vec::new();
    let mut decoded = Vec::new();
    let mut stack: Vec<u8> = Vec::new();
    let mut want = Want::Value;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        }
        let value = matches!(want, Want::Value | Want::ValueOrClose);
        match b {
            b'"' if value || matches!(want, Want::Key | Want::KeyOrClose) => {
                let end = string(detector, map, style, &mut w, &mut decoded, &mut all, i)?;
                want = if value { after(&stack) } else { Want::Colon };
                i = end;
            }
            b'{' | b'[' if value => {
                stack.push(b);
                want = if b == b'{' {
                    Want::KeyOrClose
                } else {
                    Want::ValueOrClose
                };
                i += 1;
            }
            b'}' | b']'
                if want == Want::CommaOrClose
                    || (b == b'}' && want == Want::KeyOrClose)
                    || (b == b']' && want == Want::ValueOrClose) =>
            {
                let open = if b == b'}' { b'{' } else { b'[' };
                if stack.pop() != Some(open) {
                    return bad("a mismatched bracket", i);
                }
                want = after(&stack);
                i += 1;
            }
            b',' if want == Want::CommaOrClose => {
                want = if stack.last() == Some(&b'{') {
                    Want::Key
                } else {
                    Want::Value
                };
                i += 1;
            }
            b':' if want == Want::Colon => {
                want = Want::Value;
                i += 1;
            }
            b'-' | b'0'..=b'9' if value => {
                let end = number_end(body, i)
                    .ok_or_else(|| NotJson(format!("a bad number at byte {i}")))?;
                let number = &body[i..end];
                let findings = detector.scan(number);
                if let Some(f) = findings
                    .first()
                    .filter(|f| f.start == 0 && f.end == number.len())
                {
                    let p = map.placeholder(&f.rule, number, style);
                    w.replace(i, end, |out| {
                        out.push(b'"');
                        encode(&p, out);
                        out.push(b'"');
                    });
                    all.extend(findings);
                }
                want = after(&stack);
                i = end;
            }
            b't' | b'f' | b'n' if value => {
                let word: &[u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if !body[i..].starts_with(word) {
                    return bad("an unknown literal", i);
                }
                want = after(&stack);
                i += word.len();
            }
            _ => return bad("an unexpected character", i),
        }
    }
    if want != Want::End {
        return bad("an incomplete document", body.len());
    }
    Ok((w.finish(), all))
}

/// What follows a complete value inside `stack`.
fn after(stack: &[u8]) -> Want {
    if stack.is_empty() {
        Want::End
    } else {
        Want::CommaOrClose
    }
}

/// The output, written lazily: the input is copied in one piece up to
/// each replacement.
struct Writer<'a> {
    body: &'a [u8],
    out: Vec<u8>,
    copied: usize,
}

impl Writer<'_> {
    /// Replaces `body[start..end]` with what `with` writes.
    fn replace(&mut self, start: usize, end: usize, with: impl FnOnce(&mut Vec<u8>)) {
        // Two findings widened to the same escape touch: the second starts
        // where the first ended.
        let start = start.max(self.copied);
        let end = end.max(start);
        if self.out.capacity() == 0 {
            self.out.reserve(self.body.len() + 64);
        }
        self.out.extend_from_slice(&self.body[self.copied..start]);
        with(&mut self.out);
        self.copied = end;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.copied == 0 {
            return self.body.to_vec();
        }
        self.out.extend_from_slice(&self.body[self.copied..]);
        self.out
    }
}

/// Checks, scans and redacts the string starting at `start`; returns the
/// index after its closing quote.
fn string(
    detector: &Detector,
    map: &mut Placeholders,
    style: Style,
    w: &mut Writer<'_>,
    decoded: &mut Vec<u8>,
    all: &mut Vec<Finding>,
    start: usize,
) -> Result<usize, NotJson> {
    let body = w.body;
    // Find the closing quote, decoding on the way once an escape shows up
    // (most strings have none and are scanned where they are).
    let mut i = start + 1;
    let mut escaped = false;
    let mut run = i;
    decoded.clear();
    let end = loop {
        let Some(at) = memchr::memchr2(b'"', b'\\', &body[i..]) else {
            return bad("an unterminated string", start);
        };
        i += at;
        if escaped {
            decoded.extend_from_slice(&body[run..i]);
        }
        if body[i] == b'"' {
            break i;
        }
        if !escaped {
            escaped = true;
            decoded.extend_from_slice(&body[run..i]);
        }
        // The common escapes inline; `\u` and errors through `escape`.
        match body.get(i + 1).copied().and_then(short_escape) {
            Some(b) => {
                decoded.push(b);
                i += 2;
            }
            None => {
                let Some((c, used)) = escape(&body[i..]) else {
                    return bad("a bad escape in a string", i);
                };
                push_char(decoded, c);
                i += used;
            }
        }
        run = i;
    };
    let inner_at = start + 1;
    let inner = &body[inner_at..end];
    if has_control(inner) {
        return bad("a control character in a string", start);
    }
    let text: &[u8] = if escaped { decoded } else { inner };
    if text.len() < detector.min_len() {
        return Ok(end + 1);
    }
    let findings = detector.scan(text);
    if findings.is_empty() {
        return Ok(end + 1);
    }
    // Where the found parts are in `inner` (the same places without
    // escapes), to replace only them.
    let spans: Vec<(usize, usize)> = if escaped {
        let wanted: Vec<(usize, bool)> = findings
            .iter()
            .flat_map(|f| [(f.start, false), (f.end, true)])
            .collect();
        let raw = raw_positions(inner, &wanted);
        raw.chunks(2).map(|p| (p[0], p[1])).collect()
    } else {
        findings.iter().map(|f| (f.start, f.end)).collect()
    };
    for (f, (s, e)) in findings.iter().zip(spans) {
        let p = map.placeholder(&f.rule, &text[f.start..f.end], style);
        w.replace(inner_at + s, inner_at + e, |out| encode(&p, out));
    }
    all.extend(findings);
    Ok(end + 1)
}

/// Whether `s` has a byte below 0x20 (not allowed raw in a JSON string),
/// 32 bytes at a time.
fn has_control(s: &[u8]) -> bool {
    s.chunks(32)
        .any(|c| c.iter().fold(false, |acc, &b| acc | (b < 0x20)))
}

/// The end of the number starting at `i` (`-? int frac? exp?`).
fn number_end(body: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let from = i;
        while body.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    if body.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match body.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    };
    if body.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(body.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(body.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// The byte a two-byte escape (`\n`, `\"`, ...) stands for.
#[inline]
fn short_escape(e: u8) -> Option<u8> {
    Some(match e {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 8,
        b'f' => 12,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

fn push_char(out: &mut Vec<u8>, c: char) {
    if c.is_ascii() {
        out.push(c as u8);
    } else {
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Where the positions `ps` (ascending) of the decoded string `s` are in
/// `s`: a position inside the bytes one escape stands for (a `\u`
/// character) goes to the escape's start, or for an end (`true`) past it.
fn raw_positions(s: &[u8], ps: &[(usize, bool)]) -> Vec<usize> {
    let mut out = Vec::with_capacity(ps.len());
    let (mut i, mut dec) = (0, 0);
    for &(p, end) in ps {
        loop {
            if i >= s.len() {
                out.push(s.len());
                break;
            }
            if s[i] != b'\\' {
                let run = memchr::memchr(b'\\', &s[i..]).unwrap_or(s.len() - i);
                if p < dec + run {
                    out.push(i + (p - dec));
                    break;
                }
                i += run;
                dec += run;
                continue;
            }
            // `s` decoded before: every escape in it is valid.
            let (c, used) = escape(&s[i..]).unwrap_or(('\u{fffd}', s.len() - i));
            let n = c.len_utf8();
            if p == dec {
                out.push(i);
                break;
            }
            if p < dec + n {
                out.push(if end { i + used } else { i });
                break;
            }
            i += used;
            dec += n;
        }
    }
    out
}

/// The character the escape at the start of `s` stands for, and its
/// length; `None` if it is not a JSON escape. Unpaired surrogates decode
/// to U+FFFD.
#[inline]
fn escape(s: &[u8]) -> Option<(char, usize)> {
    let c = match *s.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(s.get(2..6)?)?;
            if (0xd800..0xdc00).contains(&hi) && s.get(6..8) == Some(b"\\u") {
                if let Some(lo) = hex4(s.get(8..12)?).filter(|lo| (0xdc00..0xe000).contains(lo)) {
                    let code = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    return Some((char::from_u32(code).unwrap_or('\u{fffd}'), 12));
                }
            }
            return Some((char::from_u32(hi).unwrap_or('\u{fffd}'), 6));
        }
        _ => return None,
    };
    Some((c, 2))
}

fn hex4(h: &[u8]) -> Option<u32> {
    if !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

/// Writes `s` JSON-escaped (quotes, backslashes and control characters;
/// other bytes as they are), without the surrounding quotes.
fn encode(s: &[u8], out: &mut Vec<u8>) {
    let plain = |b: &u8| *b >= 0x20 && *b != b'"' && *b != b'\\';
    let mut rest = s;
    while !rest.is_empty() {
        // The run that needs no escaping, at once.
        let run = rest.iter().position(|b| !plain(b)).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some((&b, tail)) = rest[run..].split_first() else {
            break;
        };
        rest = tail;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}
