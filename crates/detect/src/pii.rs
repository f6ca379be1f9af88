//! Personal data, by hand-written scanners (one pass each, no regex):
//! email addresses, phone numbers (E.164 and North American forms), payment
//! card numbers (Luhn and issuer prefixes), IBANs (country length and
//! mod-97), US social security numbers (with the never-issued ranges
//! excluded), and optionally IPv4/IPv6 addresses.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use crate::{check, Confidence, Finding, Kind};

/// The longest personal-data match (an IBAN with spaces).
pub const MAX_LEN: usize = 64;

/// The shortest: an email address (`a@b.cc`), or with IP addresses on,
/// `::`.
pub fn min_len(ip: bool) -> usize {
    if ip {
        2
    } else {
        6
    }
}

#[derive(Debug)]
pub(crate) struct Pii {
    pub ip: bool,
}

struct Ids {
    email: Arc<str>,
    phone: Arc<str>,
    card: Arc<str>,
    iban: Arc<str>,
    ssn: Arc<str>,
    ipv4: Arc<str>,
    ipv6: Arc<str>,
}

fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| Ids {
        email: Arc::from("email"),
        phone: Arc::from("phone"),
        card: Arc::from("credit-card"),
        iban: Arc::from("iban"),
        ssn: Arc::from("us-ssn"),
        ipv4: Arc::from("ipv4"),
        ipv6: Arc::from("ipv6"),
    })
}

fn push(out: &mut Vec<Finding>, rule: &Arc<str>, start: usize, end: usize, confidence: Confidence) {
    out.push(Finding {
        rule: Arc::clone(rule),
        kind: Kind::Pii,
        start,
        end,
        match_start: start,
        confidence,
    });
}

/// The first index at or after `from` whose byte satisfies `pred`, looking
/// at 32 bytes at a time (a loop without an early exit, which the compiler
/// turns into vector instructions) and only then byte by byte.
fn next_where(hay: &[u8], from: usize, pred: impl Fn(u8) -> bool + Copy) -> Option<usize> {
    let mut i = from;
    while i + 32 <= hay.len() {
        if hay[i..i + 32].iter().fold(false, |acc, &b| acc | pred(b)) {
            break;
        }
        i += 32;
    }
    hay[i.min(hay.len())..]
        .iter()
        .position(|&b| pred(b))
        .map(|p| i + p)
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Pii {
    pub fn scan(&self, hay: &[u8], out: &mut Vec<Finding>) {
        emails(hay, out);
        numbers(hay, out);
        if self.ip {
            ips(hay, out);
        }
    }
}

fn email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn emails(hay: &[u8], out: &mut Vec<Finding>) {
    for at in memchr::memchr_iter(b'@', hay) {
        let mut start = at;
        while start > 0 && email_local(hay[start - 1]) && at - start < 64 {
            start -= 1;
        }
        while start < at && hay[start] == b'.' {
            start += 1;
        }
        if start == at || (start > 0 && hay[start - 1] == b'@') {
            continue;
        }
        // Domain: labels of letters, digits and '-', separated by dots.
        let mut end = at + 1;
        let mut last_dot = None;
        while end < hay.len() && end - at < 255 {
            let b = hay[end];
            if b.is_ascii_alphanumeric() || b == b'-' {
                end += 1;
            } else if b == b'.' && end + 1 < hay.len() && hay[end + 1].is_ascii_alphanumeric() {
                last_dot = Some(end);
                end += 1;
            } else {
                break;
            }
        }
        let Some(dot) = last_dot else { continue };
        let tld = &hay[dot + 1..end];
        if tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) || dot == at + 1 {
            continue;
        }
        push(out, &ids().email, start, end, Confidence::High);
    }
}

