//! `cordon run`: resolve, record, launch, record the outcome.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_policy::network::{EgressMode, HostPattern};
use cordon_policy::{EnvName, PathRule, Profile, RuleValue};
use cordon_sandbox::{Event, Exit, Mount, SandboxSpec, SeccompSpec, Terminal};
use cordon_types::ProjectMode;

use crate::layout::{self, Layout};
use crate::record::{now_ms, Record, Status, Store};
use crate::{Dirs, Error};

/// The proxy variables cordon sets when the profile allows any destination
/// (both spellings: tools disagree on which they read).
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// How the sandbox reaches the egress policy, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Egress {
    /// Loopback only.
    None,
    /// The explicit proxy at 127.0.0.1:3128.
    Proxy,
    /// A TUN device and cordon's DNS.
    Transparent,
}

/// The upstream proxy's `user:password`, read from the host's environment
/// (the supervisor keeps it; the agent's environment is built separately and
/// withholds credential-like names).
fn upstream_credentials(
    n: &cordon_policy::network::NetworkPolicy,
) -> Result<Option<String>, Error> {
    let Some(source) = &n.upstream_proxy_auth else {
        return Ok(None);
    };
    let var = &source.0 .0;
    if n.upstream_proxy.is_none() {
        return Err(Error::Usage(format!(
            "[network] upstream_proxy_auth = \"env:{var}\" is set but upstream_proxy is not"
        )));
    }
    match std::env::var(var) {
        Ok(v) if v.contains(':') => Ok(Some(v)),
        Ok(_) => Err(Error::Usage(format!(
            "{var} must hold the upstream proxy's credentials as user:password"
        ))),
        Err(_) => Err(Error::Refused {
            message: format!(
                "the profile's upstream proxy needs credentials from ${var}, which is not set"
            ),
            hint: format!("export {var}=user:password before `cordon run`"),
        }),
    }
}

/// Picks the egress path for `mode` on this host: transparent capture needs
/// a `/dev/net/tun` this user can open (the sandbox opens it with the same
/// credentials).
fn choose_egress(mode: EgressMode, notices: &mut Vec<String>) -> Result<Egress, Error> {
    let tun = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map(drop)
    };
    match mode {
        EgressMode::Proxy => Ok(Egress::Proxy),
        EgressMode::Transparent => match tun() {
            Ok(()) => Ok(Egress::Transparent),
            Err(e) => Err(Error::Refused {
                message: format!(
                    "the profile asks for transparent egress capture, which needs \
                     /dev/net/tun: {e}"
                ),
                hint: "make /dev/net/tun usable (mode 0666 is the usual default), or set \
                       [network] mode = \"proxy\" (tools must then honour HTTPS_PROXY)"
                    .into(),
            }),
        },
        EgressMode::Auto => match tun() {
            Ok(()) => Ok(Egress::Transparent),
            Err(e) => {
                notices.push(format!(
                    "egress: explicit-proxy mode (/dev/net/tun: {e}): tools that ignore \
                     HTTPS_PROXY have no network; `cordon doctor` explains"
                ));
                Ok(Egress::Proxy)
            }
        },
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Profile name or file.
    pub profile: String,
    /// Project directory (default: the current directory).
    pub project: Option<PathBuf>,
    /// Overrides the profile's project mode.
    pub mode: Option<ProjectMode>,
    /// Extra read-only paths.
    pub allow_read: Vec<PathBuf>,
    /// Extra writable paths.
    pub allow_write: Vec<PathBuf>,
    /// `NAME` (pass from the host) or `NAME=VALUE`.
    pub env: Vec<String>,
    /// Extra hosts the agent may reach (`api.example.com`, `*.example.com:443`).
    pub allow_host: Vec<String>,
    /// The command.
    pub command: Vec<OsString>,
    /// Terminal handling.
    pub terminal: Terminal,
}

/// A session ready to launch.
#[derive(Debug)]
pub struct Prepared {
    /// The effective profile.
    pub profile: Profile,
    /// The record (saved with status `running` just before the spec is
    /// handed to the sandbox).
    pub record: Record,
    /// What the launcher executes.
    pub spec: SandboxSpec,
    /// The view and its bookkeeping.
    pub layout: Layout,
    /// Things the user should know before the agent starts.
    pub notices: Vec<String>,
    /// The egress engine's configuration, when the profile allows any
    /// destination (otherwise the sandbox has loopback only).
    pub net: Option<cordon_net::Config>,
    store: Store,
    /// Writes the session's audit log and applies the detection rules.
    audit: Arc<crate::detection::Recorder>,
    /// Kills the sandbox when a rule says contain.
    containment: Arc<crate::detection::Containment>,
    /// What the command line granted beyond the profile, for the record.
    grants: Vec<crate::audit::Grant>,
    /// Watches the decoy credentials in the fake home and, in rw mode,
    /// the project.
    watch: Option<crate::detection::SessionWatch>,
    /// Delivers the log to the configured sinks.
    shipper: Option<crate::audit::Shipper>,
    /// Tokens made for the session, the server that revokes them at its
    /// end, and what renews them meanwhile.
    broker: Option<Arc<crate::broker::Broker>>,
    renewer: Option<crate::vault::Renewer>,
    /// cordon's state directory (evidence bundles go there).
    state_dir: PathBuf,
    /// The fake home's path inside the sandbox (the real home's path).
    home: PathBuf,
    /// Held until the run is recorded: marks the session live.
    _lock: std::os::fd::OwnedFd,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The agent's exit.
    pub exit: Exit,
    /// The final record.
    pub record: Record,
    /// Things the user should know afterwards.
    pub notices: Vec<String>,
}

fn canonical_dir(p: &Path, what: &str) -> Result<PathBuf, Error> {
    let c = std::fs::canonicalize(p)
        .map_err(|e| Error::NotFound(format!("{what} {}: {e}", p.display())))?;
    if !c.is_dir() && what == "project" {
        return Err(Error::Usage(format!(
            "project {} is not a directory",
            c.display()
        )));
    }
    Ok(c)
}

pub(crate) fn expand_home(v: &str, home: &Path) -> OsString {
    match v.strip_prefix("~/") {
        Some(rest) => home.join(rest).into_os_string(),
        None if v == "~" => home.as_os_str().to_owned(),
        None => OsString::from(v),
    }
}

