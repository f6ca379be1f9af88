//! The `cordon` command. Each subcommand parses, validates, and calls into
//! `cordon-session`; nothing here decides policy or touches the kernel.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod secret;
mod sessions;
mod trust;

use clap::{Parser, Subcommand};
use cordon_session::{overlay, run, Dirs, Error, Store};
use cordon_types::ProjectMode;

const EXIT_CODES: &str = "\
Exit status:
  cordon run: the agent's own exit status (128+N when killed by signal N);
              125 when cordon itself failed or refused (bad profile, a layer
              the profile needs is unavailable, setup error); 126 when the
              command is not executable; 127 when it is not found.
  other commands: 0 success; 1 failure; 2 bad usage, unknown session or
              profile, or a request refused for safety.
  cordon doctor: 1 when the default profile cannot run on this host.";

/// Run coding agents in a rootless sandbox that cannot see your secrets,
/// reach the network, or change anything outside its project.
#[derive(Debug, Parser)]
#[command(name = "cordon", version, after_help = EXIT_CODES, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command (an agent, a shell, a script) in a sandbox.
    ///
    /// The sandbox sees a read-only system, an empty fake home, /tmp, and the
    /// project at its real path; it has no network, no other processes, and
    /// no credentials from your environment. Examples:
    ///
    ///   cordon run -- bash
    ///   cordon run --mode overlay -- claude        (then: cordon diff last)
    ///   cordon run --profile codex --allow-read ~/.cargo/bin -- codex
    ///   cordon run --mode rw --allow-read ~/.cargo --allow-read ~/.rustup -- cargo test --offline
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Run(RunArgs),
    /// Report which sandbox layers work on this host and which profiles can run.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List and inspect profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Show what an overlay session changed, as a unified diff.
    Diff {
        /// Session id, a unique part of it, or `last`.
        session: String,
        /// Only list the changed paths.
        #[arg(long)]
        stat: bool,
        /// Machine-readable list of changes.
        #[arg(long, conflicts_with = "stat")]
        json: bool,
    },
    /// Write an overlay session's changes into the real project.
    ///
    /// With --branch, commit them instead to a new git branch on top of
    /// the project's HEAD (working tree and index untouched), after
    /// checking the session's attestation; the commit message names it.
    Apply {
        /// Session id, a unique part of it, or `last`.
        session: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Commit to this new branch instead of writing the files.
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
    },
    /// Find credentials (and, with --pii, personal data) in files.
    ///
    /// Walks the paths given (directories recursively, honouring .gitignore),
    /// skips binary and huge files with a note, and prints each finding with
    /// a masked preview, never the value. Exit status 1 when something was
    /// found, 0 when nothing was. Examples:
    ///
    ///   cordon scan .
    ///   cordon scan --sarif src config > cordon.sarif
    ///   cordon scan --rules .gitleaks.toml --pii logs/
    #[command(verbatim_doc_comment)]
    Scan(ScanArgs),
    /// Copy stdin (or a file) to stdout with credentials replaced.
    ///
    /// Each secret becomes a placeholder such as [REDACTED:github-pat#1]; the
    /// same secret gets the same placeholder throughout. Streams of any size
    /// are redacted as they come, with secrets split across reads still
    /// found. Examples:
    ///
    ///   some-tool 2>&1 | cordon redact
    ///   cordon redact --json-body --pii request.json
    #[command(verbatim_doc_comment)]
    Redact(RedactArgs),
    /// Check and read sessions' tamper-evident audit logs.
    ///
    /// Every session writes an audit log (audit.jsonl in its directory):
    /// OCSF-shaped events, each line chained to the one before it by its
    /// SHA-256, with checkpoints signed by this host's audit key. Detection
    /// rules run over it as it is written; sinks in audit.toml (syslog,
    /// HTTP, Splunk HEC, OTLP) receive it. Examples:
    ///
    ///   cordon audit verify last
    ///   cordon audit verify --key audit-key.pub copy-of-audit.jsonl
    ///   cordon audit show last --class network,dns
    ///   cordon audit show last --class finding
    ///   cordon audit show SESSION --follow --json
    ///   cordon audit rules --profile claude-code
    ///   cordon audit ship
    #[command(subcommand, verbatim_doc_comment)]
    Audit(AuditCmd),
    /// Keep credentials in cordon's encrypted store.
    ///
    /// One file holds every secret, encrypted with a key file or a
    /// passphrase; values go in through a prompt that does not echo or
    /// through stdin, and no command prints them. A profile's [[secrets]]
    /// name them as `source = "store:NAME"`: the agent gets a placeholder,
    /// and the value goes only into requests to the secret's hosts
    /// (docs/secrets.md). Examples:
    ///
    ///   cordon secret set ANTHROPIC_API_KEY
    ///   printf %s "$TOKEN" | cordon secret set GITHUB_TOKEN --from-stdin
    ///   cordon secret list
    ///   cordon secret rm GITHUB_TOKEN
    #[command(subcommand, verbatim_doc_comment, after_help = secret::HELP)]
    Secret(secret::SecretCmd),
    /// List sessions: the running ones, or all with --all.
    ///
    /// From the session registry (sessions.sqlite in the state directory).
    /// A session whose supervisor died shows as crashed; a contained one as
    /// contained.
    Ps {
        /// Every session, not only the running ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Machine-readable list.
        #[arg(long)]
        json: bool,
    },
    /// Show one session: status, profile and tier, project, pids, exit,
    /// containment, evidence, findings and warnings.
    Show {
        /// Session id, a unique part of it, or `last`.
        session: String,
        /// Machine-readable record.
        #[arg(long)]
        json: bool,
    },
    /// Print a session's audit events (the same as `cordon audit show`).
    Logs(LogArgs),
    /// Contain a running session: freeze it, cut its network, revoke its
    /// credentials, seal the evidence.
    ///
    /// Examples:
    ///
    ///   cordon contain last --reason "uploading the repo to a paste site"
    ///   cordon contain 4f2a9c1e
    #[command(verbatim_doc_comment, after_help = sessions::CONTAIN_HELP)]
    Contain {
        /// Session id, a unique part of it, or `last`.
        session: String,
        /// Why (recorded in the audit log and the evidence).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a contained session run again after review: processes thawed,
    /// egress per its profile (revoked credentials stay revoked).
    Resume {
        /// Session id, a unique part of it, or `last`.
        session: String,
    },
    /// Eradicate a running session: contain it first if it is not (so its
    /// evidence is sealed), kill every process, drop its overlay.
    Kill {
        /// Session id, a unique part of it, or `last`.
        session: String,
        /// Why (recorded in the audit log and the evidence).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a host in every session, running ones at once.
    ///
    /// HOST is a name or `*.domain` (every name below it), on every port;
    /// no profile can allow it again. Your list is blocked-hosts in your
    /// state directory, and your running sessions are told at once; with
    /// --system (root only) the list is /etc/cordon/blocked-hosts, for
    /// every user, and every running session applies it within a second.
    /// Exit status 1 when a running session could not be told.
    Block {
        /// The host pattern.
        host: String,
        /// The system's list, for every user (root only).
        #[arg(long)]
        system: bool,
    },
    /// Check, export and list evidence bundles sealed by `cordon contain`.
    #[command(subcommand)]
    Evidence(sessions::EvidenceCmd),
    /// Pin agents' executables: a run whose agent changed is refused.
    ///
    /// A profile can also pin one itself: `[agent] sha256 = "..."` or
    /// `minisign_key = "..."` (the executable's FILE.minisig must verify).
    /// Every session records its agent's digests in its audit log.
    /// Examples:
    ///
    ///   cordon trust pin claude
    ///   cordon trust list
    ///   cordon trust rm claude
    #[command(subcommand, verbatim_doc_comment)]
    Trust(trust::TrustCmd),
    /// Check sessions' signed provenance (in-toto statements in DSSE
    /// envelopes, attestation.dsse.json in each session's directory).
    #[command(subcommand)]
    Attest(sessions::AttestCmd),
    /// Rehearse the incident-response playbook with a simulated malicious
    /// agent in real sandboxes.
    ///
    /// One session per technique, each extending the profile: it reads the
    /// decoy credentials in its fake home, sends them to a host the drill
    /// allows (a sink on loopback), smuggles them in a DNS name, connects to
    /// an IP address directly, and writes persistence (.bashrc,
    /// .git/hooks). The report gives, per technique, what happened, the
    /// time to detect and to contain (from the audit log), whether anything
    /// reached the sink, whether the evidence verifies and credentials were
    /// revoked. Exit status 1 when a step failed.
    Drill {
        /// The profile the drill's sessions extend.
        #[arg(long, short = 'p', default_value = "default")]
        profile: String,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Approve (or deny) a session waiting for an approval, or list them.
    ///
    /// A profile whose tier needs an approval makes `cordon run` publish a
    /// request and wait up to five minutes; an approver, in another
    /// terminal, decides it. Examples:
    ///
    ///   cordon approve --list
    ///   cordon approve 3f9c2a7d1e4b8c06 --reason "ticket SEC-42"
    ///   cordon approve 3f9c2a7d1e4b8c06 --deny --reason "not this repo"
    #[command(verbatim_doc_comment, after_help = sessions::APPROVE_HELP)]
    Approve {
        /// The request id (16 hex digits).
        #[arg(required_unless_present = "list")]
        id: Option<String>,
        /// List the pending requests.
        #[arg(long, conflicts_with_all = ["deny", "reason"])]
        list: bool,
        /// Deny instead of approving.
        #[arg(long)]
        deny: bool,
        /// Why (recorded with the decision and in the session's audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Machine-readable list.
        #[arg(long, requires = "list")]
        json: bool,
    },
}

const VERIFY_EXIT: &str = "\
Exit status:
  0  the log is intact and closed
  1  it was altered: a record inserted, deleted, reordered, edited, or the
     log cut back (the first bad record is named)
  2  bad usage, unknown session, unreadable file or key
  3  intact as far as it goes, but incomplete: the writer stopped (a torn
     last line, or no closing checkpoint; a running session's log is too)";

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check a log's hash chain and checkpoint signatures.
    ///
    /// TARGET is a session (id, a unique part of it, or `last`) or a log
    /// file. The trusted key is this host's (audit-key.pub in the state
    /// directory) unless --key names another.
    #[command(after_help = VERIFY_EXIT)]
    Verify {
        /// A session or an audit log file.
        target: String,
        /// The trusted public key: 64 hex digits, or a file holding them.
        #[arg(long, value_name = "HEX|FILE")]
        key: Option<String>,
        /// Machine-readable result.
        #[arg(long)]
        json: bool,
    },
    /// Deliver sessions' records to the sinks in audit.toml.
    ///
    /// Each sink keeps a cursor per session; this sends what came after it
    /// (records a sink missed while it was down, or after cordon stopped).
    /// Exit status 1 when a sink could not take everything.
    Ship {
        /// Sessions (default: every ended session).
        sessions: Vec<String>,
    },
    /// Print a session's events, one line each (or as JSON); the same as
    /// `cordon logs`.
    Show(LogArgs),
    /// List the detection rules a profile's sessions run with.
    ///
    /// The built-in rules, plus rules.toml in cordon's configuration
    /// directory (which adds rules and replaces built-in ones by id), less
    /// what the profile's [audit] section disables. Rules limited to tiers
    /// other than the profile's are listed as not in force. The format is
    /// in docs/detection.md.
    Rules {
        /// The profile (default: default).
        #[arg(long, default_value = "default")]
        profile: String,
        /// One JSON object per rule.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct LogArgs {
    /// Session id, a unique part of it, or `last`.
    session: String,
    /// Keep printing events as they are written, until the session ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// The records as written (one JSON object per line).
    #[arg(long)]
    json: bool,
    /// Only these classes: process, file, network, http, dns, finding,
    /// authorization, session (or OCSF class ids).
    #[arg(long, value_delimiter = ',', value_name = "CLASS")]
    class: Vec<String>,
    /// Also the signed checkpoints.
    #[arg(long)]
    checkpoints: bool,
}

#[derive(Debug, clap::Args)]
struct ScanArgs {
    /// Files and directories to scan.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// JSON output.
    #[arg(long, conflicts_with = "sarif")]
    json: bool,
    /// SARIF 2.1.0 output, for code-scanning tools.
    #[arg(long)]
    sarif: bool,
    /// More rules: cordon's rule format or a gitleaks configuration
    /// ([[rules]] with id, regex, secretGroup, entropy, keywords, allowlists).
    #[arg(long, value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Also find personal data: email, phone, card numbers, IBAN, US SSN.
    #[arg(long)]
    pii: bool,
    /// Only the rules given with --rules, not the built-in ones.
    #[arg(long, requires = "rules")]
    no_builtin: bool,
    /// Include findings of low confidence (formats whose own checksum fails,
    /// such as test fixtures).
    #[arg(long)]
    all: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = 10 << 20, value_name = "BYTES")]
    max_size: u64,
}

#[derive(Debug, clap::Args)]
struct RedactArgs {
    /// The input file; `-` or nothing: stdin.
    #[arg(value_name = "FILE")]
    input: Option<PathBuf>,
    /// The input is one JSON document (a model API request body): redact
    /// inside string values and write valid JSON.
    #[arg(long)]
    json_body: bool,
    /// Also redact personal data.
    #[arg(long)]
    pii: bool,
    /// Replace each secret with a same-shaped stand-in instead of a
    /// [REDACTED:...] placeholder.
    #[arg(long)]
    format_preserving: bool,
    /// More rules (as for `cordon scan`).
    #[arg(long, value_name = "FILE")]
    rules: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Profile name (see `cordon profile list`) or path to a .toml file.
    #[arg(long, short = 'p', default_value = "default")]
    profile: String,
    /// Project directory [default: the current directory].
    #[arg(long)]
    project: Option<PathBuf>,
    /// How the project is mounted: ro, overlay (copy-on-write, review with
    /// `cordon diff`), or rw (direct) [default: from the profile].
    #[arg(long, value_parser = parse_mode)]
    mode: Option<ProjectMode>,
    /// Also expose a host directory read-only (repeatable).
    #[arg(long = "allow-read", value_name = "PATH")]
    allow_read: Vec<PathBuf>,
    /// Also expose a host directory read-write (repeatable).
    #[arg(long = "allow-write", value_name = "PATH")]
    allow_write: Vec<PathBuf>,
    /// Pass a host variable (NAME, `PREFIX*`) or set one (NAME=VALUE);
    /// repeatable. Needed for anything that looks like a credential.
    #[arg(long, short = 'e', value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Let the agent reach this host for this run (repeatable):
    /// `api.example.com`, `*.example.com` (names below it), with an optional
    /// `:PORT`. Traffic goes through cordon's egress proxy, which checks the
    /// name, resolves it itself and refuses private and metadata addresses.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    allow_host: Vec<String>,
    /// Pass cordon's stdin, stdout and stderr through unchanged, even when
    /// they are terminals (by default the agent gets its own pty in place of
    /// every terminal, and never holds yours).
    #[arg(long)]
    no_tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
enum ProfileCmd {
    /// List built-in and user profiles.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective, fully resolved profile.
    Show {
        /// Profile name or path to a .toml file.
        name: String,
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

fn parse_mode(s: &str) -> Result<ProjectMode, String> {
    s.parse()
        .map_err(|e: cordon_types::ParseError| e.to_string())
}

/// An error with the exit status it maps to.
struct Fail(u8, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Fail {
    fn from(e: E) -> Fail {
        let e = e.into();
        let code = match e.downcast_ref::<Error>() {
            Some(
                Error::Usage(_) | Error::NotFound(_) | Error::Refused { .. } | Error::Profile(_),
            ) => 2,
            _ => 1,
        };
        Fail(code, e)
    }
}

fn main() -> ExitCode {
    // A session's cleanup, detached from it (not a command for users).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == run::REMOVE_CGROUP_ARG)
    {
        let dir = std::env::args_os().nth(2).unwrap_or_default();
        return run::remove_cgroup_main(std::path::Path::new(&dir));
    }
    let is_run = std::env::args_os().nth(1).is_some_and(|a| a == "run");
    // For `cordon run`, start creating the sandbox's namespaces before
    // anything else: that overlaps with parsing the command line and
    // resolving the profile. Any early return drops it, which kills the
    // half-built sandbox.
    let pre = is_run.then(cordon_sandbox::Prelaunch::start);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let info = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            let _ = e.print();
            // `cordon run` reserves low codes for the agent: its own usage
            // errors are 125, like every other failure of cordon there.
            return ExitCode::from(match (info, is_run) {
                (true, _) => 0,
                (false, true) => 125,
                (false, false) => 2,
            });
        }
    };
    let result = match cli.command {
        Command::Run(args) => return cmd_run(args, pre),
        Command::Doctor { json } => cmd_doctor(json),
        Command::Profile(p) => cmd_profile(p),
        Command::Diff {
            session,
            stat,
            json,
        } => cmd_diff(&session, stat, json),
        Command::Apply {
            session,
            yes: _,
            branch: Some(branch),
        } => sessions::cmd_apply_branch(&session, &branch),
        Command::Apply {
            session,
            yes,
            branch: None,
        } => cmd_apply(&session, yes),
        Command::Scan(args) => cmd_scan(args),
        Command::Redact(args) => cmd_redact(args),
        Command::Audit(AuditCmd::Verify { target, key, json }) => {
            cmd_audit_verify(&target, key.as_deref(), json)
        }
        Command::Audit(AuditCmd::Ship { sessions }) => cmd_audit_ship(&sessions),
        Command::Audit(AuditCmd::Show(a)) | Command::Logs(a) => {
            cmd_audit_show(&a.session, a.follow, a.json, &a.class, a.checkpoints)
        }
        Command::Ps { all, json } => sessions::cmd_ps(all, json),
        Command::Show { session, json } => sessions::cmd_show(&session, json),
        Command::Contain { session, reason } => sessions::cmd_contain(&session, reason),
        Command::Resume { session } => sessions::cmd_resume(&session),
        Command::Kill { session, reason } => sessions::cmd_kill(&session, reason),
        Command::Block { host, system } => sessions::cmd_block(&host, system),
        Command::Evidence(c) => sessions::cmd_evidence(c),
        Command::Trust(c) => trust::cmd(c),
        Command::Attest(c) => sessions::cmd_attest(c),
        Command::Drill { profile, json } => sessions::cmd_drill(&profile, json),
        Command::Approve {
            id,
            list,
            deny,
            reason,
            json,
        } => sessions::cmd_approve(id.as_deref(), list, deny, reason, json),
        Command::Audit(AuditCmd::Rules { profile, json }) => cmd_audit_rules(&profile, json),
        Command::Secret(c) => secret::cmd(c),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, e)) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cordon: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn out(text: &str) -> Result<(), Fail> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Result<(), Fail> {
    out(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

fn notice(msg: &str) {
    eprintln!("cordon: {msg}");
}

fn cmd_run(
    a: RunArgs,
    pre: Option<Result<cordon_sandbox::Prelaunch, cordon_sandbox::LaunchError>>,
) -> ExitCode {
    const FAILED: u8 = 125;
    let pre = match pre.unwrap_or_else(cordon_sandbox::Prelaunch::start) {
        Ok(p) => p,
        Err(e) => {
            notice(&format!("the sandbox could not start: {e}"));
            return ExitCode::from(FAILED);
        }
    };
    let dirs = match Dirs::from_env() {
        Ok(d) => d,
        Err(e) => {
            notice(&e.to_string());
            return ExitCode::from(FAILED);
        }
    };
    let any_tty = std::io::stdin().is_terminal()
        || std::io::stdout().is_terminal()
        || std::io::stderr().is_terminal();
    let terminal = if !a.no_tty && any_tty {
        cordon_sandbox::Terminal::Pty
    } else {
        cordon_sandbox::Terminal::Inherit
    };
    let req = run::Request {
        profile: a.profile,
        project: a.project,
        mode: a.mode,
        allow_read: a.allow_read,
        allow_write: a.allow_write,
        env: a.env,
        allow_host: a.allow_host,
        command: a.command,
        terminal,
    };
    let prepared = match run::prepare(&req, &dirs) {
        Ok(p) => p,
        Err(e) => {
            notice(&e.to_string());
            return ExitCode::from(FAILED);
        }
    };
    for n in &prepared.notices {
        notice(n);
    }
    match run::execute(prepared, pre, &mut |w| notice(&format!("warning: {w}"))) {
        Ok(outcome) => {
            if !outcome.notices.is_empty() && std::io::stderr().is_terminal() {
                // Whatever attributes the agent left set (hidden text, say)
                // must not disguise what cordon says next.
                eprint!("\x1b[0m\x1b[?25h");
            }
            for n in &outcome.notices {
                notice(n);
            }
            ExitCode::from(u8::try_from(outcome.exit.code).unwrap_or(FAILED))
        }
        Err(Error::Launch(cordon_sandbox::LaunchError::Exec {
            program,
            message,
            code,
        })) => {
            notice(&format!("{program}: {message}"));
            ExitCode::from(u8::try_from(code).unwrap_or(FAILED))
        }
        Err(e) => {
            notice(&format!("the sandbox could not start: {e}"));
            notice("nothing ran; the agent was never started unconfined");
            ExitCode::from(FAILED)
        }
    }
}

fn cmd_doctor(as_json: bool) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    let report = cordon_session::doctor::run(&dirs);
    if as_json {
        json(&report)?;
    } else {
        let mut s = String::new();
        for p in &report.probes {
            s.push_str(&format!(
                "{} {:<14} {}\n    {}\n",
                if p.ok { "ok  " } else { "FAIL" },
                p.id,
                p.tested,
                p.detail
            ));
            if let Some(h) = &p.hint {
                s.push_str(&format!("    hint: {h}\n"));
            }
        }
        s.push_str(&format!(
            "\nlimits: {}\n\negress: {}\n\nprofiles:\n",
            report.limits, report.egress
        ));
        for p in &report.profiles {
            if p.runnable {
                s.push_str(&format!("  {:<14} can run\n", p.name));
            } else {
                s.push_str(&format!(
                    "  {:<14} cannot run: needs {}\n",
                    p.name,
                    p.missing.join(", ")
                ));
            }
        }
        out(&s)?;
    }
    Ok(if report.default_runs { 0 } else { 1 })
}

fn cmd_profile(cmd: ProfileCmd) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    match cmd {
        ProfileCmd::List { json: true } => json(&cordon_session::profiles::list(&dirs))?,
        ProfileCmd::List { json: false } => {
            let mut s = String::new();
            for p in cordon_session::profiles::list(&dirs) {
                let mark = if p.ok { "" } else { "  [invalid]" };
                s.push_str(&format!(
                    "{:<14} {:<10} {}{mark}\n",
                    p.name,
                    short_origin(&p.origin),
                    p.description
                ));
            }
            out(&s)?;
        }
        ProfileCmd::Show {
            name,
            json: as_json,
        } => {
            let p = cordon_session::profiles::load(&name, &dirs).map_err(Error::from)?;
            if as_json {
                let mut v = serde_json::to_value(&p)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("digest".into(), p.digest().into());
                }
                json(&v)?;
            } else {
                out(&format!(
                    "# effective profile {:?} ({})\n# from: {}\n# protected in every mode: {}\n{}",
                    p.name,
                    p.digest(),
                    p.sources.join(" -> "),
                    p.protected_paths()
                        .iter()
                        .map(|x| x.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    p.to_toml()
                ))?;
            }
        }
    }
    Ok(0)
}

fn short_origin(o: &str) -> &str {
    if o == "builtin" {
        "built-in"
    } else {
        "user"
    }
}

/// The paths `apply` refuses for a session: what its run protected, plus
/// the built-in list in case the record predates it.
pub(crate) fn protected_of(rec: &cordon_session::Record) -> Vec<PathBuf> {
    let mut protected = rec.protected.clone();
    for p in cordon_policy::profile::ALWAYS_PROTECTED {
        if !protected.iter().any(|x| x == std::path::Path::new(p)) {
            protected.push(PathBuf::from(p));
        }
    }
    protected
}

pub(crate) fn overlay_session(query: &str) -> Result<(Store, cordon_session::Record), Fail> {
    let dirs = Dirs::from_env()?;
    let store = Store::new(dirs.sessions());
    let rec = if query == "last" {
        // The newest overlay session of the project we are in: never another
        // project's by accident.
        let cwd = cordon_session::dirs::resolve(&std::env::current_dir()?);
        // The closest enclosing project wins, then the newest session.
        store
            .records()?
            .into_iter()
            .filter(|r| r.mode == ProjectMode::Overlay && cwd.starts_with(&r.project))
            .max_by_key(|r| (r.project.components().count(), r.started_ms))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no overlay session for {} or a directory above it; give a session id",
                    cwd.display()
                ))
            })?
    } else {
        store.load(&store.find(query)?)?
    };
    if rec.mode != ProjectMode::Overlay {
        return Err(Error::Usage(format!(
            "session {} ran in {} mode; only overlay sessions have changes to review",
            rec.id, rec.mode
        ))
        .into());
    }
    Ok((store, rec))
}

