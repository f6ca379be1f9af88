//! Data loss prevention on inspected requests: what the agent sends is
//! checked by cordon-detect before it leaves.
//!
//! * The URL (path and query) and the body, up to `max_body` bytes (a
//!   larger body passes unchecked beyond that, and its event says so):
//!   credentials, and personal data with `pii`. The profile's action
//!   decides: `block` (a 403 naming what was found, masked), `redact`
//!   (each finding becomes a typed placeholder, `[REDACTED:github-pat#1]`,
//!   the same one for the same value all session; JSON bodies are
//!   redacted string by string and stay valid JSON), or `alert` (recorded
//!   only). Model-API hosts have their own action (`redact` by default),
//!   so code with secrets reaches the model as placeholders.
//! * Headers are checked too, but only canaries stop them: an agent's own
//!   credentials travel in headers by design, and their findings are
//!   recorded.
//! * Always blocked, whatever the action: the session's canaries (the
//!   decoy credentials' values) and the real values of injected secrets,
//!   in any encoding cordon-detect knows. The agent never holds those;
//!   seeing one means it got hold of it.
//! * The placeholders of injected secrets look like the credentials they
//!   stand for and are never findings.
//!
//! The detector is built on the first inspected request, not at start,
//! and again when a secret fetched on first use adds its value to the
//! canaries.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cordon_detect::{Detector, Finding, Kind, Options, Placeholders, Style};
use cordon_policy::profile::{DlpAction, DlpPolicy};
use zeroize::Zeroizing;

/// The session's DLP.
pub struct Dlp {
    /// The profile's settings.
    pub policy: DlpPolicy,
    canaries: Mutex<Vec<Zeroizing<Vec<u8>>>>,
    ignored: Vec<Vec<u8>>,
    detector: RwLock<Option<Result<Arc<Detector>, String>>>,
    map: Mutex<Placeholders>,
    /// Header blocks seen lately, with the detector that scanned them and
    /// what it found (nothing that blocks): clients send the same headers
    /// request after request.
    seen_headers: Mutex<Vec<SeenHeaders>>,
}

/// A header block that passed, the detector that scanned it, and the
/// notes its scan made.
struct SeenHeaders {
    detector: Arc<Detector>,
    block: Vec<u8>,
    notes: Vec<String>,
}

/// How many header blocks [`Dlp`] remembers.
const SEEN_HEADERS: usize = 16;

impl std::fmt::Debug for Dlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlp")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What the check decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Send it (possibly rewritten); `notes` name what was found and done.
    Pass { notes: Vec<String> },
    /// Refuse it: what was found, masked.
    Block(String),
}

impl Dlp {
    /// DLP with `policy`; `canaries` are always blocked, `ignored` (the
    /// placeholders) are never findings.
    pub fn new(policy: DlpPolicy, canaries: Vec<Zeroizing<Vec<u8>>>, ignored: Vec<Vec<u8>>) -> Dlp {
        Dlp {
            policy,
            canaries: Mutex::new(canaries),
            ignored,
            detector: RwLock::new(None),
            map: Mutex::new(Placeholders::new()),
            seen_headers: Mutex::new(Vec::new()),
        }
    }

    /// Adds canaries (before the first request).
    pub fn add_canaries(&mut self, values: impl IntoIterator<Item = Vec<u8>>) {
        self.canaries
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(values.into_iter().map(Zeroizing::new));
    }

