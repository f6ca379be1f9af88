//! The profile schema, inheritance and resolution.

use std::collections::BTreeMap;
use std::fmt;

use cordon_types::ProjectMode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hide::HideMatcher;
use crate::network::{
    preset_hosts, Cidr, EgressMode, Endpoint, EnvCredential, HostEntry, HostName, HostPattern,
    NetworkPolicy, ProxyUrl,
};
use crate::values::{Bare, ByteSize, EnvName, Glob, HomePath, HostPath, PathRule, RuleValue};

/// Paths inside the project that stay read-only in every mode, also when they
/// do not exist yet: they run code on the user's side later (git hooks, direnv,
/// editor tasks) or configure cordon itself.
pub const ALWAYS_PROTECTED: &[&str] = &[
    ".git/hooks",
    ".git/config",
    // Other places git reads configuration (and so hooks and commands) from.
    ".git/commondir",
    ".git/config.worktree",
    ".git/modules",
    ".git/worktrees",
    ".gitmodules",
    ".envrc",
    ".vscode",
    ".idea",
    ".devcontainer",
    ".husky",
    ".pre-commit-config.yaml",
    "lefthook.yml",
    ".cordon",
];

/// The entries directly under `.git/` that `cordon apply` writes back: the
/// object store, refs, reflogs, the index and the state files of ordinary git
/// commands. Anything else under `.git` (configuration, hooks, `commondir`,
/// ...) is refused, because git would run commands named there on the host.
pub const GIT_APPLY_ALLOWED: &[&str] = &["objects", "refs", "logs", "index", "HEAD", "packed-refs"];

/// Names that `cordon apply` refuses at any depth: they run code on the host
/// when a person later enters the directory, opens it in an editor, or runs
/// git there. `HEAD` outside `.git/` is how a planted bare repository (whose
/// `config` git would obey) is recognised.
pub const NEVER_APPLIED_NAMES: &[&str] = &[
    ".envrc",
    ".git",
    "HEAD",
    ".vscode",
    ".devcontainer",
    ".idea",
    ".husky",
    ".exrc",
    ".nvim.lua",
];

/// File-name suffixes `cordon apply` refuses at any depth.
pub const NEVER_APPLIED_SUFFIXES: &[&str] = &[".code-workspace"];

/// A built-in profile: its name, its TOML (the source of truth, shipped in
/// `profiles/`), and the same document as JSON, converted by `build.rs`.
macro_rules! builtin {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../profiles/", $name, ".toml")),
            include_str!(concat!(env!("OUT_DIR"), "/builtin/", $name, ".json")),
        )
    };
}

/// Built-in profiles, shipped as data files.
const BUILTIN: &[(&str, &str, &str)] = &[
    builtin!("default"),
    builtin!("claude-code"),
    builtin!("codex"),
    builtin!("aider"),
    builtin!("gemini-cli"),
];

/// Names of the built-in profiles.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _, _)| *n)
}

/// The text of a built-in profile.
pub fn builtin(name: &str) -> Option<SourceText> {
    BUILTIN
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, text, json)| SourceText {
            origin: format!("builtin:{n}"),
            text: (*text).to_owned(),
            compiled: Some(json),
        })
}

/// Profile text and where it came from (a file path or `builtin:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceText {
    /// File path or `builtin:NAME`, used in error messages.
    pub origin: String,
    /// The TOML text.
    pub text: String,
    /// The same document as JSON, made at build time (built-ins only):
    /// parsed instead of `text`, because JSON parses several times faster
    /// and every `cordon run` resolves a profile.
    pub compiled: Option<&'static str>,
}

impl SourceText {
    /// A profile read from `origin` (a file).
    pub fn new(origin: String, text: String) -> SourceText {
        SourceText {
            origin,
            text,
            compiled: None,
        }
    }
}

/// Where profiles are looked up by name (the session layer reads the user's
/// profile directory; built-ins are in this crate).
pub trait ProfileSource {
    /// The profile called `name`, if there is one. Lookups of a profile's own
    /// name from its `extends` are answered by [`builtin`] (see [`resolve`]).
    fn find(&self, name: &str) -> Result<Option<SourceText>, ProfileError>;
    /// Places searched, for "not found" messages.
    fn searched(&self, name: &str) -> Vec<String>;
}

/// Why a profile could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// No profile of that name.
    #[error("profile {name:?} not found (searched: {})", searched.join(", "))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where we looked.
        searched: Vec<String>,
    },
    /// The TOML is malformed or a value is invalid.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// File or `builtin:NAME`.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The profile is well-formed but inconsistent.
    #[error("{origin}: {message}")]
    Invalid {
        /// File or `builtin:NAME`.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// `extends` loops.
    #[error("profile inheritance loops: {}", chain.join(" -> "))]
    Cycle {
        /// The chain of names.
        chain: Vec<String>,
    },
    /// Reading a profile failed.
    #[error("{origin}: {message}")]
    Io {
        /// The file.
        origin: String,
        /// The OS error.
        message: String,
    },
}

// ---------------------------------------------------------------- file schema

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    extends: Option<String>,
    description: Option<String>,
    tier: Option<Tier>,
    #[serde(default)]
    audit: AuditFile,
    #[serde(default)]
    project: ProjectFile,
    #[serde(default)]
    filesystem: FilesystemFile,
    #[serde(default)]
    home: HomeFile,
    #[serde(default)]
    env: EnvFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    sandbox: SandboxFile,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    secrets: Vec<crate::secrets::SecretFile>,
    #[serde(default)]
    dlp: DlpFile,
    #[serde(default)]
    vault: VaultFile,
    #[serde(default)]
    agent: AgentFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    sha256: Option<String>,
    minisign_key: Option<String>,
}

/// Which agent executables a profile accepts (`[agent]`): the command's
/// executable (for a script: the script) must have this SHA-256, or carry
/// a minisign signature (`FILE.minisig`) by this key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentPolicy {
    /// Lower-case hex SHA-256 of the executable.
    pub sha256: Option<String>,
    /// A minisign public key (base64, as in `minisign.pub`).
    pub minisign_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultFile {
    addr: Option<String>,
    auth: Option<VaultAuth>,
    token_env: Option<Bare<EnvName>>,
    role: Option<String>,
    jwt_mount: Option<String>,
    role_id_env: Option<Bare<EnvName>>,
    secret_id_env: Option<Bare<EnvName>>,
    approle_mount: Option<String>,
    ca_file: Option<Bare<HostPath>>,
}