fn cmd_audit_verify(target: &str, key: Option<&str>, as_json: bool) -> Result<u8, Fail> {
    use cordon_session::audit;
    let dirs = Dirs::from_env()?;
    let trusted = match key {
        None => audit::trusted_key(&dirs.state)?,
        Some(k) => match cordon_audit::parse_public(k) {
            Some(hex) => hex,
            None => {
                let text = std::fs::read_to_string(k).map_err(|e| {
                    Error::Usage(format!(
                        "--key {k}: neither 64 hex digits nor a readable file ({e})"
                    ))
                })?;
                cordon_audit::parse_public(&text).ok_or_else(|| {
                    Error::Usage(format!("--key {k}: the file does not hold 64 hex digits"))
                })?
            }
        },
    };
    let path = std::path::Path::new(target);
    let verified = if path.is_file() {
        audit::verify_file(path, &trusted, None)?
    } else {
        let store = Store::new(dirs.sessions());
        let id = store.find(target)?;
        let rec = store.load(&id)?;
        let recorded = if store.is_live(&id) {
            None
        } else {
            rec.audit_head.clone()
        };
        audit::verify_file(
            &store.dir(&id).join(audit::FILE),
            &trusted,
            recorded.as_ref(),
        )?
    };
    let verdict = verified.verdict();
    if as_json {
        let r = &verified.report;
        json(&serde_json::json!({
            "verdict": match verdict {
                cordon_audit::Verdict::Verified => "verified",
                cordon_audit::Verdict::Incomplete => "incomplete",
                cordon_audit::Verdict::Tampered => "tampered",
            },
            "path": verified.path,
            "session": r.session,
            "records": r.records,
            "checkpoints": r.checkpoints,
            "signed_through": r.signed_through,
            "closed": r.closed,
            "head": r.head,
            "torn": r.torn.map(|t| serde_json::json!({"offset": t.offset, "len": t.len})),
            "problem": r.problem.as_ref().map(|p| serde_json::json!({"line": p.line, "offset": p.offset, "what": p.what})),
            "head_mismatch": verified.head_mismatch,
        }))?;
    } else {
        let mut text = format!("{}\n", verified.path.display());
        for l in verified.lines() {
            text.push_str(&l);
            text.push('\n');
        }
        out(&text)?;
    }
    Ok(match verdict {
        cordon_audit::Verdict::Verified => 0,
        cordon_audit::Verdict::Tampered => 1,
        cordon_audit::Verdict::Incomplete => 3,
    })
}

