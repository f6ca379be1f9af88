//! Validated value types used in profiles. Each one rejects bad input while
//! the TOML is being read, so errors carry the file position.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that can appear in a rule list, either bare (`".gitconfig"`) or as
/// a table with a reason (`{ path = ".gitconfig", reason = "git identity" }`).
pub trait RuleValue: Sized {
    /// The table key naming the value (`path`, `glob`, `name`).
    const KEY: &'static str;
    /// Parses and validates the text.
    fn parse(s: &str) -> Result<Self, String>;
    /// The text form.
    fn render(&self) -> String;
}

/// One rule: a value, why it is there, and whether a missing target is fine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathRule<T> {
    /// The value.
    pub value: T,
    /// Why the rule exists (shown by `cordon profile show`).
    pub reason: Option<String>,
    /// A missing target is skipped instead of being an error.
    pub optional: bool,
}

impl<T: RuleValue> PathRule<T> {
    /// A rule without reason, required.
    pub fn new(value: T) -> Self {
        PathRule {
            value,
            reason: None,
            optional: false,
        }
    }
}

impl<'de, T: RuleValue> Deserialize<'de> for PathRule<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: RuleValue> Visitor<'de> for V<T> {
            type Value = PathRule<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a string or a table {{ {} = \"...\", reason = \"...\", optional = false }}",
                    T::KEY
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::parse(s).map(PathRule::new).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut value = None;
                let mut reason = None;
                let mut optional = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == T::KEY {
                        let s: String = map.next_value()?;
                        value = Some(T::parse(&s).map_err(de::Error::custom)?);
                    } else if key == "reason" {
                        reason = Some(map.next_value()?);
                    } else if key == "optional" {
                        optional = map.next_value()?;
                    } else {
                        return Err(de::Error::unknown_field(
                            &key,
                            &[T::KEY, "reason", "optional"],
                        ));
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field(T::KEY))?;
                Ok(PathRule {
                    value,
                    reason,
                    optional,
                })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: RuleValue> Serialize for PathRule<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.reason.is_none() && !self.optional {
            return s.serialize_str(&self.value.render());
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(T::KEY, &self.value.render())?;
        if let Some(r) = &self.reason {
            m.serialize_entry("reason", r)?;
        }
        if self.optional {
            m.serialize_entry("optional", &true)?;
        }
        m.end()
    }
}

/// A [`RuleValue`] written as a bare string, without the rule table form
/// (map values, single settings).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bare<T>(pub T);

impl<'de, T: RuleValue> Deserialize<'de> for Bare<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::parse(&s).map(Bare).map_err(de::Error::custom)
    }
}

impl<T: RuleValue> Serialize for Bare<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.render())
    }
}

fn plain_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// A host path: absolute, or relative to the user's home with `~/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPath {
    /// `/abs/path`
    Absolute(PathBuf),
    /// `~/rel/path`
    Home(PathBuf),
}

impl HostPath {
    /// The host path, with `~` replaced by `home`.
    pub fn resolve(&self, home: &Path) -> PathBuf {
        match self {
            HostPath::Absolute(p) => p.clone(),
            HostPath::Home(p) => home.join(p),
        }
    }
}

impl RuleValue for HostPath {
    const KEY: &'static str = "path";
    fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("~/") {
            let p = PathBuf::from(rest);
            if plain_relative(&p) {
                return Ok(HostPath::Home(p));
            }
        } else if s.starts_with('/') {
            let p = PathBuf::from(s);
            if p.components()
                .skip(1)
                .all(|c| matches!(c, Component::Normal(_)))
                && p != Path::new("/")
            {
                return Ok(HostPath::Absolute(p));
            }
        }
        Err(format!(
            "invalid path {s:?}: expected an absolute path or one starting with ~/, \
             without `..` (and not `/` itself)"
        ))
    }
    fn render(&self) -> String {
        match self {
            HostPath::Absolute(p) => p.display().to_string(),
            HostPath::Home(p) => format!("~/{}", p.display()),
        }
    }
}

