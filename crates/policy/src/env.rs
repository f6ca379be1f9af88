//! Which environment variables reach the agent.
//!
//! Only an allowlist of harmless variables passes, plus what the profile or
//! the command line names. Names that look like credentials are withheld
//! unless named explicitly, and the caller reports them by name, so the user
//! knows why a tool inside cannot find its token.

use std::ffi::{OsStr, OsString};

use crate::values::EnvName;

/// Variables that pass without being named (a trailing `*` is a prefix).
pub const ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "COLORTERM",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TZ",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "LESS",
    "MANPAGER",
    "NO_COLOR",
    "FORCE_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "COLUMNS",
    "LINES",
];

const CREDENTIAL_WORDS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "KEY",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
    "SIGNATURE",
    "DSN",
    "WEBHOOK",
];

const CREDENTIAL_PREFIXES: &[&str] = &[
    "AWS_",
    "AZURE_",
    "ARM_",
    "GCP_",
    "GOOGLE_",
    "GCLOUD_",
    "CLOUDSDK_",
    "GH_",
    "GITHUB_",
    "GITLAB_",
    "OPENAI_",
    "ANTHROPIC_",
    "HF_",
    "HUGGING",
    "NPM_",
    "PYPI_",
    "TWINE_",
    "CARGO_REGISTRY",
    "DOCKER_",
    "VAULT_",
    "BAO_",
    "KUBE",
    "SSH_",
    "GPG_",
    "DATABASE_URL",
    "REDIS_URL",
];

/// Suffixes of names that hold paths to public CA bundles, not secrets.
const NOT_CREDENTIAL_SUFFIXES: &[&str] = &["_CA_BUNDLE", "_CA_CERTS_FILE", "_CA_CERTS", "_CA_FILE"];

/// Whether a variable name looks like it carries a credential.
pub fn looks_like_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if NOT_CREDENTIAL_SUFFIXES.iter().any(|s| upper.ends_with(s)) {
        return false;
    }
    CREDENTIAL_WORDS.iter().any(|w| upper.contains(w))
        || CREDENTIAL_PREFIXES.iter().any(|p| upper.starts_with(p))
}

fn allowlisted(name: &str) -> bool {
    ALLOWLIST.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => *a == name,
    })
}

/// The outcome of filtering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPlan {
    /// What the agent gets, in host order, then the fixed values.
    pub vars: Vec<(OsString, OsString)>,
    /// Credential-looking names withheld (report these by name).
    pub withheld_credentials: Vec<String>,
    /// Other names withheld because they are not on the allowlist.
    pub withheld_other: Vec<String>,
    /// Names asked for explicitly that the host does not have.
    pub missing: Vec<String>,
}

/// Filters `host` through the allowlist, the explicit `pass` names, and adds
/// the fixed `set` values (which win over host values).
pub fn plan(
    host: &[(OsString, OsString)],
    pass: &[EnvName],
    set: &[(String, OsString)],
) -> EnvPlan {
    let mut out = EnvPlan::default();
    for (k, v) in host {
        let name = k.to_string_lossy();
        if set.iter().any(|(s, _)| OsStr::new(s) == k) {
            continue;
        }
        let named = pass.iter().any(|p| !p.is_pattern() && p.matches(&name));
        let by_pattern = pass.iter().any(|p| p.is_pattern() && p.matches(&name));
        if named {
            out.vars.push((k.clone(), v.clone()));
        } else if looks_like_credential(&name) {
            // Credentials pass only when named exactly, never by a pattern.
            out.withheld_credentials.push(name.into_owned());
        } else if allowlisted(&name) || by_pattern {
            out.vars.push((k.clone(), v.clone()));
        } else {
            out.withheld_other.push(name.into_owned());
        }
    }
    for p in pass.iter().filter(|p| !p.is_pattern()) {
        if !host.iter().any(|(k, _)| k.to_string_lossy() == p.0)
            && !set.iter().any(|(s, _)| *s == p.0)
        {
            out.missing.push(p.0.clone());
        }
    }
    for (k, v) in set {
        out.vars.push((OsString::from(k), v.clone()));
    }
    out.withheld_credentials.sort();
    out.withheld_other.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn host(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn credentials_are_withheld_unless_named() {
        let h = host(&[
            ("PATH", "/usr/bin"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("GITHUB_TOKEN", "y"),
            ("MY_API_KEY", "z"),
            ("LC_ALL", "C"),
            ("RANDOM_THING", "1"),
        ]);
        let p = plan(&h, &[EnvName("GITHUB_TOKEN".into())], &[]);
        assert_eq!(
            p.vars,
            host(&[("PATH", "/usr/bin"), ("GITHUB_TOKEN", "y"), ("LC_ALL", "C")])
        );
        assert_eq!(
            p.withheld_credentials,
            vec!["AWS_SECRET_ACCESS_KEY", "MY_API_KEY"]
        );
        assert_eq!(p.withheld_other, vec!["RANDOM_THING"]);
        assert!(p.missing.is_empty());
    }

    #[test]
    fn fixed_values_win_and_missing_names_are_reported() {
        let h = host(&[("HOME", "/home/u"), ("TERM", "xterm")]);
        let p = plan(
            &h,
            &[EnvName("NOT_SET".into()), EnvName("LC_*".into())],
            &[("HOME".into(), "/home/other".into())],
        );
        assert_eq!(p.vars, host(&[("TERM", "xterm"), ("HOME", "/home/other")]));
        assert_eq!(p.missing, vec!["NOT_SET"]);
    }

    #[test]
    fn patterns_never_pass_credentials() {
        let h = host(&[("CARGO_REGISTRY_TOKEN", "s3cr3t"), ("CARGO_HOME", "/c")]);
        let p = plan(&h, &[EnvName("CARGO_*".into())], &[]);
        assert_eq!(p.vars, host(&[("CARGO_HOME", "/c")]));
        assert_eq!(p.withheld_credentials, vec!["CARGO_REGISTRY_TOKEN"]);
    }

    #[test]
    fn credential_heuristics() {
        for yes in [
            "OPENAI_API_KEY",
            "db_password",
            "SSH_AUTH_SOCK",
            "KUBECONFIG",
            "SENTRY_DSN",
        ] {
            assert!(looks_like_credential(yes), "{yes}");
        }
        for no in [
            "PATH",
            "TERM",
            "LANG",
            "EDITOR",
            "RUST_LOG",
            "AWS_CA_BUNDLE",
        ] {
            assert!(!looks_like_credential(no), "{no}");
        }
    }
}