fn cmd_audit_rules(profile: &str, as_json: bool) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    let p = cordon_session::profiles::load(profile, &dirs).map_err(Error::from)?;
    let set = cordon_session::detection::rules(&dirs.config, &p)?;
    let tier = p.tier.map(|t| t.as_str());
    let mut text = if as_json {
        String::new()
    } else {
        format!(
            "# rules for profile {:?} (tier: {})\n",
            p.name,
            tier.unwrap_or("none")
        )
    };
    for r in set.iter() {
        let in_force = r.tiers.is_empty() || tier.is_some_and(|t| r.tiers.iter().any(|x| x == t));
        let classes: Vec<&str> = r.classes.iter().map(|c| c.short()).collect();
        if as_json {
            let v = serde_json::json!({
                "id": r.id,
                "title": r.title,
                "severity": severity_name(r.severity),
                "action": r.action.as_str(),
                "classes": classes,
                "tiers": r.tiers,
                "count": r.count,
                "window_ms": r.window_ns / 1_000_000,
                "in_force": in_force,
            });
            text.push_str(&format!("{v}\n"));
            continue;
        }
        let when = if r.count > 1 {
            format!(" ({} within {} s)", r.count, r.window_ns / 1_000_000_000)
        } else {
            String::new()
        };
        let tiers = if r.tiers.is_empty() {
            String::new()
        } else {
            format!(
                " [tiers: {}{}]",
                r.tiers.join(", "),
                if in_force { "" } else { "; not in force" }
            )
        };
        text.push_str(&format!(
            "{:<24} {:<8} {:<13} {}{when}{tiers}\n",
            r.id,
            r.action.as_str(),
            severity_name(r.severity),
            r.title
        ));
    }
    out(&text)?;
    Ok(0)
}