/// Resolves everything and creates the session directory. Nothing runs yet.
pub fn prepare(req: &Request, dirs: &Dirs) -> Result<Prepared, Error> {
    if req.command.is_empty() {
        return Err(Error::Usage(
            "no command given: cordon run [OPTIONS] -- COMMAND [ARGS...]".into(),
        ));
    }
    let mut profile = crate::profiles::load(&req.profile, dirs)?;
    for h in &req.allow_host {
        let pattern =
            HostPattern::parse(h).map_err(|e| Error::Usage(format!("--allow-host {h}: {e}")))?;
        profile.network.allow.push(PathRule {
            value: pattern,
            reason: Some("--allow-host on the command line".into()),
            optional: false,
        });
    }
    let mode = req.mode.unwrap_or(profile.project.mode);
    let upstream_auth = upstream_credentials(&profile.network)?;
    let mut notices_early = Vec::new();
    let egress = if profile.network.is_closed() {
        Egress::None
    } else {
        choose_egress(profile.network.mode, &mut notices_early)?
    };

    let cwd = std::env::current_dir().map_err(|e| Error::io("read the current directory", e))?;
    let project = canonical_dir(req.project.as_deref().unwrap_or(&cwd), "project")?;
    let home = &dirs.home;
    if project == Path::new("/") || home.starts_with(&project) {
        return Err(Error::Refused {
            message: format!(
                "refusing to use {} as the project: it contains your home directory, with your \
                 SSH keys, cloud credentials and tokens",
                project.display()
            ),
            hint: "cd into a project directory, or pass --project DIR".into(),
        });
    }
    if let Ok(md) = std::fs::metadata(&project) {
        use std::os::unix::fs::PermissionsExt;
        let mode = md.permissions().mode();
        if mode & 0o1002 == 0o1002 {
            return Err(Error::Refused {
                message: format!(
                    "refusing to use {} as the project: it is a shared, world-writable \
                     directory, holding other users' files and service sockets",
                    project.display()
                ),
                hint: "make a directory for the work (mkdir /tmp/mywork) and pass --project".into(),
            });
        }
    }
    for (own, var) in [
        (&dirs.state, "XDG_STATE_HOME"),
        (&dirs.config, "XDG_CONFIG_HOME"),
    ] {
        if project.starts_with(own) || own.starts_with(&project) {
            return Err(Error::Refused {
                message: format!(
                    "the project {} overlaps cordon's own directory {} (the agent could rewrite \
                     profiles or session records)",
                    project.display(),
                    own.display()
                ),
                hint: format!("set {var} elsewhere, or pick another project directory"),
            });
        }
    }
    let allow_read = req
        .allow_read
        .iter()
        .map(|p| canonical_dir(p, "--allow-read path"))
        .collect::<Result<Vec<_>, _>>()?;
    let allow_write = req
        .allow_write
        .iter()
        .map(|p| canonical_dir(p, "--allow-write path"))
        .collect::<Result<Vec<_>, _>>()?;

    // Environment.
    let mut pass: Vec<EnvName> = profile.env.pass.iter().map(|r| r.value.clone()).collect();
    let mut set: Vec<(String, OsString)> = profile
        .env
        .set
        .iter()
        .map(|(k, v)| (k.clone(), expand_home(v, home)))
        .collect();
    for e in &req.env {
        match e.split_once('=') {
            Some((k, v)) => {
                if k.ends_with('*') || EnvName::parse(k).is_err() {
                    return Err(Error::Usage(format!(
                        "--env {e}: {k:?} is not a variable name (letters, digits and _)"
                    )));
                }
                if ["HOME", "TMPDIR", "CORDON_SESSION", "CORDON_PROFILE"].contains(&k)
                    || PROXY_VARS.contains(&k)
                {
                    return Err(Error::Usage(format!(
                        "--env {e}: cordon sets {k} itself inside the sandbox"
                    )));
                }
                set.retain(|(s, _)| s != k);
                set.push((k.to_owned(), OsString::from(v)));
            }
            None => {
                pass.push(EnvName::parse(e).map_err(|m| Error::Usage(format!("--env {e}: {m}")))?)
            }
        }
    }
    // The ceilings: the profile's tier's, and the organisation's.
    let passed: Vec<String> = req
        .env
        .iter()
        .filter(|e| !e.contains('='))
        .cloned()
        .collect();
    let org = crate::org::load(Path::new(crate::org::PATH))?;
    // Every grant as it will be mounted (symlinks resolved).
    let resolved = |p: PathBuf| crate::dirs::resolve(&p);
    let reads: Vec<PathBuf> = profile
        .filesystem
        .read
        .iter()
        .map(|r| resolved(r.value.resolve(home)))
        .chain(
            profile
                .home
                .read
                .iter()
                .map(|r| resolved(home.join(&r.value.0))),
        )
        .chain(allow_read.iter().cloned())
        .collect();
    let writes: Vec<PathBuf> = profile
        .filesystem
        .write
        .iter()
        .map(|r| resolved(r.value.resolve(home)))
        .chain(
            profile
                .home
                .write
                .iter()
                .chain(&profile.home.persist)
                .map(|r| resolved(home.join(&r.value.0))),
        )
        .chain(allow_write.iter().cloned())
        .collect();
    let asked = cordon_policy::org::Asked {
        profile: &profile,
        mode,
        read: &reads,
        write: &writes,
        env_pass: &passed,
        home,
    };
    if let Err(v) = cordon_policy::org::check(org.as_ref(), &asked) {
        return Err(Error::Refused {
            message: v.to_string(),
            hint: match &org {
                Some(o) if v.rule.starts_with(&o.origin) => format!(
                    "{} is your organisation's ceiling, which no profile or option widens",
                    o.origin
                ),
                _ => "a tier's ceiling holds for every profile of that tier; see                       docs/governance.md"
                    .into(),
            },
        });
    }
    // A tier that needs an approval waits for one (nothing runs before).
    let approvals = org
        .as_ref()
        .map(|o| o.approvals.clone())
        .unwrap_or_default();
    let approval = match profile.tier {
        Some(t) if approvals.tiers.contains(&t) => {
            let r = crate::approval::request(
                &approvals,
                crate::approval::Request {
                    id: String::new(),
                    uid: rustix::process::getuid().as_raw(),
                    profile: profile.name.clone(),
                    tier: t.as_str().to_owned(),
                    command: req
                        .command
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                    project: project.clone(),
                    profile_digest: profile.digest(),
                    mode: mode.as_str().to_owned(),
                    read: reads.clone(),
                    write: writes.clone(),
                    env_pass: profile
                        .env
                        .pass
                        .iter()
                        .map(|r| r.value.0.clone())
                        .chain(passed.iter().cloned())
                        .collect(),
                    hosts: {
                        let n = &profile.network;
                        let mut hosts: Vec<String> =
                            n.allow.iter().map(|r| r.value.to_string()).collect();
                        // What reaches past names, shown as it is set.
                        for (field, set) in [
                            ("allow_cidr", serde_json::to_string(&n.allow_cidr)),
                            ("allow_local", serde_json::to_string(&n.allow_local)),
                            ("resolve", serde_json::to_string(&n.resolve)),
                            ("no_inspect", serde_json::to_string(&n.no_inspect)),
                            ("upstream_proxy", serde_json::to_string(&n.upstream_proxy)),
                        ] {
                            match set {
                                Ok(v) if !["[]", "{}", "null"].contains(&v.as_str()) => {
                                    hosts.push(format!("[network] {field} = {v}"));
                                }
                                _ => {}
                            }
                        }
                        hosts
                    },
                    created_ms: 0,
                    expires_ms: 0,
                },
            )?;
            eprintln!(
                "cordon: tier {} needs an approval: request {} is waiting (5 minutes); an \
                 approver runs `cordon approve {}`",
                t.as_str(),
                r.id,
                r.id
            );
            match crate::approval::wait(&approvals, &r, &mut || {}) {
                Ok(g) => Some(g),
                Err(e) => {
                    // Nothing runs, and the refusal is on record.
                    let what = RefusedRun {
                        profile: &profile,
                        project: &project,
                        mode,
                        command: &r.command,
                    };
                    record_refused(
                        dirs,
                        &what,
                        &crate::approval::refused_event(&r, &e.to_string()),
                    );
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    dirs.ensure_state()?;
    // The agent's executable: checked against the profile's [agent] and
    // the pins (`cordon trust pin`), and recorded. A program that cannot
    // be found runs into the sandbox's own 127, unless something pins it.
    // It is looked up as the sandbox will: with the sandbox's PATH, from
    // its working directory; and the sandbox then executes the very path
    // that was checked.
    let sandbox_path = set
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"));
    let lookup_cwd = if cwd.starts_with(&project) {
        cwd.clone()
    } else {
        project.clone()
    };
    let pins = crate::trust::pins(&dirs.config)?;
    let program = req.command[0].to_string_lossy().into_owned();
    let agent = match crate::trust::identify(
        &req.command[0],
        sandbox_path.as_deref(),
        &lookup_cwd,
        Some(&dirs.state),
    ) {
        Ok(id) => {
            crate::trust::check(&id, &profile.agent, &pins)?;
            Some(id)
        }
        Err(e)
            if profile.agent.sha256.is_some()
                || profile.agent.minisign_key.is_some()
                || pins.iter().any(|p| p.identity.command == program) =>
        {
            return Err(Error::Refused {
                message: format!("the agent {program} is pinned, and {e}"),
                hint: "run the pinned agent (it must be found and readable to be checked)".into(),
            })
        }
        Err(_) => None,
    };
    // The audit record is a required layer: no usable key, no session.
    let audit_key = crate::audit::host_key(&dirs.state)?;
    let sinks = crate::audit::sinks(&dirs.config)?;
    let rules = crate::detection::rules(&dirs.config, &profile)?;
    let store = Store::new(dirs.sessions());
    // Tokens that sessions which died left unrevoked are revoked now.
    notices_early.extend(crate::vault::recover(&store, &dirs.state));
    // Sessions whose supervisor died are marked so.
    notices_early.extend(crate::registry::mark_dead(&store)?);
    let id = store.create()?;
    // Held from the first moment: leases recorded from here on belong to a
    // live session, which no other start's crash recovery touches.
    let lock = store.lock(&id)?;
    if !profile.secrets.is_empty() && egress == Egress::None {
        return Err(Error::Refused {
            message: "the profile binds [[secrets]] to hosts, and allows no network to use \
                      them on"
                .into(),
            hint: "add the secrets' hosts to [network] allow".into(),
        });
    }
    // TLS inspection: the session's CA, its trust inside the sandbox, and
    // the secrets injected into requests.
    let mut inspection = (egress != Egress::None && profile.network.inspects_any())
        .then(|| {
            crate::inspect::Prepared::new(
                id.as_str(),
                &store.dir(&id),
                &profile,
                &dirs.home,
                &crate::inspect::StoreAccess::of(dirs),
            )
        })
        .transpose()?;
    // The session's Vault tokens (each written down before it is used, so
    // that a crash leaves a record for the next start to revoke it) are
    // renewed while it runs.
    let broker = inspection.as_ref().map(|i| Arc::clone(&i.broker));
    let renewer = match broker.as_ref().filter(|b| b.vault().is_some()) {
        Some(b) => Some(crate::vault::Renewer::start(Arc::clone(b))?),
        None => None,
    };
    if !profile.secrets.is_empty() && inspection.is_none() {
        return Err(Error::Refused {
            message: "the profile's [[secrets]] cannot be put into requests: none of their hosts \
                      is inspected"
                .into(),
            hint: "remove the secrets' hosts from [network] no_inspect".into(),
        });
    }
    let mut fixed: Vec<(&str, OsString)> = vec![
        ("HOME", home.as_os_str().to_owned()),
        ("TMPDIR", "/tmp".into()),
        ("CORDON_SESSION", id.as_str().into()),
        ("CORDON_PROFILE", profile.name.clone().into()),
    ];
    if egress == Egress::Proxy {
        let url = format!("http://127.0.0.1:{}", cordon_net::PROXY_PORT);
        for k in PROXY_VARS {
            let v = if k.eq_ignore_ascii_case("no_proxy") {
                "localhost,127.0.0.1,::1".to_owned()
            } else {
                url.clone()
            };
            fixed.push((k, v.into()));
        }
    }
    if let Some(i) = &inspection {
        for k in crate::inspect::CA_VARS {
            fixed.push((k, i.bundle_dest.as_os_str().to_owned()));
        }
        for (name, placeholder) in &i.placeholders {
            fixed.push((name, placeholder.into()));
        }
    }
    for (k, v) in fixed {
        set.retain(|(s, _)| s != k);
        set.push((k.to_owned(), v));
    }
    let host_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut plan = cordon_policy::env::plan(&host_env, &pass, &set);
    if !plan.vars.iter().any(|(k, _)| k == "PATH") {
        plan.vars
            .push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    let mut notices = notices_early;
    if !plan.withheld_credentials.is_empty() {
        notices.push(format!(
            "withheld {} credential-like environment variable(s): {} (pass one with --env NAME)",
            plan.withheld_credentials.len(),
            plan.withheld_credentials.join(", ")
        ));
    }
    if rustix::process::getuid().is_root() {
        notices.push(
            "warning: running as root: the kernel exempts uid 0 from the sandbox's process cap \
             (RLIMIT_NPROC), so a fork bomb is only stopped when the agent exits; run cordon as \
             your normal user"
                .into(),
        );
    }
    for m in &plan.missing {
        notices.push(format!("--env {m}: not set on the host, so not passed"));
    }

    let mut grants: Vec<crate::audit::Grant> = Vec::new();
    for (paths, kind, flag) in [
        (&allow_read, "read", "--allow-read"),
        (&allow_write, "write", "--allow-write"),
    ] {
        for p in paths {
            grants.push(crate::audit::Grant {
                kind,
                value: p.display().to_string(),
                source: flag,
            });
        }
    }
    for h in &req.allow_host {
        grants.push(crate::audit::Grant {
            kind: "host",
            value: h.clone(),
            source: "--allow-host",
        });
    }
    for b in &profile.secrets {
        grants.push(crate::audit::Grant {
            kind: "secret",
            value: format!(
                "{} ({}, to {})",
                b.name,
                b.source.render(),
                b.hosts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            source: "profile",
        });
    }
    for e in &req.env {
        if !e.contains('=') && !plan.missing.iter().any(|m| m == e) {
            grants.push(crate::audit::Grant {
                kind: "env",
                value: e.clone(),
                source: "--env",
            });
        }
    }

    let session_dir = store.dir(&id);
    let layout = layout::build(&layout::Input {
        profile: &profile,
        dirs,
        project: project.clone(),
        mode,
        session_dir: session_dir.clone(),
        allow_read,
        allow_write,
    })?;
    let decoys = crate::detection::Decoys::plant(&session_dir, home, &profile)?;
    let mut mounts = layout.mounts.clone();
    mounts.extend(decoys.mounts());
    if let Some(i) = &mut inspection {
        mounts.push(i.mount(&session_dir)?);
        i.add_canaries(&decoys.values);
    }
    // The agent's checked file, bound read-only over its own path (last,
    // above whatever the view put there: a persisted or granted directory
    // cannot substitute another file), and executed by that path.
    // A script's interpreter likewise.
    for file in agent
        .iter()
        .flat_map(|id| std::iter::once(&id.exe).chain(&id.interpreter))
    {
        mounts.push(Mount::Bind {
            src: file.path.clone(),
            dest: file.path.clone(),
            writable: false,
            optional: false,
            dev: false,
        });
    }
    let cwd_inside = if cwd.starts_with(&project) {
        cwd
    } else {
        project.clone()
    };
    let spec = SandboxSpec {
        argv: req.command.clone(),
        program: agent.as_ref().map(|id| id.exe.path.clone()),
        env: plan.vars,
        cwd: cwd_inside,
        hostname: profile.sandbox.hostname.clone(),
        mounts,
        root_size: 16 << 20,
        landlock: layout.landlock.clone(),
        seccomp: SeccompSpec {
            allow_ptrace: profile.sandbox.allow_ptrace,
            audit_exec: true,
            exits_by_pidfd: cordon_sandbox::exit_info_supported(),
        },
        limits: cordon_sandbox::Limits {
            nproc: profile.limits.nproc,
            nofile: profile.limits.nofile,
        },
        terminal: req.terminal,
        proxy_port: (egress == Egress::Proxy).then_some(cordon_net::PROXY_PORT),
        tun: (egress == Egress::Transparent).then_some(cordon_sandbox::TunSpec {
            address: cordon_net::dns::SANDBOX_ADDR,
            mtu: u32::from(cordon_net::TUN_MTU),
        }),
    };
    let mut env_withheld = plan.withheld_credentials.clone();
    env_withheld.extend(plan.withheld_other.iter().cloned());
    let record = Record {
        id,
        profile: profile.name.clone(),
        tier: profile.tier.map(|t| t.as_str().to_owned()),
        agent,
        approval,
        profile_digest: profile.digest(),
        project,
        mode,
        command: req
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        started_ms: now_ms(),
        ended_ms: None,
        status: Status::Running,
        exit_code: None,
        signal: None,
        supervisor_pid: std::process::id(),
        sandbox_pid: None,
        env_withheld,
        hidden_paths: layout.hidden.len(),
        placeholders: layout.placeholders.clone(),
        protected: layout.protected.clone(),
        quarantined: Vec::new(),
        error: None,
        applied_ms: None,
        warnings: Vec::new(),
        audit_head: None,
        contained: None,
        findings: Vec::new(),
        cgroup: None,
    };
    // Its background thread must not take the signals the supervisor
    // relays (SIGCHLD among them): it inherits a mask that blocks them.
    let audit = cordon_sandbox::with_relayed_signals_blocked(|| {
        crate::audit::open(&session_dir, &record, audit_key)
    })
    .map_err(|e| Error::io("block signals for the audit thread", e))??;
    let containment = Arc::new(crate::detection::Containment::default());
    let engine = cordon_audit::rules::Engine::new(
        &rules,
        profile.tier.map(cordon_policy::profile::Tier::as_str),
        decoys.canary_check()?,
    );
    let audit = Arc::new(crate::detection::Recorder::new(
        audit,
        engine,
        Arc::clone(&containment),
    ));
    let blocked = crate::blocklist::load(&dirs.state)?;
    let forward = {
        let audit = Arc::clone(&audit);
        cordon_net::Forward(Arc::new(move |ev: &cordon_net::NetEvent| {
            audit.append(&crate::audit::net_event(ev));
        }))
    };
    let net = (egress != Egress::None).then(|| cordon_net::Config {
        policy: profile.network.clone(),
        log: session_dir.join("net.jsonl"),
        upstream_auth,
        response_timeout: cordon_net::Config::RESPONSE_TIMEOUT,
        forward: Some(forward),
        inspection: inspection.map(|i| i.inspection),
        blocked,
    });
    let shipper = if sinks.is_empty() {
        None
    } else {
        Some(
            cordon_sandbox::with_relayed_signals_blocked(|| {
                crate::audit::Shipper::start(session_dir.join(crate::audit::FILE), sinks)
            })
            .and_then(|r| r)
            .map_err(|e| Error::io("start the audit shipper", e))?,
        )
    };
    // Watching from before the sandbox exists: an open or a write by the
    // agent's very first command is seen (building the view opens no decoy).
    let (watch, warning) = cordon_sandbox::with_relayed_signals_blocked(|| {
        crate::detection::SessionWatch::start(
            &decoys,
            (mode == ProjectMode::Rw).then_some(record.project.as_path()),
            Arc::clone(&audit),
        )
    })
    .and_then(|r| r)
    .map_err(|e| Error::io("watch the decoy credentials", e))?;
    if let Some(w) = warning {
        notices.push(format!("warning: {w}"));
    }
    Ok(Prepared {
        audit,
        grants,
        containment,
        watch,
        shipper,
        profile,
        record,
        spec,
        layout,
        notices,
        net,
        store,
        broker,
        renewer,
        state_dir: dirs.state.clone(),
        home: dirs.home.clone(),
        _lock: lock,
    })
}

/// The hidden argument of `cordon` that removes a sandbox's cgroup once its
/// last process has exited ([`remove_cgroup_main`]).
pub const REMOVE_CGROUP_ARG: &str = "__remove-cgroup";

/// Kills whatever is left in a sandbox's cgroup, then removes it: at once
/// when it is empty, else (its init still tearing down its namespaces) by a
/// detached `cordon __remove-cgroup DIR`, so that the session does not end
/// later for it (the running program is cordon: this library runs in its
/// command line). The error is a warning.
pub(crate) fn remove_cgroup(cg: cordon_sandbox::cgroup::Cgroup) -> Result<(), String> {
    let left = |e: std::io::Error| {
        format!(
            "the sandbox's cgroup {} was left behind: {e}",
            cg.path().display()
        )
    };
    let _ = cg.kill_all();
    if cg.try_remove().map_err(left)? {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/proc/self/exe")
        .arg(REMOVE_CGROUP_ARG)
        .arg(cg.path())
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(left)
}

/// `cordon __remove-cgroup DIR`: removes the sandbox's cgroup `DIR` (named
/// as cordon names them, in the cgroup2 filesystem) once its last process
/// has exited, waiting up to ten seconds. What a crash leaves, the next
/// start (from the record) or a later session's end (the sweep) removes.
/// It only ever removes an empty cgroup, which the caller could do by hand.
pub fn remove_cgroup_main(dir: &std::path::Path) -> std::process::ExitCode {
    let Ok(cg) = cordon_sandbox::cgroup::Cgroup::named(dir) else {
        return std::process::ExitCode::from(2);
    };
    match cg.remove_within(std::time::Duration::from_secs(10)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// Launches the sandbox (whose namespaces `pre` has been creating while the
/// session was prepared), waits for the agent, and records the outcome.
/// `on_warning` hears degradations as they happen.
pub fn execute(
    p: Prepared,
    pre: cordon_sandbox::Prelaunch,
    on_warning: &mut dyn FnMut(&str),
) -> Result<Outcome, Error> {
    let cgroup = pre.cgroup().ok().cloned();
    let outcome = execute_sandbox(p, pre, on_warning);
    // Last: what is left in it (init, told to go once the session's watch
    // was done) has had the session's end to exit.
    if let Some(cg) = cgroup {
        if let Err(e) = remove_cgroup(cg) {
            on_warning(&e);
        }
    }
    // And the empty cgroups that killed supervisors left beside it (any
    // state directory's: the cgroup is this user's). Here, off the path to
    // the agent's start.
    let _ = cordon_sandbox::cgroup::sweep(std::time::Duration::from_secs(30));
    outcome
}

fn execute_sandbox(
    p: Prepared,
    pre: cordon_sandbox::Prelaunch,
    on_warning: &mut dyn FnMut(&str),
) -> Result<Outcome, Error> {
    let Prepared {
        mut record,
        spec,
        layout,
        store,
        profile,
        net,
        audit,
        grants,
        containment,
        watch,
        shipper,
        broker,
        renewer,
        state_dir,
        home,
        ..
    } = p;
    let mut started = None;
    let mut control = None;
    let mut warnings = Vec::new();
    let mut exec_audit: Option<std::sync::mpsc::Receiver<std::io::Result<()>>> = None;
    // Tells the exec audit that the sandbox is empty (init lingers while it
    // holds the watch, so its listener does not hang up by itself).
    let exec_stop = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| Error::io("create the exec audit's stop signal", e.into()))?;
    let exec_stop = Arc::new(exec_stop);
    // The sandbox's own cgroup, where the user's is delegated: the freeze
    // of `cordon contain` is then the kernel's.
    let freezer = match pre.cgroup() {
        Ok(cg) => crate::control::Freezer::Cgroup(cg.clone()),
        Err(why) => crate::control::Freezer::Signals(why.to_owned()),
    };
    if let crate::control::Freezer::Cgroup(cg) = &freezer {
        record.cgroup = Some(cg.path().to_path_buf());
    }
    let launch = pre.hand_over(&spec);
    // The project's content as the session starts (overlay sessions: the
    // lower layer the agent cannot change), for the attestation; read on a
    // thread of its own, off the path to the agent's start.
    let project_digest = (record.mode == ProjectMode::Overlay).then(|| {
        let project = record.project.clone();
        cordon_sandbox::with_relayed_signals_blocked(|| {
            std::thread::Builder::new()
                .name("cordon-digest".into())
                .spawn(move || crate::provenance::project_digest(&project))
        })
    });
    // The egress engine starts while the sandbox builds its root; the
    // listening socket arrives during supervision. Without it the agent has
    // no way out (loopback only): a failure here is reported, never a bypass.
    let mut engine_error = None;
    let engine = match net {
        Some(config) => {
            let log = config.log.clone();
            match cordon_sandbox::with_relayed_signals_blocked(|| cordon_net::Engine::start(config))
                .and_then(|r| r)
            {
                Ok(e) => Some(e),
                Err(e) => {
                    engine_error = Some(std::io::Error::other(format!(
                        "cannot start the egress proxy (event log {}): {e}",
                        log.display()
                    )));
                    None
                }
            }
        }
        None => None,
    };
    // While the sandbox builds its root: the record, which must exist before
    // the agent starts. An error here drops `launch`, which kills the
    // sandbox before the agent ever runs.
    record.profile_digest = profile.digest();
    let result = match launch {
        // Dropping the launch kills the sandbox before the agent runs.
        Ok(_) if engine_error.is_some() => Err(cordon_sandbox::LaunchError::Io(
            engine_error.unwrap_or_else(|| std::io::Error::other("egress proxy")),
        )),
        Ok(mut launch) => {
            store.save(&record)?;
            // The control socket (`cordon contain`, `kill`, `resume`,
            // `block`): incident response needs it, so no socket, no run.
            let controls = crate::control::Controls::new(crate::control::Parts {
                record: record.clone(),
                dir: store.dir(&record.id),
                state_dir: state_dir.clone(),
                home: home.clone(),
                profile: profile.clone(),
                store: store.clone(),
                net: engine.as_ref().map(cordon_net::Engine::control),
                broker: broker.clone(),
                audit: Arc::clone(&audit),
                containment: Arc::clone(&containment),
                freezer: freezer.clone(),
            });
            let server =
                crate::control::Server::start(&store.dir(&record.id), Arc::clone(&controls))?;
            // A rule that contains runs the same response before its kill.
            let responder = Arc::downgrade(&controls);
            containment.respond_with(Box::new(move |why| {
                let controls = responder.upgrade()?;
                let own = rustix::process::geteuid().as_raw();
                let mut bundle = None;
                let done = controls.contain(why, own, std::time::Duration::ZERO, &mut |v| {
                    if let Some(b) = v.get("bundle").and_then(serde_json::Value::as_str) {
                        bundle = Some(b.to_owned());
                    }
                });
                Some(match done {
                    Ok(()) => format!(
                        "{why}: egress cut, credentials revoked, evidence sealed in {}",
                        bundle.unwrap_or_default()
                    ),
                    Err(e) => format!(
                        "{why}: the incident response failed ({e}); the sandbox is killed all \
                         the same"
                    ),
                })
            }));
            control = Some((controls, server));
            let hold = watch.as_ref().map(|w| w.hold()).unwrap_or_default();
            launch.go_holding(&hold).and_then(|()| {
                launch.supervise(&mut |ev| match ev {
                    Event::Started { pid } => {
                        started = Some(pid);
                        containment.started(pid);
                        if let Some((c, _)) = &control {
                            c.started(pid);
                        }
                        audit.append(&crate::audit::started(&record, Some(pid)));
                        if let Some(g) = &record.approval {
                            audit.append(&crate::approval::event(g));
                        }
                        for g in &grants {
                            audit.append(&crate::audit::granted(g));
                        }
                        if let Some(b) = &broker {
                            b.attach(Arc::clone(&audit));
                        }
                    }
                    Event::Tun(fd) => {
                        let served = match &engine {
                            Some(e) => e.serve_tun(fd),
                            None => Err(std::io::Error::other("no egress engine")),
                        };
                        if let Err(e) = served {
                            let w = format!(
                                "transparent egress could not start ({e}): the agent has no \
                                 network"
                            );
                            on_warning(&w);
                            warnings.push(w);
                        }
                    }
                    Event::ProxyListener(fd) => {
                        let served = match &engine {
                            Some(e) => e.serve_proxy(fd),
                            None => Err(std::io::Error::other("no egress engine")),
                        };
                        if let Err(e) = served {
                            let w = format!(
                                "the egress proxy could not start ({e}): the agent has no \
                                 network"
                            );
                            on_warning(&w);
                            warnings.push(w);
                        }
                    }
                    Event::Warning(w) => {
                        on_warning(&w);
                        warnings.push(w);
                    }
                    Event::ExecListener(l) => {
                        // Every exec in the sandbox waits for this thread's
                        // answer; it ends when the last process is gone.
                        let audit = Arc::clone(&audit);
                        let command = record.command.clone();
                        let stop = Arc::clone(&exec_stop);
                        let pidfd_exits = spec.seccomp.exits_by_pidfd;
                        let (tx, rx) = std::sync::mpsc::channel();
                        let spawned = cordon_sandbox::with_relayed_signals_blocked(|| {
                            std::thread::Builder::new()
                                .name("cordon-exec-audit".into())
                                .spawn(move || {
                                    // The first exec is the agent's own.
                                    let mut first = true;
                                    let r = l.serve_exits(
                                        Some(std::os::fd::AsFd::as_fd(&*stop)),
                                        pidfd_exits,
                                        &mut |n| {
                                            let agent = std::mem::take(&mut first)
                                                .then_some(command.as_slice());
                                            audit.append(&crate::audit::exec_notice(&n, agent));
                                        },
                                    );
                                    let _ = tx.send(r);
                                })
                        });
                        match spawned {
                            Ok(Ok(_)) => exec_audit = Some(rx),
                            Ok(Err(e)) | Err(e) => {
                                // The listener was dropped with the thread:
                                // the kernel fails every exec in the sandbox
                                // with ENOSYS, so nothing runs unaudited.
                                let w = format!(
                                    "the exec audit could not start ({e}): every exec in the \
                                     sandbox fails"
                                );
                                on_warning(&w);
                                warnings.push(w);
                            }
                        }
                    }
                })
            })
        }
        Err(e) => Err(e),
    };
    // Nothing is left to contain: the socket goes (after a request being
    // served, evidence included, has finished).
    let (by_hand, eradicate, bundle) = match control.take() {
        Some((c, server)) => {
            drop(server);
            (c.contained(), c.eradicate(), c.bundle())
        }
        None => (None, false, None),
    };
    // The agent and everything it started are gone: flows still open end
    // now (their client side is closed) or within the grace period.
    let egress = engine.map(|e| e.finish(std::time::Duration::from_millis(500)));
    // Every process but a lingering init is gone: the exec audit answers
    // what is queued and ends.
    let _ = rustix::io::write(&*exec_stop, &1u64.to_ne_bytes());
    if let Some(rx) = exec_audit {
        match rx.recv_timeout(std::time::Duration::from_secs(2)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warnings.push(format!("the exec audit stopped early: {e}")),
            Err(_) => warnings.push("the exec audit did not finish".into()),
        }
    }
    if let Some(w) = watch.and_then(crate::detection::SessionWatch::finish) {
        warnings.push(w);
    }
    // Only a lingering init (it held the watch) can be left in the cgroup:
    // it exits while the session's end is written, and `execute` removes
    // the cgroup after.
    if let crate::control::Freezer::Cgroup(cg) = &freezer {
        let _ = cg.kill_all();
    }
    // The session's tokens die with it.
    drop(renewer);
    if let Some(b) = &broker {
        // Records made before the agent started (it never did) go in now.
        b.attach(Arc::clone(&audit));
        warnings.extend(b.revoke_all());
    }
    record.sandbox_pid = started;
    record.warnings = warnings;
    record.ended_ms = Some(now_ms());
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(e.to_string());
            if let cordon_sandbox::LaunchError::Exec { code, .. } = &e {
                record.status = Status::Exited;
                record.exit_code = Some(*code);
            }
            record.contained = containment.reason().or_else(|| by_hand.clone());
            record.findings = audit.findings();
            audit.append(&crate::audit::ended(&record));
            record.audit_head = close_audit(audit.log(), &mut record.warnings);
            if let Some(s) = shipper {
                record.warnings.extend(s.finish());
            }
            store.save(&record)?;
            return Err(e.into());
        }
    };
    record.status = Status::Exited;
    record.exit_code = Some(exit.code);
    record.signal = exit.signal;
    let mut notices = Vec::new();
    let mut output = Vec::new();
    if let Some(line) = egress.as_ref().and_then(|s| s.blocked_line()) {
        notices.push(format!(
            "{line}; every decision is in {}",
            store.dir(&record.id).join("net.jsonl").display()
        ));
    }
    match record.mode {
        ProjectMode::Overlay if eradicate => {
            // Killed: no output to attest.
            // `cordon kill`: the agent's changes are not kept for apply
            // (the evidence bundle has a copy).
            let upper = store.dir(&record.id).join("upper");
            let _ = std::fs::remove_dir_all(store.dir(&record.id).join("work"));
            match std::fs::remove_dir_all(&upper) {
                Ok(()) => notices.push(format!(
                    "session {} was killed: its overlay is removed{}",
                    record.id,
                    bundle
                        .as_ref()
                        .map(|b| format!("; the evidence is in {}", b.display()))
                        .unwrap_or_default()
                )),
                Err(e) => notices.push(format!(
                    "session {} was killed, and its overlay {} could not be removed: {e}",
                    record.id,
                    upper.display()
                )),
            }
        }
        ProjectMode::Overlay => {
            let upper = store.dir(&record.id).join("upper");
            match crate::overlay::changes(&upper, &record.project, &record.placeholders) {
                Ok(ch) if ch.is_empty() => {}
                Ok(ch) => {
                    for c in &ch {
                        audit.append(&crate::audit::file_change(c, &upper));
                    }
                    output.clone_from(&ch);
                    notices.push(format!(
                        "session {}: {} change(s) in the overlay; review with `cordon diff {}`, \
                     write them to {} with `cordon apply {}`",
                        record.id,
                        ch.len(),
                        record.id,
                        record.project.display(),
                        record.id
                    ));
                }
                Err(e) => notices.push(format!("could not list overlay changes: {e}")),
            }
        }
        ProjectMode::Rw => {
            let qdir = store.dir(&record.id).join("quarantine");
            // Anything new that would run code on the host: nested
            // repositories, bare-repo layouts, .envrc, editor tasks, links
            // inside .git.
            let mut suspects: Vec<PathBuf> = crate::layout::scan_sensitive(&record.project)
                .into_iter()
                .filter(|p| !layout.sensitive.contains(p))
                .collect();
            suspects.extend(layout.missing_protected.iter().cloned());
            if let Some(head) = &layout.git_head {
                let path = record.project.join(".git/HEAD");
                let now = std::fs::symlink_metadata(&path)
                    .ok()
                    .filter(|m| m.is_file())
                    .and_then(|_| std::fs::read(&path).ok());
                if now.as_ref() != Some(head) && !now.as_deref().is_some_and(valid_head) {
                    let _ = std::fs::remove_file(&path);
                    match std::fs::write(&path, head) {
                        Ok(()) => notices.push(format!(
                            "the agent left {} invalid (git would fall back to a repository the \
                             agent could have planted); restored it",
                            path.display()
                        )),
                        Err(e) => notices.push(format!(
                            "the agent broke {} and it could not be restored: {e}",
                            path.display()
                        )),
                    }
                }
            }
            for rel in &suspects {
                // Never resolve a symlink the agent planted on the way: the
                // first component that is a new symlink is what gets moved.
                let Some(found) = created_component(&record.project, rel, &layout.symlinks) else {
                    continue;
                };
                let path = record.project.join(&found);
                {
                    let dest = qdir.join(&found);
                    match quarantine(&path, &dest) {
                        Ok(()) => {
                            notices.push(format!(
                                "the agent created protected path {}; moved it to {}",
                                crate::overlay::quote(&path),
                                crate::overlay::quote(&dest)
                            ));
                            record.quarantined.push(found.clone());
                        }
                        Err(e) => notices.push(format!(
                            "the agent created protected path {} and it could not be moved \
                             away ({e}); inspect it before using the project",
                            crate::overlay::quote(&path)
                        )),
                    }
                }
            }
        }
        ProjectMode::Ro => {}
    }
    // After the end-of-session records (overlay changes) went through the
    // rules too.
    record.contained = containment.reason().or(by_hand);
    record.findings = audit.findings();
    if let Some(why) = &record.contained {
        notices.push(format!(
            "session {} was contained by {why}; its record: `cordon audit show {} --class finding,session`",
            record.id, record.id
        ));
    } else if !record.findings.is_empty() {
        notices.push(format!(
            "{} detection finding(s); see `cordon audit show {} --class finding`",
            record.findings.len(),
            record.id
        ));
    }
    audit.append(&crate::audit::ended(&record));
    record.audit_head = close_audit(audit.log(), &mut record.warnings);
    if let Some(s) = shipper {
        for w in s.finish() {
            notices.push(format!(
                "{w}; the records it missed are kept, deliver them with `cordon audit ship`"
            ));
            record.warnings.push(w);
        }
    }
    if record.audit_head.is_none() {
        notices.push(format!(
            "warning: the audit log {} could not be completed; see `cordon show {}`",
            store.dir(&record.id).join(crate::audit::FILE).display(),
            record.id
        ));
    }
    // Provenance: the output, signed with what produced it.
    let digest = match project_digest {
        Some(Ok(Ok(t))) => match t.join() {
            Ok(d) => d.map(Some),
            Err(_) => Err(Error::io(
                "digest the project",
                std::io::Error::other("the thread panicked"),
            )),
        },
        Some(Ok(Err(e)) | Err(e)) => Err(Error::io("start digesting the project", e)),
        None => Ok(None),
    };
    let attested =
        digest.and_then(|d| attest(&record, &output, &store, &state_dir, egress.as_ref(), d));
    if let Err(e) = attested {
        record
            .warnings
            .push(format!("the session's attestation was not written: {e}"));
    }
    store.save(&record)?;
    Ok(Outcome {
        exit,
        record,
        notices,
    })
}

/// A run refused before it had a session.
struct RefusedRun<'a> {
    profile: &'a cordon_policy::Profile,
    project: &'a Path,
    mode: ProjectMode,
    command: &'a [String],
}

/// Leaves a failed session behind a refused run (its record and an audit
/// log holding `ev`), so that `cordon ps --all` and `cordon logs` show it.
/// Best effort: the refusal stands whether or not it can be recorded.
fn record_refused(dirs: &Dirs, what: &RefusedRun<'_>, ev: &cordon_audit::Event) {
    let done = || -> Result<(), Error> {
        dirs.ensure_state()?;
        let store = Store::new(dirs.sessions());
        let id = store.create()?;
        let now = now_ms();
        let mut record = Record {
            id,
            profile: what.profile.name.clone(),
            tier: what.profile.tier.map(|t| t.as_str().to_owned()),
            agent: None,
            approval: None,
            profile_digest: what.profile.digest(),
            project: what.project.to_path_buf(),
            mode: what.mode,
            command: what.command.to_vec(),
            started_ms: now,
            ended_ms: Some(now),
            status: Status::Failed,
            exit_code: None,
            signal: None,
            supervisor_pid: std::process::id(),
            sandbox_pid: None,
            env_withheld: Vec::new(),
            hidden_paths: 0,
            placeholders: Vec::new(),
            protected: Vec::new(),
            quarantined: Vec::new(),
            error: Some(ev.message.clone().unwrap_or_default()),
            applied_ms: None,
            warnings: Vec::new(),
            audit_head: None,
            contained: None,
            findings: Vec::new(),
            cgroup: None,
        };
        let log = crate::audit::open(
            &store.dir(&record.id),
            &record,
            crate::audit::host_key(&dirs.state)?,
        )?;
        log.append(ev);
        log.append(&crate::audit::ended(&record));
        record.audit_head = close_audit(&log, &mut record.warnings);
        store.save(&record)
    };
    let _ = done();
}

/// Writes the session's signed provenance (`attestation.dsse.json`): the
/// overlay's changes as subjects; for an overlay session, the digest of the
/// project it started from (its lower layer, which the agent cannot touch).
fn attest(
    record: &Record,
    output: &[crate::overlay::Change],
    store: &Store,
    state: &Path,
    egress: Option<&cordon_net::Summary>,
    project: Option<String>,
) -> Result<(), Error> {
    let dir = store.dir(&record.id);
    let egress = egress.map_or(
        serde_json::Value::Null,
        |s| serde_json::json!({ "allowed": s.allowed, "denied": s.denied_total() }),
    );
    let st = crate::provenance::statement(record, output, &dir.join("upper"), project, egress)?;
    let env = crate::provenance::sign(&crate::audit::host_key(state)?, &st)?;
    crate::provenance::write(&crate::provenance::path(&dir), &env)
}

/// Closes the audit log with its final checkpoint; where it ends, or a
/// warning in `warnings` when it cannot be completed.
fn close_audit(
    audit: &cordon_audit::AuditLog,
    warnings: &mut Vec<String>,
) -> Option<crate::audit::Head> {
    match audit.close() {
        Ok(h) => Some(crate::audit::Head {
            seq: h.seq,
            hash: h.hash,
        }),
        Err(e) => {
            warnings.push(format!("the audit log could not be completed: {e}"));
            None
        }
    }
}

/// Whether `bytes` is what git accepts in `HEAD`.
fn valid_head(bytes: &[u8]) -> bool {
    let t = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if let Some(r) = t.strip_prefix(b"ref: refs/") {
        return !r.is_empty() && r.iter().all(|b| b.is_ascii_graphic());
    }
    (t.len() == 40 || t.len() == 64) && t.iter().all(u8::is_ascii_hexdigit)
}

/// The part of `rel` (inside `project`) that exists now and should be
/// quarantined: the first component that is a symlink not present at start
/// (`symlinks` lists the prefixes that were symlinks then), or `rel` itself.
fn created_component(project: &Path, rel: &Path, symlinks: &[PathBuf]) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for comp in rel.components() {
        prefix.push(comp);
        let md = std::fs::symlink_metadata(project.join(&prefix)).ok()?;
        if md.file_type().is_symlink() {
            return if symlinks.contains(&prefix) {
                None
            } else {
                Some(prefix)
            };
        }
    }
    Some(prefix)
}

/// Moves `path` to `dest`, copying and removing when they are on different
/// filesystems. Symlinks are moved as symlinks, never followed.
fn quarantine(path: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(path, dest) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            copy_tree(path, dest)?;
            if std::fs::symlink_metadata(path)?.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            }
        }
        other => other,
    }
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(src)?;
    if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dest)
    } else if md.is_dir() {
        std::fs::create_dir(dest)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        }
        Ok(())
    } else if md.is_file() {
        std::fs::copy(src, dest).map(drop)
    } else {
        // Devices, fifos, sockets: nothing to keep; removing them is enough.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_moves_across_filesystems() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("SKIP quarantine_moves_across_filesystems: no /dev/shm");
            return;
        }
        let from = tempfile::tempdir_in(shm).unwrap();
        let to = tempfile::tempdir().unwrap();
        let bad = from.path().join(".vscode");
        std::fs::create_dir_all(bad.join("sub")).unwrap();
        std::fs::write(bad.join("tasks.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", bad.join("sub/link")).unwrap();
        let dest = to.path().join("q/.vscode");
        quarantine(&bad, &dest).unwrap();
        assert!(!bad.exists());
        assert_eq!(
            std::fs::read_to_string(dest.join("tasks.json")).unwrap(),
            "{}"
        );
        assert_eq!(
            std::fs::read_link(dest.join("sub/link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }
}
