//! Provenance: at the end of a session, an in-toto Statement v1 in a DSSE
//! envelope signed with the host's audit key (`attestation.dsse.json` in
//! the session's directory). Its subjects are the session's output (each
//! file the agent added or changed in the overlay, with its SHA-256); its
//! predicate names the profile and agent digests, the project's content
//! digest (the overlay's lower layer, which the agent cannot change), the
//! egress summary and the audit chain's head. `cordon attest verify`
//! checks the signature and, against a directory, every subject.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::overlay::{Change, Kind};
use crate::record::Record;
use crate::Error;

/// The envelope's file name in the session's directory.
pub const FILE: &str = "attestation.dsse.json";
/// The DSSE payload type of an in-toto statement.
const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate's type.
pub const PREDICATE_TYPE: &str = "https://cordon.dev/provenance/session/v1";

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The payload, base64.
    pub payload: String,
    /// Its type.
    pub payload_type: String,
    /// Signatures over the PAE of type and payload.
    pub signatures: Vec<Signature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signing key: its Ed25519 public key, hex.
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// DSSE's pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// A digest of the project's content: every file the `.gitignore` rules
/// keep (not `.git` itself), by path and SHA-256, in path order.
pub fn project_digest(project: &Path) -> Result<String, Error> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    let walk = ignore::WalkBuilder::new(project)
        .hidden(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for e in walk {
        let e = e.map_err(|e| Error::io("walk the project", std::io::Error::other(e)))?;
        if e.file_type().is_some_and(|t| t.is_file()) {
            files.push(e.into_path());
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let (_, sha) =
            crate::audit::digest(f).map_err(|e| Error::io(format!("read {}", f.display()), e))?;
        h.update(
            f.strip_prefix(project)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        h.update(sha.as_bytes());
        h.update([b'\n']);
    }
    Ok(cordon_audit::hex(&h.finalize()))
}

/// The session's statement: its output as subjects, the rest as predicate.
pub fn statement(
    record: &Record,
    changes: &[Change],
    upper: &Path,
    project_digest: Option<String>,
    egress: Value,
) -> Result<Value, Error> {
    let mut subjects = Vec::new();
    let mut deleted = Vec::new();
    for c in changes {
        let path = c.path.to_string_lossy().into_owned();
        match c.kind {
            Kind::Deleted => deleted.push(path),
            _ if c.entry == "file" => {
                let (_, sha) = crate::audit::digest(&upper.join(&c.path))
                    .map_err(|e| Error::io(format!("read {}", c.path.display()), e))?;
                subjects.push(json!({ "name": path, "digest": { "sha256": sha } }));
            }
            // A link's subject is its target, as text.
            _ if c.entry == "symlink" => {
                let sha = link_digest(&upper.join(&c.path))
                    .map_err(|e| Error::io(format!("read {}", c.path.display()), e))?;
                subjects.push(json!({
                    "name": path,
                    "digest": { "sha256": sha },
                    "annotations": { "type": "symlink" },
                }));
            }
            _ => {}
        }
    }
    Ok(json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "session": record.id.as_str(),
            "profile": record.profile,
            "profile_digest": record.profile_digest,
            "tier": record.tier,
            "agent": record.agent,
            "command": record.command,
            "project": record.project,
            "mode": record.mode,
            "project_digest": project_digest,
            "deleted": deleted,
            "started_ms": record.started_ms,
            "ended_ms": record.ended_ms,
            "exit_code": record.exit_code,
            "contained": record.contained,
            "findings": record.findings.len(),
            "egress": egress,
            "audit_head": record.audit_head,
        },
    }))
}

/// Signs `statement` into a DSSE envelope.
pub fn sign(key: &cordon_audit::HostKey, statement: &Value) -> Result<Envelope, Error> {
    let payload = serde_json::to_vec(statement)
        .map_err(|e| Error::io("encode the statement", std::io::Error::other(e)))?;
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
    Ok(Envelope {
        payload: cordon_detect::check::base64_encode(&payload),
        payload_type: PAYLOAD_TYPE.into(),
        signatures: vec![Signature {
            keyid: key.public_hex(),
            sig: cordon_detect::check::base64_encode(&sig),
        }],
    })
}

/// Writes `env` to `path` (temp file and rename).
pub fn write(path: &Path, env: &Envelope) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(env)
        .map_err(|e| Error::io("encode the attestation", std::io::Error::other(e)))?;
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The statement, when the signature held.
    pub statement: Option<Value>,
    /// Subjects checked against the directory.
    pub checked: usize,
    /// What is wrong (empty: it verifies).
    pub problems: Vec<String>,
}

