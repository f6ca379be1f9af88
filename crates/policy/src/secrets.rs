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
    /// Why the agent has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
        Ok(SecretBinding {
            name: self.name,
            source,
            hosts,
            body: self.body,
            reason: self.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
