//! Risk tiers' ceilings and the organisation's ceiling
//! (`/etc/cordon/policy.toml`, admin-owned): what no user profile or
//! command line can widen. Sans-IO: the caller reads the file and says
//! what the session asks for; [`check`] names the first rule it breaks.
//!
//! ```toml
//! [ceiling]
//! hosts = ["@anthropic", "@github", "*.corp.example"]  # allowed hosts must fall inside these
//! modes = ["ro", "overlay"]        # project modes
//! write_paths = false              # [filesystem] write, [home] write, --allow-write
//! read_paths = ["/opt", "~/.cargo"] # [filesystem] read and --allow-read only below these
//! secrets = false                  # [[secrets]]
//! env_pass = ["GITHUB_TOKEN"]      # [env] pass and --env NAME only these
//! ptrace = false                   # [sandbox] allow_ptrace
//! tiers = ["approved", "high-risk"] # the tiers a profile may have (none: any, or no tier)
//! ```
//!
//! The tiers' own ceilings, whatever the organisation says: `experiment`
//! has no secrets, no writes outside the overlay (modes `ro` and `overlay`,
//! no write grants) and the model hosts only (`@anthropic`, `@openai`,
//! `@google-ai`); `high-risk` must inspect every host it allows (and, with
//! the approvals work, needs an approval).

use std::path::{Path, PathBuf};

use cordon_types::ProjectMode;
use serde::Deserialize;

use crate::network::{preset_hosts, HostPattern, MODEL_PRESETS};
use crate::profile::{Profile, ProfileError, Tier};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    #[serde(default)]
    ceiling: CeilingFile,
    #[serde(default)]
    approvals: ApprovalsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsFile {
    tiers: Option<Vec<Tier>>,
    spool: Option<PathBuf>,
    #[serde(default)]
    approver_uids: Vec<u32>,
    #[serde(default)]
    approver_keys: Vec<String>,
}

/// Who approves sessions, and which: `[approvals]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// Tiers whose sessions need an approval (`high-risk` unless set).
    pub tiers: Vec<Tier>,
    /// The shared directory requests and approvals go through (made by
    /// the administrator: root's, sticky, writable by all).
    pub spool: Option<PathBuf>,
    /// Users who may approve others' sessions.
    pub approver_uids: Vec<u32>,
    /// Approvers' public keys (their cordon audit keys, hex): an approval
    /// signed by one counts whoever wrote it.
    pub approver_keys: Vec<String>,
}

impl Default for Approvals {
    fn default() -> Approvals {
        Approvals {
            tiers: vec![Tier::HighRisk],
            spool: None,
            approver_uids: Vec::new(),
            approver_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CeilingFile {
    hosts: Option<Vec<String>>,
    modes: Option<Vec<ProjectMode>>,
    write_paths: Option<bool>,
    read_paths: Option<Vec<String>>,
    secrets: Option<bool>,
    env_pass: Option<Vec<String>>,
    ptrace: Option<bool>,
    tiers: Option<Vec<Tier>>,
}

/// The organisation's ceiling; `None` in a field: no cap there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ceiling {
    /// Host patterns every allowed host must fall inside (presets expanded).
    pub hosts: Option<Vec<HostPattern>>,
    /// Project modes allowed.
    pub modes: Option<Vec<ProjectMode>>,
    /// Whether write grants are allowed.
    pub write_paths: Option<bool>,
    /// Prefixes read grants must fall under (`~/` is the user's home).
    pub read_paths: Option<Vec<String>>,
    /// Whether `[[secrets]]` are allowed.
    pub secrets: Option<bool>,
    /// The environment variables that may be passed.
    pub env_pass: Option<Vec<String>>,
    /// Whether `allow_ptrace` is allowed.
    pub ptrace: Option<bool>,
    /// The tiers a profile may declare.
    pub tiers: Option<Vec<Tier>>,
}

/// The organisation's policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgPolicy {
    /// Where it came from (for messages).
    pub origin: String,
    /// Its ceiling.
    pub ceiling: Ceiling,
    /// Its approvals.
    pub approvals: Approvals,
}

/// Parses the organisation's policy file.
pub fn parse(text: &str, origin: &str) -> Result<OrgPolicy, ProfileError> {
    let f: OrgFile = toml::from_str(text).map_err(|e| ProfileError::Invalid {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let a = f.approvals;
    for k in &a.approver_keys {
        if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ProfileError::Invalid {
                origin: origin.to_owned(),
                message: format!(
                    "[approvals] approver_keys {k:?}: expected 64 hex digits (an approver's \
                     audit-key.pub)"
                ),
            });
        }
    }
    if let Some(s) = &a.spool {
        if !s.is_absolute() {
            return Err(ProfileError::Invalid {
                origin: origin.to_owned(),
                message: format!(
                    "[approvals] spool {}: expected an absolute path",
                    s.display()
                ),
            });
        }
    }
    let approvals = Approvals {
        tiers: a.tiers.unwrap_or_else(|| vec![Tier::HighRisk]),
        spool: a.spool,
        approver_uids: a.approver_uids,
        approver_keys: a
            .approver_keys
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect(),
    };
    let c = f.ceiling;
    let hosts = match c.hosts {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for h in list {
                let bad = |m: String| ProfileError::Invalid {
                    origin: origin.to_owned(),
                    message: format!("[ceiling] hosts {h:?}: {m}"),
                };
                match h.strip_prefix('@') {
                    Some(p) => {
                        out.extend(preset_hosts(p).map_err(bad)?.1.into_iter().map(|r| r.value))
                    }
                    None => out.push(HostPattern::parse(&h).map_err(bad)?),
                }
            }
            Some(out)
        }
    };
    Ok(OrgPolicy {
        origin: origin.to_owned(),
        ceiling: Ceiling {
            hosts,
            modes: c.modes,
            write_paths: c.write_paths,
            read_paths: c.read_paths,
            secrets: c.secrets,
            env_pass: c.env_pass,
            ptrace: c.ptrace,
            tiers: c.tiers,
        },
        approvals,
    })
}