/// Checks the envelope's signature with `trusted` (hex public key) and,
/// with `dir`, that every subject there has its recorded SHA-256.
pub fn verify(bytes: &[u8], trusted: &str, dir: Option<&Path>) -> Result<Verified, Error> {
    let mut out = Verified {
        statement: None,
        checked: 0,
        problems: Vec::new(),
    };
    let env: Envelope = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            out.problems.push(format!("not a DSSE envelope: {e}"));
            return Ok(out);
        }
    };
    let payload = cordon_detect::check::base64_decode(env.payload.as_bytes());
    let Some(payload) = payload else {
        out.problems.push("the payload is not base64".into());
        return Ok(out);
    };
    let signed = env.payload_type == PAYLOAD_TYPE
        && env.signatures.iter().any(|s| {
            cordon_detect::check::base64_decode(s.sig.as_bytes()).is_some_and(|sig| {
                cordon_audit::verify_signature(
                    trusted,
                    &pae(&env.payload_type, &payload),
                    &cordon_audit::hex(&sig),
                )
            })
        });
    if !signed {
        out.problems
            .push("no signature by the trusted key verifies (altered, or another host's)".into());
        return Ok(out);
    }
    let statement: Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => {
            out.problems.push(format!("the statement: {e}"));
            return Ok(out);
        }
    };
    if let Some(dir) = dir {
        for s in statement["subject"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default();
            let want = s["digest"]["sha256"].as_str().unwrap_or_default();
            out.checked += 1;
            // Subjects are relative paths; never leave `dir`.
            let rel = Path::new(name);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                out.problems
                    .push(format!("{name}: not a path inside the output"));
                continue;
            }
            let got = if s["annotations"]["type"] == "symlink" {
                link_digest(&dir.join(rel)).map(|sha| (0, sha))
            } else {
                crate::audit::digest(&dir.join(rel))
            };
            match got {
                Ok((_, got)) if got == want => {}
                Ok((_, got)) => out.problems.push(format!(
                    "{name}: changed since the session (SHA-256 {got}, attested {want})"
                )),
                Err(e) => out.problems.push(format!("{name}: {e}")),
            }
        }
    }
    out.statement = Some(statement);
    Ok(out)
}

/// The SHA-256 of a symlink's target (its text).
fn link_digest(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let target = std::fs::read_link(path)?;
    Ok(cordon_audit::hex(&Sha256::digest(
        target.as_os_str().as_encoded_bytes(),
    )))
}

/// Where a session's attestation is.
pub fn path(session_dir: &Path) -> PathBuf {
    session_dir.join(FILE)
}

