//! Detection during a session: decoy credentials in the fake home, a
//! watch on them, the detection rules applied to every audit record as it
//! is written, and what a rule's action does (a Detection Finding and a
//! notice; for `contain`, the sandbox is killed).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cordon_audit::rules::{Action, CanaryCheck, Engine, Finding, RuleSet};
use cordon_audit::{AuditLog, Class, Event, Severity};
use cordon_policy::profile::Profile;
use cordon_sandbox::Mount;
use serde_json::{json, Value};

use crate::Error;

/// The user's rules file in cordon's configuration directory.
pub const RULES_FILE: &str = "rules.toml";

/// The rules in force for `profile`: the built-in ones, the user's file
/// (which adds rules and replaces built-in ones by id), less what the
/// profile disables, with the profile's `contain` list applied.
pub fn rules(config: &Path, profile: &Profile) -> Result<RuleSet, Error> {
    let mut set = RuleSet::builtin().map_err(Error::Audit)?;
    let path = config.join(RULES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => set.merge(
            RuleSet::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    }
    let unknown_disable = set.disable(&profile.audit.disable);
    let unknown_contain = set.contain(&profile.audit.contain);
    for (list, unknown) in [("disable", unknown_disable), ("contain", unknown_contain)] {
        if let Some(id) = unknown.first() {
            return Err(Error::Usage(format!(
                "profile {:?}: [audit] {list} names rule {id:?}, which does not exist \
                 (`cordon audit rules` lists them)",
                profile.name
            )));
        }
    }
    Ok(set)
}

/// A decoy credential file: where the agent sees it and the host file
/// behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoy {
    /// The path inside the sandbox.
    pub inside: PathBuf,
    /// The host file (in the session directory), bound read-only there.
    pub host: PathBuf,
}

/// The session's decoys and the canary values they hold.
#[derive(Debug, Clone, Default)]
pub struct Decoys {
    /// The files.
    pub files: Vec<Decoy>,
    /// The values, as the rules' canary check looks for them.
    pub values: Vec<Vec<u8>>,
}

