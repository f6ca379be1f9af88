//! The userspace TCP/IP stack on the TUN device, built on smoltcp: one
//! task owns the interface and every socket; application code gets each
//! captured TCP connection as an `AsyncRead + AsyncWrite` stream backed by
//! two byte queues. UDP bypasses smoltcp: each datagram goes to the
//! engine's [`Datagrams`] handler as it arrives, and the reply it returns (a
//! DNS answer) is built into a packet here. No state is kept per UDP
//! 4-tuple: a resolver opens a new one for every lookup.
//!
//! Every TCP SYN to any address is accepted (`any_ip` with a default route
//! through the interface's own address): the engine decides after the
//! handshake, once it has seen the first bytes. A SYN whose 4-tuple already
//! has a socket (a retransmission) does not create another.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Notify};

use crate::transparent::{Captured, Stack};

/// Socket buffers per direction and flow (smoltcp scales its window to
/// them). Pages are touched only as data flows.
const TCP_BUFFER: usize = 256 * 1024;
/// The application-side queue per direction and flow.
const QUEUE: usize = 256 * 1024;
/// A TCP flow with no packet for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(600);
/// At most this many TCP flows at once (a SYN beyond it is answered with a
/// reset): the agent cannot grow the supervisor without bound.
const MAX_TCP: usize = 4096;
/// What the engine does with a UDP datagram from the sandbox (source,
/// destination, payload): the payload of the reply to send back, if any.
pub(crate) type Datagrams = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) -> Option<Vec<u8>> + Send>;

/// The smoltcp stack, as the engine's [`Stack`].
pub(crate) struct SmolStack {
    accepted: mpsc::UnboundedReceiver<Captured>,
}

impl SmolStack {
    /// Starts the stack's task on `tun` (must run inside the runtime).
    /// The stack stops when `finishing` turns true (the agent has exited):
    /// its flows then see their end.
    pub(crate) fn new(
        tun: OwnedFd,
        mtu: usize,
        finishing: tokio::sync::watch::Receiver<bool>,
        datagrams: Datagrams,
    ) -> io::Result<SmolStack> {
        rustix::io::ioctl_fionbio(&tun, true)?;
        // `AsyncFd::new` is deprecated because it accepts types that do not
        // own their descriptor; an `OwnedFd` owns it for the registration's
        // whole life, which is what the unsafe `register` asks to promise.
        #[allow(deprecated)]
        let tun = AsyncFd::new(tun)?;
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(run(tun, mtu, tx, finishing, datagrams));
        Ok(SmolStack { accepted })
    }
}

impl Stack for SmolStack {
    fn accept(
        &mut self,
    ) -> Pin<Box<dyn std::future::Future<Output = Option<Captured>> + Send + '_>> {
        Box::pin(self.accepted.recv())
    }
}

