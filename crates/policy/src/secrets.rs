//! `[[secrets]]`: credentials the agent may use without holding them. The
//! agent's variable holds a placeholder; cordon's egress puts the real
//! value in its place only in requests to the hosts the secret is bound
//! to (which it therefore inspects).

use serde::{Deserialize, Serialize, Serializer};

use crate::network::HostPattern;
use crate::values::RuleValue;

/// Where a secret's real value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// `store:NAME`: cordon's encrypted store (`cordon secret set NAME`).
    Store(String),
    /// `env:NAME`: a variable of the host's environment, read by cordon
    /// when the session starts (never passed into the sandbox).
    Env(String),
    /// `vault:PATH#FIELD`: a field of a KV v2 secret in Vault or OpenBao
    /// (`vault:secret/data/llm#anthropic`), read with the profile's
    /// `[vault]` settings.
    Vault {
        /// The API path after `/v1/` (`secret/data/llm`).
        path: String,
        /// The field of the secret's data.
        field: String,
    },
    /// `vault-token:POLICY[,POLICY...]`: a token made for this session
    /// (a child of cordon's, with these policies and a short, renewed
    /// lifetime), revoked when the session ends.
    VaultToken {
        /// Its policies.
        policies: Vec<String>,
    },
}

impl SecretSource {
    /// Parses `store:NAME`, `env:NAME`, `vault:PATH#FIELD` or
    /// `vault-token:POLICY,...`.
    pub fn parse(s: &str) -> Result<SecretSource, String> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("secret source {s:?}: expected store:NAME or env:NAME"))?;
        let valid_store = |n: &str| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && n.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let valid_env = |n: &str| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !n.as_bytes()[0].is_ascii_digit()
        };
        match scheme {
            "store" if valid_store(rest) => Ok(SecretSource::Store(rest.to_string())),
            "store" => Err(format!(
                "secret source {s:?}: a store name is letters, digits, '_', '.' and '-'"
            )),
            "env" if valid_env(rest) => Ok(SecretSource::Env(rest.to_string())),
            "env" => Err(format!(
                "secret source {s:?}: an environment variable name is letters, digits and _"
            )),
            "vault-token" => {
                let policies: Vec<String> = rest.split(',').map(str::to_string).collect();
                let ok = policies.iter().all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                });
                if ok {
                    Ok(SecretSource::VaultToken { policies })
                } else {
                    Err(format!(
                        "secret source {s:?}: expected vault-token:POLICY[,POLICY...] (letters, \
                         digits, '_', '.' and '-')"
                    ))
                }
            }
            "vault" => {
                let (path, field) = rest
                    .split_once('#')
                    .ok_or_else(|| format!("secret source {s:?}: expected vault:PATH#FIELD"))?;
                let word = |w: &str| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                };
                let path_ok = !path.starts_with('/')
                    && path
                        .split('/')
                        .all(|seg| word(seg) && seg != "." && seg != "..");
                if path_ok && word(field) {
                    Ok(SecretSource::Vault {
                        path: path.to_string(),
                        field: field.to_string(),
                    })
                } else {
                    Err(format!(
                        "secret source {s:?}: the path is segments of letters, digits, '_', '.' \
                         and '-' (secret/data/NAME for KV v2), the field likewise"
                    ))
                }
            }
            other => Err(format!(
                "secret source {s:?}: unknown scheme {other:?} (store:NAME, env:NAME or \
                 vault:PATH#FIELD)"
            )),
        }
    }

    /// The text form.
    pub fn render(&self) -> String {
        match self {
            SecretSource::Store(n) => format!("store:{n}"),
            SecretSource::Env(n) => format!("env:{n}"),
            SecretSource::Vault { path, field } => format!("vault:{path}#{field}"),
            SecretSource::VaultToken { policies } => format!("vault-token:{}", policies.join(",")),
        }
    }
}

impl Serialize for SecretSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.render())
    }
}

