//! The control socket of a running session (`control.sock` in its
//! directory) and the incident-response actions behind it: `cordon
//! contain`, `resume`, `kill`, `block` and `ps` talk to the supervisor
//! through it.
//!
//! Protocol: the client sends one JSON request on a line; the supervisor
//! answers with JSON lines, the last one holding `"done": true` (and
//! `"error"` when the request failed).
//!
//! Threat notes: the socket is in the session's directory (0700, outside
//! every sandbox's view) and is 0600. A peer must have the supervisor's uid
//! (or be root), and a peer inside the sandbox's pid namespace is refused
//! even so: the sandbox can never contain, resume or kill itself, nor
//! unblock anything.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::record::Record;
use crate::Error;

/// The socket's name in the session's directory.
pub const SOCKET: &str = "control.sock";

/// How long a freeze waits to see every process stopped. A process that
/// is not stopped by then is in the kernel (an exec held by the exec audit,
/// say): its stop takes effect when it returns to user space, and its
/// egress is cut meanwhile.
const FREEZE_WITHIN: Duration = Duration::from_millis(50);

/// How much longer a containment asked for from the command line waits,
/// once egress is cut and credentials revoked, to see the processes left
/// over stop: on a loaded machine a woken process may take a while to be
/// scheduled and reach its stop. A rule's containment does not wait (the
/// process it holds stops only once the rule lets it go).
pub const FREEZE_CONFIRM: Duration = Duration::from_secs(2);

/// A request to a session's supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The session's live state.
    Status,
    /// Freeze, cut egress, revoke credentials, seal evidence.
    Contain {
        /// Why (recorded in the audit log and the bundle).
        reason: String,
    },
    /// Thaw and let the profile decide egress again.
    Resume,
    /// Contain (if not yet), kill every process, drop the overlay.
    Kill {
        /// Why.
        reason: String,
    },
    /// Refuse a host from now on.
    Block {
        /// A host pattern (`host`, `*.domain`).
        host: String,
    },
}

#[derive(Debug, Default)]
struct State {
    init: Option<i32>,
    /// A pidfd for init: a request after it exited is refused, never sent
    /// to whatever process has its pid now.
    init_fd: Option<OwnedFd>,
    frozen: bool,
    /// Whether a freeze sent SIGSTOP (resume then sends SIGCONT).
    signalled: bool,
    /// Whether a freeze wrote the cgroup's `cgroup.freeze` (resume then
    /// thaws it).
    cgroup_frozen: bool,
    contained: Option<String>,
    bundle: Option<PathBuf>,
    /// Whether the bundle holds the whole overlay (else `kill` keeps it).
    upper_kept: bool,
    eradicate: bool,
}

/// What the control socket acts on: the parts of a running session.
#[derive(Debug)]
pub struct Controls {
    record: Record,
    dir: PathBuf,
    state_dir: PathBuf,
    home: PathBuf,
    profile: cordon_policy::Profile,
    store: crate::Store,
    net: Option<cordon_net::control::Control>,
    broker: Option<Arc<crate::broker::Broker>>,
    audit: Arc<crate::detection::Recorder>,
    containment: Arc<crate::detection::Containment>,
    freezer: Freezer,
    state: Mutex<State>,
    /// Set while a containment runs: a rule that fires on its own records
    /// (on the same thread) must not wait for it.
    containing: std::sync::atomic::AtomicBool,
    /// The system block list's identity when last read (inode, size,
    /// modification time).
    system_blocks: Mutex<Option<(u64, u64, i64, i64)>>,
}

/// The parts [`Controls::new`] takes.
#[derive(Debug)]
pub struct Parts {
    /// The session's record as launched.
    pub record: Record,
    /// The session's directory.
    pub dir: PathBuf,
    /// cordon's state directory.
    pub state_dir: PathBuf,
    /// The fake home's path inside the sandbox.
    pub home: PathBuf,
    /// The effective profile (for the evidence).
    pub profile: cordon_policy::Profile,
    /// The sessions.
    pub store: crate::Store,
    /// The egress engine's controls.
    pub net: Option<cordon_net::control::Control>,
    /// The session's credentials.
    pub broker: Option<Arc<crate::broker::Broker>>,
    /// The audit log.
    pub audit: Arc<crate::detection::Recorder>,
    /// Kills the sandbox.
    pub containment: Arc<crate::detection::Containment>,
    /// How the sandbox is frozen.
    pub freezer: Freezer,
}