/// What a session asks for beyond its profile.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The effective profile (command-line hosts included).
    pub profile: &'a Profile,
    /// The project mode in force.
    pub mode: ProjectMode,
    /// Every host path the session may read: `[filesystem] read`, `[home]
    /// read`, `--allow-read`, symlinks resolved (what will be mounted).
    pub read: &'a [PathBuf],
    /// Every host path it may write: `[filesystem] write`, `[home] write`
    /// and `persist`, `--allow-write`, symlinks resolved.
    pub write: &'a [PathBuf],
    /// Variable names passed with `--env NAME`.
    pub env_pass: &'a [String],
    /// The user's home (for `~/` in `read_paths`).
    pub home: &'a Path,
}

/// A rule that refused the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which ceiling and rule (`/etc/cordon/policy.toml [ceiling] hosts`,
    /// `tier experiment: secrets`).
    pub rule: String,
    /// What the session asked for that it forbids.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by {}: {}", self.rule, self.message)
    }
}

/// Whether `p` falls inside `c` (every name `p` matches, `c` matches too,
/// on every port `p` allows).
fn within(p: &HostPattern, c: &HostPattern) -> bool {
    let port_ok = match (c.port, p.port) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    };
    let name_ok = match (c.wildcard, p.wildcard) {
        (false, false) => p.name == c.name,
        (false, true) => false,
        (true, false) => c.matches_name(&p.name),
        (true, true) => p.name == c.name || c.matches_name(&p.name),
    };
    port_ok && name_ok
}

fn hosts_inside(asked: &Asked<'_>, ceiling: &[HostPattern], rule: &str) -> Result<(), Violation> {
    for a in &asked.profile.network.allow {
        if !ceiling.iter().any(|c| within(&a.value, c)) {
            return Err(Violation {
                rule: rule.to_owned(),
                message: format!(
                    "the session allows {} ({}), outside the hosts it permits",
                    a.value,
                    a.reason.as_deref().unwrap_or("the profile")
                ),
            });
        }
    }
    Ok(())
}

fn writes(asked: &Asked<'_>) -> Option<String> {
    asked.write.first().map(|w| w.display().to_string())
}

/// The profile's ways around a hosts ceiling: addresses and overrides that
/// send traffic somewhere its names do not say.
fn network_overrides(p: &Profile) -> Option<&'static str> {
    let n = &p.network;
    if !n.allow_cidr.is_empty() {
        Some("allow_cidr")
    } else if !n.allow_local.is_empty() {
        Some("allow_local")
    } else if !n.resolve.is_empty() {
        Some("resolve")
    } else if !n.upstream_ca.is_empty() {
        Some("upstream_ca")
    } else if n.upstream_proxy.is_some() {
        Some("upstream_proxy")
    } else {
        None
    }
}