/// One `[[secrets]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretBinding {
    /// The variable the agent sees, holding the placeholder.
    pub name: String,
    /// Where the real value comes from.
    pub source: SecretSource,
    /// The hosts requests may carry the real value to.
    #[serde(serialize_with = "render_hosts")]
    pub hosts: Vec<HostPattern>,
    /// Also put the value into request bodies (headers and the URL always).
    pub body: bool,
    /// When the value is read.
    pub fetch: Fetch,
    /// The placeholder of a secret fetched on first use (its value, and so
    /// its shape, is not known when the agent gets the placeholder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
    /// Why the agent has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// When a secret's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fetch {
    /// When the session starts: the placeholder copies the value's shape,
    /// and a source that fails stops the session before the agent runs.
    Start,
    /// On the first request to one of the secret's hosts that carries its
    /// placeholder (or, with `body = true`, has a body): a secret the
    /// agent never uses is never read, and a token is made only when
    /// needed. The default for `vault:` and `vault-token:` sources.
    FirstUse,
}

impl Fetch {
    /// The default for `source`: first use for Vault, start otherwise.
    pub fn default_for(source: &SecretSource) -> Fetch {
        match source {
            SecretSource::Vault { .. } | SecretSource::VaultToken { .. } => Fetch::FirstUse,
            SecretSource::Store(_) | SecretSource::Env(_) => Fetch::Start,
        }
    }
}

/// The shape of a first-use secret's placeholder: its prefix and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// What it starts with (`sk-ant-api03-`).
    pub prefix: String,
    /// Its length in bytes, prefix included.
    pub length: usize,
}

/// Random characters a first-use placeholder has at least after its prefix.
pub const SHAPE_MIN_RANDOM: usize = 16;

impl Shape {
    /// The shape of well-known variables' values, so that SDKs checking a
    /// key's format accept the placeholder; otherwise `cordon-` and 40
    /// characters in all.
    pub fn default_for(name: &str) -> Shape {
        let (prefix, length) = match name {
            "ANTHROPIC_API_KEY" => ("sk-ant-api03-", 108),
            "OPENAI_API_KEY" => ("sk-proj-", 164),
            "GITHUB_TOKEN" | "GH_TOKEN" => ("ghp_", 40),
            "GITLAB_TOKEN" => ("glpat-", 26),
            "HF_TOKEN" => ("hf_", 37),
            "VAULT_TOKEN" | "BAO_TOKEN" => ("hvs.", 95),
            _ => ("cordon-", 40),
        };
        Shape {
            prefix: prefix.into(),
            length,
        }
    }
}

fn render_hosts<S: Serializer>(hosts: &[HostPattern], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(hosts.iter().map(RuleValue::render))
}

/// The file form of a `[[secrets]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretFile {
    name: String,
    source: String,
    hosts: Vec<String>,
    #[serde(default)]
    body: bool,
    fetch: Option<Fetch>,
    prefix: Option<String>,
    length: Option<usize>,
    reason: Option<String>,
}

