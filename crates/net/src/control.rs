//! Incident response on a running engine: cutting every flow of a contained
//! session, restoring egress after review, the host block list that
//! `cordon block` applies to live sessions, and the flows open right now
//! (for the evidence bundle).

use std::sync::Arc;

use cordon_policy::network::{HostPattern, Verdict};
use cordon_types::ReasonCode;
use serde::Serialize;

use crate::Shared;

/// A flow that is open: allowed and not closed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenFlow {
    /// Flow number within the session.
    pub flow: u64,
    /// `proxy` or `tun`.
    pub via: &'static str,
    /// The destination as the agent named it.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// The address cordon connected to.
    pub addr: Option<std::net::SocketAddr>,
    /// When it was allowed, ms since the epoch.
    pub since_ms: u64,
}

/// Incident-response controls of a running engine ([`crate::Engine::control`]).
#[derive(Debug, Clone)]
pub struct Control(pub(crate) Arc<Shared>);

impl Control {
    /// Cuts all egress: every open flow is closed at once and every new
    /// connection, lookup and request is refused (`net_session_contained`)
    /// until [`Control::restore`]. Returns how many connections were
    /// being handled (flows, and connections not yet decided).
    pub fn cut(&self) -> usize {
        let open = self.0.flows_open.load(std::sync::atomic::Ordering::SeqCst);
        self.0.cut.send_replace(true);
        open
    }

    /// Lets the session's policy decide again (after review).
    pub fn restore(&self) {
        self.0.cut.send_replace(false);
    }

    /// Whether egress is cut.
    pub fn is_cut(&self) -> bool {
        *self.0.cut.borrow()
    }

    /// Refuses `host` from now on, whatever the profile allows; flows to it
    /// that are open stay open (cut the session to end them). False when it
    /// was refused already.
    pub fn block(&self, host: HostPattern) -> bool {
        match self.0.blocked.write() {
            Ok(mut b) if !b.contains(&host) => {
                b.push(host);
                true
            }
            _ => false,
        }
    }

    /// The flows open now, oldest first.
    pub fn open_flows(&self) -> Vec<OpenFlow> {
        self.0.log.open_flows()
    }
}

/// The incident-response verdict on `host` (a normalised name or an IP
/// address as text), before the profile's: refused when egress is cut or
/// the name is blocked.
pub(crate) fn gate(shared: &Shared, host: &str) -> Option<Verdict> {
    if *shared.cut.borrow() {
        return Some(Verdict::Deny {
            code: ReasonCode::NetSessionContained,
            message: "this session was contained: all its network access is cut".into(),
            hint: "wait for the review (`cordon resume`); nothing gets out meanwhile".into(),
        });
    }
    let blocked = shared.blocked.read().ok()?;
    let rule = blocked.iter().find(|p| p.matches_name(host))?;
    Some(Verdict::Deny {
        code: ReasonCode::NetHostBlocked,
        message: format!("{host} is on cordon's block list ({rule})"),
        hint: "it is on the block list (`cordon block`, in cordon's state directory); no \
               profile can allow it"
            .into(),
    })
}

/// Runs `flow` until it ends or egress is cut, whichever comes first
/// (dropping it closes its sockets). A connection accepted while egress is
/// cut runs, to be refused with the reason.
pub(crate) async fn until_cut<F: std::future::Future<Output = ()>>(shared: &Shared, flow: F) {
    let mut cut = shared.cut.subscribe();
    cut.borrow_and_update();
    let cut_now = async {
        loop {
            if cut.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if *cut.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        () = flow => {}
        () = cut_now => {}
    }
}