/// Runs of digits with single separators: cards, SSNs, phone numbers; and
/// IBANs, whose first digits follow two letters.
fn numbers(hay: &[u8], out: &mut Vec<Finding>) {
    // Not '(' (in code, most of them open argument lists): a number in
    // parentheses is seen at its first digit.
    let candidate = |b: u8| b.is_ascii_digit() || b == b'+';
    let mut i = 0;
    while i < hay.len() {
        let Some(next) = next_where(hay, i, candidate) else {
            break;
        };
        i = next;
        let paren = i > 0 && hay[i - 1] == b'(' && hay[i].is_ascii_digit();
        let first = if paren { i - 1 } else { i };
        if first > 0 && (word(hay[first - 1]) || hay[first - 1] == b'.' || hay[first - 1] == b'-') {
            // Inside a word, a version number, or a longer number; an IBAN
            // if the word is its country code.
            if !paren {
                if let Some(end) = iban(hay, i, out) {
                    i = end;
                    continue;
                }
            }
            i += 1;
            while i < hay.len() && hay[i].is_ascii_digit() {
                i += 1;
            }
            continue;
        }
        // Collect digits with single separators ('-', ' ', '.', parens),
        // on the stack: most runs in text are short and go nowhere.
        let start = first;
        let mut digits = Run::<u8>::default();
        let mut seps = Run::<(u8, usize)>::default();
        let mut j = i;
        if hay[j] == b'+' {
            j += 1;
        }
        let mut last_digit = None;
        while j < hay.len() && digits.len() <= 19 {
            let c = hay[j];
            if c.is_ascii_digit() {
                digits.push(c);
                last_digit = Some(j);
                j += 1;
            } else if matches!(c, b'-' | b' ' | b'.' | b')' | b'(')
                && j + 1 < hay.len()
                && (hay[j + 1].is_ascii_digit() || (c == b')' && hay[j + 1] == b' '))
                && last_digit == Some(j - 1)
            {
                seps.push((c, digits.len()));
                j += 1;
                if c == b')' && hay.get(j) == Some(&b' ') {
                    seps.push((b' ', digits.len()));
                    j += 1;
                }
            } else {
                break;
            }
        }
        let Some(end_digit) = last_digit else {
            i = j.max(i + 1);
            continue;
        };
        let end = end_digit + 1;
        if end < hay.len() && (word(hay[end]) || hay[end] == b'@') {
            i = end + 1;
            continue;
        }
        let matched = digits.len() >= 8 && number(hay, start, end, &digits, &seps, out);
        i = if matched { end } else { (start + 1).max(i + 1) };
    }
}

/// Up to 20 values on the stack (a digit run's digits or separators);
/// more are dropped (the run is then too long to be anything).
struct Run<T> {
    items: [T; 20],
    len: usize,
}

impl<T: Copy + Default> Default for Run<T> {
    fn default() -> Self {
        Run {
            items: [T::default(); 20],
            len: 0,
        }
    }
}

impl<T: Copy> Run<T> {
    fn push(&mut self, v: T) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = v;
        }
        self.len += 1;
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl<T> std::ops::Deref for Run<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len.min(20)]
    }
}

/// Classifies one digit run; whether it was a finding.
fn number(
    hay: &[u8],
    start: usize,
    end: usize,
    digits: &[u8],
    seps: &[(u8, usize)],
    out: &mut Vec<Finding>,
) -> bool {
    let text = &hay[start..end];
    let plus = text.first() == Some(&b'+');
    let paren = text.first() == Some(&b'(');
    let kinds = |k: &[u8]| seps.iter().map(|s| s.0).eq(k.iter().copied());
    let only = |allowed: &[u8]| seps.iter().all(|s| allowed.contains(&s.0));
    // US SSN: ddd-dd-dddd.
    if !plus && !paren && digits.len() == 9 && kinds(b"--") && seps[0].1 == 3 && seps[1].1 == 5 {
        let area = &digits[..3];
        let ok = area != b"000"
            && area != b"666"
            && area[0] != b'9'
            && &digits[3..5] != b"00"
            && &digits[5..] != b"0000";
        if ok {
            push(out, &ids().ssn, start, end, Confidence::Medium);
        }
        return ok;
    }
    // Payment card: 13-19 digits, no separators or groups of 4 (Amex 4-6-5).
    if !plus
        && !paren
        && (13..=19).contains(&digits.len())
        && only(b" -")
        && check::luhn(digits)
        && issuer(digits)
    {
        let grouped = seps.is_empty()
            || seps.windows(2).all(|w| w[0].0 == w[1].0)
                && (seps.iter().all(|s| s.1 % 4 == 0) || seps.iter().map(|s| s.1).eq([4, 10]));
        if grouped {
            push(out, &ids().card, start, end, Confidence::High);
            return true;
        }
    }
    // E.164: + and 8-15 digits.
    if plus && (8..=15).contains(&digits.len()) && digits[0] != b'0' {
        push(out, &ids().phone, start, end, Confidence::High);
        return true;
    }
    // North American: (ddd) ddd-dddd, ddd-ddd-dddd, ddd.ddd.dddd.
    if !plus && digits.len() == 10 && digits[0] >= b'2' && digits[3] >= b'2' {
        let at = |p: &[usize]| seps.iter().map(|s| s.1).eq(p.iter().copied());
        let dashed = (kinds(b"--") || kinds(b"..")) && at(&[3, 6]);
        let parens = paren && kinds(b") -") && at(&[3, 3, 6]);
        if dashed || parens {
            push(out, &ids().phone, start, end, Confidence::Medium);
            return true;
        }
    }
    false
}

