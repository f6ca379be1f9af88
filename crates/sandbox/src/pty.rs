//! Stage 7 (supervisor side): the agent's own pseudo-terminal.
//!
//! The master stays with the supervisor, the slave becomes the agent's
//! controlling terminal in a new session and replaces each of its standard
//! descriptors that is a terminal; redirected ones (files, pipes) are passed
//! through. The agent therefore never holds the user's real terminal: it
//! cannot read it behind cordon's back, inject input into it (TIOCSTI is also
//! denied by seccomp) or change its settings.

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

/// Which of the standard descriptors 0–2 are terminals.
pub(crate) fn std_ttys() -> [bool; 3] {
    // SAFETY: isatty only inspects the descriptor; 0–2 are borrowed for the
    // duration of the call (a closed one simply is not a terminal).
    [0, 1, 2].map(|fd| termios::isatty(unsafe { BorrowedFd::borrow_raw(fd) }))
}

/// The first standard descriptor that is a terminal, if any.
pub(crate) fn first_tty() -> Option<BorrowedFd<'static>> {
    let ttys = std_ttys();
    // SAFETY: as in `std_ttys`; the standard descriptors stay open for the
    // life of the process (only dup2 replaces them).
    (0..3)
        .find(|&i| ttys[i])
        .map(|i| unsafe { BorrowedFd::borrow_raw(i as i32) })
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
    if let Ok(t) = termios::tcgetattr(term) {
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