/// How cordon logs in to Vault or OpenBao.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaultAuth {
    /// With a token from cordon's environment (`token_env`).
    Token,
    /// With a JWT cordon signs for the session (Ed25519, the host key;
    /// claims: session, profile, tier; 5 minutes), exchanged at the JWT
    /// auth method for a token scoped by the `role`.
    Jwt,
    /// With an AppRole's role id and secret id from cordon's environment
    /// (`role_id_env`, `secret_id_env`).
    Approle,
}

/// Where `vault:` secrets come from: a Vault or OpenBao server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultPolicy {
    /// `http(s)://host:port` of the server.
    pub addr: Option<String>,
    /// How cordon logs in.
    pub auth: VaultAuth,
    /// The variable of cordon's environment holding the token (`token`).
    pub token_env: String,
    /// The JWT auth method's role (`jwt`).
    pub role: Option<String>,
    /// Where the JWT auth method is mounted (`jwt` by default).
    pub jwt_mount: String,
    /// The variables holding the AppRole's role id and secret id.
    pub role_id_env: String,
    /// See `role_id_env`.
    pub secret_id_env: String,
    /// Where the AppRole auth method is mounted (`approle` by default).
    pub approle_mount: String,
    /// A CA certificate (PEM) trusted for the server besides the system's.
    pub ca_file: Option<Bare<HostPath>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlpFile {
    action: Option<DlpAction>,
    model_action: Option<DlpAction>,
    #[serde(default)]
    model_hosts: Vec<PathRule<HostEntry>>,
    pii: Option<bool>,
    max_body: Option<ByteSize>,
    rehydrate: Option<bool>,
}

/// What happens to an inspected request that carries a credential (or,
/// with `pii`, personal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlpAction {
    /// Refused with a 403 naming what was found.
    Block,
    /// Passed on with each finding replaced by a placeholder.
    Redact,
    /// Passed on unchanged; a finding is recorded.
    Alert,
}

/// Data loss prevention on inspected requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlpPolicy {
    /// For every inspected host but the model hosts.
    pub action: DlpAction,
    /// For the model hosts (prompts: code with secrets reaches the model
    /// as placeholders).
    pub model_action: DlpAction,
    /// The model hosts: the @anthropic, @openai and @google-ai presets,
    /// plus the profile's.
    pub model_hosts: Vec<PathRule<HostPattern>>,
    /// Also personal data (emails, phone and card numbers, IBANs, SSNs).
    pub pii: bool,
    /// The most body bytes read and checked; the rest of a larger body
    /// passes unchecked (the request's event says so).
    pub max_body: ByteSize,
    /// Responses from hosts whose requests are redacted get the values
    /// back in place of their placeholders (the agent sent them; the
    /// model never saw them).
    pub rehydrate: bool,
}

impl DlpPolicy {
    /// The action for requests to `host` on `port`.
    pub fn action_for(&self, host: &str, port: u16) -> DlpAction {
        if self.model_hosts.iter().any(|r| r.value.matches(host, port)) {
            self.model_action
        } else {
            self.action
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    mode: Option<ProjectMode>,
    #[serde(default)]
    hide: Vec<PathRule<Glob>>,
    #[serde(default)]
    reveal: Vec<PathRule<Glob>>,
    #[serde(default)]
    protect: Vec<PathRule<HomePath>>,
    examples: Option<Examples>,
}

/// Paths that must (not) be hidden by a profile's rules; checked on load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    /// Project-relative paths that must be hidden.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// Project-relative paths that must stay visible.
    #[serde(default)]
    pub visible: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesystemFile {
    #[serde(default)]
    read: Vec<PathRule<HostPath>>,
    #[serde(default)]
    write: Vec<PathRule<HostPath>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HomeFile {
    #[serde(default)]
    read: Vec<PathRule<HomePath>>,
    #[serde(default)]
    write: Vec<PathRule<HomePath>>,
    #[serde(default)]
    persist: Vec<PathRule<HomePath>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    #[serde(default)]
    pass: Vec<PathRule<EnvName>>,
    #[serde(default)]
    set: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    nproc: Option<u64>,
    nofile: Option<u64>,
    tmp_size: Option<ByteSize>,
    home_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    decoys: Option<bool>,
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default)]
    contain: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxFile {
    landlock: Option<LandlockLevel>,
    allow_ptrace: Option<bool>,
    hostname: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    #[serde(default)]
    allow: Vec<PathRule<HostEntry>>,
    #[serde(default)]
    deny: Vec<PathRule<HostEntry>>,
    #[serde(default)]
    allow_cidr: Vec<PathRule<Cidr>>,
    #[serde(default)]
    allow_local: Vec<PathRule<Endpoint>>,
    #[serde(default)]
    resolve: BTreeMap<HostName, Bare<Endpoint>>,
    /// `""` removes an inherited proxy.
    upstream_proxy: Option<OptionalProxy>,
    upstream_proxy_auth: Option<Bare<EnvCredential>>,
    mode: Option<EgressMode>,
    #[serde(default)]
    inspect: Vec<PathRule<HostEntry>>,
    #[serde(default)]
    no_inspect: Vec<PathRule<HostEntry>>,
    #[serde(default)]
    upstream_ca: Vec<PathRule<HostPath>>,
    #[serde(default)]
    http: BTreeMap<HostName, HttpFile>,
}

/// `[network.http."HOST"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    allow: Vec<PathRule<crate::network::HttpRule>>,
}

/// `upstream_proxy`: a URL, or `""` for none.
#[derive(Debug)]
struct OptionalProxy(Option<Bare<ProxyUrl>>);

impl<'de> Deserialize<'de> for OptionalProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(OptionalProxy(None));
        }
        ProxyUrl::parse(&s)
            .map(|u| OptionalProxy(Some(Bare(u))))
            .map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------- effective profile

/// How strictly Landlock must be enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockLevel {
    /// Every requested right and scope, or refuse to start.
    Strict,
    /// Enforced at least partly, or refuse; warn when partial.
    Required,
    /// Warn when unavailable.
    BestEffort,
}