fn severity_name(s: cordon_audit::Severity) -> &'static str {
    match s {
        cordon_audit::Severity::Informational => "informational",
        cordon_audit::Severity::Low => "low",
        cordon_audit::Severity::Medium => "medium",
        cordon_audit::Severity::High => "high",
        cordon_audit::Severity::Critical => "critical",
    }
}

fn cmd_audit_ship(queries: &[String]) -> Result<u8, Fail> {
    use cordon_session::audit;
    let dirs = Dirs::from_env()?;
    let sinks = audit::sinks(&dirs.config)?;
    if sinks.is_empty() {
        return Err(Error::Usage(format!(
            "no sinks configured: add [[sink]] entries to {}",
            dirs.config.join("audit.toml").display()
        ))
        .into());
    }
    let store = Store::new(dirs.sessions());
    let ids = if queries.is_empty() {
        store.records()?.into_iter().map(|r| r.id).collect()
    } else {
        queries
            .iter()
            .map(|q| store.find(q))
            .collect::<Result<Vec<_>, _>>()?
    };
    let host = audit::hostname();
    let mut failed = false;
    let mut text = String::new();
    for id in ids {
        if store.is_live(&id) {
            text.push_str(&format!("{id}: running; its own shipper delivers it\n"));
            continue;
        }
        let log = store.dir(&id).join(audit::FILE);
        if !log.exists() {
            continue;
        }
        for s in &sinks {
            match cordon_audit::ship::ship(&log, s, &host) {
                Ok(c) => text.push_str(&format!(
                    "{id}: sink {}: delivered through record {}\n",
                    s.name, c.seq
                )),
                Err(e) => {
                    failed = true;
                    text.push_str(&format!("{id}: sink {}: {e}\n", s.name));
                }
            }
        }
    }
    out(&text)?;
    Ok(u8::from(failed))
}

