//! Approvals: a session whose tier needs one (`high-risk` by default, or
//! the organisation's `[approvals] tiers`) waits until an approver grants
//! it. `cordon run` writes a request into the organisation's spool
//! directory and waits (five minutes at most); `cordon approve ID` from
//! another terminal writes the decision next to it.
//!
//! An approval counts when it is for this exact request (it names the
//! request's SHA-256) and either its file belongs to one of the approver
//! uids (not the requester's: nobody approves their own session by uid) or
//! it carries a signature by one of the approver keys (an approver's
//! cordon audit key).
//!
//! Threat notes: the spool is shared by every user; a file's owner is what
//! the kernel says, not what the file says. Requests and decisions are
//! created exclusively (`O_EXCL`, no symlinks followed); a decision anyone
//! could forge is worth nothing, and a denial written by a non-approver is
//! ignored too.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_policy::org::Approvals;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::record::now_ms;
use crate::Error;

/// How long a request waits for a decision.
pub const TTL: Duration = Duration::from_secs(300);

/// What the requester asks to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The request's id (16 hex digits).
    pub id: String,
    /// Who asks.
    pub uid: u32,
    /// The profile and its tier.
    pub profile: String,
    /// The tier that needs the approval.
    pub tier: String,
    /// The command line.
    pub command: Vec<String>,
    /// The project.
    pub project: PathBuf,
    /// The profile's digest.
    pub profile_digest: String,
    /// What the session would get, command line included: the project
    /// mode, the host paths it reads and writes, the host variables it is
    /// passed, the hosts it may reach. The approver decides on all of it.
    pub mode: String,
    /// See `mode`.
    pub read: Vec<PathBuf>,
    /// See `mode`.
    pub write: Vec<PathBuf>,
    /// See `mode`.
    pub env_pass: Vec<String>,
    /// See `mode`.
    pub hosts: Vec<String>,
    /// When asked, ms since the epoch.
    pub created_ms: u64,
    /// When it lapses.
    pub expires_ms: u64,
}

/// An approver's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The request's id.
    pub id: String,
    /// SHA-256 of the request file: the decision is for that request only.
    pub request_sha256: String,
    /// `approve` or `deny`.
    pub decision: String,
    /// Why, in the approver's words.
    pub reason: String,
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// The approver's audit public key (hex).
    pub key: String,
    /// Its signature (hex) over [`Decision::signed_text`].
    pub sig: String,
}

impl Decision {
    fn signed_text(&self) -> String {
        format!(
            "cordon-approval-v1\n{}\n{}\n{}\n{}\n{}",
            self.id, self.request_sha256, self.decision, self.reason, self.time_ms
        )
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// The request.
    pub id: String,
    /// The approver's uid.
    pub by_uid: u32,
    /// Whether an approver key vouched for it (else the uid did).
    pub by_key: Option<String>,
    /// The approver's reason.
    pub reason: String,
    /// When the request was made, ms since the epoch.
    #[serde(default)]
    pub requested_ms: u64,
}

fn spool(a: &Approvals) -> Result<&Path, Error> {
    let dir = a.spool.as_deref().ok_or_else(|| Error::Refused {
        message: "this session needs an approval, and the organisation's policy names no \
                  approvals spool"
            .into(),
        hint: "an administrator sets [approvals] spool in /etc/cordon/policy.toml (a directory \
               owned by root, mode 1777)"
            .into(),
    })?;
    let md = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("the approvals spool {}", dir.display()), e))?;
    if !md.is_dir() || md.uid() != 0 || md.mode() & 0o1000 == 0 {
        return Err(Error::Refused {
            message: format!(
                "the approvals spool {} is not a root-owned sticky directory",
                dir.display()
            ),
            hint: "mkdir -m 1777 it as root".into(),
        });
    }
    Ok(dir)
}

fn create_exclusive(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.write_all(data)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn random_id() -> Result<String, Error> {
    let mut b = [0u8; 8];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::io("read random bytes", e.into()))?;
    Ok(cordon_audit::hex(&b))
}

/// Publishes a request in the spool; returns it.
pub fn request(a: &Approvals, mut r: Request) -> Result<Request, Error> {
    let dir = spool(a)?;
    r.id = random_id()?;
    r.created_ms = now_ms();
    r.expires_ms = r.created_ms + TTL.as_millis() as u64;
    let data = serde_json::to_vec_pretty(&r)
        .map_err(|e| Error::io("encode the request", std::io::Error::other(e)))?;
    create_exclusive(&dir.join(format!("{}.request", r.id)), &data)?;
    Ok(r)
}

/// The most a request or decision file may hold.
const MAX_FILE: u64 = 64 << 10;