/// A path inside the user's home (or inside the project, for `protect`):
/// relative, no `..`. A leading `~/` is accepted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HomePath(pub PathBuf);

impl RuleValue for HomePath {
    const KEY: &'static str = "path";
    fn parse(s: &str) -> Result<Self, String> {
        let p = PathBuf::from(s.strip_prefix("~/").unwrap_or(s));
        if plain_relative(&p) {
            Ok(HomePath(p))
        } else {
            Err(format!(
                "invalid relative path {s:?}: expected something like \".gitconfig\" or \
                 \"~/.config/git\", without `..` or a leading `/`"
            ))
        }
    }
    fn render(&self) -> String {
        self.0.display().to_string()
    }
}

/// A glob pattern (`*`, `?`, `[...]`, `**`), validated when read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Glob(pub String);

impl RuleValue for Glob {
    const KEY: &'static str = "glob";
    fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s == "/" {
            return Err("empty glob".into());
        }
        crate::glob::Pattern::new(s.trim_start_matches('/'))?;
        Ok(Glob(s.to_owned()))
    }
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// An environment variable name, or a prefix pattern ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvName(pub String);

impl EnvName {
    /// Whether `name` is matched.
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
    /// Whether this is a pattern rather than one name.
    pub fn is_pattern(&self) -> bool {
        self.0.ends_with('*')
    }
}

impl RuleValue for EnvName {
    const KEY: &'static str = "name";
    fn parse(s: &str) -> Result<Self, String> {
        let body = s.strip_suffix('*').unwrap_or(s);
        let ok = !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !body.as_bytes()[0].is_ascii_digit();
        if ok {
            Ok(EnvName(s.to_owned()))
        } else {
            Err(format!(
                "invalid environment variable name {s:?}: letters, digits and _ only \
                 (a trailing * matches a prefix)"
            ))
        }
    }
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// A size in bytes, written as an integer or with a K/M/G/T suffix (binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('K') => (&t[..t.len() - 1], 1u64 << 10),
            Some('M') => (&t[..t.len() - 1], 1 << 20),
            Some('G') => (&t[..t.len() - 1], 1 << 30),
            Some('T') => (&t[..t.len() - 1], 1 << 40),
            _ => (t, 1),
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .filter(|&n| n > 0)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: expected e.g. 512M, 2G or a byte count"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0 % (1 << shift) == 0 {
                return write!(f, "{}{suffix}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512M\" or \"2G\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .map(ByteSize)
                    .ok_or_else(|| E::custom("a size must be positive"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_accept_absolute_and_home_only() {
        assert_eq!(
            HostPath::parse("~/.cargo/bin"),
            Ok(HostPath::Home(".cargo/bin".into()))
        );
        assert_eq!(
            HostPath::parse("/opt/tools"),
            Ok(HostPath::Absolute("/opt/tools".into()))
        );
        for bad in ["relative", "~/../etc", "/", "/a/../b", "~", "~user/x", ""] {
            assert!(HostPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn home_paths_are_plain_relative() {
        assert_eq!(
            HomePath::parse("~/.gitconfig"),
            Ok(HomePath(".gitconfig".into()))
        );
        for bad in ["/etc/passwd", "../x", "a/../../b", "", "~/"] {
            assert!(HomePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(ByteSize::parse("2G"), Ok(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("512m"), Ok(ByteSize(512 << 20)));
        assert_eq!(ByteSize(3 << 30).to_string(), "3G");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        for bad in ["", "G", "-1G", "1.5G", "0", "99999999999T"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_and_prefixes() {
        let p = EnvName::parse("LC_*").unwrap();
        assert!(p.matches("LC_ALL") && !p.matches("LANG"));
        assert!(EnvName::parse("1ABC").is_err());
        assert!(EnvName::parse("A-B").is_err());
        assert!(EnvName::parse("*").is_err());
    }

    #[test]
    fn globs_are_validated() {
        assert!(Glob::parse("*.pem").is_ok());
        assert!(Glob::parse("[unclosed").is_err());
    }
}
