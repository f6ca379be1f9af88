//! Messages from the sandbox to the supervisor over the `SOCK_SEQPACKET`
//! socketpair: one JSON object per packet.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use serde::{Deserialize, Serialize};

/// A message from the sandbox's init (or the agent before `execve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// The child exists and has armed `PR_SET_PDEATHSIG`.
    Started,
    /// A non-fatal degradation the user must hear about.
    Warning {
        /// What is degraded and why.
        message: String,
    },
    /// Every stage succeeded; the agent is about to be executed.
    Ready,
    /// A setup stage failed; the sandbox exits without running the agent.
    SetupFailed(crate::StageError),
    /// `execve` of the agent failed.
    ExecFailed {
        /// The program as given.
        program: String,
        /// Why.
        message: String,
        /// 127 when not found, 126 when found but not executable.
        code: i32,
    },
    /// The agent exited; init is about to exit with the same status.
    Exited {
        /// Exit code, or 128 + signal.
        code: i32,
        /// The signal that killed it, if any.
        signal: Option<i32>,
    },
}

const MAX_PACKET: usize = 64 * 1024;

/// Sends one message. Errors mean the supervisor is gone.
pub(crate) fn send(fd: BorrowedFd<'_>, msg: &Msg) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let n = rustix::net::send(fd, &bytes, rustix::net::SendFlags::NOSIGNAL)?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short packet"));
    }
    Ok(())
}

/// Receives one message; `Ok(None)` at end of stream.
pub(crate) fn recv(fd: impl AsFd) -> io::Result<Option<Msg>> {
    let mut buf = vec![0u8; MAX_PACKET];
    let (n, _) = loop {
        match rustix::net::recv(fd.as_fd(), &mut buf[..], rustix::net::RecvFlags::DONTWAIT) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            other => break other?,
        }
    };
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_slice(&buf[..n])
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