/// How a containment freezes the sandbox.
#[derive(Debug, Clone)]
pub enum Freezer {
    /// `cgroup.freeze` of the sandbox's own cgroup.
    Cgroup(cordon_sandbox::cgroup::Cgroup),
    /// SIGSTOP to every process of its pid namespace; why no cgroup.
    Signals(String),
}

impl Freezer {
    /// What `cordon show` and the evidence say of it.
    pub fn describe(&self) -> Value {
        match self {
            Freezer::Cgroup(cg) => json!({ "kind": "cgroup", "cgroup": cg.path() }),
            Freezer::Signals(why) => json!({ "kind": "signals", "no_cgroup": why }),
        }
    }
}

/// What one freeze did, and how.
struct Freeze {
    result: std::io::Result<cordon_sandbox::freeze::Frozen>,
    /// Whether `cgroup.freeze` was (or may have been) written.
    cgroup: bool,
    /// Whether SIGSTOP was sent.
    signals: bool,
    /// Why the cgroup was not enough, when it was not.
    note: Option<String>,
}

impl Freeze {
    /// What the audit record's `freezer` says.
    fn how(&self) -> &'static str {
        match (self.cgroup, self.signals) {
            (true, true) => "cgroup+signals",
            (true, false) => "cgroup",
            _ => "signals",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Controls {
    /// Controls for a session.
    pub fn new(p: Parts) -> Arc<Controls> {
        Arc::new(Controls {
            record: p.record,
            dir: p.dir,
            state_dir: p.state_dir,
            home: p.home,
            profile: p.profile,
            store: p.store,
            net: p.net,
            broker: p.broker,
            audit: p.audit,
            containment: p.containment,
            freezer: p.freezer,
            state: Mutex::new(State::default()),
            containing: std::sync::atomic::AtomicBool::new(false),
            system_blocks: Mutex::new(None),
        })
    }

    /// Applies the system block list again when it changed since the last
    /// look (every second, from the control thread): `cordon block
    /// --system` reaches every user's running sessions.
    fn refresh_system_blocks(&self) {
        use std::os::unix::fs::MetadataExt;
        let Some(net) = &self.net else { return };
        let path = Path::new(crate::blocklist::SYSTEM);
        let now = std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        {
            let mut seen = lock(&self.system_blocks);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match crate::blocklist::load_system(path) {
            Ok(list) => {
                for p in list {
                    if net.block(p.clone()) {
                        self.audit.append(&crate::audit::response(
                            "block",
                            0,
                            format!("{p} blocked for this session (the system block list)"),
                            json!({ "host": p.to_string(), "list": crate::blocklist::SYSTEM }),
                        ));
                    }
                }
            }
            // An untrustworthy system list is not applied, and the audit
            // log says so.
            Err(e) => self.audit.append(&crate::audit::response(
                "block",
                0,
                format!("the system block list was not applied: {e}"),
                json!({ "list": crate::blocklist::SYSTEM }),
            )),
        }
    }

    /// The sandbox's init runs (host pid).
    pub fn started(&self, init: i32) {
        let fd = rustix::process::Pid::from_raw(init).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let mut st = lock(&self.state);
        st.init = Some(init);
        st.init_fd = fd;
    }

    /// The sandbox's init, while it runs.
    fn running_init(&self) -> Result<i32, Error> {
        let st = lock(&self.state);
        let init = st.init.ok_or_else(|| {
            Error::Usage(format!(
                "session {}'s agent has not started yet; try again",
                self.record.id
            ))
        })?;
        if let Some(fd) = &st.init_fd {
            use rustix::event::{poll, PollFd, PollFlags, Timespec};
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // A pidfd is readable once its process has exited.
            if poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0) {
                return Err(Error::Usage(format!(
                    "session {}'s sandbox has ended",
                    self.record.id
                )));
            }
        }
        Ok(init)
    }

    /// Why the session was contained through the socket, if it was.
    pub fn contained(&self) -> Option<String> {
        lock(&self.state)
            .contained
            .as_ref()
            .map(|why| format!("`cordon contain` ({why})"))
    }

    /// Whether `cordon kill` asked for the session's ephemeral state to go.
    pub fn eradicate(&self) -> bool {
        lock(&self.state).eradicate
    }

    /// The evidence bundle sealed, if one was.
    pub fn bundle(&self) -> Option<PathBuf> {
        lock(&self.state).bundle.clone()
    }

    fn status(&self) -> Value {
        let st = lock(&self.state);
        json!({
            "session": self.record.id.as_str(),
            "init": st.init,
            "frozen": st.frozen,
            "freezer": self.freezer.describe(),
            "contained": st.contained,
            "bundle": st.bundle,
            "egress_cut": self.net.as_ref().map(cordon_net::control::Control::is_cut),
            "flows_open": self.net.as_ref().map(|n| n.open_flows().len()),
        })
    }

    /// Freezes every process, cuts egress, revokes every credential, then
    /// seals the evidence. Processes not seen stopped within the first
    /// freeze are waited for up to `confirm` more once egress is cut and
    /// credentials revoked. `reply` gets a line once the session is
    /// contained (with the timings) and one for the bundle.
    pub fn contain(
        &self,
        reason: &str,
        by: u32,
        confirm: Duration,
        reply: &mut dyn FnMut(Value),
    ) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.containing.swap(true, Ordering::SeqCst) {
            return Err(Error::Usage(format!(
                "session {} is being contained already",
                self.record.id
            )));
        }
        let r = self.contain_now(reason, by, confirm, reply);
        self.containing.store(false, Ordering::SeqCst);
        r
    }

    /// Freezes the sandbox, waiting up to `within` to see it frozen: its
    /// cgroup when it has one, else (or when the cgroup's freeze fails)
    /// SIGSTOP to its pid namespace; a process found outside the cgroup is
    /// stopped by SIGSTOP too.
    fn freeze(&self, init: i32, within: Duration) -> Freeze {
        let signals = |cgroup, note| Freeze {
            result: cordon_sandbox::freeze::freeze(init, within),
            cgroup,
            signals: true,
            note,
        };
        let Freezer::Cgroup(cg) = &self.freezer else {
            return signals(false, None);
        };
        let done = match cg.freeze(within) {
            Ok(done) => done,
            // The write may have been made (reading its outcome failed):
            // resume thaws the cgroup too.
            Err(e) => {
                return signals(
                    true,
                    Some(format!("the cgroup's freeze failed ({e}); SIGSTOP used")),
                )
            }
        };
        let members = match cordon_sandbox::freeze::members(init) {
            Ok(m) => m,
            Err(e) => {
                return Freeze {
                    result: Err(e),
                    cgroup: true,
                    signals: false,
                    note: None,
                }
            }
        };
        // The kernel says when the whole group is frozen, not which of its
        // processes are: until it does, none counts as stopped. A process
        // gone meanwhile is not outside.
        let outside = |p: i32| cg.holds(p) == Some(false);
        let (stray, inside): (Vec<i32>, Vec<i32>) = members.iter().partition(|&&p| outside(p));
        let mut frozen = if done {
            cordon_sandbox::freeze::Frozen {
                stopped: inside.len(),
                pending: Vec::new(),
            }
        } else {
            cordon_sandbox::freeze::Frozen {
                stopped: 0,
                pending: inside,
            }
        };
        if stray.is_empty() {
            return Freeze {
                result: Ok(frozen),
                cgroup: true,
                signals: false,
                note: None,
            };
        }
        // Never expected (every process of the sandbox is born in its
        // cgroup, which it cannot leave): those outside are stopped apart.
        let note = Some(format!(
            "process(es) {stray:?} were not in the sandbox's cgroup: stopped by SIGSTOP"
        ));
        let result = cordon_sandbox::freeze::freeze_where(init, within, &outside).map(|f| {
            frozen.stopped += f.stopped;
            frozen.pending.extend(f.pending);
            frozen
        });
        Freeze {
            result,
            cgroup: true,
            signals: true,
            note,
        }
    }

    fn contain_now(
        &self,
        reason: &str,
        by: u32,
        confirm: Duration,
        reply: &mut dyn FnMut(Value),
    ) -> Result<(), Error> {
        let t0 = Instant::now();
        // Contained but not frozen (a freeze or a resume that failed
        // halfway): it may be contained again.
        let refused = {
            let st = lock(&self.state);
            st.contained.clone().filter(|_| st.frozen)
        };
        if let Some(why) = refused {
            return Err(Error::Usage(format!(
                "session {} is already contained ({why}); `cordon resume` or `cordon kill` it",
                self.record.id
            )));
        }
        let init = self.running_init()?;
        {
            // This containment's bundle, not an earlier one's.
            let mut st = lock(&self.state);
            st.bundle = None;
            st.upper_kept = false;
        }
        // Every step runs whatever the one before did: a failed freeze
        // still cuts egress and revokes. No lock is held while the steps,
        // the audit records and the evidence are written (a rule that fires
        // on those records contains again on this thread).
        let mut freeze = self.freeze(init, FREEZE_WITHIN);
        let mut t_frozen = t0.elapsed();
        let flows = self
            .net
            .as_ref()
            .map(cordon_net::control::Control::open_flows)
            .unwrap_or_default();
        let cut = self.net.as_ref().map(cordon_net::control::Control::cut);
        let t_cut = t0.elapsed();
        let revoke_warnings = self
            .broker
            .as_ref()
            .map(|b| b.revoke_all())
            .unwrap_or_default();
        let revoked = self
            .broker
            .as_ref()
            .map_or(0, |b| b.leases().iter().filter(|l| l.revoked).count());
        let t_revoked = t0.elapsed();
        if !confirm.is_zero() && matches!(&freeze.result, Ok(f) if !f.pending.is_empty()) {
            let again = self.freeze(init, confirm);
            freeze = Freeze {
                cgroup: again.cgroup || freeze.cgroup,
                signals: again.signals || freeze.signals,
                note: again.note.or(freeze.note),
                result: again.result,
            };
            t_frozen = t0.elapsed();
        }
        let frozen = &freeze.result;
        let t_contained = t_frozen.max(t_revoked);
        {
            let mut st = lock(&self.state);
            st.frozen = matches!(frozen, Ok(f) if f.pending.is_empty());
            st.signalled |= freeze.signals;
            st.cgroup_frozen |= freeze.cgroup;
            st.contained = Some(reason.to_owned());
        }
        let timings = json!({
            "frozen_ms": ms(t_frozen),
            "egress_cut_ms": ms(t_cut),
            "revoked_ms": ms(t_revoked),
            "contained_ms": ms(t_contained),
        });
        let (stopped, pending, freeze_error) = match frozen {
            Ok(f) => (f.stopped, f.pending.clone(), None),
            Err(e) => (0, Vec::new(), Some(e.to_string())),
        };
        let summary = json!({
            "reason": reason,
            "freezer": freeze.how(),
            "freezer_note": freeze.note,
            "processes_stopped": stopped,
            "processes_pending": pending,
            "freeze_error": freeze_error,
            "flows_cut": cut,
            "credentials_revoked": revoked,
            "revoke_warnings": revoke_warnings,
            "timings": timings,
        });
        self.audit.append(&crate::audit::response(
            "contain",
            by,
            format!(
                "session {} contained ({reason}): {stopped} process(es) frozen{}, egress cut, \
                 {revoked} credential(s) revoked, in {:.1} ms",
                self.record.id,
                freeze_error
                    .as_ref()
                    .map(|e| format!(" (the freeze failed: {e})"))
                    .unwrap_or_default(),
                ms(t_contained)
            ),
            summary.clone(),
        ));
        let registry = self.store.with_registry(|r| {
            r.set_frozen(
                self.record.id.as_str(),
                matches!(frozen, Ok(f) if f.pending.is_empty()),
            )
        });
        let mut line = summary.clone();
        line["contained"] = json!(true);
        if let Err(e) = registry {
            line["warning"] = json!(format!("the registry was not updated: {e}"));
        }
        reply(line);
        // The evidence: the log as far as it goes now, then everything else.
        self.audit.log().tick();
        let head = self.audit.log().head();
        // The host key signed this session's audit log already: it is there.
        let sealed = crate::audit::host_key(&self.state_dir).and_then(|key| {
            crate::evidence::seal(
                &self.state_dir,
                &key,
                crate::evidence::Sources {
                    record: &self.record,
                    dir: &self.dir,
                    profile: serde_json::to_value(&self.profile).unwrap_or_default(),
                    init: Some(init),
                    frozen: matches!(frozen, Ok(f) if f.pending.is_empty()),
                    home: Some(self.home.clone()),
                    flows,
                    containment: summary,
                    audit_head: crate::audit::Head {
                        seq: head.seq,
                        hash: head.hash,
                    },
                    reason,
                    by_uid: by,
                },
            )
        });
        match sealed {
            Ok((bundle, manifest)) => {
                // Deletions (whiteouts) are not copied, and lose nothing.
                let upper_complete = !manifest.skipped.iter().any(|s| {
                    s.starts_with(&self.dir.join("upper").display().to_string())
                        && !s.ends_with(crate::evidence::DELETION)
                });
                self.audit.append(&crate::audit::response(
                    "evidence",
                    by,
                    format!(
                        "evidence sealed in {} ({} item(s))",
                        bundle.display(),
                        manifest.items.len()
                    ),
                    json!({ "bundle": bundle, "items": manifest.items.len(),
                            "skipped": manifest.skipped }),
                ));
                reply(json!({ "bundle": bundle, "items": manifest.items.len(),
                              "skipped": manifest.skipped }));
                let mut st = lock(&self.state);
                st.bundle = Some(bundle);
                st.upper_kept = upper_complete;
                Ok(())
            }
            Err(e) => Err(Error::io(
                "seal the evidence (the session is contained)",
                std::io::Error::other(e.to_string()),
            )),
        }
    }

    fn resume(&self, by: u32) -> Result<Value, Error> {
        // Not while its evidence is being sealed from the frozen sandbox.
        if self.containing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Usage(format!(
                "session {} is being contained (its evidence is being sealed); try again",
                self.record.id
            )));
        }
        let Some(why) = lock(&self.state).contained.clone() else {
            return Err(Error::Usage(format!(
                "session {} is not contained; nothing to resume",
                self.record.id
            )));
        };
        let init = self.running_init()?;
        // From the first step on, some process may run: not frozen any
        // more (a `kill` then contains again before it drops anything).
        // SIGCONT first (it drops the stops still queued for processes the
        // cgroup holds, which would otherwise take effect at the thaw),
        // then the cgroup. If a step fails the session stays contained
        // (egress cut) and resume can be asked again.
        let (signalled, cgroup_frozen) = {
            let mut st = lock(&self.state);
            st.frozen = false;
            (st.signalled, st.cgroup_frozen)
        };
        let _ = self
            .store
            .with_registry(|r| r.set_frozen(self.record.id.as_str(), false));
        let still = |what: &str, e: std::io::Error| {
            Error::io(
                format!(
                    "{what} (the session stays contained: `cordon resume` it again, or \
                     `cordon kill` it)"
                ),
                e,
            )
        };
        let mut n = cordon_sandbox::freeze::members(init).map_or(0, |m| m.len());
        if signalled {
            n = cordon_sandbox::freeze::thaw(init)
                .map_err(|e| still("send SIGCONT to the sandbox", e))?;
            lock(&self.state).signalled = false;
        }
        if let (true, Freezer::Cgroup(cg)) = (cgroup_frozen, &self.freezer) {
            cg.thaw()
                .map_err(|e| still(&format!("thaw the cgroup {}", cg.path().display()), e))?;
            lock(&self.state).cgroup_frozen = false;
        }
        if let Some(net) = &self.net {
            net.restore();
        }
        {
            let mut st = lock(&self.state);
            st.contained = None;
            st.bundle = None;
            st.upper_kept = false;
        }
        self.audit.append(&crate::audit::response(
            "resume",
            by,
            format!(
                "session {} resumed after review (contained for: {why}); revoked credentials \
                 stay revoked",
                self.record.id
            ),
            json!({ "processes": n }),
        ));
        Ok(json!({ "resumed": true, "processes": n }))
    }

    fn kill(&self, reason: &str, by: u32, reply: &mut dyn FnMut(Value)) -> Result<(), Error> {
        // Nothing to kill yet (the sandbox is being built): say so, rather
        // than report a kill that did not happen.
        self.running_init()?;
        let contained = {
            let st = lock(&self.state);
            st.contained.is_some() && st.frozen
        };
        // Contained and still frozen: that containment's evidence stands.
        // Otherwise it is contained (again) first. A containment that fails (the evidence cannot be sealed, say)
        // does not stop the kill; it keeps the overlay instead.
        let failed = if contained {
            None
        } else {
            self.contain(reason, by, FREEZE_CONFIRM, reply).err()
        };
        let eradicate = {
            let mut st = lock(&self.state);
            // Only when this containment froze everything and its bundle
            // holds the whole overlay.
            st.eradicate = st.frozen && st.bundle.is_some() && st.upper_kept;
            st.eradicate
        };
        self.audit.append(&crate::audit::response(
            "kill",
            by,
            format!(
                "session {} killed ({reason}): every process{}",
                self.record.id,
                if eradicate {
                    ", then its overlay; the evidence keeps a copy"
                } else {
                    "; its overlay is kept (the evidence does not hold all of it)"
                }
            ),
            json!({ "reason": reason, "overlay_removed": eradicate }),
        ));
        self.containment.kill_now();
        let mut line = json!({ "killed": true, "overlay_removed": eradicate });
        if let Some(e) = failed {
            line["warning"] = json!(format!("the containment before the kill failed: {e}"));
        }
        reply(line);
        Ok(())
    }

    fn block(&self, host: &str, by: u32) -> Result<Value, Error> {
        let p = crate::blocklist::parse(host)?;
        if let Some(net) = &self.net {
            net.block(p.clone());
        }
        self.audit.append(&crate::audit::response(
            "block",
            by,
            format!("{p} blocked for this session (cordon block)"),
            json!({ "host": p.to_string() }),
        ));
        Ok(json!({ "blocked": p.to_string(), "egress": self.net.is_some() }))
    }

    fn handle(&self, req: Request, by: u32, reply: &mut dyn FnMut(Value)) -> Result<(), Error> {
        match req {
            Request::Status => reply(self.status()),
            Request::Contain { reason } => self.contain(&reason, by, FREEZE_CONFIRM, reply)?,
            Request::Resume => reply(self.resume(by)?),
            Request::Kill { reason } => self.kill(&reason, by, reply)?,
            Request::Block { host } => reply(self.block(&host, by)?),
        }
        Ok(())
    }

    /// Whether `peer` may use the socket: the supervisor's uid or root, and
    /// not a process of the sandbox.
    fn admit(&self, stream: &UnixStream) -> Result<u32, String> {
        let cred = rustix::net::sockopt::socket_peercred(stream)
            .map_err(|e| format!("cannot identify the peer: {e}"))?;
        let uid = cred.uid.as_raw();
        let own = rustix::process::geteuid().as_raw();
        if uid != own && uid != 0 {
            return Err(format!("uid {uid} may not control a session of uid {own}"));
        }
        let init = lock(&self.state).init;
        if let Some(init) = init {
            let peer =
                std::fs::read_link(format!("/proc/{}/ns/pid", cred.pid.as_raw_nonzero().get()))
                    .ok();
            let sandbox = cordon_sandbox::freeze::pid_namespace(init).ok();
            if peer.is_none() || (sandbox.is_some() && peer == sandbox) {
                return Err("the session's own processes may not control it".into());
            }
        }
        Ok(uid)
    }
}

