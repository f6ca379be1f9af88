//! The agent's own pty: interactive shells and TUIs through the relay.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::termios::{self, LocalModes, Winsize};

use crate::both;
use crate::suite::harness::cordon_bin;

pub(crate) struct Term {
    master: std::fs::File,
    pub(crate) slave: OwnedFd,
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Term {
    pub(crate) fn open(rows: u16, cols: u16) -> Term {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let m = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&m).unwrap();
        unlockpt(&m).unwrap();
        let name = ptsname(&m, Vec::new()).unwrap();
        let slave = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        size(m.as_fd(), rows, cols);
        let master = std::fs::File::from(m);
        let mut reader = master.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Term {
            master,
            slave,
            rx,
            seen: String::new(),
        }
    }

    pub(crate) fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits until the output contains `want`; returns (and forgets)
    /// everything up to and including it.
    pub(crate) fn until(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(i) = self.seen.find(want) {
                return self.seen.drain(..i + want.len()).collect();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!(
                    "timed out waiting for {want:?}; output so far:\n{}",
                    self.seen
                ),
            }
        }
    }

    pub(crate) fn expect(&mut self, want: &str) {
        self.until(want);
    }
}

fn size(fd: impl AsFd, rows: u16, cols: u16) {
    termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
}

both!(pty_relays_io_size_and_restores_the_terminal, |env| {
    let mut t = Term::open(40, 100);
    let before = termios::tcgetattr(&t.slave).unwrap();
    assert!(before.local_modes.contains(LocalModes::ICANON));
    let stdio = || std::process::Stdio::from(t.slave.try_clone().unwrap());
    let mut child = env
        .command("setsid", ["-c", cordon_bin(), "run", "--", "sh"])
        .env("TERM", "xterm")
        .env("PS1", "$ ")
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap();
    t.send("stty size; tty; test -t 0 && echo IS-A-TTY\n");
    t.expect("40 100");
    t.expect("/dev/pts/0");
    t.expect("IS-A-TTY");
    // Resizing the outer terminal reaches the agent (SIGWINCH relay).
    size(t.master.as_fd(), 50, 120);
    std::thread::sleep(Duration::from_millis(200));
    t.send("stty size\n");
    t.expect("50 120");
    // A full-screen editor works through the relay.
    if std::path::Path::new("/usr/bin/vi").exists() {
        t.send("vi /tmp/note\n");
        std::thread::sleep(Duration::from_millis(300));
        t.send("ihello from vi\x1b");
        std::thread::sleep(Duration::from_millis(100));
        t.send(":wq\r");
        t.send("cat /tmp/note\n");
        t.expect("hello from vi");
    } else {
        crate::suite::harness::skip(module_path!(), "(vi part) /usr/bin/vi is not installed");
    }
    // Ctrl-C goes to the agent's foreground job, not to cordon.
    t.send("sleep 30\n");
    std::thread::sleep(Duration::from_millis(200));
    t.send("\x03");
    t.send("echo after-ctrl-c\n");
    t.expect("after-ctrl-c");
    t.send("exit 5\n");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(5), "{}", t.seen);
    // cordon put the terminal back the way it found it.
    let after = termios::tcgetattr(&t.slave).unwrap();
    assert!(after
        .local_modes
        .contains(LocalModes::ICANON | LocalModes::ECHO));
    assert_eq!(after.local_modes, before.local_modes);
    assert_eq!(after.input_modes, before.input_modes);
});

both!(redirected_output_keeps_plain_newlines, |env| {
    // stdin is a terminal (so the agent gets a pty) but stdout is a pipe:
    // the output must not gain "\r\n" line endings.
    let t = Term::open(24, 80);
    let o = env
        .command(
            "setsid",
            ["-c", cordon_bin(), "run", "--", "printf", "a\\nb\\n"],
        )
        .stdin(std::process::Stdio::from(t.slave.try_clone().unwrap()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"a\nb\n");
});

both!(agent_never_holds_the_users_terminal, |env| {
    // stdin is not a terminal, stdout and stderr are: the agent still gets
    // its own pty, so it cannot read what the user types into theirs.
    let mut t = Term::open(24, 80);
    let out = || std::process::Stdio::from(t.slave.try_clone().unwrap());
    let mut child = env
        .command(
            "setsid",
            [
                cordon_bin(),
                "run",
                "--",
                "sh",
                "-c",
                "echo ready; timeout 2 sh -c 'read x <&2; echo got:$x'; echo done",
            ],
        )
        .stdin(std::process::Stdio::null())
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap();
    t.expect("ready");
    t.send("typed-by-user\n");
    let text = t.until("done");
    assert!(!text.contains("got:typed-by-user"), "{text}");
    assert!(child.wait().unwrap().success());
});