/// Whether a card number starts like one a network issues.
fn issuer(d: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        d[..n]
            .iter()
            .fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
    };
    let len = d.len();
    match d[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' => (51..=55).contains(&prefix(2)) && len == 16,
        b'2' => (2221..=2720).contains(&prefix(4)) && len == 16,
        b'3' => {
            (matches!(prefix(2), 34 | 37) && len == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len))
                || (matches!(prefix(2), 36 | 38 | 39) && (14..=19).contains(&len))
        }
        b'6' => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// IBAN lengths of the countries that issue them most (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AT", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IS", 26),
    (b"IT", 27),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"NL", 18),
    (b"NO", 15),
    (b"PL", 28),
    (b"PT", 25),
    (b"RO", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TR", 26),
    (b"AE", 23),
    (b"SA", 24),
    (b"IL", 23),
    (b"BR", 29),
    (b"UA", 29),
];

/// An IBAN whose check digits start at `d` (after its country code);
/// where it ends.
fn iban(hay: &[u8], d: usize, out: &mut Vec<Finding>) -> Option<usize> {
    if d < 2 || d + 2 > hay.len() {
        return None;
    }
    let i = d - 2;
    let w = &hay[i..i + 4];
    let starts = w[0].is_ascii_uppercase()
        && w[1].is_ascii_uppercase()
        && w[2].is_ascii_digit()
        && w[3].is_ascii_digit()
        && (i == 0 || !word(hay[i - 1]));
    if !starts {
        return None;
    }
    let &(_, len) = IBAN_LENGTHS.iter().find(|(c, _)| c[..] == w[..2])?;
    // Compact, or in groups of four separated by single spaces.
    let mut compact = [0u8; 34];
    let mut n = 0;
    let mut j = i;
    while j < hay.len() && n < len {
        let c = hay[j];
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            compact[n] = c;
            n += 1;
            j += 1;
        } else if c == b' ' && n % 4 == 0 && j + 1 < hay.len() && hay[j + 1].is_ascii_alphanumeric()
        {
            j += 1;
        } else {
            break;
        }
    }
    let bounded = j == hay.len() || !word(hay[j]);
    (n == len && bounded && check::iban_mod97(&compact[..n])).then(|| {
        push(out, &ids().iban, i, j, Confidence::High);
        j
    })
}

fn ips(hay: &[u8], out: &mut Vec<Finding>) {
    let text_char = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
    let mut i = 0;
    while i < hay.len() {
        if !text_char(hay[i])
            || (i > 0 && (word(hay[i - 1]) || hay[i - 1] == b'.' || hay[i - 1] == b':'))
        {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < hay.len() && text_char(hay[j]) && j - i < 45 {
            j += 1;
        }
        let mut end = j;
        while end > i && hay[end - 1] == b'.' {
            end -= 1;
        }
        let bounded = end == hay.len() || !word(hay[end]);
        let candidate = std::str::from_utf8(&hay[i..end]).unwrap_or_default();
        if bounded && candidate.parse::<Ipv4Addr>().is_ok() {
            push(out, &ids().ipv4, i, end, Confidence::Medium);
        } else if bounded
            && candidate.matches(':').count() >= 2
            && candidate.parse::<Ipv6Addr>().is_ok()
        {
            push(out, &ids().ipv6, i, end, Confidence::Medium);
        }
        i = j.max(i + 1);
    }
}