    /// Adds a canary while requests are checked (a secret fetched on first
    /// use): the detector is built again with it, now (call it on a
    /// blocking thread), and requests checked meanwhile use the old one.
    pub fn add_canary(&self, value: &[u8]) {
        self.canaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Zeroizing::new(value.to_vec()));
        let built = self
            .detector
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if built {
            let fresh = self.build();
            *self
                .detector
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(fresh);
        }
        // Blocks scanned without the new canary are scanned again.
        self.seen_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn build(&self) -> Result<Arc<Detector>, String> {
        let canaries: Vec<Vec<u8>> = self
            .canaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| c.to_vec())
            .collect();
        Detector::new(Options {
            pii: self.policy.pii,
            canaries,
            ..Options::default()
        })
        .map(|d| Arc::new(d.ignoring(self.ignored.clone())))
        .map_err(|e| e.to_string())
    }

    fn detector(&self) -> Result<Arc<Detector>, String> {
        if let Some(d) = &*self.detector.read().unwrap_or_else(PoisonError::into_inner) {
            return d.clone();
        }
        let mut slot = self
            .detector
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert_with(|| self.build()).clone()
    }

    /// Checks a request to `host` on `port`: its URL (`uri`, rewritten in
    /// place when redacted), its header values, and `body` when it was
    /// read whole (rewritten in place; `json` when it is a JSON document).
    pub(crate) fn check(
        &self,
        host: &str,
        port: u16,
        uri: &mut Vec<u8>,
        headers: &[(&str, &[u8])],
        body: Option<(&mut Vec<u8>, bool)>,
    ) -> Verdict {
        let detector = match self.detector() {
            Ok(d) => d,
            Err(e) => return Verdict::Block(format!("cordon's DLP could not start: {e}")),
        };
        let action = self.policy.action_for(host, port);
        let mut notes = Vec::new();
        // The headers in one pass (a scan has a fixed cost, and a request
        // has a dozen headers), each line `name: value`.
        let mut all = Vec::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 3).sum());
        let mut starts = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            starts.push(all.len());
            all.extend_from_slice(name.as_bytes());
            all.extend_from_slice(b": ");
            all.extend_from_slice(value);
            all.push(b'\n');
        }
        let name_at = |at: usize| {
            let i = starts.partition_point(|&s| s <= at).saturating_sub(1);
            headers.get(i).map_or("", |(n, _)| *n)
        };
        let known = {
            let seen = self
                .seen_headers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            seen.iter()
                .find(|s| Arc::ptr_eq(&s.detector, &detector) && s.block == all)
                .map(|s| s.notes.clone())
        };
        match known {
            Some(n) => notes = n,
            None => {
                for f in detector.scan(&all) {
                    if f.kind == Kind::Canary {
                        return Verdict::Block(format!(
                            "the {} header carries {}",
                            name_at(f.start),
                            describe(&f, &all)
                        ));
                    }
                    notes.push(format!(
                        "{} in the {} header (passed)",
                        f.rule,
                        name_at(f.start)
                    ));
                }
                let mut seen = self
                    .seen_headers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if seen.len() == SEEN_HEADERS {
                    seen.remove(0);
                }
                seen.push(SeenHeaders {
                    detector: Arc::clone(&detector),
                    block: all,
                    notes: notes.clone(),
                });
            }
        }
        let mut parts: Vec<(&str, &mut Vec<u8>, bool)> = vec![("URL", uri, false)];
        if let Some((b, json)) = body {
            parts.push(("body", b, json));
        }
        for (place, bytes, json) in parts {
            let found = detector.scan(bytes);
            if found.is_empty() {
                continue;
            }
            if let Some(c) = found.iter().find(|f| f.kind == Kind::Canary) {
                return Verdict::Block(format!("the {place} carries {}", describe(c, bytes)));
            }
            let strong: Vec<&Finding> = found
                .iter()
                .filter(|f| f.confidence > cordon_detect::Confidence::Low)
                .collect();
            match action {
                DlpAction::Block if !strong.is_empty() => {
                    let what: Vec<String> = strong.iter().map(|f| describe(f, bytes)).collect();
                    return Verdict::Block(format!("the {place} carries {}", what.join(", ")));
                }
                DlpAction::Redact => {
                    let mut map = self
                        .map
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // A URL must stay a URL: same-shape stand-ins there.
                    let style = if place == "URL" {
                        Style::FormatPreserving
                    } else {
                        Style::Typed
                    };
                    let redacted = if json {
                        cordon_detect::redact_json(&detector, &mut map, style, bytes)
                            .ok()
                            .map(|(out, _)| out)
                    } else {
                        None
                    };
                    let out = redacted.unwrap_or_else(|| {
                        cordon_detect::redact(&detector, &mut map, style, bytes).0
                    });
                    *bytes = out;
                    notes.extend(
                        found
                            .iter()
                            .map(|f| format!("{} in the {place} (redacted)", f.rule)),
                    );
                }
                _ => notes.extend(
                    found
                        .iter()
                        .map(|f| format!("{} in the {place} (passed)", f.rule)),
                ),
            }
        }
        Verdict::Pass { notes }
    }
}