fn cmd_audit_show(
    query: &str,
    follow: bool,
    as_json: bool,
    classes: &[String],
    checkpoints: bool,
) -> Result<u8, Fail> {
    use cordon_session::audit;
    let mut wanted = Vec::new();
    for c in classes {
        wanted.push(cordon_audit::Class::parse(c).ok_or_else(|| {
            let names: Vec<&str> = cordon_audit::Class::ALL.iter().map(|c| c.short()).collect();
            Error::Usage(format!(
                "--class {c}: not a class; one of {} (or an OCSF class id)",
                names.join(", ")
            ))
        })?);
    }
    let dirs = Dirs::from_env()?;
    let store = Store::new(dirs.sessions());
    let id = store.find(query)?;
    let path = store.dir(&id).join(audit::FILE);
    let mut file = std::fs::File::open(&path)
        .map_err(|e| Error::NotFound(format!("{}: {e}", path.display())))?;
    let mut pending: Vec<u8> = Vec::new();
    let mut closed = false;
    loop {
        use std::io::Read;
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk)?;
        pending.extend_from_slice(&chunk);
        let mut text = String::new();
        let mut used = 0;
        while let Some(nl) = pending[used..].iter().position(|&b| b == b'\n') {
            let line = &pending[used..used + nl];
            used += nl + 1;
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                text.push_str(&format!(
                    "(line {} bytes: not a record; run `cordon audit verify`)\n",
                    line.len()
                ));
                continue;
            };
            let cp = v.get("checkpoint");
            if cp
                .and_then(|c| c.get("closing"))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
            {
                closed = true;
            }
            let keep = match cp {
                Some(_) => checkpoints,
                None => {
                    wanted.is_empty()
                        || v.get("class_uid")
                            .and_then(serde_json::Value::as_u64)
                            .is_some_and(|u| wanted.iter().any(|c| u64::from(c.uid()) == u))
                }
            };
            if !keep {
                continue;
            }
            if as_json {
                text.push_str(&String::from_utf8_lossy(line));
            } else {
                text.push_str(&audit::describe(&v));
            }
            text.push('\n');
        }
        pending.drain(..used);
        out(&text)?;
        if !follow || closed || !store.is_live(&id) && chunk.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(0)
}