/// Runs git in `project` with a private index; its output, or an error
/// naming the command.
fn git(project: &Path, index: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<String, Error> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("git")
        .arg("-C")
        .arg(project)
        .args(args)
        .env("GIT_INDEX_FILE", index)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("run git (apt-get install git)", e))?;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(data)
            .map_err(|e| Error::io("write to git", e))?;
    }
    let o = child
        .wait_with_output()
        .map_err(|e| Error::io("run git", e))?;
    if !o.status.success() {
        return Err(Error::Usage(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// What `commit_branch` did: the commit id, and each change left out with
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The new branch's commit.
    pub commit: String,
    /// Protected paths left out.
    pub refused: Vec<(PathBuf, &'static str)>,
}

/// Commits `changes` (from the overlay's `upper`) on top of the project's
/// `HEAD` as the new branch `branch`, without touching the working tree or
/// the index; the message names the session and its attestation. Returns
/// the commit id. Refused paths (`protected`) are left out and returned.
pub fn commit_branch(
    record: &Record,
    statement: &Value,
    changes: &[Change],
    upper: &Path,
    protected: &[PathBuf],
    branch: &str,
    attestation: &Path,
) -> Result<Committed, Error> {
    use std::os::unix::fs::PermissionsExt;
    let project = &record.project;
    if !project.join(".git").exists() {
        return Err(Error::Usage(format!(
            "{} is not a git repository; `cordon apply` without --branch writes the changes",
            project.display()
        )));
    }
    let tmp = TempDir(crate::dirs::private_temp_dir("cordon-apply")?);
    let index = tmp.0.join("index");
    let probe = git(
        project,
        &index,
        &["check-ref-format", "--branch", branch],
        None,
    );
    if probe.is_err() {
        return Err(Error::Usage(format!(
            "{branch:?} is not a valid branch name"
        )));
    }
    if git(
        project,
        &index,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
        None,
    )
    .is_ok()
    {
        return Err(Error::Usage(format!(
            "branch {branch} exists; name a new one"
        )));
    }
    let head = git(project, &index, &["rev-parse", "--verify", "HEAD"], None)?;
    git(project, &index, &["read-tree", "HEAD"], None)?;
    let mut refused = Vec::new();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("name").unwrap_or(s).as_str().map(str::to_owned))
            .collect()
    };
    let written = names(&statement["subject"]);
    let deleted = names(&statement["predicate"]["deleted"]);
    for c in changes {
        // The agent's own git metadata (a commit it made in the overlay)
        // is not part of the branch: git builds that from the files.
        if c.path.starts_with(".git") {
            continue;
        }
        if let Some(why) = crate::overlay::refusal(c, upper, protected) {
            refused.push((c.path.clone(), why));
            continue;
        }
        // A deletion must be attested as one, a write as a subject.
        let listed = if c.kind == Kind::Deleted {
            &deleted
        } else {
            &written
        };
        let covered = listed.iter().any(|a| Path::new(a) == c.path);
        if !covered && c.entry != "dir" {
            return Err(Error::Refused {
                message: format!(
                    "{} changed in the overlay and is not in the session's attestation",
                    c.path.display()
                ),
                hint: "only attested output is committed; review it with `cordon diff`".into(),
            });
        }
        let rel = c.path.to_string_lossy().into_owned();
        if c.kind == Kind::Deleted {
            git(
                project,
                &index,
                &["update-index", "--force-remove", "--", &rel],
                None,
            )?;
            continue;
        }
        let from = upper.join(&c.path);
        let md = std::fs::symlink_metadata(&from)
            .map_err(|e| Error::io(format!("inspect {}", from.display()), e))?;
        let (mode, blob) = if md.file_type().is_symlink() {
            let target = std::fs::read_link(&from)
                .map_err(|e| Error::io(format!("read {}", from.display()), e))?;
            let bytes = target.to_string_lossy().into_owned().into_bytes();
            (
                "120000",
                git(
                    project,
                    &index,
                    &["hash-object", "-w", "--stdin"],
                    Some(&bytes),
                )?,
            )
        } else if md.is_file() {
            let mode = if md.permissions().mode() & 0o111 != 0 {
                "100755"
            } else {
                "100644"
            };
            let path = from.to_string_lossy().into_owned();
            (
                mode,
                git(
                    project,
                    &index,
                    &["hash-object", "-w", "--no-filters", "--", &path],
                    None,
                )?,
            )
        } else {
            // Directories come with their files.
            continue;
        };
        git(
            project,
            &index,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("{mode},{blob},{rel}"),
            ],
            None,
        )?;
    }
    let tree = git(project, &index, &["write-tree"], None)?;
    let env_digest = crate::audit::digest(attestation)
        .map(|(_, sha)| sha)
        .map_err(|e| Error::io(format!("read {}", attestation.display()), e))?;
    let message = format!(
        "cordon session {} ({})\n\nThe agent's changes from `{}` in profile {}.\n\n\
         Cordon-Session: {}\nCordon-Attestation: sha256:{env_digest} ({})\n",
        record.id,
        record.command.join(" "),
        record
            .command
            .first()
            .map(String::as_str)
            .unwrap_or_default(),
        record.profile,
        record.id,
        attestation.display()
    );
    let commit = git(
        project,
        &index,
        &["commit-tree", &tree, "-p", &head, "-F", "-"],
        Some(message.as_bytes()),
    )?;
    git(project, &index, &["branch", branch, &commit], None)?;
    Ok(Committed { commit, refused })
}

/// Removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_verifies_and_any_change_fails() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("out.txt"), "result").unwrap();
        let (_, sha) = crate::audit::digest(&t.path().join("out.txt")).unwrap();
        let st = json!({ "subject": [{ "name": "out.txt", "digest": { "sha256": sha } }] });
        let key = cordon_audit::HostKey::from_seed([3; 32]);
        let env = sign(&key, &st).unwrap();
        let bytes = serde_json::to_vec(&env).unwrap();
        let v = verify(&bytes, &key.public_hex(), Some(t.path())).unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.checked, 1);
        std::fs::write(t.path().join("out.txt"), "other").unwrap();
        let v = verify(&bytes, &key.public_hex(), Some(t.path())).unwrap();
        assert!(
            v.problems[0].contains("out.txt: changed"),
            "{:?}",
            v.problems
        );
        let mut forged = env.clone();
        forged.payload = cordon_detect::check::base64_encode(br#"{"subject":[]}"#);
        let v = verify(
            &serde_json::to_vec(&forged).unwrap(),
            &key.public_hex(),
            None,
        )
        .unwrap();
        assert!(v.problems[0].contains("no signature"), "{:?}", v.problems);
        let other = cordon_audit::HostKey::from_seed([4; 32]).public_hex();
        assert!(!verify(&bytes, &other, None).unwrap().problems.is_empty());
        // DSSE's PAE, as the spec writes it.
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab".to_vec());
    }
}
