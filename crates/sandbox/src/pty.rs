//! Stage 7 (supervisor side): the agent's own pseudo-terminal.
//!
//! The master stays with the supervisor, the slave becomes the agent's
//! controlling terminal in a new session. The agent therefore never holds the
//! user's real terminal: it cannot inject input into it (TIOCSTI is also denied
//! by seccomp) or change its settings behind cordon's back.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{self, OptionalActions, Termios};

/// A fresh pty pair.
#[derive(Debug)]
pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pty whose settings and size copy those of `term`.
pub(crate) fn open(term: BorrowedFd<'_>) -> io::Result<Pty> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if let Ok(mut t) = termios::tcgetattr(term) {
        if !termios::isatty(rustix::stdio::stdout()) {
            // Output goes to a file or pipe: no "\n" -> "\r\n" translation.
            t.output_modes.remove(termios::OutputModes::OPOST);
        }
        termios::tcsetattr(&slave, OptionalActions::Now, &t)?;
    }
    copy_winsize(term, slave.as_fd());
    Ok(Pty { master, slave })
}

/// Copies the window size of `from` to `to` (best effort: a vanished terminal
/// simply keeps the old size).
pub(crate) fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok(ws) = termios::tcgetwinsize(from) {
        let _ = termios::tcsetwinsize(to, ws);
    }
}

/// Puts a terminal in raw mode; restores the saved settings on drop, which
/// also runs while unwinding from a panic.
#[derive(Debug)]
pub(crate) struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    pub(crate) fn enter(fd: BorrowedFd<'a>) -> io::Result<RawMode<'a>> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Drain, not Flush: input typed before the agent was ready is kept.
        termios::tcsetattr(fd, OptionalActions::Drain, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}