impl SecretFile {
    pub(crate) fn check(self) -> Result<SecretBinding, String> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !self.name.as_bytes()[0].is_ascii_digit();
        if !name_ok {
            return Err(format!(
                "[[secrets]] name {:?}: an environment variable name (letters, digits and _)",
                self.name
            ));
        }
        let source = SecretSource::parse(&self.source)
            .map_err(|e| format!("[[secrets]] {}: {e}", self.name))?;
        if self.hosts.is_empty() {
            return Err(format!(
                "[[secrets]] {}: hosts is empty, so the secret could never be used",
                self.name
            ));
        }
        let hosts = self
            .hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| format!("[[secrets]] {}: {e}", self.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let fetch = self.fetch.unwrap_or_else(|| Fetch::default_for(&source));
        let shape = match fetch {
            Fetch::Start => {
                if self.prefix.is_some() || self.length.is_some() {
                    return Err(format!(
                        "[[secrets]] {}: prefix and length shape the placeholder of a secret \
                         fetched on first use; this one is read at start, and its placeholder \
                         copies the value's shape",
                        self.name
                    ));
                }
                None
            }
            Fetch::FirstUse => {
                if matches!(source, SecretSource::Env(_)) {
                    return Err(format!(
                        "[[secrets]] {}: an env: source is read when cordon starts (it is \
                         cordon's own environment); fetch = \"first-use\" is for store: and \
                         vault sources",
                        self.name
                    ));
                }
                let default = Shape::default_for(&self.name);
                let shape = match (self.prefix, self.length) {
                    (None, None) => default,
                    (Some(prefix), length) => Shape {
                        length: length.unwrap_or(prefix.len() + 32),
                        prefix,
                    },
                    (None, Some(length)) => Shape {
                        prefix: default.prefix,
                        length,
                    },
                };
                let printable = shape.prefix.bytes().all(|b| b.is_ascii_graphic());
                if !printable || shape.length > 4096 {
                    return Err(format!(
                        "[[secrets]] {}: prefix is printable ASCII without spaces, length at most \
                         4096",
                        self.name
                    ));
                }
                if shape.length < shape.prefix.len() + SHAPE_MIN_RANDOM {
                    return Err(format!(
                        "[[secrets]] {}: length {} leaves fewer than {SHAPE_MIN_RANDOM} random \
                         characters after the prefix {:?}",
                        self.name, shape.length, shape.prefix
                    ));
                }
                Some(shape)
            }
        };
        Ok(SecretBinding {
            name: self.name,
            source,
            hosts,
            body: self.body,
            fetch,
            shape,
            reason: self.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(extra: &str, source: &str) -> Result<SecretBinding, String> {
        let text = format!(
            "name = \"ANTHROPIC_API_KEY\"\nsource = \"{source}\"\nhosts = [\"api.anthropic.com\"]\n{extra}"
        );
        toml::from_str::<SecretFile>(&text)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn vault_secrets_are_fetched_on_first_use_with_a_shaped_placeholder() {
        let b = binding("", "vault:secret/data/llm#anthropic").unwrap();
        assert_eq!(b.fetch, Fetch::FirstUse);
        let shape = b.shape.unwrap();
        assert_eq!(shape.prefix, "sk-ant-api03-");
        assert_eq!(shape.length, 108);
        let b = binding("", "store:anthropic").unwrap();
        assert_eq!(b.fetch, Fetch::Start);
        assert!(b.shape.is_none());
        let b = binding("fetch = \"start\"", "vault:kv/x#y").unwrap();
        assert_eq!((b.fetch, b.shape), (Fetch::Start, None));
        let b = binding("prefix = \"key-\"", "vault-token:p").unwrap();
        assert_eq!(b.shape.unwrap().length, 36);
        let b = binding("fetch = \"first-use\"\nlength = 60", "store:x").unwrap();
        assert_eq!(b.shape.unwrap().length, 60);
        for (extra, source, why) in [
            ("fetch = \"first-use\"", "env:X", "env: source"),
            ("prefix = \"sk-\"", "store:x", "read at start"),
            ("length = 20", "vault:kv/x#y", "fewer than 16"),
            ("prefix = \"a b\"", "vault:kv/x#y", "printable"),
            ("fetch = \"later\"", "vault:kv/x#y", "unknown variant"),
        ] {
            let e = binding(extra, source).unwrap_err();
            assert!(e.contains(why), "{extra}: {e}");
        }
    }

    #[test]
    fn sources_parse_and_render() {
        assert_eq!(
            SecretSource::parse("store:anthropic").unwrap(),
            SecretSource::Store("anthropic".into())
        );
        assert_eq!(
            SecretSource::parse("env:GITHUB_TOKEN").unwrap(),
            SecretSource::Env("GITHUB_TOKEN".into())
        );
        for bad in [
            "anthropic",
            "store:",
            "env:1X",
            "env:A-B",
            "store:-x",
            "vault:kv/x",
            "vault:/kv/x#y",
            "vault:kv/../x#y",
            "vault:kv/x#",
            "vault:kv//x#y",
            "s3:x",
            ":x",
        ] {
            assert!(SecretSource::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(SecretSource::Store("a.b".into()).render(), "store:a.b");
        let v = SecretSource::parse("vault:secret/data/llm#anthropic").unwrap();
        assert_eq!(
            v,
            SecretSource::Vault {
                path: "secret/data/llm".into(),
                field: "anthropic".into()
            }
        );
        assert_eq!(v.render(), "vault:secret/data/llm#anthropic");
        let t = SecretSource::parse("vault-token:read-llm,audit").unwrap();
        assert_eq!(
            t,
            SecretSource::VaultToken {
                policies: vec!["read-llm".into(), "audit".into()]
            }
        );
        assert_eq!(t.render(), "vault-token:read-llm,audit");
        for bad in ["vault-token:", "vault-token:a,,b", "vault-token:a b"] {
            assert!(SecretSource::parse(bad).is_err(), "{bad}");
        }
    }
}