fn cmd_diff(query: &str, stat: bool, as_json: bool) -> Result<u8, Fail> {
    let (store, rec) = overlay_session(query)?;
    let upper = store.dir(&rec.id).join("upper");
    let changes = overlay::changes(&upper, &rec.project, &rec.placeholders)?;
    if as_json {
        json(&changes)?;
    } else if stat {
        let mut s = String::new();
        for c in &changes {
            s.push_str(&format!(
                "{:<12} {}\n",
                c.kind.as_str(),
                overlay::quote(&c.path)
            ));
        }
        out(&s)?;
    } else {
        out(&overlay::render(&changes, &upper, &rec.project))?;
    }
    Ok(0)
}

fn cmd_apply(query: &str, yes: bool) -> Result<u8, Fail> {
    let (store, mut rec) = overlay_session(query)?;
    if store.is_live(&rec.id) {
        return Err(Error::Usage(format!(
            "session {} is still running; apply after it exits",
            rec.id
        ))
        .into());
    }
    if let Some(ms) = rec.applied_ms {
        return Err(Error::Usage(format!(
            "session {} was already applied ({} s ago)",
            rec.id,
            cordon_session::record::now_ms().saturating_sub(ms) / 1000
        ))
        .into());
    }
    let upper = store.dir(&rec.id).join("upper");
    let changes = overlay::changes(&upper, &rec.project, &rec.placeholders)?;
    let protected = protected_of(&rec);
    if changes.is_empty() {
        notice(&format!("session {} changed nothing", rec.id));
        return Ok(0);
    }
    eprintln!(
        "cordon: session {} will change {}:",
        rec.id,
        rec.project.display()
    );
    for c in &changes {
        let why = overlay::refusal(c, &upper, &protected)
            .map(|w| format!("  (refused: {w})"))
            .unwrap_or_default();
        eprintln!("  {:<12} {}{why}", c.kind.as_str(), overlay::quote(&c.path));
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "not applying without confirmation: pass --yes (stdin is not a terminal)".into(),
            )
            .into());
        }
        eprint!("apply these {} change(s)? [y/N] ", changes.len());
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            notice("nothing applied");
            return Ok(1);
        }
    }
    let res = overlay::apply(&changes, &upper, &rec.project, &protected)?;
    rec.applied_ms = Some(cordon_session::record::now_ms());
    store.save(&rec)?;
    notice(&format!(
        "applied {} change(s) to {}",
        res.done.len(),
        rec.project.display()
    ));
    for (p, why) in &res.refused {
        notice(&format!("refused {}: {why}", overlay::quote(p)));
    }
    Ok(if res.refused.is_empty() { 0 } else { 1 })
}