/// A spool file's content and owner, read through one descriptor: no
/// symlink is followed, a FIFO cannot block (`O_NONBLOCK`), the owner and
/// type are the open file's, and nothing larger than 64 KiB is read.
fn read_owned(path: &Path) -> Result<(Vec<u8>, u32), Error> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let md = f
        .metadata()
        .map_err(|e| Error::io(format!("inspect {}", path.display()), e))?;
    if !md.is_file() || md.len() > MAX_FILE {
        return Err(Error::Usage(format!(
            "{} is not a regular file of at most 64 KiB",
            path.display()
        )));
    }
    let mut data = Vec::new();
    f.take(MAX_FILE)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok((data, md.uid()))
}

/// Whether `d` (in a file owned by `owner`) decides `request` (of
/// `requester`): `Some(true)` approved, `Some(false)` denied, `None` when
/// it does not count.
fn judge(
    a: &Approvals,
    d: &Decision,
    owner: u32,
    requester: u32,
    request_sha: &str,
) -> Option<(bool, Option<String>)> {
    if d.request_sha256 != request_sha {
        return None;
    }
    // Nobody approves their own session, by uid or by key.
    if owner == requester {
        return None;
    }
    let signed = a.approver_keys.contains(&d.key)
        && cordon_audit::verify_signature(&d.key, d.signed_text().as_bytes(), &d.sig);
    let by_uid = a.approver_uids.contains(&owner);
    if !signed && !by_uid {
        return None;
    }
    let approved = match d.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return None,
    };
    Some((approved, signed.then(|| d.key.clone())))
}

/// Waits for a decision on `r` until it expires, calling `tick` about once
/// a second; a grant, or the refusal (denied, expired).
pub fn wait(a: &Approvals, r: &Request, tick: &mut dyn FnMut()) -> Result<Granted, Error> {
    let dir = spool(a)?;
    let req_path = dir.join(format!("{}.request", r.id));
    let prefix = format!("{}.decision.", r.id);
    let (req_bytes, _) = read_owned(&req_path)?;
    let request_sha = cordon_audit::hex(&<sha2::Sha256 as sha2::Digest>::digest(&req_bytes));
    let mut last_tick = now_ms();
    loop {
        // One decision file per deciding uid: a decision that does not
        // count (the requester's own, say) never blocks one that does.
        let decisions = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| read_owned(&e.path()).ok());
        for (data, owner) in decisions {
            if let Ok(d) = serde_json::from_slice::<Decision>(&data) {
                match judge(a, &d, owner, r.uid, &request_sha) {
                    Some((true, key)) => {
                        let _ = std::fs::remove_file(&req_path);
                        return Ok(Granted {
                            id: r.id.clone(),
                            by_uid: owner,
                            by_key: key,
                            reason: d.reason,
                            requested_ms: r.created_ms,
                        });
                    }
                    Some((false, _)) => {
                        let _ = std::fs::remove_file(&req_path);
                        return Err(Error::Refused {
                            message: format!(
                                "approval request {} was denied by uid {owner}: {}",
                                r.id, d.reason
                            ),
                            hint: "nothing ran".into(),
                        });
                    }
                    None => {}
                }
            }
        }
        if now_ms() >= r.expires_ms {
            let _ = std::fs::remove_file(&req_path);
            return Err(Error::Refused {
                message: format!("approval request {} expired without a decision", r.id),
                hint: "run again and ask an approver to run `cordon approve ID` sooner".into(),
            });
        }
        if now_ms() >= last_tick + 1000 {
            last_tick = now_ms();
            tick();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The requests waiting in the spool (unexpired, not yet settled by their
/// requester).
pub fn pending(a: &Approvals) -> Result<Vec<(Request, u32)>, Error> {
    let dir = spool(a)?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".request") else {
            continue;
        };
        if let Ok((data, owner)) = read_owned(&e.path()) {
            if let Ok(r) = serde_json::from_slice::<Request>(&data) {
                if r.id == id && r.uid == owner && r.expires_ms > now_ms() {
                    out.push((r, owner));
                }
            }
        }
    }
    out.sort_by_key(|(r, _)| r.created_ms);
    Ok(out)
}

/// Decides request `id`, signed with the approver's `key`.
pub fn decide(
    a: &Approvals,
    id: &str,
    approve: bool,
    reason: &str,
    key: &cordon_audit::HostKey,
) -> Result<Request, Error> {
    let dir = spool(a)?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Usage(format!(
            "{id:?} is not a request id (16 hex digits)"
        )));
    }
    let req_path = dir.join(format!("{id}.request"));
    let (data, owner) = read_owned(&req_path).map_err(|_| {
        Error::NotFound(format!(
            "no pending request {id} (see `cordon approve --list`)"
        ))
    })?;
    let r: Request = serde_json::from_slice(&data).map_err(|e| Error::Corrupt {
        path: req_path.clone(),
        message: e.to_string(),
    })?;
    if r.uid != owner || r.id != id {
        return Err(Error::Refused {
            message: format!("request {id} does not belong to the uid it names"),
            hint: "it was planted; nothing decided".into(),
        });
    }
    if r.expires_ms <= now_ms() {
        return Err(Error::Usage(format!("request {id} has expired")));
    }
    let mut d = Decision {
        id: id.to_owned(),
        request_sha256: cordon_audit::hex(&<sha2::Sha256 as sha2::Digest>::digest(&data)),
        decision: if approve { "approve" } else { "deny" }.into(),
        reason: reason.to_owned(),
        time_ms: now_ms(),
        key: key.public_hex(),
        sig: String::new(),
    };
    d.sig = cordon_audit::hex(&key.sign(d.signed_text().as_bytes()));
    let bytes = serde_json::to_vec_pretty(&d)
        .map_err(|e| Error::io("encode the decision", std::io::Error::other(e)))?;
    // A random name: nobody can take an approver's file name in advance.
    create_exclusive(&dir.join(format!("{id}.decision.{}", random_id()?)), &bytes)?;
    Ok(r)
}

