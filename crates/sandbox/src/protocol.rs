//! Messages over the `SOCK_SEQPACKET` socketpair between the supervisor and
//! the sandbox: one JSON object per packet, optionally with one descriptor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A message from init (or the agent before `execve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Init exists and has armed `PR_SET_PDEATHSIG`.
    Started,
    /// A non-fatal degradation the user must hear about.
    Warning {
        /// What is degraded and why.
        message: String,
    },
    /// The master side of the agent's pty travels with this message
    /// (SCM_RIGHTS); the slave lives in the sandbox's own devpts.
    Pty,
    /// The listening socket of the egress proxy travels with this message
    /// (SCM_RIGHTS): bound to 127.0.0.1 inside the sandbox's network
    /// namespace, accepted on by the supervisor.
    ProxyListener,
    /// The TUN device (transparent egress capture) travels with this
    /// message (SCM_RIGHTS).
    Tun,
    /// The exec-audit listener travels with this message (SCM_RIGHTS),
    /// sent just before the agent starts.
    ExecListener,
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
        /// Every other process of the sandbox has been killed and reaped:
        /// only init, which is exiting, remains.
        alone: bool,
    },
}

/// A message from the supervisor to init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Order {
    /// The sandbox spec, as JSON in the memfd sent with this message.
    Spec,
    /// Start the agent (init has reported `Ready`, or will): the supervisor
    /// has recorded the session. A descriptor sent with it is for init to
    /// hold until it exits.
    Go,
}

const MAX_PACKET: usize = 64 * 1024;

/// Sends one message. Errors mean the other side is gone.
pub(crate) fn send<T: Serialize>(fd: BorrowedFd<'_>, msg: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let n = rustix::net::send(fd, &bytes, rustix::net::SendFlags::NOSIGNAL)?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short packet"));
    }
    Ok(())
}

/// The most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 4;

/// Sends one message with a file descriptor attached (SCM_RIGHTS).
pub(crate) fn send_fd<T: Serialize>(
    chan: BorrowedFd<'_>,
    msg: &T,
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    send_fds(chan, msg, &[fd])
}

/// Sends one message with up to [`MAX_FDS`] descriptors attached.
pub(crate) fn send_fds<T: Serialize>(
    chan: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    rustix::net::sendmsg(
        chan,
        &[io::IoSlice::new(&bytes)],
        &mut anc,
        rustix::net::SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// A receive buffer large enough for any message.
pub(crate) fn buffer() -> Vec<u8> {
    vec![0u8; MAX_PACKET]
}

/// Receives one message and the descriptor sent with it, if any; `Ok(None)`
/// at end of stream. `buf` comes from [`buffer`] and is reused across calls.
pub(crate) fn recv<T: DeserializeOwned>(
    chan: impl AsFd,
    buf: &mut [u8],
) -> io::Result<Option<(T, Option<OwnedFd>)>> {
    // Any extra descriptors are closed on drop.
    Ok(recv_fds(chan, buf)?.map(|(m, fds)| (m, fds.into_iter().next())))
}

/// Like [`recv`], with every descriptor sent with the message.
pub(crate) fn recv_fds<T: DeserializeOwned>(
    chan: impl AsFd,
    buf: &mut [u8],
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let n = loop {
        match rustix::net::recvmsg(
            chan.as_fd(),
            &mut [io::IoSliceMut::new(buf)],
            &mut anc,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            // The peer exited without reading what we sent it (init after a
            // failed setup, with the supervisor's `Go` queued). The kernel
            // reports that once, ahead of the messages the peer sent before:
            // read on, to them and then to the end of the channel.
            Err(rustix::io::Errno::CONNRESET) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            other => break other?.bytes,
        }
    };
    let mut got = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            got.extend(fds);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((msg, got)))
}

/// Like [`recv`], but waits for a message (or the end of the stream).
pub(crate) fn recv_blocking<T: DeserializeOwned>(
    chan: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(T, Option<OwnedFd>)>> {
    Ok(recv_blocking_fds(chan, buf)?.map(|(m, fds)| (m, fds.into_iter().next())))
}

/// Like [`recv_fds`], but waits for a message (or the end of the stream).
pub(crate) fn recv_blocking_fds<T: DeserializeOwned>(
    chan: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        match recv_fds(chan, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(&chan, PollFlags::IN)];
                match poll(&mut fds, None) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    #[test]
    fn messages_sent_before_the_peer_exited_unread_still_arrive() {
        let (sup, init) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        // The supervisor's `Go` waits in init's queue; init reports a
        // failure and exits without reading it.
        send(sup.as_fd(), &Order::Go).unwrap();
        send(init.as_fd(), &Msg::Ready).unwrap();
        // Blocking reads: a process another test forks meanwhile holds a
        // copy of `init` until it execs, delaying the end of the channel.
        drop(init);
        let mut buf = buffer();
        let got = recv_blocking::<Msg>(sup.as_fd(), &mut buf).unwrap();
        assert!(matches!(got, Some((Msg::Ready, None))), "{got:?}");
        assert!(recv_blocking::<Msg>(sup.as_fd(), &mut buf)
            .unwrap()
            .is_none());
    }
}