/// A profile's risk tier: which detection rules apply (and, with the
/// governance layer, what it may grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Trying an agent out: model hosts only, nothing installed.
    Experiment,
    /// An agent and task the organisation approved.
    Approved,
    /// Work on sensitive code or with production credentials.
    HighRisk,
}

impl Tier {
    /// The tier's name as written in profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Experiment => "experiment",
            Tier::Approved => "approved",
            Tier::HighRisk => "high-risk",
        }
    }
}

/// What the session's audit watches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditPolicy {
    /// Decoy credentials in the fake home (on by default).
    pub decoys: bool,
    /// Detection rules switched off, by id.
    pub disable: Vec<String>,
    /// Detection rules whose action becomes `contain`, by id.
    pub contain: Vec<String>,
}

/// The effective, fully resolved profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Profile name (file stem or built-in name).
    pub name: String,
    /// One line for `cordon profile list`.
    pub description: String,
    /// The risk tier (none unless a profile sets one).
    pub tier: Option<Tier>,
    /// Detection settings.
    pub audit: AuditPolicy,
    /// The chain of files it was resolved from, most general first.
    pub sources: Vec<String>,
    /// The project directory.
    pub project: ProjectPolicy,
    /// Extra host paths.
    pub filesystem: FilesystemPolicy,
    /// The fake home.
    pub home: HomePolicy,
    /// The agent's environment.
    pub env: EnvPolicy,
    /// Resource limits.
    pub limits: LimitsPolicy,
    /// Sandbox layers.
    pub sandbox: SandboxPolicy,
    /// Egress: which hosts the agent may reach (presets expanded).
    pub network: NetworkPolicy,
    /// Credentials the agent uses through placeholders.
    pub secrets: Vec<crate::secrets::SecretBinding>,
    /// Data loss prevention on inspected requests.
    pub dlp: DlpPolicy,
    /// The Vault or OpenBao server of `vault:` secrets.
    pub vault: VaultPolicy,
    /// The agent executables accepted.
    pub agent: AgentPolicy,
    /// The compiled hide matcher, built once on first use.
    #[serde(skip)]
    matcher: CompiledHide,
}

/// A lazily compiled [`HideMatcher`]; not part of the policy's value (it is
/// derived from `project.hide` and `project.reveal`).
#[derive(Debug, Clone, Default)]
struct CompiledHide(std::sync::OnceLock<HideMatcher>);

impl PartialEq for CompiledHide {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CompiledHide {}

/// Project rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectPolicy {
    /// How the project is mounted.
    pub mode: ProjectMode,
    /// Files matching these are unreadable inside.
    pub hide: Vec<PathRule<Glob>>,
    /// Exceptions to `hide`.
    pub reveal: Vec<PathRule<Glob>>,
    /// Extra read-only paths (on top of [`ALWAYS_PROTECTED`]).
    pub protect: Vec<PathRule<HomePath>>,
}

/// Extra host paths mounted at the same place inside.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesystemPolicy {
    /// Read-only.
    pub read: Vec<PathRule<HostPath>>,
    /// Read-write.
    pub write: Vec<PathRule<HostPath>>,
}

/// What the fake home contains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HomePolicy {
    /// Files/dirs from the real home, read-only.
    pub read: Vec<PathRule<HomePath>>,
    /// Files/dirs from the real home, read-write.
    pub write: Vec<PathRule<HomePath>>,
    /// Directories kept in cordon's state dir per profile (agent config).
    pub persist: Vec<PathRule<HomePath>>,
}

/// Environment rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnvPolicy {
    /// Host variables passed even when they look like credentials.
    pub pass: Vec<PathRule<EnvName>>,
    /// Variables set to fixed values (`~/` expands to the home path).
    pub set: BTreeMap<String, String>,
}

/// Resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitsPolicy {
    /// Processes and threads of the agent's uid inside the sandbox.
    pub nproc: u64,
    /// Open files per process.
    pub nofile: u64,
    /// Size cap of `/tmp`.
    pub tmp_size: ByteSize,
    /// Size cap of the fake home's tmpfs.
    pub home_size: ByteSize,
}

/// Sandbox layer options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxPolicy {
    /// Landlock requirement.
    pub landlock: LandlockLevel,
    /// Allow ptrace and process_vm_* (debuggers inside the sandbox).
    pub allow_ptrace: bool,
    /// Hostname inside.
    pub hostname: String,
}

impl Profile {
    fn base(name: &str) -> Profile {
        Profile {
            name: name.to_owned(),
            description: String::new(),
            tier: None,
            audit: AuditPolicy {
                decoys: true,
                disable: Vec::new(),
                contain: Vec::new(),
            },
            sources: Vec::new(),
            project: ProjectPolicy {
                mode: ProjectMode::Ro,
                hide: Vec::new(),
                reveal: Vec::new(),
                protect: Vec::new(),
            },
            filesystem: FilesystemPolicy::default(),
            home: HomePolicy::default(),
            env: EnvPolicy::default(),
            limits: LimitsPolicy {
                nproc: 4096,
                nofile: 65536,
                tmp_size: ByteSize(2 << 30),
                home_size: ByteSize(1 << 30),
            },
            sandbox: SandboxPolicy {
                landlock: LandlockLevel::Required,
                allow_ptrace: false,
                hostname: "cordon".into(),
            },
            network: NetworkPolicy::default(),
            secrets: Vec::new(),
            dlp: DlpPolicy {
                action: DlpAction::Block,
                model_action: DlpAction::Redact,
                model_hosts: crate::network::MODEL_PRESETS
                    .iter()
                    .filter_map(|p| preset_hosts(p).ok())
                    .flat_map(|(_, hosts)| hosts)
                    .collect(),
                pii: false,
                max_body: ByteSize(8 << 20),
                rehydrate: false,
            },
            vault: VaultPolicy {
                addr: None,
                auth: VaultAuth::Token,
                token_env: "VAULT_TOKEN".into(),
                role: None,
                jwt_mount: "jwt".into(),
                role_id_env: "VAULT_ROLE_ID".into(),
                secret_id_env: "VAULT_SECRET_ID".into(),
                approle_mount: "approle".into(),
                ca_file: None,
            },
            agent: AgentPolicy::default(),
            matcher: CompiledHide::default(),
        }
    }