/// Reads the rule files given with --rules (cordon's format, or gitleaks'
/// when the file has `[[rules]]`); notes about skipped rules go to stderr.
fn load_rules(files: &[PathBuf]) -> Result<Vec<cordon_detect::RuleSpec>, Fail> {
    let mut specs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Fail(2, anyhow::anyhow!("{}: {e}", f.display())))?;
        let origin = f.display().to_string();
        let gitleaks = text
            .lines()
            .any(|l| l.trim_start().starts_with("[[rules]]"));
        let parsed = if gitleaks {
            cordon_detect::rules::from_gitleaks(&text, &origin).map(|(specs, notes)| {
                for n in notes {
                    notice(&n);
                }
                specs
            })
        } else {
            cordon_detect::rules::parse(&text, &origin)
        };
        specs.extend(parsed.map_err(|e| Fail(2, e.into()))?);
    }
    Ok(specs)
}

fn detector(
    rules: &[PathBuf],
    builtin: bool,
    pii: bool,
) -> Result<std::sync::Arc<cordon_detect::Detector>, Fail> {
    let opts = cordon_detect::Options {
        builtin,
        extra_rules: load_rules(rules)?,
        pii,
        ..cordon_detect::Options::default()
    };
    let d = cordon_detect::Detector::new(opts).map_err(|e| Fail(2, e.into()))?;
    Ok(std::sync::Arc::new(d))
}