/// The control socket's thread; stopped when dropped (the socket file is
/// removed).
#[derive(Debug)]
pub struct Server {
    stop: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

/// `dir/name` as a path short enough for a socket address whatever `dir`
/// is: through the directory's descriptor in `/proc/self/fd`.
fn short_path(dir: &OwnedFd, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, Error> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {}", dir.display()), e.into()))
}

impl Server {
    /// Listens on `control.sock` in `dir` and serves `controls`.
    pub fn start(dir: &Path, controls: Arc<Controls>) -> Result<Server, Error> {
        let path = dir.join(SOCKET);
        let dfd = open_dir(dir)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(short_path(&dfd, SOCKET))
            .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("control socket", e))?;
        let stop = Arc::new(
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(|e| Error::io("control socket stop signal", e.into()))?,
        );
        let stop2 = Arc::clone(&stop);
        let spawned = cordon_sandbox::with_relayed_signals_blocked(|| {
            std::thread::Builder::new()
                .name("cordon-control".into())
                .spawn(move || serve(&listener, &stop2, &controls))
        });
        let thread = match spawned {
            Ok(Ok(t)) => t,
            Ok(Err(e)) | Err(e) => return Err(Error::io("start the control socket's thread", e)),
        };
        Ok(Server {
            stop,
            thread: Some(thread),
            path,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts requests, each served on a thread of its own (a long seal
/// never holds up `status`, `block` or `kill`), until `stop`; then waits
/// for the requests in flight (evidence being sealed is finished before the
/// session's record is).
fn serve(listener: &UnixListener, stop: &OwnedFd, controls: &Arc<Controls>) {
    let mut workers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let second = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        controls.refresh_system_blocks();
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        if poll(&mut fds, Some(&second)).is_err() {
            continue;
        }
        if !fds[1].revents().is_empty() {
            for w in workers {
                let _ = w.join();
            }
            return;
        }
        while let Ok((stream, _)) = listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let c = Arc::clone(controls);
            // The thread inherits this one's mask: the relayed signals stay
            // blocked.
            match std::thread::Builder::new()
                .name("cordon-control-req".into())
                .spawn(move || one(stream, &c))
            {
                Ok(h) => workers.push(h),
                // Out of threads: the client sees its connection close.
                Err(_) => continue,
            }
        }
        workers.retain(|w| !w.is_finished());
    }
}

fn one(stream: UnixStream, controls: &Controls) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut send = |v: Value| {
        let _ = out.write_all(format!("{v}\n").as_bytes());
    };
    let by = match controls.admit(&stream) {
        Ok(uid) => uid,
        Err(e) => {
            send(json!({ "done": true, "error": e }));
            return;
        }
    };
    let mut line = String::new();
    let read = {
        use std::io::Read;
        BufReader::new(&stream)
            .take(64 << 10)
            .read_line(&mut line)
            .map(drop)
    };
    let req = match read.map(|()| serde_json::from_str::<Request>(&line)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            send(json!({ "done": true, "error": format!("bad request: {e}") }));
            return;
        }
        Err(e) => {
            send(json!({ "done": true, "error": format!("no request: {e}") }));
            return;
        }
    };
    match controls.handle(req, by, &mut send) {
        Ok(()) => send(json!({ "done": true })),
        Err(e) => {
            // Said apart: a request refused (exit 2) or a step that failed
            // (exit 1).
            let kind = match e {
                Error::Usage(_) | Error::NotFound(_) | Error::Refused { .. } => "refused",
                _ => "failed",
            };
            send(json!({ "done": true, "error": e.to_string(), "kind": kind }));
        }
    }
}

/// Sends `req` to the session whose directory is `dir`, passing each
/// answer line to `on_line`; an answer with an error becomes the error.
pub fn request(dir: &Path, req: &Request, on_line: &mut dyn FnMut(&Value)) -> Result<(), Error> {
    let path = dir.join(SOCKET);
    let dfd = open_dir(dir)?;
    let mut s = UnixStream::connect(short_path(&dfd, SOCKET)).map_err(|e| {
        Error::io(
            format!(
                "connect to {} (is the session still running?)",
                path.display()
            ),
            e,
        )
    })?;
    let text = serde_json::to_string(req)
        .map_err(|e| Error::io("encode the request", std::io::Error::other(e)))?;
    s.write_all(format!("{text}\n").as_bytes())
        .map_err(|e| Error::io(format!("write to {}", path.display()), e))?;
    // Sealing a large overlay's evidence takes a while; a supervisor that
    // stops answering must not hang the command for ever.
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| Error::io("control socket", e))?;
    for line in BufReader::new(s).lines() {
        let line = line.map_err(|e| Error::io(format!("read from {}", path.display()), e))?;
        let v: Value = serde_json::from_str(&line).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            if v["kind"] == "failed" {
                return Err(Error::io(
                    "the session's supervisor",
                    std::io::Error::other(e.to_owned()),
                ));
            }
            return Err(Error::Refused {
                message: e.to_owned(),
                hint: "see `cordon show SESSION`".into(),
            });
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        on_line(&v);
    }
    Err(Error::io(
        format!("read from {}", path.display()),
        std::io::Error::other("the supervisor hung up without finishing"),
    ))
}