    fn apply(&mut self, f: ProfileFile, origin: &str) -> Result<(), ProfileError> {
        fn extend<T: PartialEq>(dst: &mut Vec<T>, src: Vec<T>) {
            for v in src {
                if !dst.contains(&v) {
                    dst.push(v);
                }
            }
        }
        self.sources.push(origin.to_owned());
        if let Some(d) = f.description {
            self.description = d;
        }
        if let Some(t) = f.tier {
            self.tier = Some(t);
        }
        if let Some(d) = f.audit.decoys {
            self.audit.decoys = d;
        }
        extend(&mut self.audit.disable, f.audit.disable);
        extend(&mut self.audit.contain, f.audit.contain);
        if let Some(m) = f.project.mode {
            self.project.mode = m;
        }
        extend(&mut self.project.hide, f.project.hide);
        extend(&mut self.project.reveal, f.project.reveal);
        extend(&mut self.project.protect, f.project.protect);
        extend(&mut self.filesystem.read, f.filesystem.read);
        extend(&mut self.filesystem.write, f.filesystem.write);
        extend(&mut self.home.read, f.home.read);
        extend(&mut self.home.write, f.home.write);
        extend(&mut self.home.persist, f.home.persist);
        extend(&mut self.env.pass, f.env.pass);
        self.env.set.extend(f.env.set);
        let l = f.limits;
        self.limits.nproc = l.nproc.unwrap_or(self.limits.nproc);
        self.limits.nofile = l.nofile.unwrap_or(self.limits.nofile);
        self.limits.tmp_size = l.tmp_size.unwrap_or(self.limits.tmp_size);
        self.limits.home_size = l.home_size.unwrap_or(self.limits.home_size);
        let s = f.sandbox;
        self.sandbox.landlock = s.landlock.unwrap_or(self.sandbox.landlock);
        self.sandbox.allow_ptrace = s.allow_ptrace.unwrap_or(self.sandbox.allow_ptrace);
        if let Some(h) = s.hostname {
            self.sandbox.hostname = h;
        }
        let n = f.network;
        let expand = |entries: Vec<PathRule<HostEntry>>| -> Result<Vec<_>, ProfileError> {
            let mut out = Vec::new();
            for e in entries {
                match e.value {
                    HostEntry::Host(h) => out.push(PathRule {
                        value: h,
                        reason: e.reason,
                        optional: e.optional,
                    }),
                    HostEntry::Preset(name) => {
                        let (_, hosts) =
                            preset_hosts(&name).map_err(|message| ProfileError::Invalid {
                                origin: origin.to_owned(),
                                message,
                            })?;
                        out.extend(hosts);
                    }
                }
            }
            Ok(out)
        };
        // Model APIs allowed through their presets are inspected by
        // default: that is where prompts (and DLP's redaction) go.
        for e in &n.allow {
            if let HostEntry::Preset(name) = &e.value {
                if crate::network::MODEL_PRESETS.contains(&name.as_str()) {
                    let (_, hosts) =
                        preset_hosts(name).map_err(|message| ProfileError::Invalid {
                            origin: origin.to_owned(),
                            message,
                        })?;
                    for h in hosts {
                        if !self.network.inspect.iter().any(|r| r.value == h.value) {
                            self.network.inspect.push(PathRule {
                                value: h.value,
                                reason: Some(format!("@{name}: a model API, inspected by default")),
                                optional: false,
                            });
                        }
                    }
                }
            }
        }
        extend(&mut self.network.allow, expand(n.allow)?);
        extend(&mut self.network.deny, expand(n.deny)?);
        extend(&mut self.network.inspect, expand(n.inspect)?);
        extend(&mut self.network.no_inspect, expand(n.no_inspect)?);
        extend(&mut self.network.upstream_ca, n.upstream_ca);
        for (host, rules) in n.http {
            // Requests are only readable inside TLS when it is inspected.
            let pattern = HostPattern::parse(&host.0).map_err(|message| ProfileError::Invalid {
                origin: origin.to_owned(),
                message,
            })?;
            if !self.network.inspect.iter().any(|r| r.value == pattern) {
                self.network.inspect.push(PathRule {
                    value: pattern,
                    reason: Some("it has [network.http] rules".into()),
                    optional: false,
                });
            }
            extend(self.network.http.entry(host.0).or_default(), rules.allow);
        }
        extend(&mut self.network.allow_cidr, n.allow_cidr);
        extend(&mut self.network.allow_local, n.allow_local);
        self.network
            .resolve
            .extend(n.resolve.into_iter().map(|(k, v)| (k.0, v.0 .0)));
        if let Some(p) = n.upstream_proxy {
            self.network.upstream_proxy = p.0;
        }
        if let Some(a) = n.upstream_proxy_auth {
            self.network.upstream_proxy_auth = Some(a);
        }
        if let Some(m) = n.mode {
            self.network.mode = m;
        }
        let d = f.dlp;
        if let Some(a) = d.action {
            self.dlp.action = a;
        }
        if let Some(a) = d.model_action {
            self.dlp.model_action = a;
        }
        if let Some(p) = d.pii {
            self.dlp.pii = p;
        }
        if let Some(m) = d.max_body {
            self.dlp.max_body = m;
        }
        if let Some(r) = d.rehydrate {
            self.dlp.rehydrate = r;
        }
        if let Some(h) = f.agent.sha256 {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ProfileError::Invalid {
                    origin: origin.to_owned(),
                    message: format!(
                        "[agent] sha256 {h:?}: expected 64 hex digits (`cordon trust pin CMD` \
                         prints them)"
                    ),
                });
            }
            self.agent.sha256 = Some(h);
        }
        if let Some(k) = f.agent.minisign_key {
            let k = k.trim().to_owned();
            let b64 = k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
            if k.len() != 56 || !b64 {
                return Err(ProfileError::Invalid {
                    origin: origin.to_owned(),
                    message: format!(
                        "[agent] minisign_key {k:?}: expected a minisign public key (56 base64 \
                         characters, the second line of minisign.pub)"
                    ),
                });
            }
            self.agent.minisign_key = Some(k);
        }
        let v = f.vault;
        if let Some(a) = v.addr {
            let ok = (a.starts_with("http://") || a.starts_with("https://"))
                && !a.contains(['@', ' ', '?', '#']);
            if !ok {
                return Err(ProfileError::Invalid {
                    origin: origin.to_owned(),
                    message: format!(
                        "[vault] addr {a:?}: expected http(s)://host:port, without credentials"
                    ),
                });
            }
            self.vault.addr = Some(a.trim_end_matches('/').to_string());
        }
        if let Some(t) = v.token_env {
            self.vault.token_env = t.0 .0;
        }
        if let Some(a) = v.auth {
            self.vault.auth = a;
        }
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
                && !w.starts_with('/')
                && !w.split('/').any(|seg| seg.is_empty() || seg == "..")
        };
        for (key, value) in [
            ("role", &v.role),
            ("jwt_mount", &v.jwt_mount),
            ("approle_mount", &v.approle_mount),
        ] {
            if let Some(x) = value.as_deref().filter(|x| !word(x)) {
                return Err(ProfileError::Invalid {
                    origin: origin.to_owned(),
                    message: format!("[vault] {key} {x:?}: letters, digits, '_', '.', '-', '/'"),
                });
            }
        }
        if let Some(r) = v.role {
            self.vault.role = Some(r);
        }
        if let Some(m) = v.jwt_mount {
            self.vault.jwt_mount = m;
        }
        if let Some(m) = v.approle_mount {
            self.vault.approle_mount = m;
        }
        if let Some(e) = v.role_id_env {
            self.vault.role_id_env = e.0 .0;
        }
        if let Some(e) = v.secret_id_env {
            self.vault.secret_id_env = e.0 .0;
        }
        if let Some(c) = v.ca_file {
            self.vault.ca_file = Some(c);
        }
        extend(&mut self.dlp.model_hosts, expand(d.model_hosts)?);
        for f in f.secrets {
            let b = f.check().map_err(|message| ProfileError::Invalid {
                origin: origin.to_owned(),
                message,
            })?;
            // A secret's hosts are inspected: that is where its value goes in.
            for h in &b.hosts {
                if !self.network.inspect.iter().any(|r| r.value == *h) {
                    self.network.inspect.push(PathRule {
                        value: h.clone(),
                        reason: Some(format!("the secret {} is bound to it", b.name)),
                        optional: false,
                    });
                }
            }
            // A later file's entry replaces an inherited one of the same name.
            self.secrets.retain(|s| s.name != b.name);
            self.secrets.push(b);
        }
        Ok(())
    }

    /// Every protected project path: the built-in ones plus the profile's.
    pub fn protected_paths(&self) -> Vec<std::path::PathBuf> {
        let mut v: Vec<std::path::PathBuf> = ALWAYS_PROTECTED
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
        for p in &self.project.protect {
            if !v.contains(&p.value.0) {
                v.push(p.value.0.clone());
            }
        }
        v
    }

    /// The matcher for `hide`/`reveal` (compiled once per profile value;
    /// mutate `project.hide` only before the first call).
    pub fn hide_matcher(&self) -> &HideMatcher {
        self.matcher
            .0
            .get_or_init(|| HideMatcher::new(&self.project.hide, &self.project.reveal))
    }

    /// `sha256:<hex>` of the effective policy (everything except where it was
    /// read from), for session and audit records.
    pub fn digest(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("sources");
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let hash = Sha256::digest(&bytes);
        let mut out = String::from("sha256:");
        for b in hash {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The effective profile as TOML (for `cordon profile show`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

impl fmt::Display for LandlockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LandlockLevel::Strict => "strict",
            LandlockLevel::Required => "required",
            LandlockLevel::BestEffort => "best-effort",
        })
    }
}

