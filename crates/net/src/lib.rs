//! cordon's egress: the only way out of the sandbox's network namespace.
//!
//! The sandbox has loopback and nothing else; the agent's traffic reaches
//! the outside only through this engine, which runs in the supervisor (on a
//! tokio runtime of its own) and decides every connection with the profile's
//! [`NetworkPolicy`]:
//!
//! * **explicit proxy** ([`Engine::serve_proxy`]): init listens on
//!   `127.0.0.1:3128` inside the sandbox and hands the listening socket to
//!   the supervisor; `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` point there.
//!   `CONNECT host:port` and absolute-form `http://` requests are decided by
//!   name (or IP literal), connected by cordon after its own resolution and
//!   address check ([`upstream`]), and the first bytes through a tunnel must
//!   name the same host ([`peek`]). Refusals are HTTP 403s whose body and
//!   `x-cordon-reason` header explain them.
//! * every decision and every allowed flow's end is a JSON line in the
//!   session's `net.jsonl` ([`events`]).
//!
//! * **transparent capture** ([`Engine::serve_tun`]): a TUN device and a
//!   userspace TCP/IP stack, with cordon's DNS; every TCP flow is decided
//!   like a CONNECT.
//! * **TLS inspection** ([`inspect`]) of the hosts the policy marks
//!   `inspect`: cordon terminates the agent's TLS with a per-session CA
//!   ([`tls`]) and reads every HTTP request. Elsewhere the `Host` header
//!   *inside* TLS is not visible: the SNI check stops fronting at the TLS
//!   layer only.
//!
//! Threat notes: everything the sandbox sends is untrusted input (request
//! heads are bounded and time-limited). The engine never connects to an
//! address the policy did not allow, and never resolves a name the policy
//! did not allow.

pub mod control;
pub mod credentials;
pub mod dlp;
pub mod dns;
pub mod events;
mod http1;
pub mod inspect;
pub mod peek;
mod proxy;
mod smol;
pub mod tls;
mod transparent;
mod upstream;

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cordon_policy::network::NetworkPolicy;

pub use events::{EventLog, Forward, NetEvent, Summary};

/// The port the explicit proxy listens on inside the sandbox.
pub const PROXY_PORT: u16 = 3128;
/// The MTU of the sandbox's TUN device.
pub const TUN_MTU: u16 = transparent::MTU;

/// What the engine enforces and where it writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// The profile's egress policy.
    pub policy: NetworkPolicy,
    /// The session's event log (`net.jsonl`).
    pub log: PathBuf,
    /// `user:password` for the upstream proxy (read from the host at
    /// launch; sent as `Proxy-Authorization: Basic`).
    pub upstream_auth: Option<String>,
    /// How long a destination may take to start a plain-HTTP response
    /// before the client gets a 502 ([`Config::RESPONSE_TIMEOUT`] unless a
    /// test needs it shorter).
    pub response_timeout: Duration,
    /// Where every event also goes as it is recorded (the session's audit
    /// log).
    pub forward: Option<events::Forward>,
    /// Hosts refused whatever the policy allows (the block list).
    pub blocked: Vec<cordon_policy::network::HostPattern>,
    /// TLS inspection of the hosts the policy marks `inspect` (none
    /// without it: those flows are refused, never passed uninspected).
    pub inspection: Option<inspect::Inspection>,
}

impl Config {
    /// Model APIs that answer in one piece can take minutes; a silent server
    /// must not hold a connection for ever.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
}

/// State shared by the engine's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub policy: NetworkPolicy,
    /// `Basic <base64>` for the upstream proxy, when it needs one.
    pub proxy_authorization: Option<String>,
    pub response_timeout: Duration,
    pub log: EventLog,
    next_flow: AtomicU64,
    /// Connections being handled (from acceptance to their end).
    pub flows_open: AtomicUsize,
    pub flow_ended: tokio::sync::Notify,
    pub finishing: tokio::sync::watch::Sender<bool>,
    pub fake: std::sync::Mutex<dns::FakeIps>,
    pub udp_dropped: std::sync::Mutex<std::collections::HashSet<std::net::SocketAddr>>,
    pub dns_state: std::sync::Mutex<transparent::DnsState>,
    pub inspection: Option<inspect::Inspection>,
    /// Set when the session is contained: every flow ends, nothing new
    /// is allowed ([`control::Control::cut`]).
    pub cut: tokio::sync::watch::Sender<bool>,
    /// Hosts refused whatever the profile says (`cordon block`).
    pub blocked: std::sync::RwLock<Vec<cordon_policy::network::HostPattern>>,
}