impl Dlp {
    /// Whether responses from `host` on `port` are rehydrated.
    pub(crate) fn rehydrates(&self, host: &str, port: u16) -> bool {
        self.policy.rehydrate && self.policy.action_for(host, port) == DlpAction::Redact
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, Placeholders> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A response body with the session's placeholders turned back into
/// their values, as it streams: data is held back only as far as a
/// placeholder could still be completed.
pub(crate) struct Rehydrating<B> {
    inner: B,
    dlp: Arc<Dlp>,
    held: Vec<u8>,
    done: bool,
    trailers: Option<http_body::Frame<bytes::Bytes>>,
}

impl<B> Rehydrating<B> {
    pub(crate) fn new(inner: B, dlp: Arc<Dlp>) -> Rehydrating<B> {
        Rehydrating {
            inner,
            dlp,
            held: Vec::new(),
            done: false,
            trailers: None,
        }
    }
}

impl<B> http_body::Body for Rehydrating<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                if this.held.is_empty() {
                    return Poll::Ready(this.trailers.take().map(Ok));
                }
                let out = this
                    .dlp
                    .lock_map()
                    .rehydrate(&std::mem::take(&mut this.held));
                return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
            }
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        let map = this.dlp.lock_map();
                        let keep = map.longest().saturating_sub(1);
                        if this.held.len() > keep {
                            let rest = this.held.split_off(this.held.len() - keep);
                            let ready = std::mem::replace(&mut this.held, rest);
                            let out = map.rehydrate(&ready);
                            return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
                        }
                    }
                    Err(frame) => {
                        this.done = true;
                        this.trailers = Some(frame);
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_empty() && self.trailers.is_none()
    }
}

fn describe(f: &Finding, hay: &[u8]) -> String {
    if f.kind == Kind::Canary {
        return "a canary value (a decoy credential's or an injected secret's)".into();
    }
    format!("{} ({})", f.rule, f.preview(hay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DlpPolicy {
        DlpPolicy {
            action: DlpAction::Block,
            model_action: DlpAction::Redact,
            model_hosts: Vec::new(),
            pii: false,
            max_body: cordon_policy::ByteSize(1 << 20),
            rehydrate: false,
        }
    }

    fn check(dlp: &Dlp, headers: &[(&str, &[u8])]) -> Verdict {
        dlp.check("api.test", 443, &mut b"/v1/x".to_vec(), headers, None)
    }

    #[test]
    fn header_blocks_seen_before_are_not_scanned_again_until_a_canary_is_added() {
        let decoy = b"AKIAQ2W3E4R5T6Y7U8I9".to_vec();
        let dlp = Dlp::new(policy(), vec![Zeroizing::new(decoy.clone())], Vec::new());
        let late = b"sk-late-fetched-value-0123456789".as_slice();
        let clean: &[(&str, &[u8])] = &[("user-agent", b"curl/8"), ("x-key", late)];
        for _ in 0..3 {
            assert!(matches!(check(&dlp, clean), Verdict::Pass { .. }));
        }
        assert_eq!(dlp.seen_headers.lock().unwrap().len(), 1);
        // A block with a canary is refused each time, never remembered.
        let bad: &[(&str, &[u8])] = &[("user-agent", b"curl/8"), ("x-key", &decoy)];
        for _ in 0..2 {
            assert!(matches!(check(&dlp, bad), Verdict::Block(_)));
        }
        assert_eq!(dlp.seen_headers.lock().unwrap().len(), 1);
        // A value fetched on first use becomes a canary: the block that
        // passed before is refused now.
        dlp.add_canary(late);
        assert!(matches!(check(&dlp, clean), Verdict::Block(_)));
        // The remembered blocks are bounded.
        for i in 0..40 {
            let v = format!("v{i}");
            let h: &[(&str, &[u8])] = &[("x-n", v.as_bytes())];
            assert!(matches!(check(&dlp, h), Verdict::Pass { .. }));
        }
        assert_eq!(dlp.seen_headers.lock().unwrap().len(), SEEN_HEADERS);
    }
}