// ------------------------------------------------------------------ resolve

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn parse(src: &SourceText) -> Result<ProfileFile, ProfileError> {
    if let Some(json) = src.compiled {
        return serde_json::from_str::<ProfileFile>(json).map_err(|e| ProfileError::Parse {
            origin: src.origin.clone(),
            line: e.line(),
            column: e.column(),
            message: format!("{e} (in the build-time JSON form of this profile)"),
        });
    }
    toml::from_str::<ProfileFile>(&src.text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_col(&src.text, s.start))
            .unwrap_or((1, 1));
        ProfileError::Parse {
            origin: src.origin.clone(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })
}

fn check_examples(p: &Profile, ex: &Examples, origin: &str) -> Result<(), ProfileError> {
    let m = p.hide_matcher();
    for h in &ex.hidden {
        if !m.is_hidden(std::path::Path::new(h)) {
            return Err(ProfileError::Invalid {
                origin: origin.to_owned(),
                message: format!("example {h:?} should be hidden but no hide rule matches it"),
            });
        }
    }
    for v in &ex.visible {
        if m.is_hidden(std::path::Path::new(v)) {
            return Err(ProfileError::Invalid {
                origin: origin.to_owned(),
                message: format!("example {v:?} should stay visible but a hide rule matches it"),
            });
        }
    }
    Ok(())
}

/// Resolves the profile `name` through `source`, following `extends`.
pub fn resolve(name: &str, source: &dyn ProfileSource) -> Result<Profile, ProfileError> {
    let top = source.find(name)?.ok_or_else(|| ProfileError::NotFound {
        name: name.to_owned(),
        searched: source.searched(name),
    })?;
    resolve_text(name, top, source)
}

