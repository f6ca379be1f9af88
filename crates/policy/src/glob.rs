//! Glob patterns for `hide`/`reveal`, matched without compiling regexes.
//!
//! Syntax (the `.gitignore` subset people write): `*` any run of characters
//! except `/`; `?` one character except `/`; `[abc]`, `[a-z]`, `[!a-z]` or
//! `[^a-z]` one character from (or not from) a set, never `/`; `**` as a whole
//! path component crosses directories (`a/**/b` matches `a/b` and `a/x/y/b`;
//! `dir/**` everything below `dir`); `\x` a literal `x`. Matching is on bytes.
//!
//! Most real patterns are `*.ext`, `prefix*` or a plain name; those are
//! recognised when compiled and matched with one comparison. The general case
//! uses the classic single-star backtracking matcher (linear in practice) and
//! recursion only for `**`.

/// One element of a general pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    Any,
    Star,
    /// `**/` (or a leading `**/`): zero or more whole components.
    Dirs,
    /// A trailing `/**` body: anything, including `/`.
    All,
    Class {
        neg: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The whole text equals this.
    Literal(Vec<u8>),
    /// `prefix*` without `/` in the matched rest.
    Prefix(Vec<u8>),
    /// `*suffix` without `/` in the matched rest.
    Suffix(Vec<u8>),
    /// Anything else.
    General(Vec<Tok>),
}

fn parse(pat: &str) -> Result<Vec<Tok>, String> {
    let b = pat.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' if b.get(i + 1) == Some(&b'*') => {
                let start_ok = i == 0 || b[i - 1] == b'/';
                let end = i + 2;
                if start_ok && b.get(end) == Some(&b'/') {
                    // "a/**/b" becomes "a/", Dirs, "b": Dirs matches "" or
                    // any run of whole components ending in '/'.
                    out.push(Tok::Dirs);
                    i = end + 1;
                } else if start_ok && end == b.len() {
                    out.push(Tok::All);
                    i = end;
                } else {
                    // "**" inside a component behaves like "*".
                    out.push(Tok::Star);
                    i = end;
                    while b.get(i) == Some(&b'*') {
                        i += 1;
                    }
                }
            }
            b'*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            b'?' => {
                out.push(Tok::Any);
                i += 1;
            }
            b'\\' => {
                let c = *b
                    .get(i + 1)
                    .ok_or_else(|| format!("invalid glob {pat:?}: dangling '\\'"))?;
                out.push(Tok::Lit(c));
                i += 2;
            }
            b'[' => {
                let mut j = i + 1;
                let neg = matches!(b.get(j), Some(b'!') | Some(b'^'));
                if neg {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *b
                        .get(j)
                        .ok_or_else(|| format!("invalid glob {pat:?}: unclosed character class"))?;
                    if c == b']' && !first {
                        break;
                    }
                    first = false;
                    if b.get(j + 1) == Some(&b'-') && b.get(j + 2).is_some_and(|&e| e != b']') {
                        let hi = b[j + 2];
                        if hi < c {
                            return Err(format!(
                                "invalid glob {pat:?}: invalid range {}-{}",
                                c as char, hi as char
                            ));
                        }
                        ranges.push((c, hi));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                out.push(Tok::Class { neg, ranges });
                i = j + 1;
            }
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn literal(toks: &[Tok]) -> Option<Vec<u8>> {
    toks.iter()
        .map(|t| match t {
            Tok::Lit(c) => Some(*c),
            _ => None,
        })
        .collect()
}

impl Pattern {
    /// Compiles `pat`; errors name the problem.
    pub fn new(pat: &str) -> Result<Pattern, String> {
        if pat.is_empty() {
            return Err("empty glob".into());
        }
        if pat.ends_with('/') {
            return Err(format!(
                "invalid glob {pat:?}: a trailing '/' matches nothing (to hide a directory, \
                 name it without the slash)"
            ));
        }
        let toks = parse(pat)?;
        if let Some(l) = literal(&toks) {
            return Ok(Pattern(Kind::Literal(l)));
        }
        if let [Tok::Star, rest @ ..] = toks.as_slice() {
            if let Some(l) = literal(rest) {
                return Ok(Pattern(Kind::Suffix(l)));
            }
        }
        if let [rest @ .., Tok::Star] = toks.as_slice() {
            if let Some(l) = literal(rest) {
                return Ok(Pattern(Kind::Prefix(l)));
            }
        }
        Ok(Pattern(Kind::General(toks)))
    }

    /// Whether `text` matches the whole pattern.
    pub fn is_match(&self, text: &[u8]) -> bool {
        match &self.0 {
            Kind::Literal(l) => text == l.as_slice(),
            Kind::Prefix(p) => text.starts_with(p) && !text[p.len()..].contains(&b'/'),
            Kind::Suffix(s) => text.ends_with(s) && !text[..text.len() - s.len()].contains(&b'/'),
            Kind::General(t) => general(t, text),
        }
    }
}

fn one(tok: &Tok, c: u8) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::Any => c != b'/',
        Tok::Class { neg, ranges } => {
            c != b'/' && (ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg)
        }
        Tok::Star | Tok::Dirs | Tok::All => false,
    }
}