fn cmd_scan(args: ScanArgs) -> Result<u8, Fail> {
    use cordon_session::scan;
    let det = detector(&args.rules, !args.no_builtin, args.pii)?;
    let opts = scan::ScanOptions {
        paths: args.paths,
        max_size: args.max_size,
        min_confidence: if args.all {
            cordon_detect::Confidence::Low
        } else {
            cordon_detect::Confidence::Medium
        },
        threads: 0,
    };
    let report = scan::scan(&det, &opts).map_err(|e| Fail(2, e.into()))?;
    if args.sarif {
        json(&scan::render_sarif(&report, &det))?;
    } else if args.json {
        json(&report)?;
    } else {
        out(&scan::render_text(&report))?;
    }
    let binary = report
        .skipped
        .iter()
        .filter(|s| s.reason == "binary")
        .count();
    let other = report.skipped.len() - binary;
    let mut line = format!(
        "scanned {} file(s), {} byte(s): {} finding(s)",
        report.files,
        report.bytes,
        report.findings.len()
    );
    if binary > 0 {
        line.push_str(&format!("; skipped {binary} binary file(s)"));
    }
    if other > 0 {
        let first = &report.skipped.iter().find(|s| s.reason != "binary");
        line.push_str(&format!(
            "; skipped {other} other file(s){}",
            first.map_or(String::new(), |s| format!(
                ", e.g. {}: {}",
                s.path, s.reason
            ))
        ));
    }
    notice(&line);
    Ok(u8::from(!report.findings.is_empty()))
}

fn cmd_redact(args: RedactArgs) -> Result<u8, Fail> {
    use std::io::Read;
    let det = detector(&args.rules, true, args.pii)?;
    let style = if args.format_preserving {
        cordon_detect::Style::FormatPreserving
    } else {
        cordon_detect::Style::Typed
    };
    let mut input: Box<dyn Read> = match args.input.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| Fail(2, anyhow::anyhow!("{}: {e}", p.display())))?,
        ),
    };
    let mut stdout = std::io::stdout().lock();
    let map = std::sync::Arc::new(std::sync::Mutex::new(cordon_detect::Placeholders::new()));
    let found = if args.json_body {
        let mut body = Vec::new();
        input.read_to_end(&mut body)?;
        let mut map = map
            .lock()
            .map_err(|_| anyhow::anyhow!("placeholder map poisoned"))?;
        let (redacted, findings) = cordon_detect::redact_json(&det, &mut map, style, &body)
            .map_err(|e| Fail(1, anyhow::anyhow!("--json-body: the input is {e}")))?;
        stdout.write_all(&redacted)?;
        findings.len()
    } else {
        let mut r = cordon_detect::Redactor::new(det, map, style);
        let mut buf = vec![0u8; 64 * 1024];
        let mut outbuf = Vec::with_capacity(128 * 1024);
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            r.push(&buf[..n], &mut outbuf);
            stdout.write_all(&outbuf)?;
            outbuf.clear();
        }
        r.finish(&mut outbuf);
        stdout.write_all(&outbuf)?;
        r.found()
    };
    stdout.flush()?;
    if found > 0 {
        notice(&format!("redacted {found} finding(s)"));
    }
    Ok(0)
}