/// Resolves a profile from its text (e.g. `--profile ./my.toml`), following
/// `extends` through `source`.
pub fn resolve_text(
    name: &str,
    top: SourceText,
    source: &dyn ProfileSource,
) -> Result<Profile, ProfileError> {
    // Walk up the chain, most specific first.
    let mut chain: Vec<(String, SourceText, ProfileFile)> = Vec::new();
    let mut current = (name.to_owned(), top);
    loop {
        let file = parse(&current.1)?;
        let parent = file.extends.clone();
        let (cur_name, cur_src) = current;
        let is_builtin = cur_src.origin.starts_with("builtin:");
        chain.push((cur_name.clone(), cur_src, file));
        let Some(parent) = parent else { break };
        // A profile extending its own name means the built-in of that name.
        let found = if parent == cur_name && !is_builtin {
            builtin(&parent)
        } else {
            source.find(&parent)?
        };
        let next = found.ok_or_else(|| ProfileError::NotFound {
            name: parent.clone(),
            searched: source.searched(&parent),
        })?;
        if chain.iter().any(|(_, s, _)| s.origin == next.origin) {
            let mut names: Vec<String> = chain.iter().rev().map(|(n, _, _)| n.clone()).collect();
            names.reverse();
            names.push(parent);
            return Err(ProfileError::Cycle { chain: names });
        }
        if chain.len() > 16 {
            return Err(ProfileError::Invalid {
                origin: next.origin,
                message: "profile inheritance is deeper than 16 levels".into(),
            });
        }
        current = (parent, next);
    }
    let mut profile = Profile::base(name);
    let mut examples = Vec::new();
    for (_, src, file) in chain.into_iter().rev() {
        if let Some(ex) = &file.project.examples {
            examples.push((ex.clone(), src.origin.clone()));
        }
        profile.apply(file, &src.origin)?;
    }
    for (ex, origin) in &examples {
        check_examples(&profile, ex, origin)?;
    }
    if profile.sandbox.hostname.is_empty()
        || profile.sandbox.hostname.len() > 64
        || !profile
            .sandbox
            .hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ProfileError::Invalid {
            origin: profile.sources.last().cloned().unwrap_or_default(),
            message: format!(
                "invalid sandbox.hostname {:?}: 1-64 letters, digits, '-' or '.'",
                profile.sandbox.hostname
            ),
        });
    }
    for k in profile.env.set.keys() {
        if EnvName::parse_name(k).is_err() {
            return Err(ProfileError::Invalid {
                origin: profile.sources.last().cloned().unwrap_or_default(),
                message: format!("invalid variable name {k:?} in env.set"),
            });
        }
    }
    if profile.limits.nproc < 16 || profile.limits.nofile < 64 {
        return Err(ProfileError::Invalid {
            origin: profile.sources.last().cloned().unwrap_or_default(),
            message: "limits too small to run anything: nproc >= 16 and nofile >= 64".into(),
        });
    }
    Ok(profile)
}

