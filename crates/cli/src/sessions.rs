//! Sessions and incident response: `cordon ps`, `show`, `contain`,
//! `resume`, `kill`, `block` and `evidence`. Running sessions are reached
//! through their control socket; the registry and the session directories
//! answer the rest.

use std::path::PathBuf;

use clap::Subcommand;
use cordon_session::control::{self, Request};
use cordon_session::registry;
use cordon_session::{evidence, Dirs, Error, Store};
use serde_json::Value;

use crate::{json, out, Fail};

pub const CONTAIN_HELP: &str = "\
What it does, in order (the first three are timed; docs/incident-runbook.md):
  1. freezes every process of the sandbox (SIGSTOP to its whole pid
     namespace, repeated until each one is seen stopped);
  2. cuts its egress: open connections close, new ones, lookups and
     requests are refused (net_session_contained);
  3. revokes its Vault/OpenBao tokens and leases;
  4. seals an evidence bundle in the state directory's evidence/: audit log
     and chain head, egress log, process tree with executable digests, open
     flows, the effective profile, the overlay's changes and the sandbox's
     /tmp and home, with a manifest signed by this host's audit key.
The session stays frozen until `cordon resume` (after review) or `cordon
kill` (eradicate).

Exit status: 0 contained; 1 contained but not every process was seen
stopped, or a step failed (the evidence could not be sealed, say); 2 the
request was refused (unknown or ended session, contained already).";