const UPPER_B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_from(alphabet: &[u8], n: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| Error::io("read random bytes for the decoys", e.into()))?;
    }
    // 256 is a multiple of both alphabets' sizes (32) or close enough that
    // the bias (62) does not matter for a decoy.
    Ok(bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

impl Decoys {
    /// Writes this session's decoys into `session_dir/decoys`: fresh values
    /// each time, at the usual credential paths of `home`, except where the
    /// profile grants the real thing.
    pub fn plant(session_dir: &Path, home: &Path, profile: &Profile) -> Result<Decoys, Error> {
        if !profile.audit.decoys {
            return Ok(Decoys::default());
        }
        let key_id = format!("AKIA{}", random_from(UPPER_B32, 16)?);
        let secret = random_from(ALNUM, 40)?;
        let token = format!("ghp_{}", random_from(ALNUM, 36)?);
        // Files that tools read only when asked to use them: not ~/.netrc,
        // which git over HTTPS and Python's requests (pip) read on their
        // own, so every fetch would raise a false alarm.
        let files: [(&str, String); 2] = [
            (
                ".aws/credentials",
                format!(
                    "[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
                ),
            ),
            (
                ".git-credentials",
                format!("https://x-access-token:{token}@github.com\n"),
            ),
        ];
        let granted: Vec<&Path> = [
            &profile.home.read,
            &profile.home.write,
            &profile.home.persist,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.value.0.as_path())
        .collect();
        let dir = session_dir.join("decoys");
        crate::dirs::create_private_dir(&dir)?;
        let mut out = Decoys::default();
        for (rel, text) in files {
            let rel = Path::new(rel);
            if granted
                .iter()
                .any(|g| rel.starts_with(g) || g.starts_with(rel))
            {
                continue;
            }
            let host = dir.join(rel.to_string_lossy().replace('/', "_"));
            write_new(&host, text.as_bytes())?;
            out.files.push(Decoy {
                inside: home.join(rel),
                host,
            });
        }
        if !out.files.is_empty() {
            for v in [&key_id, &secret, &token] {
                out.values.push(v.as_bytes().to_vec());
                // DNS names arrive lower-cased.
                out.values.push(v.to_ascii_lowercase().into_bytes());
            }
        }
        Ok(out)
    }

    /// The read-only binds that put the decoys in place.
    pub fn mounts(&self) -> Vec<Mount> {
        self.files
            .iter()
            .map(|d| Mount::Bind {
                src: d.host.clone(),
                dest: d.inside.clone(),
                writable: false,
                optional: false,
                dev: false,
            })
            .collect()
    }

    /// A check for the decoys' values in every encoding cordon-detect
    /// knows (raw, base64 at each alignment, URL-encoded, hex); none
    /// without decoys. Every record is checked, and an inspected flow makes
    /// one per request, so it is one pass, not one search per form: with
    /// aho-corasick's packed (Teddy, SIMD) searcher when the forms fit it
    /// (the usual three decoys give 20 forms: 115 ns for a 900-byte
    /// record, against 1.3 µs for a DFA). Otherwise an Aho-Corasick
    /// automaton: a contiguous NFA (tens of microseconds to build) serves
    /// at once; a DFA, faster to search but milliseconds to build, is built
    /// on a thread of its own and takes over when ready, so the session's
    /// start does not wait.
    pub fn canary_check(&self) -> Result<Option<CanaryCheck>, Error> {
        if self.values.is_empty() {
            return Ok(None);
        }
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for v in &self.values {
            if v.len() < cordon_detect::MIN_CANARY {
                return Err(Error::Audit(format!(
                    "decoy value of {} bytes: too short to be a canary",
                    v.len()
                )));
            }
            for f in cordon_detect::canary_forms(v) {
                if !forms.contains(&f) {
                    forms.push(f);
                }
            }
        }
        // Teddy (SIMD) when the forms are few enough for it: ten times
        // the automaton's speed on a record, and every record is searched.
        let mut packed = aho_corasick::packed::Config::new().builder();
        packed.extend(&forms);
        if let Some(searcher) = packed.build() {
            return Ok(Some(Box::new(move |b: &[u8]| searcher.find(b).is_some())));
        }
        let build = |kind| {
            aho_corasick::AhoCorasick::builder()
                .kind(Some(kind))
                .build(&forms)
        };
        let nfa = build(aho_corasick::AhoCorasickKind::ContiguousNFA)
            .map_err(|e| Error::Audit(format!("the canary check: {e}")))?;
        let dfa: Arc<std::sync::OnceLock<aho_corasick::AhoCorasick>> = Arc::default();
        let slot = Arc::clone(&dfa);
        let forms_for_dfa = forms.clone();
        // Without the thread (none can be made), the NFA serves alone. Like
        // the supervisor's other threads, it never takes a relayed signal.
        let _ = cordon_sandbox::with_relayed_signals_blocked(|| {
            std::thread::Builder::new()
                .name("cordon-canary".into())
                .spawn(move || {
                    if let Ok(d) = aho_corasick::AhoCorasick::builder()
                        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                        .build(&forms_for_dfa)
                    {
                        let _ = slot.set(d);
                    }
                })
        });
        Ok(Some(Box::new(move |b: &[u8]| match dfa.get() {
            Some(d) => d.is_match(b),
            None => nfa.is_match(b),
        })))
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create decoy {}", path.display()), e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io(format!("write decoy {}", path.display()), e))
}

/// What a rule's containment runs before the kill: the incident response
/// of `cordon contain` (freeze, cut egress, revoke, seal evidence); returns
/// what to tell the user.
pub type Responder = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What containment has done so far.
#[derive(Default)]
pub struct Containment {
    /// A pidfd for the sandbox's init once it runs, or its pid where
    /// pidfds are not available.
    pidfd: Mutex<Option<Result<OwnedFd, i32>>>,
    /// Why the session was contained (the first rule that did it).
    reason: Mutex<Option<String>>,
    /// The incident response run before the kill, once the session has one.
    responder: std::sync::OnceLock<Responder>,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containment")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Containment {
    /// Remembers the sandbox's init (a pidfd, so a later kill can never
    /// reach a recycled pid).
    pub fn started(&self, pid: i32) {
        let fd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        *lock(&self.pidfd) = Some(fd.ok_or(pid));
        // Contained before the supervisor knew the sandbox: now it does.
        // (One lock at a time: `contain` takes reason, then pidfd.)
        let contained = lock(&self.reason).is_some();
        if contained {
            kill(lock(&self.pidfd).as_ref());
        }
    }

    /// Sets the incident response that runs before a rule's kill.
    pub fn respond_with(&self, r: Responder) {
        let _ = self.responder.set(r);
    }

    /// Runs the incident response (freeze, cut, revoke, evidence) when
    /// there is one, then kills the sandbox (init's death takes its whole
    /// pid namespace with it), and records why; returns whether this call
    /// contained it.
    fn contain(&self, why: String) -> bool {
        {
            let mut reason = lock(&self.reason);
            if reason.is_some() {
                return false;
            }
            // Set before the kill: a sandbox not known yet is killed by
            // `started` once it is.
            *reason = Some(why.clone());
        }
        if let Some(note) = self.responder.get().and_then(|r| r(&why)) {
            eprintln!("cordon: {note}");
        }
        kill(lock(&self.pidfd).as_ref());
        true
    }

    /// Kills the sandbox now (`cordon kill`), without a rule's reason.
    pub fn kill_now(&self) {
        kill(lock(&self.pidfd).as_ref());
    }

    /// Why the session was contained, if it was.
    pub fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }
}

/// SIGKILL to the sandbox's init, which takes its pid namespace with it.
fn kill(init: Option<&Result<OwnedFd, i32>>) {
    match init {
        Some(Ok(fd)) => {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
        // Init is the supervisor's child and is not reaped while the
        // session runs: its pid cannot have been reused.
        Some(Err(pid)) => {
            if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        None => {}
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes the session's audit records and applies the rules to each.
pub struct Recorder {
    log: Arc<AuditLog>,
    engine: Mutex<Engine>,
    containment: Arc<Containment>,
    findings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder writing to `log`, applying `engine`.
    pub fn new(log: Arc<AuditLog>, engine: Engine, containment: Arc<Containment>) -> Recorder {
        Recorder {
            log,
            engine: Mutex::new(engine),
            containment,
            findings: Mutex::new(Vec::new()),
        }
    }

    /// The log.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// Writes `ev`; every finding it completes is written after it, told
    /// on stderr, and acted on. A log that can no longer be written
    /// contains the session: an agent never goes on unrecorded.
    pub fn append(&self, ev: &Event) {
        let line = match self.log.append_seen(ev) {
            Ok(line) => line,
            Err(cordon_audit::Unwritten::Failed(kind)) => {
                let why = format!("the audit log cannot be written ({kind})");
                if self.containment.contain(why.clone()) {
                    eprintln!(
                        "cordon: {why}: session contained, every process in the sandbox was \
                         killed"
                    );
                }
                return;
            }
            Err(cordon_audit::Unwritten::Closed) => return,
        };
        // The line is parsed only if a rule in force needs a field of it.
        let time = if ev.time_ns == 0 {
            cordon_audit::now_ns()
        } else {
            ev.time_ns
        };
        let seen = cordon_audit::rules::Seen::new(
            ev.class,
            cordon_audit::line_seq(&line).unwrap_or(0),
            time,
            &line,
        );
        let found = lock(&self.engine).observe_seen(&seen);
        for f in found {
            self.act(&f);
        }
    }

    fn act(&self, f: &Finding) {
        // What the record says, without its time and seq.
        let described = crate::audit::describe(&f.last);
        let what = described
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join(" ");
        let r = &f.rule;
        let line = format!(
            "detection [{}] {}: {} ({}; action: {})",
            severity_name(r.severity),
            r.id,
            r.title,
            what.trim(),
            r.action.as_str()
        );
        eprintln!("cordon: {line}");
        lock(&self.findings).push(line);
        self.log.append(&finding_event(f, &what));
        if r.action == Action::Contain
            && self
                .containment
                .contain(format!("detection rule {}: {}", r.id, r.title))
        {
            eprintln!(
                "cordon: session contained: every process in the sandbox was killed (rule {})",
                r.id
            );
            self.log.append(
                &Event::new(Class::Lifecycle, 99, "Contain")
                    .severity(Severity::High)
                    .success(true)
                    .reason("contained_by_rule")
                    .message(format!(
                        "session contained by detection rule {}: every process was killed",
                        r.id
                    ))
                    .field("unmapped", json!({ "rule": r.id, "response": "kill" })),
            );
        }
    }

    /// The decoy and file watch failed: recorded, and the session is
    /// contained (it would otherwise go on with a layer silently gone).
    pub fn watch_failed(&self) {
        let why = "the decoy and file watch failed".to_owned();
        self.log.append(
            &Event::new(Class::FileSystem, 99, "Other")
                .severity(Severity::High)
                .success(false)
                .reason("file_watch_failed")
                .message(format!(
                    "{why}: decoy opens and file changes are no longer recorded"
                )),
        );
        if self.containment.contain(why.clone()) {
            eprintln!("cordon: {why}: session contained, every process in the sandbox was killed");
        }
    }

    /// The findings so far, one line each, and the rules whose findings
    /// were capped.
    pub fn findings(&self) -> Vec<String> {
        let mut out = lock(&self.findings).clone();
        for (id, n) in lock(&self.engine).suppressed() {
            out.push(format!(
                "detection rule {id} fired {n} more time(s), not recorded (at most {} per session)",
                cordon_audit::rules::MAX_FINDINGS
            ));
        }
        out
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Informational => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// The Detection Finding (2004) for `f`.
fn finding_event(f: &Finding, what: &str) -> Event {
    let r = &f.rule;
    let session = f
        .last
        .pointer("/actor/session/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let related: Vec<Value> = f
        .evidence
        .iter()
        .map(|seq| json!({ "uid": format!("{session}-{seq}") }))
        .collect();
    Event::new(Class::DetectionFinding, 1, "Create")
        .severity(r.severity)
        .message(format!("{}: {}", r.title, what.trim()))
        .field(
            "finding_info",
            json!({
                "uid": format!("{session}-{}-{}", r.id, f.nth),
                "title": r.title,
                "desc": r.description,
                "types": [r.id],
                "analytic": { "uid": r.id, "name": r.id, "type_id": 1, "type": "Rule" },
                "related_events": related,
            }),
        )
        .field("status_id", 1)
        .field(
            "unmapped",
            json!({ "action": r.action.as_str(), "count": f.count, "evidence_seq": f.evidence }),
        )
}

/// What the session watches with inotify, read by one thread: the decoy
/// credentials (opens), and in rw mode every directory of the project
/// (changes, see [`crate::filewatch`]). Two instances, so that a flood of
/// project events overflowing one queue can never drop a decoy open.
/// Watching starts before the sandbox exists, so the agent's very first
/// command is seen; building the view opens no decoy.
///
/// Closing an inotify instance that has watches waits for a kernel grace
/// period (10–20 ms here): [`SessionWatch::hold`] is handed to the
/// sandbox's init, which keeps it until cordon has exited, so the
/// supervisor's own close is not the last one and costs nothing.
#[derive(Debug)]
pub struct SessionWatch {
    decoys: Option<Arc<OwnedFd>>,
    project: Option<Arc<OwnedFd>>,
    wake: OwnedFd,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Opens recorded per decoy file; more are counted, not itemised.
const MAX_OPENS: u32 = 100;

/// How long the end of a session waits for the watch to record what is
/// queued.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A decoy file under watch: its watch, the path the agent sees, opens so
/// far.
struct Watched {
    wd: i32,
    inside: PathBuf,
    opens: u32,
}

fn new_inotify() -> std::io::Result<Arc<OwnedFd>> {
    use rustix::fs::inotify;
    Ok(Arc::new(inotify::init(
        inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK,
    )?))
}

impl SessionWatch {
    /// Starts watching `decoys` and, in rw mode, the project at `rw`,
    /// recording through `rec`. A project that cannot be watched is a
    /// warning (returned), not a failure; decoys that cannot be watched
    /// are an error. `None` when there is nothing to watch.
    pub fn start(
        decoys: &Decoys,
        rw: Option<&Path>,
        rec: Arc<Recorder>,
    ) -> std::io::Result<(Option<SessionWatch>, Option<String>)> {
        use rustix::event::{eventfd, EventfdFlags};
        use rustix::fs::inotify;
        let mut watched = Vec::new();
        let decoy_fd = if decoys.files.is_empty() {
            None
        } else {
            let fd = new_inotify()?;
            for d in &decoys.files {
                let wd = inotify::add_watch(&*fd, &d.host, inotify::WatchFlags::OPEN)?;
                watched.push(Watched {
                    wd,
                    inside: d.inside.clone(),
                    opens: 0,
                });
            }
            Some(fd)
        };
        let mut warning = None;
        let (project_fd, mut project) = match rw {
            Some(root) => {
                let started = new_inotify().and_then(|fd| {
                    crate::filewatch::Watcher::new(Arc::clone(&fd), root, &rec).map(|w| (fd, w))
                });
                match started {
                    Ok((fd, w)) => (Some(fd), Some(w)),
                    Err(e) => {
                        warning = Some(format!(
                            "file changes in the project will not be recorded ({e})"
                        ));
                        (None, None)
                    }
                }
            }
            None => (None, None),
        };
        if decoy_fd.is_none() && project_fd.is_none() {
            return Ok((None, warning));
        }
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let stop = wake.try_clone()?;
        let (dfd, pfd) = (decoy_fd.clone(), project_fd.clone());
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cordon-watch".into())
            .spawn(move || {
                use rustix::event::{poll, PollFd, PollFlags};
                let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
                loop {
                    let mut fds = vec![PollFd::new(&stop, PollFlags::IN)];
                    fds.extend(dfd.iter().map(|f| PollFd::new(&**f, PollFlags::IN)));
                    fds.extend(pfd.iter().map(|f| PollFd::new(&**f, PollFlags::IN)));
                    let _ = poll(&mut fds, None);
                    let stopping = !fds[0].revents().is_empty();
                    // A bug here must not leave the session unwatched and
                    // unsaid: it is recorded and contains the session.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if let Some(fd) = &dfd {
                            for ev in crate::filewatch::read_all(fd, &mut buf) {
                                opened(&ev, &mut watched, &rec);
                            }
                        }
                        if let (Some(fd), Some(p)) = (&pfd, project.as_mut()) {
                            let batch = crate::filewatch::read_all(fd, &mut buf);
                            if !batch.is_empty() {
                                p.handle(&rec, batch);
                            }
                        }
                    }));
                    if handled.is_err() {
                        rec.watch_failed();
                        break;
                    }
                    if stopping {
                        if let Some(p) = project.as_mut() {
                            p.flush(&rec);
                        }
                        break;
                    }
                }
                let _ = tx.send(());
            })?;
        Ok((
            Some(SessionWatch {
                decoys: decoy_fd,
                project: project_fd,
                wake,
                done,
                thread: Some(thread),
            }),
            warning,
        ))
    }

    /// The inotify instances, for the sandbox's init to hold.
    pub fn hold(&self) -> Vec<BorrowedFd<'_>> {
        self.decoys
            .iter()
            .chain(self.project.iter())
            .map(|f| f.as_fd())
            .collect()
    }

    /// Records what is queued and stops; a warning when that took longer
    /// than it may (the rest is not recorded).
    pub fn finish(mut self) -> Option<String> {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        match self.done.recv_timeout(FINISH_WAIT) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                None
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Left running; whatever it records after the log closes
                // is counted as lost.
                self.thread.take();
                Some(format!(
                    "the file watch was still recording after {} s: later file events of this \
                     session are not on the record",
                    FINISH_WAIT.as_secs()
                ))
            }
        }
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

fn opened(ev: &crate::filewatch::Raw, watched: &mut [Watched], rec: &Recorder) {
    if !ev.flags.contains(rustix::fs::inotify::ReadFlags::OPEN) {
        return;
    }
    let Some(w) = watched.iter_mut().find(|w| w.wd == ev.wd) else {
        return;
    };
    w.opens += 1;
    if w.opens > MAX_OPENS {
        return;
    }
    rec.append(
        &Event::new(Class::FileSystem, 14, "Open")
            .severity(Severity::Medium)
            .message(format!(
                "decoy credential file {} opened",
                w.inside.display()
            ))
            .field(
                "file",
                json!({
                    "path": w.inside.to_string_lossy(),
                    "name": w.inside.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "type": "file",
                }),
            )
            .field("unmapped", json!({ "decoy": true, "opens": w.opens })),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_are_found_in_every_form_and_nothing_else() {
        let key = b"AKIAQ2W3E4R5T6Y7U8I9".to_vec();
        let d = Decoys {
            files: Vec::new(),
            values: vec![key.clone(), key.to_ascii_lowercase()],
        };
        let check = d.canary_check().unwrap().unwrap();
        let b64 = cordon_detect::check::base64_encode(&key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        for hay in [
            format!("curl -d k={} x", String::from_utf8_lossy(&key)),
            format!("echo {b64}"),
            format!("xx{b64}yy"),
            format!("{hex}.evil.test"),
            "akiaq2w3e4r5t6y7u8i9.evil.test".to_owned(),
        ] {
            assert!(check(hay.as_bytes()), "{hay}");
        }
        assert!(!check(b"AKIAQ2W3E4R5T6Y7U8I8 is another key"));
        assert!(Decoys::default().canary_check().unwrap().is_none());
        let short = Decoys {
            files: Vec::new(),
            values: vec![b"abc".to_vec()],
        };
        assert!(short.canary_check().is_err());
    }
}