/// Single-star backtracking: on a mismatch, retry from the last `*` with one
/// more character swallowed (never a `/`). `**` forms recurse.
fn general(toks: &[Tok], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < toks.len() {
            match &toks[p] {
                Tok::All => return true,
                Tok::Dirs => {
                    // Zero components, or skip through each following '/'.
                    if general(&toks[p + 1..], &text[t..]) {
                        return true;
                    }
                    return text[t..]
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c == b'/')
                        .any(|(k, _)| general(&toks[p + 1..], &text[t + k + 1..]));
                }
                Tok::Star => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                tok => {
                    if t < text.len() && one(tok, text[t]) {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        } else if t == text.len() {
            return true;
        }
        // Mismatch: let the last star take one more character.
        match star {
            Some((sp, st)) if st < text.len() && text[st] != b'/' => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p).unwrap().is_match(t.as_bytes())
    }

    #[test]
    fn strategies_are_chosen() {
        let kind = |p: &str| Pattern::new(p).unwrap().0;
        assert!(matches!(kind("*.pem"), Kind::Suffix(_)));
        assert!(matches!(kind(".env*"), Kind::Prefix(_)));
        assert!(matches!(kind(".netrc"), Kind::Literal(_)));
        assert!(matches!(kind("a/*.json"), Kind::General(_)));
    }

    #[test]
    fn table() {
        let yes = [
            ("*.pem", "server.pem"),
            (".env*", ".env"),
            (".env*", ".env.production"),
            ("id_rsa*", "id_rsa.pub"),
            ("secrets/*.json", "secrets/prod.json"),
            ("a/**/b", "a/b"),
            ("a/**/b", "a/x/y/b"),
            ("**/b", "b"),
            ("**/b", "x/b"),
            ("dir/**", "dir/x/y"),
            ("[abc].txt", "b.txt"),
            ("[!a-c].txt", "d.txt"),
            ("[^a-c].txt", "d.txt"),
            ("?.key", "k.key"),
            ("a*b*c", "aXXbYYc"),
            ("\\*lit", "*lit"),
            ("[]]", "]"),
            ("x**y", "xay"),
        ];
        for (p, t) in yes {
            assert!(m(p, t), "{p} should match {t}");
        }
        let no = [
            ("*.pem", "dir/server.pem"),
            (".env*", "x.env"),
            ("secrets/*.json", "secrets/sub/prod.json"),
            ("a/**/b", "a/xb"),
            ("dir/**", "dirx/y"),
            ("[abc].txt", "d.txt"),
            ("[!a-c].txt", "a.txt"),
            ("?.key", "/.key"),
            ("a*b*c", "aXXbYY"),
            ("*", "a/b"),
            ("x**y", "x/y"),
        ];
        for (p, t) in no {
            assert!(!m(p, t), "{p} should not match {t}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for bad in ["", "[abc", "a\\", "[z-a]", "dir/", "**/"] {
            assert!(Pattern::new(bad).is_err(), "{bad:?}");
        }
    }

    /// Differential test against globset (literal_separator mode) on
    /// generated patterns and paths from a small alphabet.
    #[test]
    fn agrees_with_globset() {
        let atoms = ["a", "b", ".", "/", "*", "?", "[ab]", "[!a]", "**/", "/**"];
        let chars = [b'a', b'b', b'.', b'/', b'c'];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for _ in 0..4000 {
            let n = (next() % 5 + 1) as usize;
            let pat: String = (0..n)
                .map(|_| atoms[(next() % atoms.len() as u64) as usize])
                .collect();
            if pat.starts_with('/') || pat.ends_with('/') || pat.contains("//") {
                assert!(
                    Pattern::new(&pat).is_err() || !pat.ends_with('/'),
                    "{pat:?}"
                );
                continue;
            }
            let Ok(ours) = Pattern::new(&pat) else {
                continue;
            };
            let Ok(theirs) = globset::GlobBuilder::new(&pat)
                .literal_separator(true)
                .build()
            else {
                continue;
            };
            let theirs = theirs.compile_matcher();
            for _ in 0..20 {
                let len = (next() % 7) as usize;
                let text: Vec<u8> = (0..len)
                    .map(|_| chars[(next() % chars.len() as u64) as usize])
                    .collect();
                let s = String::from_utf8(text.clone()).unwrap();
                assert_eq!(
                    ours.is_match(&text),
                    theirs.is_match(&s),
                    "pattern {pat:?} text {s:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "only {checked} cases");
    }
}