/// The audit record of a request that was denied or lapsed (Authorize
/// Session, failed): the run it was for never started.
pub fn refused_event(r: &Request, why: &str) -> cordon_audit::Event {
    cordon_audit::Event::new(
        cordon_audit::Class::AuthorizeSession,
        1,
        "Assign Privileges",
    )
    .success(false)
    .severity(cordon_audit::Severity::Medium)
    .reason("approval_refused")
    .message(format!(
        "approval request {} (tier {}): {why}",
        r.id, r.tier
    ))
    .field("unmapped", json!({ "approval_request": r }))
}

/// The audit record of a session's approval (Authorize Session).
pub fn event(g: &Granted) -> cordon_audit::Event {
    cordon_audit::Event::new(
        cordon_audit::Class::AuthorizeSession,
        1,
        "Assign Privileges",
    )
    .success(true)
    .message(format!(
        "approved by uid {}{} (request {}): {}",
        g.by_uid,
        g.by_key
            .as_ref()
            .map(|k| format!(" with key {}", &k[..16]))
            .unwrap_or_default(),
        g.id,
        g.reason
    ))
    .field("unmapped", json!({ "approval": g }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(key: &cordon_audit::HostKey, sha: &str, what: &str) -> Decision {
        let mut d = Decision {
            id: "0123456789abcdef".into(),
            request_sha256: sha.into(),
            decision: what.into(),
            reason: "r".into(),
            time_ms: 1,
            key: key.public_hex(),
            sig: String::new(),
        };
        d.sig = cordon_audit::hex(&key.sign(d.signed_text().as_bytes()));
        d
    }

    #[test]
    fn only_an_approver_uid_or_key_decides() {
        let key = cordon_audit::HostKey::from_seed([9; 32]);
        let a = Approvals {
            approver_uids: vec![1001],
            approver_keys: vec![key.public_hex()],
            ..Approvals::default()
        };
        let d = decision(&key, "aa", "approve");
        // A listed key counts whoever wrote the file, but not the requester,
        // and only for the request it names.
        let by_key = Some((true, Some(key.public_hex())));
        assert_eq!(judge(&a, &d, 1002, 1000, "aa"), by_key);
        assert_eq!(judge(&a, &d, 1000, 1000, "aa"), None);
        assert_eq!(judge(&a, &d, 1002, 1000, "bb"), None);
        // An unlisted key: the uid must be an approver's, not the requester's.
        let other = cordon_audit::HostKey::from_seed([8; 32]);
        let d = decision(&other, "aa", "deny");
        assert_eq!(judge(&a, &d, 1000, 1000, "aa"), None);
        assert_eq!(judge(&a, &d, 1001, 1000, "aa"), Some((false, None)));
        assert_eq!(judge(&a, &d, 1001, 1001, "aa"), None);
        // A forged signature with a listed key counts for nothing.
        let mut forged = decision(&key, "aa", "approve");
        forged.decision = "deny".into();
        assert_eq!(judge(&a, &forged, 1002, 1000, "aa"), None);
    }

    #[test]
    fn a_spool_must_be_roots_and_sticky() {
        let t = tempfile::tempdir().unwrap();
        let a = Approvals {
            spool: Some(t.path().to_path_buf()),
            ..Approvals::default()
        };
        let e = spool(&a).unwrap_err().to_string();
        assert!(e.contains("sticky"), "{e}");
        assert!(spool(&Approvals::default())
            .unwrap_err()
            .to_string()
            .contains("names no approvals spool"));
    }
}
