//! Test environments: a scratch root with a fake host home full of secrets, a
//! project, and cordon's XDG directories, owned by the uid the test runs as.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const NOBODY: u32 = 65534;

/// Which uid runs cordon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The test's own uid (root in CI).
    Me,
    /// uid/gid 65534 through `setpriv`, as users run cordon.
    Nobody,
}

/// A canary value planted in the host environment and home.
pub const CANARY: &str = "cordon-canary-7f3a9c1e";

pub struct Env {
    _tmp: tempfile::TempDir,
    pub who: As,
    pub home: PathBuf,
    pub project: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

pub fn cordon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cordon")
}

fn am_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why this environment cannot run, if it cannot (the test then skips visibly).
pub fn skip_reason(who: As) -> Option<String> {
    if who == As::Nobody && !am_root() {
        return Some("running as uid 65534 needs the tests to run as root (setpriv)".into());
    }
    let probe = Command::new("unshare").args(["-Ur", "true"]).output();
    match probe {
        Ok(o) if o.status.success() => None,
        _ => Some("unprivileged user namespaces are not available on this host".into()),
    }
}

/// Prints a skip notice that the test harness does not capture (libtest
/// swallows `eprintln!` of passing tests; a skip must stay visible).
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// Skips the test (visibly) when the environment cannot run.
#[macro_export]
macro_rules! need {
    ($who:expr) => {
        if let Some(why) = $crate::suite::harness::skip_reason($who) {
            $crate::suite::harness::skip(module_path!(), &why);
            return;
        }
    };
}

/// Defines a test body once and runs it as root and as uid 65534.
#[macro_export]
macro_rules! both {
    ($name:ident, |$env:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($env: &$crate::suite::harness::Env) $body
            #[test]
            fn as_root() {
                $crate::need!($crate::suite::harness::As::Me);
                body(&$crate::suite::harness::Env::new($crate::suite::harness::As::Me));
            }
            #[test]
            fn as_nobody() {
                $crate::need!($crate::suite::harness::As::Nobody);
                body(&$crate::suite::harness::Env::new($crate::suite::harness::As::Nobody));
            }
        }
    };
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

impl Env {
    pub fn new(who: As) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("cordon-e2e-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().to_path_buf();
        let home = root.join("home");
        let project = root.join("project");
        // The fake *host* home, with the things an agent must never see.
        write(
            &home.join(".ssh/id_ed25519"),
            &format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n"),
        );
        write(
            &home.join(".aws/credentials"),
            &format!("[default]\naws_secret_access_key = {CANARY}\n"),
        );
        write(&home.join(".bashrc"), "# host bashrc\n");
        write(
            &home.join(".gitconfig"),
            "[user]\n\tname = Test User\n\temail = t@example.invalid\n",
        );
        // The project.
        write(&project.join("README.md"), "hello\n");
        write(&project.join("src/main.rs"), "fn main() {}\n");
        write(&project.join(".env"), &format!("API_KEY={CANARY}\n"));
        write(&project.join("certs/server.pem"), &format!("{CANARY}\n"));
        write(&project.join(".git/config"), "[core]\n\tbare = false\n");
        write(&project.join(".git/HEAD"), "ref: refs/heads/main\n");
        std::fs::create_dir_all(project.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(project.join(".git/objects")).unwrap();
        std::fs::create_dir_all(project.join(".git/refs")).unwrap();
        let config = root.join("xdg-config");
        let state = root.join("xdg-state");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        if who == As::Nobody {
            let st = Command::new("chown")
                .args(["-R", &format!("{NOBODY}:{NOBODY}")])
                .arg(&root)
                .status()
                .unwrap();
            assert!(st.success());
        }
        Env {
            _tmp: tmp,
            who,
            home,
            project,
            config,
            state,
        }
    }

    /// A `cordon` command with a clean, controlled environment that still
    /// carries host "secrets" in variables, run as the environment's uid.
    pub fn cordon<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(cordon_bin(), args)
    }

    /// Any program, as the environment's uid, with the controlled environment.
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = match self.who {
            As::Me => Command::new(program),
            As::Nobody => {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--",
                    program,
                ]);
                c
            }
        };
        c.args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("USER", "tester")
            .env("XDG_CONFIG_HOME", &self.config)
            .env("XDG_STATE_HOME", &self.state)
            .env("AWS_SECRET_ACCESS_KEY", CANARY)
            .env("GITHUB_TOKEN", CANARY)
            .env("SOME_UNLISTED_VAR", "plain")
            .current_dir(&self.project)
            .stdin(Stdio::null());
        c
    }

    /// `cordon run [extra...] -- sh -c SCRIPT` with pipes.
    pub fn sh(&self, extra: &[&str], script: &str) -> Output {
        let mut args: Vec<&str> = vec!["run", "--no-tty"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        self.cordon(args).output().unwrap()
    }

    /// Asserts that `cordon run --no-tty ARGS -- true` is refused: exit 125
    /// and `says` in the message.
    #[track_caller]
    pub fn refused(&self, args: &[&str], says: &str) {
        let mut all = vec!["run", "--no-tty"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        let o = self.cordon(all).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: expected {says:?} in: {err}");
    }

    /// Writes a user profile named `name`.
    pub fn profile(&self, name: &str, text: &str) -> PathBuf {
        let p = self
            .config
            .join("cordon/profiles")
            .join(format!("{name}.toml"));
        write(&p, text);
        self.own(&self.config);
        p
    }

    /// Gives `path` (recursively) to the environment's user: files a test
    /// makes as root must be the user's for a run as uid 65534.
    pub fn own(&self, path: &Path) {
        if self.who == As::Nobody {
            let st = Command::new("chown")
                .args(["-R", &format!("{NOBODY}:{NOBODY}")])
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success(), "chown {}", path.display());
        }
    }

    /// The most recent session's directory.
    pub fn last_session(&self) -> PathBuf {
        let dir = self.state.join("cordon/sessions");
        // Ids order by the second; within one, the record's start time.
        let started = |p: &PathBuf| {
            ["final.json", "session.json"]
                .iter()
                .find_map(|f| std::fs::read_to_string(p.join(f)).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["started_ms"].as_u64())
                .unwrap_or(0)
        };
        let mut ids: Vec<(String, u64, PathBuf)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name: String = p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .chars()
                    .take(15)
                    .collect();
                (name, started(&p), p)
            })
            .collect();
        ids.sort();
        ids.pop().expect("a session directory").2
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}