/// The `virtio_net_hdr` before every packet on the TUN (IFF_VNET_HDR).
const VNET_HDR: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` is to be completed (it holds the pseudo-header sum). The
/// sandbox's kernel delivers such packets locally without computing or
/// verifying the checksum, so neither side spends time on it.
const NEEDS_CSUM: u8 = 1;

/// The device smoltcp polls: packets read from the TUN wait in `rx`;
/// packets smoltcp sends collect in `tx` (each already preceded by its
/// `virtio_net_hdr`) and are written out after a poll.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; VNET_HDR + len];
        let r = f(&mut buf[VNET_HDR..]);
        vnet_header(&mut buf);
        self.0.push(buf);
        r
    }
}

/// Fills in the `virtio_net_hdr` of an IPv4 packet smoltcp emitted after
/// it: a TCP segment (whose checksum smoltcp left out) is marked
/// NEEDS_CSUM and given the pseudo-header sum the kernel would complete;
/// anything else goes as it is (flags 0).
fn vnet_header(buf: &mut [u8]) {
    let (hdr, packet) = buf.split_at_mut(VNET_HDR);
    let Ok(ip) = Ipv4Packet::new_checked(&packet[..]) else {
        return;
    };
    if ip.next_header() != IpProtocol::Tcp {
        return;
    }
    let ihl = usize::from(ip.header_len());
    let Ok(tcp_len) = u16::try_from(usize::from(ip.total_len()).saturating_sub(ihl)) else {
        return;
    };
    // The field holds the folded pseudo-header sum, not complemented (what
    // a device completing the checksum starts from, as Linux's own
    // CHECKSUM_PARTIAL segments do).
    let words = |a: [u8; 4]| {
        u32::from(u16::from_be_bytes([a[0], a[1]])) + u32::from(u16::from_be_bytes([a[2], a[3]]))
    };
    let mut sum = words(ip.src_addr().octets())
        + words(ip.dst_addr().octets())
        + u32::from(u8::from(IpProtocol::Tcp))
        + u32::from(tcp_len);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    packet[ihl + 16..ihl + 18].copy_from_slice(&(sum as u16).to_be_bytes());
    hdr[0] = NEEDS_CSUM;
    hdr[4..6].fill(0);
    hdr[6..8].copy_from_slice(&(ihl as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Segments from the sandbox are verified; segments to it carry
        // NEEDS_CSUM instead of a computed checksum (see `vnet_header`).
        caps.checksum.tcp = smoltcp::phy::Checksum::Rx;
        caps
    }
}

/// The shared state between a smoltcp socket and its application stream.
#[derive(Default)]
struct Control {
    /// Received, not yet read by the application.
    rx: VecDeque<u8>,
    /// Written by the application, not yet in the socket.
    tx: VecDeque<u8>,
    /// The peer sent FIN (or the connection ended) and `rx` is final.
    rx_eof: bool,
    /// The connection was reset or timed out: writes fail.
    reset: bool,
    /// The application shut its sending side down.
    write_closed: bool,
    /// Our FIN has been queued.
    fin_sent: bool,
    /// The application dropped its stream.
    dropped: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

type Shared = Arc<Mutex<Control>>;

/// A captured TCP connection, as the application sees it.
struct SmolTcpStream {
    ctl: Shared,
    kick: Arc<Notify>,
}

fn lock(ctl: &Shared) -> io::Result<std::sync::MutexGuard<'_, Control>> {
    ctl.lock()
        .map_err(|_| io::Error::other("stack state poisoned"))
}

impl AsyncRead for SmolTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut c = lock(&self.ctl)?;
        if !c.rx.is_empty() {
            let n = c.rx.len().min(buf.remaining());
            let (a, b) = c.rx.as_slices();
            let first = a.len().min(n);
            buf.put_slice(&a[..first]);
            buf.put_slice(&b[..n - first]);
            c.rx.drain(..n);
            drop(c);
            self.kick.notify_one();
            return Poll::Ready(Ok(()));
        }
        if c.rx_eof || c.reset {
            return Poll::Ready(Ok(()));
        }
        c.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for SmolTcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut c = lock(&self.ctl)?;
        if c.reset || c.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed",
            )));
        }
        let space = QUEUE.saturating_sub(c.tx.len());
        if space == 0 {
            c.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(buf.len());
        c.tx.extend(&buf[..n]);
        drop(c);
        self.kick.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Queues our FIN behind whatever is still to be sent.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.ctl)?.write_closed = true;
        self.kick.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SmolTcpStream {
    fn drop(&mut self) {
        if let Ok(mut c) = self.ctl.lock() {
            c.dropped = true;
        }
        self.kick.notify_one();
    }
}

/// An IPv4/UDP packet from `src` to `dst` carrying `payload`.
fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        return Err(io::Error::other("IPv4 only"));
    };
    let udp_len = 8 + payload.len();
    let ip = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let total = ip.buffer_len() + udp_len;
    if total > usize::from(u16::MAX) {
        return Err(io::Error::other("datagram too large"));
    }
    let mut bytes = vec![0u8; total];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
    ip.emit(&mut packet, &caps);
    let mut udp = UdpPacket::new_unchecked(packet.payload_mut());
    UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    }
    .emit(
        &mut udp,
        &IpAddress::Ipv4(s),
        &IpAddress::Ipv4(d),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    Ok(bytes)
}

fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}

/// Everything the stack's task owns.
struct State {
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    tcp: HashMap<(SocketAddr, SocketAddr), (SocketHandle, Shared)>,
    accepted: mpsc::UnboundedSender<Captured>,
    kick: Arc<Notify>,
    datagrams: Datagrams,
}

async fn run(
    tun: AsyncFd<OwnedFd>,
    mtu: usize,
    accepted: mpsc::UnboundedSender<Captured>,
    mut finishing: tokio::sync::watch::Receiver<bool>,
    datagrams: Datagrams,
) {
    let mut dev = Queues {
        rx: VecDeque::new(),
        tx: Vec::new(),
        mtu,
    };
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = rand_seed();
    let mut iface = Interface::new(config, &mut dev, now());
    // Accept every destination: any_ip, with a default route whose gateway
    // is the interface's own address (smoltcp's condition for any_ip).
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(0, 0, 0, 1), 0));
    });
    let _ = iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(0, 0, 0, 1));
    iface.set_any_ip(true);
    let kick = Arc::new(Notify::new());
    let mut st = State {
        iface,
        dev,
        sockets: SocketSet::new(Vec::new()),
        tcp: HashMap::new(),
        accepted,
        kick: Arc::clone(&kick),
        datagrams,
    };
    let mut buf = vec![0u8; VNET_HDR + mtu.max(2048)];
    loop {
        let delay = st
            .iface
            .poll_delay(now(), &st.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_millis(500));
        tokio::select! {
            r = tun.readable() => {
                let Ok(mut guard) = r else { return };
                loop {
                    match guard.try_io(|fd| {
                        rustix::io::read(fd.get_ref(), &mut buf[..]).map_err(io::Error::from)
                    }) {
                        Ok(Ok(0)) => return,
                        // Every packet starts with its virtio_net_hdr;
                        // no offloads are on, so it is whole and checksummed.
                        Ok(Ok(n)) if n > VNET_HDR => {
                            let packet = buf[VNET_HDR..n].to_vec();
                            st.ingress(packet);
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return,
                        Err(_would_block) => break,
                    }
                }
            }
            () = kick.notified() => {}
            () = tokio::time::sleep(delay) => {}
            _ = finishing.wait_for(|f| *f) => return,
        }
        if st.accepted.is_closed() {
            return;
        }
        st.feed_sockets();
        st.iface.poll(now(), &mut st.dev, &mut st.sockets);
        st.drain_sockets();
        // The poll may have freed send space (ACKs) and receive space
        // (window updates after the draining): use it in the same round
        // rather than at the next timer.
        st.feed_sockets();
        st.iface.poll(now(), &mut st.dev, &mut st.sockets);
        for p in st.dev.tx.drain(..) {
            loop {
                let Ok(mut guard) = tun.writable().await else {
                    return;
                };
                match guard
                    .try_io(|fd| rustix::io::write(fd.get_ref(), &p).map_err(io::Error::from))
                {
                    Ok(_) => break,
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

impl State {
    /// Sorts one packet from the TUN: TCP goes to smoltcp (a new SYN first
    /// gets a listening socket), UDP to the engine (its reply, if any, is
    /// queued), the rest is dropped.
    fn ingress(&mut self, packet: Vec<u8>) {
        let Ok(ip) = Ipv4Packet::new_checked(&packet[..]) else {
            return;
        };
        if ip.version() != 4 {
            return;
        }
        let src_ip = IpAddr::V4(ip.src_addr());
        let dst_ip = IpAddr::V4(ip.dst_addr());
        match ip.next_header() {
            IpProtocol::Tcp => {
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                    return;
                };
                let src = SocketAddr::new(src_ip, tcp.src_port());
                let dst = SocketAddr::new(dst_ip, tcp.dst_port());
                if tcp.syn()
                    && !tcp.ack()
                    && !self.tcp.contains_key(&(src, dst))
                    && self.tcp.len() < MAX_TCP
                {
                    self.open_tcp(src, dst);
                }
                self.dev.rx.push_back(packet);
            }
            IpProtocol::Udp => {
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                    return;
                };
                let src = SocketAddr::new(src_ip, udp.src_port());
                let dst = SocketAddr::new(dst_ip, udp.dst_port());
                if let Some(reply) = (self.datagrams)(src, dst, udp.payload()) {
                    if let Ok(p) = udp_packet(dst, src, &reply) {
                        let mut framed = vec![0u8; VNET_HDR];
                        framed.extend_from_slice(&p);
                        self.dev.tx.push(framed);
                    }
                }
            }
            _ => {}
        }
    }

    fn open_tcp(&mut self, src: SocketAddr, dst: SocketAddr) {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        socket.set_ack_delay(None);
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(TCP_IDLE.as_secs())));
        let IpAddr::V4(v4) = dst.ip() else { return };
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(v4)),
            port: dst.port(),
        };
        if socket.listen(endpoint).is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        let ctl: Shared = Arc::default();
        self.tcp.insert((src, dst), (handle, Arc::clone(&ctl)));
        let stream = SmolTcpStream {
            ctl,
            kick: Arc::clone(&self.kick),
        };
        let _ = self.accepted.send(Captured::Tcp {
            stream: Box::new(stream),
            dst,
        });
    }

    /// Moves what the applications wrote into their sockets; queues FINs.
    fn feed_sockets(&mut self) {
        for (handle, ctl) in self.tcp.values() {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            let Ok(mut c) = ctl.lock() else { continue };
            let mut wrote = false;
            while !c.tx.is_empty() && socket.can_send() {
                let sent = socket.send(|b| {
                    let n = b.len().min(c.tx.len());
                    let (x, y) = c.tx.as_slices();
                    let first = x.len().min(n);
                    b[..first].copy_from_slice(&x[..first]);
                    b[first..n].copy_from_slice(&y[..n - first]);
                    (n, n)
                });
                match sent {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        c.tx.drain(..n);
                        wrote = true;
                    }
                }
            }
            if wrote {
                if let Some(w) = c.write_waker.take() {
                    w.wake();
                }
            }
            if (c.write_closed || c.dropped) && c.tx.is_empty() && !c.fin_sent {
                socket.close();
                c.fin_sent = true;
            }
        }
    }

    /// Moves received data to the applications, marks ends, and removes
    /// finished sockets.
    fn drain_sockets(&mut self) {
        let mut finished = Vec::new();
        for (key, (handle, ctl)) in &self.tcp {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            let Ok(mut c) = ctl.lock() else { continue };
            let mut got = false;
            while socket.can_recv() && (c.dropped || c.rx.len() < QUEUE) {
                let room = if c.dropped {
                    usize::MAX
                } else {
                    QUEUE - c.rx.len()
                };
                let dropped = c.dropped;
                let r = socket.recv(|b| {
                    let n = b.len().min(room);
                    if !dropped {
                        c.rx.extend(&b[..n]);
                    }
                    (n, n)
                });
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => got = true,
                }
            }
            let state = socket.state();
            if !socket.may_recv()
                && !matches!(
                    state,
                    tcp::State::Listen | tcp::State::SynReceived | tcp::State::SynSent
                )
                && !c.rx_eof
            {
                c.rx_eof = true;
                got = true;
            }
            if state == tcp::State::Closed && !c.fin_sent {
                // Reset or timed out before we closed.
                c.reset = true;
                got = true;
                if let Some(w) = c.write_waker.take() {
                    w.wake();
                }
            }
            if got {
                if let Some(w) = c.read_waker.take() {
                    w.wake();
                }
            }
            let done = state == tcp::State::Closed || (c.dropped && state == tcp::State::TimeWait);
            if done {
                c.rx_eof = true;
                c.reset = c.reset || !c.fin_sent;
                finished.push(*key);
            }
        }
        for key in finished {
            if let Some((handle, ctl)) = self.tcp.remove(&key) {
                self.sockets.remove(handle);
                if let Ok(mut c) = ctl.lock() {
                    if let Some(w) = c.read_waker.take() {
                        w.wake();
                    }
                    if let Some(w) = c.write_waker.take() {
                        w.wake();
                    }
                }
            }
        }
    }
}

impl Drop for State {
    /// The device is gone (the sandbox's network namespace ended) or the
    /// engine stopped: every open flow ends now instead of waiting forever.
    fn drop(&mut self) {
        for (_, ctl) in self.tcp.values() {
            if let Ok(mut c) = ctl.lock() {
                c.rx_eof = true;
                c.reset = true;
                if let Some(w) = c.read_waker.take() {
                    w.wake();
                }
                if let Some(w) = c.write_waker.take() {
                    w.wake();
                }
            }
        }
    }
}

/// A seed for smoltcp's initial sequence numbers and ports.
fn rand_seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a device does with a NEEDS_CSUM packet: sums from
    /// `csum_start` (the field holds the pseudo-header sum) and stores the
    /// complement at `csum_start + csum_offset`.
    fn complete_checksum(framed: &mut [u8]) {
        let start = usize::from(u16::from_le_bytes([framed[6], framed[7]]));
        let offset = usize::from(u16::from_le_bytes([framed[8], framed[9]]));
        let packet = &mut framed[VNET_HDR..];
        let mut sum: u32 = packet[start..]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        packet[start + offset..start + offset + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    #[test]
    fn tcp_segments_to_the_sandbox_carry_a_completable_checksum() {
        use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};
        let (src, dst) = (
            Ipv4Address::new(198, 18, 1, 7),
            Ipv4Address::new(198, 18, 0, 2),
        );
        let payload = b"hello, sandbox: an odd-length payload";
        let tcp = TcpRepr {
            src_port: 443,
            dst_port: 40000,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(2000)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut caps = ChecksumCapabilities::default();
        caps.tcp = smoltcp::phy::Checksum::Rx;
        let mut framed = vec![0u8; VNET_HDR + ip.buffer_len() + tcp.buffer_len()];
        {
            let mut packet = Ipv4Packet::new_unchecked(&mut framed[VNET_HDR..]);
            ip.emit(&mut packet, &caps);
            let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
            tcp.emit(
                &mut segment,
                &IpAddress::Ipv4(src),
                &IpAddress::Ipv4(dst),
                &caps,
            );
        }
        vnet_header(&mut framed);
        assert_eq!(framed[0], NEEDS_CSUM);
        assert_eq!(u16::from_le_bytes([framed[6], framed[7]]), 20, "csum_start");
        assert_eq!(
            u16::from_le_bytes([framed[8], framed[9]]),
            16,
            "csum_offset"
        );
        complete_checksum(&mut framed);
        let packet = Ipv4Packet::new_checked(&framed[VNET_HDR..]).unwrap();
        assert!(packet.verify_checksum());
        let segment = TcpPacket::new_checked(packet.payload()).unwrap();
        assert!(segment.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)));
        assert_eq!(segment.payload(), payload);
    }

    #[test]
    fn udp_replies_are_valid_packets() {
        let p = udp_packet(
            "198.18.0.1:53".parse().unwrap(),
            "198.18.0.2:40000".parse().unwrap(),
            b"answer",
        )
        .unwrap();
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        let repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(repr.next_header, IpProtocol::Udp);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (53, 40000));
        assert_eq!(udp.payload(), b"answer");
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
    }
}