#[derive(Debug, Subcommand)]
pub enum EvidenceCmd {
    /// Check a bundle: manifest signature, every file's digest, nothing
    /// missing or added, and the custody log's chain.
    ///
    /// BUNDLE is a bundle's directory or a session (its newest bundle).
    /// Each verification is appended to the bundle's custody log.
    /// Exit status 0 intact, 1 tampered, 2 bad usage or not a bundle.
    Verify {
        /// A bundle directory, or a session id (unique part, `last`).
        bundle: String,
        /// The trusted public key: 64 hex digits, or a file holding them
        /// (default: this host's audit key).
        #[arg(long, value_name = "HEX|FILE")]
        key: Option<String>,
        /// Machine-readable result.
        #[arg(long)]
        json: bool,
    },
    /// Copy a verified bundle to a new directory (for the investigators),
    /// recording the export in its custody log.
    Export {
        /// A bundle directory, or a session id.
        bundle: String,
        /// Where to copy it (must not exist).
        dir: PathBuf,
    },
    /// List the bundles sealed on this host.
    List {
        /// Machine-readable list.
        #[arg(long)]
        json: bool,
    },
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn store() -> Result<(Dirs, Store), Fail> {
    let dirs = Dirs::from_env()?;
    let store = Store::new(dirs.sessions());
    Ok((dirs, store))
}

/// A session that must be running (its supervisor holds it).
fn live(query: &str) -> Result<(Store, cordon_types::SessionId), Fail> {
    let (_, store) = store()?;
    let id = store.find(query)?;
    if !store.is_live(&id) {
        return Err(Error::Usage(format!(
            "session {id} is not running (see `cordon show {id}`)"
        ))
        .into());
    }
    Ok((store, id))
}

fn ago(ms: u64) -> String {
    let s = cordon_session::record::now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// The status shown for an entry: a `running` row whose supervisor is gone
/// is `crashed` (the next `cordon run` marks it so).
fn shown_status(store: &Store, e: &registry::Entry) -> String {
    if e.status == "running" {
        let live =
            e.id.parse()
                .is_ok_and(|id: cordon_types::SessionId| store.is_live(&id));
        if !live {
            return "crashed".into();
        }
        if e.frozen {
            return "contained".into();
        }
    }
    e.status.clone()
}

pub fn cmd_ps(all: bool, as_json: bool) -> Result<u8, Fail> {
    let (_, store) = store()?;
    // No state directory yet: no sessions, and nothing is created to say so.
    let mut rows = if store.root().exists() {
        registry::Registry::open(&store)?.list(!all)?
    } else {
        Vec::new()
    };
    for r in &mut rows {
        r.status = shown_status(&store, r);
    }
    if !all {
        rows.retain(|r| r.status == "running" || r.status == "contained");
    }
    if as_json {
        return json(&rows).map(|()| 0);
    }
    if rows.is_empty() {
        out(if all {
            "no sessions yet\n"
        } else {
            "no running sessions (`cordon ps --all` lists every session)\n"
        })?;
        return Ok(0);
    }
    let mut s = format!(
        "{:<26} {:<10} {:<12} {:<10} {:>8} {:<9} {:<30} {}\n",
        "SESSION", "STATUS", "PROFILE", "TIER", "PID", "STARTED", "PROJECT", "COMMAND"
    );
    for r in &rows {
        let status = match (r.status.as_str(), r.exit_code) {
            ("exited", Some(c)) => format!("exit {c}"),
            (st, _) => st.to_owned(),
        };
        s.push_str(&format!(
            "{:<26} {:<10} {:<12} {:<10} {:>8} {:<9} {:<30} {}\n",
            r.id,
            status,
            r.profile,
            r.tier.as_deref().unwrap_or("-"),
            r.supervisor_pid,
            ago(r.started_ms),
            r.project.display(),
            r.command.join(" ")
        ));
    }
    out(&s)?;
    Ok(0)
}

pub fn cmd_show(query: &str, as_json: bool) -> Result<u8, Fail> {
    let (dirs, store) = store()?;
    let id = store.find(query)?;
    let rec = store.load(&id)?;
    let reg = registry::Registry::open(&store)?;
    let entry = reg.get(id.as_str())?;
    let live = store.is_live(&id);
    let mut state = None;
    if live {
        let _ = control::request(&store.dir(&id), &Request::Status, &mut |v| {
            state = Some(v.clone());
        });
    }
    let bundle = evidence::find(&dirs.state, &store, id.as_str()).ok();
    if as_json {
        let mut v = serde_json::to_value(&rec)?;
        v["live"] = Value::Bool(live);
        v["frozen"] = Value::Bool(entry.as_ref().is_some_and(|e| e.frozen));
        v["control"] = state.unwrap_or(Value::Null);
        v["evidence"] = serde_json::to_value(&bundle)?;
        v["dir"] = serde_json::to_value(store.dir(&id))?;
        return json(&v).map(|()| 0);
    }
    let status = match entry {
        Some(e) => shown_status(&store, &e),
        None => rec.status.as_str().to_owned(),
    };
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14} {v}\n"));
    line("session", rec.id.to_string());
    line("status", status);
    line(
        "profile",
        format!(
            "{}{} ({})",
            rec.profile,
            rec.tier
                .as_deref()
                .map(|t| format!(", tier {t}"))
                .unwrap_or_default(),
            rec.profile_digest
        ),
    );
    line(
        "project",
        format!("{} ({})", rec.project.display(), rec.mode),
    );
    line("command", rec.command.join(" "));
    line(
        "started",
        format!(
            "{} ({})",
            crate::secret::utc(rec.started_ms),
            ago(rec.started_ms)
        ),
    );
    if let Some(end) = rec.ended_ms {
        line("ended", crate::secret::utc(end));
    }
    match (rec.exit_code, rec.signal) {
        (Some(c), Some(sig)) => line("exit", format!("{c} (signal {sig})")),
        (Some(c), None) => line("exit", c.to_string()),
        _ => {}
    }
    line(
        "pids",
        format!(
            "supervisor {}{}",
            rec.supervisor_pid,
            rec.sandbox_pid
                .map(|p| format!(", sandbox init {p}"))
                .unwrap_or_default()
        ),
    );
    if let Some(st) = &state {
        line(
            "live",
            format!(
                "init {}, frozen {}, egress {}, {} open flow(s)",
                st["init"],
                st["frozen"],
                if st["egress_cut"] == Value::Bool(true) {
                    "cut"
                } else {
                    "per profile"
                },
                st["flows_open"].as_u64().unwrap_or(0)
            ),
        );
        let f = &st["freezer"];
        line(
            "freezer",
            match (f["cgroup"].as_str(), f["no_cgroup"].as_str()) {
                (Some(cg), _) => format!("cgroup.freeze of {cg}"),
                (None, Some(why)) => format!("SIGSTOP to the pid namespace ({why})"),
                (None, None) => "unknown".to_owned(),
            },
        );
    }
    if let Some(why) = &rec.contained {
        line("contained", why.clone());
    } else if let Some(why) = state.as_ref().and_then(|v| v["contained"].as_str()) {
        line("contained", why.to_owned());
    }
    if let Some(b) = &bundle {
        line("evidence", b.display().to_string());
    }
    if let Some(e) = &rec.error {
        line("error", e.clone());
    }
    for w in &rec.warnings {
        line("warning", w.clone());
    }
    for f in &rec.findings {
        line("finding", f.clone());
    }
    line("directory", store.dir(&id).display().to_string());
    line(
        "audit",
        format!("cordon logs {id}  (verify: cordon audit verify {id})"),
    );
    out(&s)?;
    Ok(0)
}

pub fn cmd_contain(query: &str, reason: Option<String>) -> Result<u8, Fail> {
    let (store, id) = live(query)?;
    let reason = reason.unwrap_or_else(|| format!("by uid {} from the command line", uid()));
    // Each answer is printed as it comes: the containment first, the
    // evidence (which takes longer) after it.
    let mut failed = None;
    let mut incomplete = false;
    control::request(&store.dir(&id), &Request::Contain { reason }, &mut |v| {
        let mut text = String::new();
        incomplete |= v["freeze_error"].is_string()
            || v["processes_pending"]
                .as_array()
                .is_some_and(|p| !p.is_empty());
        if v.get("contained").is_some() {
            let t = &v["timings"];
            text.push_str(&format!(
                "session {id} contained in {} ms: {} process(es) frozen ({} ms), egress cut \
                 ({} flow(s) closed, {} ms), {} credential(s) revoked ({} ms)\n",
                t["contained_ms"],
                v["processes_stopped"],
                t["frozen_ms"],
                v["flows_cut"].as_u64().unwrap_or(0),
                t["egress_cut_ms"],
                v["credentials_revoked"],
                t["revoked_ms"],
            ));
            if let Some(n) = v["freezer_note"].as_str() {
                text.push_str(&format!("note: {n}\n"));
            }
            if let Some(e) = v["freeze_error"].as_str() {
                text.push_str(&format!(
                    "warning: the freeze failed ({e}); egress was cut and credentials revoked \
                     all the same\n"
                ));
            }
            if let Some(p) = v["processes_pending"].as_array().filter(|p| !p.is_empty()) {
                text.push_str(&format!(
                    "warning: {} process(es) had not stopped yet (in the kernel); their stop is \
                     pending\n",
                    p.len()
                ));
            }
            for w in v["revoke_warnings"].as_array().into_iter().flatten() {
                text.push_str(&format!("warning: {}\n", w.as_str().unwrap_or_default()));
            }
        }
        if let Some(b) = v.get("bundle").and_then(Value::as_str) {
            text.push_str(&format!(
                "evidence sealed: {b} ({} item(s)); check it with `cordon evidence verify {b}`\n",
                v["items"]
            ));
        }
        if let Err(e) = out(&text) {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    out(&format!(
        "next: review (`cordon show {id}`, `cordon logs {id}`), then `cordon resume {id}` or \
         `cordon kill {id}`\n"
    ))?;
    // Contained, but not every process was seen stopped: say so in the
    // status too.
    Ok(u8::from(incomplete))
}

pub fn cmd_resume(query: &str) -> Result<u8, Fail> {
    let (store, id) = live(query)?;
    let mut n = 0;
    control::request(&store.dir(&id), &Request::Resume, &mut |v| {
        n = v["processes"].as_u64().unwrap_or(0);
    })?;
    out(&format!(
        "session {id} resumed: {n} process(es) running, egress per its profile again; \
         credentials revoked at containment stay revoked\n"
    ))?;
    Ok(0)
}

pub fn cmd_kill(query: &str, reason: Option<String>) -> Result<u8, Fail> {
    let (store, id) = live(query)?;
    let reason = reason.unwrap_or_else(|| format!("killed by uid {}", uid()));
    let mut bundle = None;
    let mut removed = false;
    let mut warning = None;
    control::request(&store.dir(&id), &Request::Kill { reason }, &mut |v| {
        if let Some(b) = v.get("bundle").and_then(Value::as_str) {
            bundle = Some(b.to_owned());
        }
        if v.get("killed").is_some() {
            removed = v["overlay_removed"] == true;
            warning = v["warning"].as_str().map(str::to_owned);
        }
    })?;
    out(&format!(
        "session {id} killed: every process is gone{}{}\n{}",
        if removed {
            " and its overlay is dropped"
        } else {
            "; its overlay is kept (the evidence does not hold all of it)"
        },
        match (bundle, &warning) {
            (Some(b), _) => format!("; evidence sealed first: {b}"),
            (None, Some(_)) => "; no evidence was sealed".into(),
            (None, None) => "; its evidence was sealed when it was contained".into(),
        },
        warning
            .map(|w| format!("warning: {w}\n"))
            .unwrap_or_default()
    ))?;
    Ok(0)
}

pub fn cmd_block(host: &str, system: bool) -> Result<u8, Fail> {
    let (dirs, store) = store()?;
    let p = cordon_session::blocklist::parse(host)?;
    let mut text = if system {
        let path = std::path::Path::new(cordon_session::blocklist::SYSTEM);
        if cordon_session::blocklist::add_system(path, &p)? {
            format!(
                "{p} is blocked for every user's sessions ({}); running sessions apply it \
                 within a second\n",
                path.display()
            )
        } else {
            format!("{p} was already on the system block list\n")
        }
    } else {
        dirs.ensure_state()?;
        if cordon_session::blocklist::add(&dirs.state, &p)? {
            format!("{p} is blocked for every new session of yours\n")
        } else {
            format!("{p} was already on your block list\n")
        }
    };
    if !store.root().exists() {
        out(&text)?;
        return Ok(0);
    }
    let reg = registry::Registry::open(&store)?;
    let mut failed = false;
    for e in reg.list(true)? {
        let Ok(id) = e.id.parse::<cordon_types::SessionId>() else {
            continue;
        };
        if !store.is_live(&id) {
            continue;
        }
        let host = p.to_string();
        match control::request(&store.dir(&id), &Request::Block { host }, &mut |_| {}) {
            Ok(()) => text.push_str(&format!("  applied to running session {id}\n")),
            Err(e) => {
                failed = true;
                text.push_str(&format!("  running session {id}: not applied: {e}\n"));
            }
        }
    }
    out(&text)?;
    Ok(u8::from(failed))
}

fn trusted(dirs: &Dirs, key: Option<&str>) -> Result<String, Fail> {
    match key {
        None => Ok(cordon_session::audit::trusted_key(&dirs.state)?),
        Some(k) => {
            let text = if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) {
                k.to_owned()
            } else {
                std::fs::read_to_string(k).map_err(|e| Error::Usage(format!("--key {k}: {e}")))?
            };
            Ok(cordon_audit::parse_public(&text).ok_or_else(|| {
                Error::Usage(format!("--key {k}: not a public key (64 hex digits)"))
            })?)
        }
    }
}

pub fn cmd_evidence(c: EvidenceCmd) -> Result<u8, Fail> {
    let (dirs, store) = store()?;
    match c {
        EvidenceCmd::Verify {
            bundle,
            key,
            json: as_json,
        } => {
            let path = evidence::find(&dirs.state, &store, &bundle)?;
            let key = trusted(&dirs, key.as_deref())?;
            let report = evidence::verify(&path, &key)?;
            let detail = if report.ok() {
                "intact".to_owned()
            } else {
                format!("{} problem(s)", report.problems.len())
            };
            // Recorded where the bundle can take it, signed by this host's
            // key, and only when that key is the one trusted here: a line
            // another key signed would break the chain for its owner.
            let local = cordon_session::audit::trusted_key(&dirs.state).ok();
            let noted = if report.signed && local.as_deref() == Some(key.as_str()) {
                cordon_session::audit::host_key(&dirs.state)
                    .and_then(|k| evidence::custody(&path, &k, uid(), "verify", &detail))
            } else {
                Err(Error::Usage(
                    "the trusted key is not this host's: not recorded here".into(),
                ))
            };
            if as_json {
                json(&report)?;
            } else {
                let mut s = String::new();
                if report.ok() {
                    s.push_str(&format!(
                        "{}: intact: signature good, {} file(s) and link(s) match the manifest, \
                         custody log of {} entr(ies) unbroken\n",
                        path.display(),
                        report.checked,
                        report.custody
                    ));
                } else {
                    s.push_str(&format!("{}: TAMPERED\n", path.display()));
                    for p in &report.problems {
                        s.push_str(&format!("  {p}\n"));
                    }
                }
                if let Err(e) = noted {
                    s.push_str(&format!("(not recorded in its custody log: {e})\n"));
                }
                out(&s)?;
            }
            Ok(u8::from(!report.ok()))
        }
        EvidenceCmd::Export { bundle, dir } => {
            let path = evidence::find(&dirs.state, &store, &bundle)?;
            let key = cordon_session::audit::trusted_key(&dirs.state)?;
            let report = evidence::verify(&path, &key)?;
            if !report.ok() {
                return Err(Error::Refused {
                    message: format!(
                        "{} does not verify ({}); not exported",
                        path.display(),
                        report.problems.join("; ")
                    ),
                    hint: "`cordon evidence verify` lists what is wrong".into(),
                }
                .into());
            }
            let host = cordon_session::audit::host_key(&dirs.state)?;
            evidence::export(&path, &dir, &host, uid())?;
            out(&format!(
                "exported {} to {} (verified first; the export is in its custody log)\n",
                path.display(),
                dir.display()
            ))?;
            Ok(0)
        }
        EvidenceCmd::List { json: as_json } => {
            let root = dirs.state.join(evidence::DIR);
            let mut list: Vec<PathBuf> = match std::fs::read_dir(&root) {
                Ok(rd) => rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.join(evidence::MANIFEST).is_file())
                    .collect(),
                Err(_) => Vec::new(),
            };
            list.sort();
            if as_json {
                json(&list)?;
            } else if list.is_empty() {
                out("no evidence bundles (`cordon contain SESSION` seals one)\n")?;
            } else {
                out(&list
                    .iter()
                    .map(|p| format!("{}\n", p.display()))
                    .collect::<String>())?;
            }
            Ok(0)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AttestCmd {
    /// Check a session's attestation: the host key's signature, and every
    /// subject's SHA-256 in the output directory.
    ///
    /// TARGET is an attestation file or a session (id, unique part,
    /// `last`). The output directory is the session's overlay (its upper
    /// layer) unless --dir names another, such as the project after
    /// `cordon apply`. Exit status 0 verified, 1 not, 2 bad usage.
    Verify {
        /// An attestation file or a session.
        target: String,
        /// Where the subjects are.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The trusted public key: 64 hex digits, or a file holding them
        /// (default: this host's audit key).
        #[arg(long, value_name = "HEX|FILE")]
        key: Option<String>,
        /// The statement and the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn cmd_attest(c: AttestCmd) -> Result<u8, Fail> {
    let AttestCmd::Verify {
        target,
        dir,
        key,
        json: as_json,
    } = c;
    let (dirs, store) = store()?;
    let file = if std::path::Path::new(&target).is_file() {
        PathBuf::from(&target)
    } else {
        cordon_session::provenance::path(&store.dir(&store.find(&target)?))
    };
    let bytes =
        std::fs::read(&file).map_err(|e| Error::NotFound(format!("{}: {e}", file.display())))?;
    let out_dir = dir.or_else(|| {
        let upper = file.parent()?.join("upper");
        upper.is_dir().then_some(upper)
    });
    let key = trusted(&dirs, key.as_deref())?;
    let v = cordon_session::provenance::verify(&bytes, &key, out_dir.as_deref())?;
    if as_json {
        json(&v)?;
    } else if v.problems.is_empty() {
        out(&format!(
            "{}: verified: signed by the trusted key{}\n",
            file.display(),
            match &out_dir {
                Some(d) => format!(", {} subject(s) match in {}", v.checked, d.display()),
                None => " (no output directory to check subjects against)".into(),
            }
        ))?;
    } else {
        let mut s = format!("{}: NOT VERIFIED\n", file.display());
        for p in &v.problems {
            s.push_str(&format!("  {p}\n"));
        }
        out(&s)?;
    }
    Ok(u8::from(!v.problems.is_empty()))
}

pub fn cmd_apply_branch(query: &str, branch: &str) -> Result<u8, Fail> {
    let (store, rec) = crate::overlay_session(query)?;
    let dirs = Dirs::from_env()?;
    if store.is_live(&rec.id) {
        return Err(Error::Usage(format!(
            "session {} is still running; apply after it exits",
            rec.id
        ))
        .into());
    }
    let dir = store.dir(&rec.id);
    let upper = dir.join("upper");
    let att = cordon_session::provenance::path(&dir);
    let bytes = std::fs::read(&att).map_err(|e| {
        Error::NotFound(format!(
            "{}: {e} (sessions without an attestation cannot be committed with --branch)",
            att.display()
        ))
    })?;
    let key = cordon_session::audit::trusted_key(&dirs.state)?;
    let v = cordon_session::provenance::verify(&bytes, &key, Some(&upper))?;
    if !v.problems.is_empty() {
        return Err(Error::Refused {
            message: format!(
                "the session's output does not match its attestation: {}",
                v.problems.join("; ")
            ),
            hint: "review it with `cordon diff`; nothing was committed".into(),
        }
        .into());
    }
    let changes = cordon_session::overlay::changes(&upper, &rec.project, &rec.placeholders)?;
    if changes.is_empty() {
        out(&format!("session {} changed nothing\n", rec.id))?;
        return Ok(0);
    }
    let cordon_session::provenance::Committed { commit, refused } =
        cordon_session::provenance::commit_branch(
            &rec,
            v.statement.as_ref().unwrap_or(&Value::Null),
            &changes,
            &upper,
            &crate::protected_of(&rec),
            branch,
            &att,
        )?;
    let mut s = format!(
        "committed {} change(s) of session {} to branch {branch} ({commit}), on top of HEAD; \
         the working tree is untouched\n",
        changes.len() - refused.len(),
        rec.id
    );
    for (p, why) in &refused {
        s.push_str(&format!("refused {}: {why}\n", p.display()));
    }
    out(&s)?;
    Ok(u8::from(!refused.is_empty()))
}

pub const APPROVE_HELP: &str = "\
The organisation's policy (/etc/cordon/policy.toml, [approvals]) names the
tiers that need an approval (high-risk unless it says otherwise), the
shared spool directory, and the approvers: uids, and/or public keys (an
approver's audit-key.pub). A decision is signed with your cordon audit key
and counts when your uid is an approver's (and not the requester's) or
your key is listed. docs/governance.md has the whole flow.";

pub fn cmd_approve(
    id: Option<&str>,
    list: bool,
    deny: bool,
    reason: Option<String>,
    as_json: bool,
) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    let org = cordon_session::org::load(std::path::Path::new(cordon_session::org::PATH))?;
    let approvals = org.map(|o| o.approvals).unwrap_or_default();
    if list {
        let pending = cordon_session::approval::pending(&approvals)?;
        if as_json {
            let v: Vec<&cordon_session::approval::Request> =
                pending.iter().map(|(r, _)| r).collect();
            return json(&v).map(|()| 0);
        }
        if pending.is_empty() {
            out("no pending approval requests\n")?;
            return Ok(0);
        }
        let mut s = String::new();
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        for (r, uid) in &pending {
            s.push_str(&format!(
                "{}  uid {uid}  tier {}  profile {} ({})  expires in {}s\n  command: {}\n  \
                 project: {} ({})\n  hosts: {}\n  reads: {}\n  writes: {}\n  host variables: {}\n",
                r.id,
                r.tier,
                r.profile,
                r.profile_digest,
                r.expires_ms
                    .saturating_sub(cordon_session::record::now_ms())
                    / 1000,
                r.command.join(" "),
                r.project.display(),
                r.mode,
                list(r.hosts.clone()),
                list(r.read.iter().map(|p| p.display().to_string()).collect()),
                list(r.write.iter().map(|p| p.display().to_string()).collect()),
                list(r.env_pass.clone()),
            ));
        }
        out(&s)?;
        return Ok(0);
    }
    let id = id.ok_or_else(|| Error::Usage("give a request id, or --list".into()))?;
    dirs.ensure_state()?;
    let key = cordon_session::audit::host_key(&dirs.state)?;
    let reason = reason.unwrap_or_else(|| {
        if deny {
            "denied".into()
        } else {
            "approved".into()
        }
    });
    let r = cordon_session::approval::decide(&approvals, id, !deny, &reason, &key)?;
    out(&format!(
        "{} request {id} of uid {} (profile {}, tier {}: {})\n",
        if deny { "denied" } else { "approved" },
        r.uid,
        r.profile,
        r.tier,
        r.command.join(" ")
    ))?;
    Ok(0)
}

pub fn cmd_drill(profile: &str, as_json: bool) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    let exe = std::env::current_exe()?;
    let report = cordon_session::drill::run(&dirs, profile, &exe)?;
    if as_json {
        json(&report)?;
    } else {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        let mut s = format!("cordon drill (profile {}):\n\n", report.profile);
        for st in &report.steps {
            s.push_str(&format!(
                "{} {:<12} {}\n    expected: {}\n    detect {}, contain {}{}\n",
                if st.passed { "PASS" } else { "FAIL" },
                st.name,
                st.outcome,
                st.expected,
                ms(st.detect_ms),
                ms(st.contain_ms),
                st.session
                    .as_ref()
                    .map(|id| format!(", session {id}"))
                    .unwrap_or_default()
            ));
        }
        s.push_str(if report.passed {
            "\nthe playbook held: every technique was stopped or contained\n"
        } else {
            "\nthe playbook did NOT hold; see the failed steps\n"
        });
        out(&s)?;
    }
    Ok(u8::from(!report.passed))
}