impl Shared {
    pub fn next_flow(&self) -> u64 {
        self.next_flow.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a connection as being handled until the guard drops, so that
    /// [`Engine::finish`] waits for its events. Taken when the connection is
    /// accepted, before its task is spawned.
    pub fn handling(self: &Arc<Self>) -> Handling {
        self.flows_open.fetch_add(1, Ordering::SeqCst);
        Handling(Arc::clone(self))
    }
}

/// See [`Shared::handling`].
pub(crate) struct Handling(Arc<Shared>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.flows_open.fetch_sub(1, Ordering::SeqCst);
        self.0.flow_ended.notify_waiters();
    }
}

/// The running egress engine of one session.
#[derive(Debug)]
pub struct Engine {
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

/// The runtime's workers: half the CPUs, one to four. The agent, its
/// tools and the servers it talks to need the rest: on two vCPUs, one
/// worker carried 7 % more inspected requests/s than two (fewer wake-ups
/// across threads) and bulk downloads no slower (docs/PERFORMANCE.md).
fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() / 2)
        .clamp(1, 4)
}

impl Engine {
    /// Opens the event log and starts the runtime. The caller decides which
    /// signals the runtime's threads block (they inherit the calling
    /// thread's mask): cordon's supervisor blocks the ones it relays.
    pub fn start(config: Config) -> io::Result<Engine> {
        let log = EventLog::create(&config.log, config.forward.clone())?;
        raise_nofile();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers())
            .max_blocking_threads(16)
            .thread_name("cordon-net")
            .enable_all()
            .build()?;
        let (finishing, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            policy: config.policy,
            proxy_authorization: config
                .upstream_auth
                .map(|a| format!("Basic {}", base64(a.as_bytes()))),
            log,
            response_timeout: config.response_timeout,
            next_flow: AtomicU64::new(0),
            flows_open: AtomicUsize::new(0),
            flow_ended: tokio::sync::Notify::new(),
            finishing,
            fake: Default::default(),
            udp_dropped: Default::default(),
            dns_state: Default::default(),
            inspection: config.inspection,
            cut: tokio::sync::watch::channel(false).0,
            blocked: std::sync::RwLock::new(config.blocked),
        });
        let flusher = Arc::clone(&shared);
        rt.spawn(async move {
            let mut every = tokio::time::interval(EventLog::FLUSH_EVERY);
            loop {
                every.tick().await;
                flusher.log.flush();
            }
        });
        Ok(Engine {
            rt: Some(rt),
            shared,
        })
    }

    /// Serves the explicit proxy on `listener`, a listening TCP socket (the
    /// one init made inside the sandbox).
    pub fn serve_proxy(&self, listener: OwnedFd) -> io::Result<()> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| io::Error::other("engine stopped"))?;
        let std_listener = std::net::TcpListener::from(listener);
        std_listener.set_nonblocking(true)?;
        let listener = {
            let _ctx = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let shared = Arc::clone(&self.shared);
        rt.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let handling = shared.handling();
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let flow = proxy::serve(Arc::clone(&shared), stream, handling);
                            control::until_cut(&shared, flow).await;
                        });
                    }
                    // Out of descriptors or memory: back off instead of
                    // spinning; the client's connection waits in the backlog.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        Ok(())
    }

    /// Serves transparent capture on `tun`, the sandbox's TUN device: a
    /// userspace TCP/IP stack, cordon's DNS at [`dns::GATEWAY`], every TCP
    /// flow decided like a CONNECT.
    pub fn serve_tun(&self, tun: OwnedFd) -> io::Result<()> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| io::Error::other("engine stopped"))?;
        let _ctx = rt.enter();
        transparent::spawn(Arc::clone(&self.shared), tun)
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        self.shared.log.summary()
    }

    /// Incident-response controls, usable from any thread while the
    /// engine runs.
    pub fn control(&self) -> control::Control {
        control::Control(Arc::clone(&self.shared))
    }

    /// Stops the engine after the agent has exited: the TUN stack stops (its
    /// flows see their end), flows whose client side has closed end now,
    /// others get up to `grace` to finish; every open flow is recorded as
    /// closed. Returns the session's summary.
    pub fn finish(mut self, grace: Duration) -> Summary {
        let shared = Arc::clone(&self.shared);
        if let Some(rt) = self.rt.take() {
            let _ = shared.finishing.send(true);
            rt.block_on(async {
                let idle = async {
                    while shared.flows_open.load(Ordering::SeqCst) > 0 {
                        let ended = shared.flow_ended.notified();
                        if shared.flows_open.load(Ordering::SeqCst) == 0 {
                            break;
                        }
                        ended.await;
                    }
                };
                let _ = tokio::time::timeout(grace, idle).await;
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        }
        shared.log.flush();
        shared.log.summary()
    }
}

/// Standard base64 with padding (RFC 4648), for HTTP Basic credentials.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Each flow holds six descriptors (two sockets, two pipes); the usual soft
/// limit of 1024 would refuse connections long before memory runs short.
/// Raises the supervisor's soft limit to its hard limit (the sandbox sets
/// its own).
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
    }
}
