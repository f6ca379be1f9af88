//! JSON-aware redaction, for model-API request bodies: every string value
//! (and key) is decoded, scanned and, where something is found, written
//! back re-encoded with the placeholders; numbers that are personal data
//! (a card number sent as a number) become placeholder strings. Everything
//! else is copied byte for byte, so the output is the same document,
//! still valid JSON.

use crate::redact::Placeholders;
use crate::{Detector, Finding, Style};

/// Why a body was not redacted as JSON.
#[derive(Debug, thiserror::Error)]
#[error("not valid JSON: {0}")]
pub struct NotJson(String);

/// Redacts the JSON document `body`; returns it and the findings (their
/// spans are in the decoded strings, not in `body`).
pub fn redact_json(
    detector: &Detector,
    map: &mut Placeholders,
    style: Style,
    body: &[u8],
) -> Result<(Vec<u8>, Vec<Finding>), NotJson> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| NotJson(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len());
    let mut all = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let end =
                    string_end(body, i).ok_or_else(|| NotJson("unterminated string".into()))?;
                let raw = &body[i..end];
                let inner = &raw[1..raw.len() - 1];
                // Most strings have no escapes: scanned where they are.
                let decoded: std::borrow::Cow<'_, [u8]> = if memchr::memchr(b'\\', inner).is_none()
                {
                    std::borrow::Cow::Borrowed(inner)
                } else {
                    std::borrow::Cow::Owned(
                        decode(inner)
                            .ok_or_else(|| NotJson("a string escape does not decode".into()))?,
                    )
                };
                let findings = detector.scan(&decoded);
                if findings.is_empty() {
                    out.extend_from_slice(raw);
                } else {
                    let mut replaced = Vec::with_capacity(decoded.len());
                    let mut at = 0;
                    for f in &findings {
                        replaced.extend_from_slice(&decoded[at..f.start]);
                        replaced.extend_from_slice(&map.placeholder(
                            &f.rule,
                            &decoded[f.start..f.end],
                            style,
                        ));
                        at = f.end;
                    }
                    replaced.extend_from_slice(&decoded[at..]);
                    encode(&replaced, &mut out);
                    all.extend(findings);
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let mut end = i + 1;
                while end < body.len()
                    && matches!(body[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    end += 1;
                }
                let number = &body[i..end];
                let findings = detector.scan(number);
                match findings.first() {
                    Some(f) if f.start == 0 && f.end == number.len() => {
                        let p = map.placeholder(&f.rule, number, style);
                        encode(&p, &mut out);
                        all.extend(findings);
                    }
                    _ => out.extend_from_slice(number),
                }
                i = end;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok((out, all))
}

/// The index after the closing quote of the string starting at `start`.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < body.len() {
        i += memchr::memchr2(b'"', b'\\', &body[i..])?;
        match body[i] {
            b'\\' => i += 2,
            _ => return Some(i + 1),
        }
    }
    None
}

/// Decodes the inside of a JSON string to bytes (UTF-8).
fn decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            // Copy the run up to the next escape at once.
            let run = memchr::memchr(b'\\', &s[i..]).unwrap_or(s.len() - i);
            out.extend_from_slice(&s[i..i + run]);
            i += run;
            continue;
        }
        let e = *s.get(i + 1)?;
        i += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(s.get(i..i + 4)?)?;
                i += 4;
                if (0xd800..0xdc00).contains(&hi) && s.get(i..i + 2) == Some(b"\\u") {
                    let lo = hex4(s.get(i + 2..i + 6)?)?;
                    i += 6;
                    let code = 0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff);
                    char::from_u32(code).unwrap_or('\u{fffd}')
                } else {
                    char::from_u32(hi).unwrap_or('\u{fffd}')
                }
            }
            _ => return None,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    Some(out)
}

fn hex4(h: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

/// Writes `s` as a JSON string (quotes, backslashes and control
/// characters escaped; other bytes as they are).
fn encode(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
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
    out.push(b'"');
}