impl EnvName {
    fn parse_name(s: &str) -> Result<EnvName, String> {
        if s.ends_with('*') {
            return Err("patterns are not allowed here".into());
        }
        <EnvName as crate::values::RuleValue>::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    struct Mem(Vec<(&'static str, &'static str)>);
    impl ProfileSource for Mem {
        fn find(&self, name: &str) -> Result<Option<SourceText>, ProfileError> {
            Ok(self
                .0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, t)| SourceText::new(format!("/p/{n}.toml"), (*t).to_owned()))
                .or_else(|| builtin(name)))
        }
        fn searched(&self, name: &str) -> Vec<String> {
            vec![format!("/p/{name}.toml"), "built-in profiles".into()]
        }
    }

    #[test]
    fn every_builtin_profile_resolves_and_checks_its_examples() {
        for name in builtin_names() {
            let p = resolve(name, &Mem(vec![])).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!p.description.is_empty(), "{name} lacks a description");
            assert_eq!(p.sources.last().unwrap(), &format!("builtin:{name}"));
        }
    }

    /// Built-ins resolved from their TOML only, as a user file would be.
    struct TomlOnly;
    impl ProfileSource for TomlOnly {
        fn find(&self, name: &str) -> Result<Option<SourceText>, ProfileError> {
            Ok(builtin(name).map(|s| SourceText {
                compiled: None,
                ..s
            }))
        }
        fn searched(&self, _: &str) -> Vec<String> {
            vec![]
        }
    }

    #[test]
    fn the_build_time_json_of_every_builtin_is_its_toml() {
        for name in builtin_names() {
            let src = builtin(name).unwrap();
            assert!(src.compiled.is_some(), "{name} has no JSON form");
            let from_json = resolve(name, &Mem(vec![])).unwrap();
            let from_toml = resolve_text(
                name,
                SourceText {
                    compiled: None,
                    ..src
                },
                &TomlOnly,
            )
            .unwrap();
            assert_eq!(from_json, from_toml, "{name}");
            assert_eq!(from_json.digest(), from_toml.digest(), "{name}");
        }
    }

    #[test]
    fn default_profile_is_read_only_and_hides_secrets() {
        let p = resolve("default", &Mem(vec![])).unwrap();
        assert_eq!(p.project.mode, ProjectMode::Ro);
        let m = p.hide_matcher();
        assert!(m.is_hidden(std::path::Path::new("config/.env.production")));
        assert!(m.is_hidden(std::path::Path::new("deploy/id_rsa")));
        assert!(!m.is_hidden(std::path::Path::new("src/env.rs")));
    }

    #[test]
    fn user_profile_extends_and_appends() {
        let src = Mem(vec![(
            "mine",
            "extends = \"default\"\ndescription = \"x\"\n[project]\nmode = \"overlay\"\nhide = [{ glob = \"*.sqlite\", reason = \"customer data\" }]\n[env]\npass = [\"GITHUB_TOKEN\"]\n",
        )]);
        let p = resolve("mine", &src).unwrap();
        assert_eq!(p.project.mode, ProjectMode::Overlay);
        assert_eq!(p.sources, vec!["builtin:default", "/p/mine.toml"]);
        assert!(p
            .hide_matcher()
            .is_hidden(std::path::Path::new("db/app.sqlite")));
        assert!(p.hide_matcher().is_hidden(std::path::Path::new(".env")));
        assert_eq!(p.env.pass[0].value, EnvName("GITHUB_TOKEN".into()));
    }

    #[test]
    fn a_profile_named_like_a_builtin_can_extend_it() {
        let src = Mem(vec![(
            "default",
            "extends = \"default\"\n[limits]\nnproc = 100\n",
        )]);
        let p = resolve("default", &src).unwrap();
        assert_eq!(p.limits.nproc, 100);
        assert_eq!(p.sources, vec!["builtin:default", "/p/default.toml"]);
    }

    #[test]
    fn unknown_keys_report_file_line_and_column() {
        let src = Mem(vec![(
            "bad",
            "description = \"x\"\n[project]\nmdoe = \"ro\"\n",
        )]);
        match resolve("bad", &src) {
            Err(ProfileError::Parse {
                origin,
                line,
                column,
                message,
            }) => {
                assert_eq!((origin.as_str(), line, column), ("/p/bad.toml", 3, 1));
                assert!(message.contains("unknown field `mdoe`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_report_their_position() {
        let cases = [
            ("[project]\nmode = \"rwx\"\n", 2, "unknown variant"),
            ("[limits]\ntmp_size = \"lots\"\n", 2, "invalid size"),
            (
                "[filesystem]\nread = [\"relative/path\"]\n",
                2,
                "invalid path",
            ),
            (
                "[home]\nread = [\"../escape\"]\n",
                2,
                "invalid relative path",
            ),
            ("[project]\nhide = [\"[oops\"]\n", 2, "invalid glob"),
            (
                "[home]\nread = [{ path = \".x\", why = \"?\" }]\n",
                2,
                "unknown field `why`",
            ),
            (
                "[network]\nallow = [\"ok.example\",\n  \"*\"]\n",
                3,
                "would allow every host",
            ),
            ("[network]\nallow = [\"@nmp\"]\n", 2, "unknown preset"),
            ("[network]\nallow_cidr = [\"10.0.0.1/8\"]\n", 2, "host bits"),
            (
                "[network]\nallow_local = [\"localhost:5432\"]\n",
                2,
                "address",
            ),
            (
                "[network]\nresolve = { \"a b\" = \"127.0.0.1:1\" }\n",
                2,
                "not a valid host name",
            ),
            (
                "[network]\nresolve = { \"x.test\" = \"127.0.0.1\" }\n",
                2,
                "with a port",
            ),
            (
                "[network]\nupstream_proxy = \"http://u:p@proxy:3128\"\n",
                2,
                "credentials",
            ),
            ("[network]\nallw = []\n", 2, "unknown field `allw`"),
        ];
        for (text, want_line, want_msg) in cases {
            let src = Mem(vec![("bad", text)]);
            match resolve("bad", &src) {
                Err(ProfileError::Parse { line, message, .. }) => {
                    assert_eq!(line, want_line, "{text}");
                    assert!(message.contains(want_msg), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn cycles_and_missing_parents_are_errors() {
        let src = Mem(vec![("a", "extends = \"b\"\n"), ("b", "extends = \"a\"\n")]);
        assert!(matches!(
            resolve("a", &src),
            Err(ProfileError::Cycle { .. })
        ));
        let src = Mem(vec![("a", "extends = \"nope\"\n")]);
        assert!(
            matches!(resolve("a", &src), Err(ProfileError::NotFound { name, .. }) if name == "nope")
        );
        assert!(matches!(
            resolve("zzz", &Mem(vec![])),
            Err(ProfileError::NotFound { .. })
        ));
    }

    #[test]
    fn failing_examples_are_reported() {
        let src = Mem(vec![(
            "ex",
            "[project]\nhide = [\"*.pem\"]\nexamples = { hidden = [\"a.key2\"] }\n",
        )]);
        assert!(
            matches!(resolve("ex", &src), Err(ProfileError::Invalid { message, .. }) if message.contains("a.key2"))
        );
    }

    #[test]
    fn digest_ignores_sources_but_not_policy() {
        let a = resolve("default", &Mem(vec![])).unwrap();
        let mut b = a.clone();
        b.sources = vec!["elsewhere".into()];
        assert_eq!(a.digest(), b.digest());
        b.limits.nproc += 1;
        assert_ne!(a.digest(), b.digest());
        assert!(a.digest().starts_with("sha256:") && a.digest().len() == 71);
    }

    #[test]
    fn network_rules_expand_presets_and_inherit() {
        let src = Mem(vec![
            (
                "base",
                "[network]\nallow = [\"@github\", { host = \"api.internal.test:8443\", \
                 reason = \"our API\" }]\nresolve = { \"API.internal.test\" = \
                 \"127.0.0.1:8443\" }\nupstream_proxy = \"http://proxy.corp.test:3128\"\n",
            ),
            (
                "child",
                "extends = \"base\"\n[network]\nallow = [\"pypi.org\"]\ndeny = \
                 [\"codeload.github.com\"]\nallow_local = [\"127.0.0.1:5432\"]\n\
                 upstream_proxy = \"\"\n",
            ),
        ]);
        let base = resolve("base", &src).unwrap();
        let n = &base.network;
        assert!(n.check_name("api.github.com", 443).is_allowed());
        assert!(!n.check_name("api.github.com", 80).is_allowed());
        let rule = n
            .allow
            .iter()
            .find(|r| r.value.name == "api.github.com")
            .unwrap();
        assert!(rule.reason.as_deref().unwrap().starts_with("@github: "));
        assert_eq!(
            n.resolve.get("api.internal.test"),
            Some(&"127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            n.upstream_proxy.as_ref().unwrap().0.render(),
            "http://proxy.corp.test:3128"
        );
        let child = resolve("child", &src).unwrap();
        let n = &child.network;
        assert!(n.check_name("pypi.org", 443).is_allowed());
        assert!(n.check_name("api.internal.test", 8443).is_allowed());
        assert!(!n.check_name("codeload.github.com", 443).is_allowed());
        assert!(n.upstream_proxy.is_none());
        assert_eq!(n.allow_local.len(), 1);
        assert_ne!(base.digest(), child.digest());
        let shown = child.to_toml();
        assert!(shown.contains("pypi.org"), "{shown}");
        assert!(shown.contains("@github: "), "{shown}");
        assert!(resolve("default", &src).unwrap().network.allow.is_empty());
    }

    #[test]
    fn inspected_hosts_expand_presets_and_upstream_cas_are_paths() {
        let src = Mem(vec![(
            "i",
            "[network]\nallow = [\"@anthropic\", \"api.test\"]\ninspect = [\"@anthropic\", \
             { host = \"*.api.test\", reason = \"ours\" }]\n\
             upstream_ca = [\"~/corp-ca.pem\", \"/etc/corp/ca.pem\"]\n",
        )]);
        let p = resolve("i", &src).unwrap();
        let n = &p.network;
        assert!(n.inspects("api.anthropic.com", 443).is_some());
        assert!(n.inspects("API.Anthropic.com.", 443).is_some());
        assert!(n.inspects("x.api.test", 443).is_some());
        assert!(n.inspects("api.test", 443).is_none());
        assert!(n.inspects("github.com", 443).is_none());
        let home = std::path::Path::new("/home/u");
        let cas: Vec<_> = n
            .upstream_ca
            .iter()
            .map(|r| r.value.resolve(home))
            .collect();
        assert_eq!(
            cas,
            [
                std::path::PathBuf::from("/home/u/corp-ca.pem"),
                "/etc/corp/ca.pem".into()
            ]
        );
        for bad in [
            "[network]\nupstream_ca = [\"relative.pem\"]\n",
            "[network]\ninspect = [\"@nope\"]\n",
            "[network]\ninspect = [\"a b\"]\n",
        ] {
            let src = Mem(vec![("bad", bad)]);
            assert!(resolve("bad", &src).is_err(), "{bad}");
        }
        assert!(resolve("default", &src).unwrap().network.inspect.is_empty());
    }

    #[test]
    fn model_presets_are_inspected_by_default_unless_excluded() {
        let src = Mem(vec![
            ("m", "[network]\nallow = [\"@anthropic\", \"@github\"]\n"),
            (
                "pinned",
                "extends = \"m\"\n[network]\nno_inspect = [\"api.anthropic.com\"]\n",
            ),
        ]);
        let m = resolve("m", &src).unwrap();
        let rule = m.network.inspects("api.anthropic.com", 443).unwrap();
        assert!(rule.reason.as_deref().unwrap().contains("@anthropic"));
        assert!(m.network.inspects("api.github.com", 443).is_none());
        assert!(m.network.inspects_any());
        let p = resolve("pinned", &src).unwrap();
        assert!(p.network.inspects("api.anthropic.com", 443).is_none());
        // Other hosts of the preset still are; excluding the preset
        // excludes them all.
        assert!(p.network.inspects_any());
        let src = Mem(vec![(
            "none",
            "[network]\nallow = [\"@anthropic\"]\nno_inspect = [\"@anthropic\"]\n",
        )]);
        assert!(!resolve("none", &src).unwrap().network.inspects_any());
        assert!(p.network.check_name("api.anthropic.com", 443).is_allowed());
        assert!(!resolve("default", &src).unwrap().network.inspects_any());
    }

    #[test]
    fn secrets_bind_their_hosts_for_inspection_and_replace_by_name() {
        let src = Mem(vec![
            (
                "base",
                "[network]\nallow = [\"api.test\", \"git.test\"]\n\
                 [[secrets]]\nname = \"API_KEY\"\nsource = \"store:api\"\nhosts = [\"api.test\"]\n\
                 [[secrets]]\nname = \"GIT_TOKEN\"\nsource = \"env:HOST_GIT_TOKEN\"\n\
                 hosts = [\"git.test\"]\nbody = true\nreason = \"push\"\n",
            ),
            (
                "child",
                "extends = \"base\"\n[[secrets]]\nname = \"API_KEY\"\nsource = \"env:OTHER\"\n\
                 hosts = [\"api.test:443\"]\n",
            ),
        ]);
        let base = resolve("base", &src).unwrap();
        assert_eq!(base.secrets.len(), 2);
        assert!(base.network.inspects("api.test", 443).is_some());
        assert!(base.network.inspects("git.test", 443).is_some());
        let git = &base.secrets[1];
        assert!(git.body);
        assert_eq!(
            git.source,
            crate::secrets::SecretSource::Env("HOST_GIT_TOKEN".into())
        );
        let child = resolve("child", &src).unwrap();
        assert_eq!(child.secrets.len(), 2);
        let api = child.secrets.iter().find(|s| s.name == "API_KEY").unwrap();
        assert_eq!(api.source.render(), "env:OTHER");
        let shown = child.to_toml();
        assert!(
            shown.contains("env:OTHER") && shown.contains("api.test:443"),
            "{shown}"
        );
        for bad in [
            "[[secrets]]\nname = \"1X\"\nsource = \"store:a\"\nhosts = [\"a.test\"]\n",
            "[[secrets]]\nname = \"X\"\nsource = \"store:a\"\nhosts = []\n",
            "[[secrets]]\nname = \"X\"\nsource = \"s3:kv/a#b\"\nhosts = [\"a.test\"]\n",
            "[[secrets]]\nname = \"X\"\nsource = \"store:a\"\nhosts = [\"a b\"]\n",
            "[[secrets]]\nname = \"X\"\nsource = \"store:a\"\nhosts = [\"a.test\"]\nvalue = \"v\"\n",
        ] {
            let src = Mem(vec![("bad", bad)]);
            assert!(resolve("bad", &src).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_credentials_are_named_never_written() {
        let src = Mem(vec![(
            "p",
            "[network]\nupstream_proxy = \"http://proxy.test:3128\"\n\
             upstream_proxy_auth = \"env:CORP_PROXY_AUTH\"\n",
        )]);
        let n = resolve("p", &src).unwrap().network;
        assert_eq!(n.upstream_proxy_auth.unwrap().0 .0, "CORP_PROXY_AUTH");
        for bad in ["user:pass", "env:", "env:1X", "env:A-B"] {
            let text = format!("[network]\nupstream_proxy_auth = \"{bad}\"\n");
            let src = Mem(vec![("bad", Box::leak(text.into_boxed_str()))]);
            assert!(
                matches!(
                    resolve("bad", &src),
                    Err(ProfileError::Parse { line: 2, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn proxy_urls_parse() {
        let ok = |s: &str| ProxyUrl::parse(s).unwrap().render();
        assert_eq!(
            ok("http://Proxy.Corp.test:3128/"),
            "http://proxy.corp.test:3128"
        );
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://[::1]:8080"), "http://[::1]:8080");
        for bad in [
            "https://proxy:3128",
            "proxy:3128",
            "http://proxy",
            "http://proxy:0",
            "http://proxy:3128/path",
            "http://user@proxy:3128",
            "http://[::1]",
        ] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn effective_profile_renders_as_toml() {
        let p = resolve("default", &Mem(vec![])).unwrap();
        let t = p.to_toml();
        assert!(t.contains("mode = \"ro\""), "{t}");
    }
}