/// Whether two patterns share a name and port.
fn overlap(a: &HostPattern, b: &HostPattern) -> bool {
    let ports = match (a.port, b.port) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    let names = a.name == b.name
        || (a.wildcard && a.matches_name(&b.name))
        || (b.wildcard && b.matches_name(&a.name));
    ports && names
}

fn expand(prefix: &str, home: &Path) -> PathBuf {
    match prefix.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(prefix),
    }
}

/// Checks the session against its tier's ceiling and the organisation's;
/// the first rule broken, named.
pub fn check(org: Option<&OrgPolicy>, asked: &Asked<'_>) -> Result<(), Violation> {
    let p = asked.profile;
    match p.tier {
        Some(Tier::Experiment) => {
            let rule = |r: &str| format!("tier experiment's ceiling ({r})");
            if let Some(s) = p.secrets.first() {
                return Err(Violation {
                    rule: rule("no secrets"),
                    message: format!("the profile binds the secret {}", s.name),
                });
            }
            if asked.mode == ProjectMode::Rw {
                return Err(Violation {
                    rule: rule("no writes outside the overlay"),
                    message: "the project is mounted read-write (use --mode overlay)".into(),
                });
            }
            if let Some(w) = writes(asked) {
                return Err(Violation {
                    rule: rule("no writes outside the overlay"),
                    message: format!("the session grants write access to {w}"),
                });
            }
            let models: Vec<HostPattern> = MODEL_PRESETS
                .iter()
                .filter_map(|m| preset_hosts(m).ok())
                .flat_map(|(_, hosts)| hosts.into_iter().map(|r| r.value))
                .collect();
            hosts_inside(asked, &models, &rule("model hosts only"))?;
            if let Some(f) = network_overrides(p) {
                return Err(Violation {
                    rule: rule("model hosts only"),
                    message: format!("the profile sets [network] {f}"),
                });
            }
        }
        Some(Tier::HighRisk) => {
            let n = &p.network;
            if let Some(f) = network_overrides(p) {
                return Err(Violation {
                    rule: "tier high-risk's ceiling (inspection mandatory)".into(),
                    message: format!(
                        "the profile sets [network] {f}, which reaches addresses without names \
                         to inspect by"
                    ),
                });
            }
            for a in &n.allow {
                let inspected = n.inspect.iter().any(|i| within(&a.value, &i.value));
                let exempt = n.no_inspect.iter().find(|x| overlap(&a.value, &x.value));
                if !inspected || exempt.is_some() {
                    return Err(Violation {
                        rule: "tier high-risk's ceiling (inspection mandatory)".into(),
                        message: match exempt {
                            Some(x) => format!(
                                "{} is allowed and {} is exempt from inspection (no_inspect)",
                                a.value, x.value
                            ),
                            None => format!(
                                "{} is allowed and not inspected on every name and port it \
                                 allows; add it to [network] inspect",
                                a.value
                            ),
                        },
                    });
                }
            }
        }
        Some(Tier::Approved) | None => {}
    }
    let Some(org) = org else { return Ok(()) };
    let c = &org.ceiling;
    let rule = |r: &str| format!("{} [ceiling] {r}", org.origin);
    if let Some(tiers) = &c.tiers {
        let ok = p.tier.is_some_and(|t| tiers.contains(&t));
        if !ok {
            return Err(Violation {
                rule: rule("tiers"),
                message: format!(
                    "the profile's tier is {}, and only {} may run",
                    p.tier.map_or("none", Tier::as_str),
                    tiers
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    if let Some(hosts) = &c.hosts {
        hosts_inside(asked, hosts, &rule("hosts"))?;
        if let Some(f) = network_overrides(p) {
            return Err(Violation {
                rule: rule("hosts"),
                message: format!(
                    "the profile sets [network] {f}, which sends traffic where its host names do \
                     not say"
                ),
            });
        }
    }
    if let Some(modes) = &c.modes {
        if !modes.contains(&asked.mode) {
            return Err(Violation {
                rule: rule("modes"),
                message: format!("the project would be mounted {}", asked.mode.as_str()),
            });
        }
    }
    if c.write_paths == Some(false) {
        if let Some(w) = writes(asked) {
            return Err(Violation {
                rule: rule("write_paths"),
                message: format!("the session grants write access to {w}"),
            });
        }
    }
    if let Some(prefixes) = &c.read_paths {
        // A path written is read too.
        for r in asked.read.iter().chain(asked.write) {
            if !prefixes
                .iter()
                .any(|x| r.starts_with(expand(x, asked.home)))
            {
                return Err(Violation {
                    rule: rule("read_paths"),
                    message: format!("the session grants read access to {}", r.display()),
                });
            }
        }
    }
    if c.secrets == Some(false) {
        if let Some(s) = p.secrets.first() {
            return Err(Violation {
                rule: rule("secrets"),
                message: format!("the profile binds the secret {}", s.name),
            });
        }
    }
    if let Some(allowed) = &c.env_pass {
        let names = p
            .env
            .pass
            .iter()
            .map(|r| r.value.0.clone())
            .chain(asked.env_pass.iter().cloned());
        for n in names {
            if !allowed.contains(&n) {
                return Err(Violation {
                    rule: rule("env_pass"),
                    message: format!("the session passes the host's variable {n}"),
                });
            }
        }
    }
    if c.ptrace == Some(false) && p.sandbox.allow_ptrace {
        return Err(Violation {
            rule: rule("ptrace"),
            message: "the profile sets [sandbox] allow_ptrace".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{builtin, resolve_text, ProfileSource, SourceText};

    struct BuiltinsOnly;

    impl ProfileSource for BuiltinsOnly {
        fn find(&self, name: &str) -> Result<Option<SourceText>, ProfileError> {
            Ok(builtin(name))
        }
        fn searched(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
    }

    fn profile(text: &str) -> Profile {
        let top = SourceText::new("p.toml".into(), text.into());
        resolve_text("p", top, &BuiltinsOnly).unwrap()
    }

    fn asked(p: &Profile) -> Asked<'_> {
        Asked {
            profile: p,
            mode: p.project.mode,
            read: &[],
            write: &[],
            env_pass: &[],
            home: Path::new("/home/u"),
        }
    }

    #[test]
    fn hosts_must_fall_inside_the_ceiling() {
        let c = |s: &str| HostPattern::parse(s).unwrap();
        assert!(within(&c("api.github.com"), &c("*.github.com")));
        assert!(within(&c("*.api.github.com"), &c("*.github.com")));
        assert!(within(&c("*.github.com"), &c("*.github.com")));
        assert!(!within(&c("github.com"), &c("*.github.com")));
        assert!(!within(&c("*.github.com"), &c("api.github.com")));
        assert!(!within(&c("evilgithub.com"), &c("*.github.com")));
        assert!(within(&c("x.test:443"), &c("x.test:443")));
        assert!(!within(&c("x.test"), &c("x.test:443")));
        let org = parse(
            "[ceiling]\nhosts = [\"@github\", \"*.corp.test\"]\n",
            "org.toml",
        )
        .unwrap();
        let ok =
            profile("extends = \"default\"\n[network]\nallow = [\"api.corp.test\", \"@github\"]\n");
        check(Some(&org), &asked(&ok)).unwrap();
        let wide = profile("extends = \"default\"\n[network]\nallow = [\"paste.example\"]\n");
        let v = check(Some(&org), &asked(&wide)).unwrap_err();
        assert_eq!(v.rule, "org.toml [ceiling] hosts");
        assert!(v.message.contains("paste.example"), "{v}");
    }

    #[test]
    fn each_cap_names_its_rule() {
        let org = parse(
            "[ceiling]\nmodes = [\"ro\", \"overlay\"]\nwrite_paths = false\nsecrets = false\n\
             env_pass = [\"GITHUB_TOKEN\"]\nread_paths = [\"~/.cargo\"]\ntiers = [\"approved\"]\n",
            "org.toml",
        )
        .unwrap();
        let p = profile("extends = \"default\"\ntier = \"approved\"\n");
        check(Some(&org), &asked(&p)).unwrap();
        let rw = Asked {
            mode: ProjectMode::Rw,
            ..asked(&p)
        };
        assert_eq!(
            check(Some(&org), &rw).unwrap_err().rule,
            "org.toml [ceiling] modes"
        );
        let w = [PathBuf::from("/srv")];
        let write = Asked {
            write: &w,
            ..asked(&p)
        };
        assert_eq!(
            check(Some(&org), &write).unwrap_err().rule,
            "org.toml [ceiling] write_paths"
        );
        let r = [PathBuf::from("/home/u/.cargo/bin"), PathBuf::from("/etc")];
        let read = Asked {
            read: &r,
            ..asked(&p)
        };
        let v = check(Some(&org), &read).unwrap_err();
        assert_eq!(v.rule, "org.toml [ceiling] read_paths");
        assert!(v.message.contains("/etc"), "{v}");
        let e = ["AWS_SECRET_ACCESS_KEY".to_owned()];
        let env = Asked {
            env_pass: &e,
            ..asked(&p)
        };
        assert_eq!(
            check(Some(&org), &env).unwrap_err().rule,
            "org.toml [ceiling] env_pass"
        );
        let untiered = profile("extends = \"default\"\n");
        assert_eq!(
            check(Some(&org), &asked(&untiered)).unwrap_err().rule,
            "org.toml [ceiling] tiers"
        );
        assert!(parse("[ceiling]\nhostz = []\n", "org.toml").is_err());
    }

    #[test]
    fn tiers_have_their_own_ceilings() {
        let secret = profile(
            "extends = \"default\"\ntier = \"experiment\"\n[network]\nallow = [\"api.test\"]\n\
             [[secrets]]\nname = \"K\"\nsource = \"env:K\"\nhosts = [\"api.test\"]\n",
        );
        assert!(check(None, &asked(&secret))
            .unwrap_err()
            .rule
            .contains("no secrets"));
        let host = profile(
            "extends = \"default\"\ntier = \"experiment\"\n[network]\nallow = [\"pypi.org\"]\n",
        );
        assert!(check(None, &asked(&host))
            .unwrap_err()
            .rule
            .contains("model hosts only"));
        let model = profile(
            "extends = \"default\"\ntier = \"experiment\"\n[network]\nallow = [\"@anthropic\"]\n",
        );
        check(None, &asked(&model)).unwrap();
        let rw = Asked {
            mode: ProjectMode::Rw,
            ..asked(&model)
        };
        assert!(check(None, &rw).unwrap_err().rule.contains("no writes"));
        let open = profile(
            "extends = \"default\"\ntier = \"high-risk\"\n[network]\nallow = [\"api.test\"]\n",
        );
        assert!(check(None, &asked(&open))
            .unwrap_err()
            .rule
            .contains("inspection mandatory"));
        let inspected = profile(
            "extends = \"default\"\ntier = \"high-risk\"\n[network]\nallow = [\"api.test\"]\ninspect = [\"api.test\"]\n",
        );
        check(None, &asked(&inspected)).unwrap();
        // Inspected on one port only, or exempted: not enough.
        let one_port = profile(
            "extends = \"default\"\ntier = \"high-risk\"\n[network]\nallow = [\"api.test\"]\n\
             inspect = [\"api.test:443\"]\n",
        );
        assert!(check(None, &asked(&one_port)).is_err());
        let exempt = profile(
            "extends = \"default\"\ntier = \"high-risk\"\n[network]\nallow = [\"*.corp.test\"]\n\
             inspect = [\"*.corp.test\"]\nno_inspect = [\"db.corp.test\"]\n",
        );
        let v = check(None, &asked(&exempt)).unwrap_err();
        assert!(v.message.contains("no_inspect"), "{v}");
    }

    #[test]
    fn addresses_and_overrides_cannot_route_around_a_hosts_ceiling() {
        let org = parse("[ceiling]\nhosts = [\"@anthropic\"]\n", "org.toml").unwrap();
        for net in [
            "allow_cidr = [\"203.0.113.0/24\"]",
            "resolve = { \"api.anthropic.com\" = \"203.0.113.9:443\" }",
        ] {
            let p = profile(&format!(
                "extends = \"default\"\n[network]\nallow = [\"@anthropic\"]\n{net}\n"
            ));
            let v = check(Some(&org), &asked(&p)).unwrap_err();
            assert_eq!(v.rule, "org.toml [ceiling] hosts", "{net}");
            let exp = profile(&format!(
                "extends = \"default\"\ntier = \"experiment\"\n[network]\nallow = [\"@anthropic\"]\n{net}\n"
            ));
            assert!(check(None, &asked(&exp))
                .unwrap_err()
                .rule
                .contains("model hosts only"));
        }
    }
}
