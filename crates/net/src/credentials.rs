//! Credential injection: the agent holds a placeholder for each secret the
//! profile binds, and cordon puts the real value in its place only in
//! requests to the secret's hosts (inspected, so the request is readable).
//!
//! * A placeholder keeps the real value's vendor prefix (`sk-ant-api03-`,
//!   `ghp_`: up to the last `-` or `_` in its first half, at most 16
//!   bytes), its length, the positions of its punctuation and the classes
//!   of characters it uses; the rest is random, fresh for every session.
//!   SDKs that check a key's shape accept it, and having the same length
//!   lets bodies be rewritten without changing their framing.
//! * In a request to a bound host the placeholder is replaced in every
//!   header (inside HTTP Basic credentials too, decoded and encoded
//!   again), in the URL, and, when the secret says `body = true`, in the
//!   body as it streams. The response is rewritten the other way, so the
//!   real value never reaches the agent (the request then asks for an
//!   uncompressed response, which can be read).
//! * A placeholder in a request to any other inspected host (headers, URL
//!   or body) stops the request: a 403, and an event the detection rules
//!   turn into a finding. The body is held back until it has been read
//!   past every possible placeholder, so none leaves.
//! * A secret can be fetched on its first use instead of at start: its
//!   placeholder is made from a declared shape (prefix and length), and
//!   the first request to a bound host that needs the value waits while
//!   it is fetched (once, whoever asks). The value's length then differs
//!   from the placeholder's, and rewritten bodies change their framing: a
//!   body read whole gets its new `Content-Length`, a streamed one is sent
//!   without (chunked over HTTP/1.1).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use cordon_policy::network::HostPattern;
use http_body::{Body, Frame};
use zeroize::Zeroizing;

/// The shortest value a placeholder can stand in for: shorter ones leave
/// too little to randomise.
pub const MIN_VALUE: usize = 16;

/// How a first-use secret is fetched: given the host of the request that
/// needs it, the value or why not. Runs on a blocking thread.
pub type Fetch = Box<dyn Fn(&str) -> Result<Zeroizing<Vec<u8>>, String> + Send + Sync>;

/// One secret the egress engine injects.
pub struct Credential {
    /// The variable the agent sees.
    pub name: String,
    /// What the agent holds.
    pub placeholder: Vec<u8>,
    /// The real value, once known.
    value: std::sync::OnceLock<Zeroizing<Vec<u8>>>,
    /// How to get it on first use (held while fetching, so it is fetched
    /// once).
    fetch: Option<std::sync::Mutex<Fetch>>,
    /// Where it may go.
    pub hosts: Vec<HostPattern>,
    /// Whether it is also put into request bodies.
    pub body: bool,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A secret whose value is known now.
    pub fn new(
        name: String,
        placeholder: Vec<u8>,
        value: Zeroizing<Vec<u8>>,
        hosts: Vec<HostPattern>,
        body: bool,
    ) -> Credential {
        Credential {
            name,
            placeholder,
            value: std::sync::OnceLock::from(value),
            fetch: None,
            hosts,
            body,
        }
    }

    /// A secret fetched by `fetch` on its first use.
    pub fn on_first_use(
        name: String,
        placeholder: Vec<u8>,
        fetch: Fetch,
        hosts: Vec<HostPattern>,
        body: bool,
    ) -> Credential {
        Credential {
            name,
            placeholder,
            value: std::sync::OnceLock::new(),
            fetch: Some(std::sync::Mutex::new(fetch)),
            hosts,
            body,
        }
    }

    /// Whether requests to `host` (normalised) on `port` may carry it.
    pub fn bound_to(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }

    /// The real value, if it is known (read at start, or fetched).
    pub fn value(&self) -> Option<&Zeroizing<Vec<u8>>> {
        self.value.get()
    }

    /// The value, fetched now if it is not known yet, for a request to
    /// `host`; blocks (call it on a blocking thread). Returns whether this
    /// call fetched it.
    pub fn fetch_blocking(&self, host: &str) -> Result<(&Zeroizing<Vec<u8>>, bool), String> {
        if let Some(v) = self.value.get() {
            return Ok((v, false));
        }
        let Some(fetch) = &self.fetch else {
            return Err("its value is not known".into());
        };
        let fetch = fetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another request may have fetched it while this one waited.
        if let Some(v) = self.value.get() {
            return Ok((v, false));
        }
        let value = fetch(host)?;
        if value.is_empty() || !value.iter().all(u8::is_ascii_graphic) {
            return Err(
                "its value is empty or not printable ASCII without spaces, so it cannot be put \
                 into requests"
                    .into(),
            );
        }
        if value
            .windows(self.placeholder.len())
            .any(|w| w == &self.placeholder[..])
        {
            return Err("its value holds its placeholder".into());
        }
        Ok((self.value.get_or_init(|| value), true))
    }
}

/// A placeholder of `length` bytes starting with `prefix`, the rest random
/// letters and digits (for a secret whose value is not known yet).
pub fn shaped_placeholder(prefix: &str, length: usize) -> Result<Vec<u8>, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let n = length
        .checked_sub(prefix.len())
        .filter(|&n| n >= MIN_VALUE)
        .ok_or_else(|| {
            format!("{length} bytes leave fewer than {MIN_VALUE} random ones after {prefix:?}")
        })?;
    let mut random = vec![0u8; n * 2];
    fill_random(&mut random)?;
    let mut out = prefix.as_bytes().to_vec();
    out.extend(
        random
            .chunks(2)
            .map(|r| ALPHABET[usize::from(u16::from_le_bytes([r[0], r[1]])) % ALPHABET.len()]),
    );
    Ok(out)
}

/// A placeholder for `value` (see the module's documentation). Fails for a
/// value shorter than [`MIN_VALUE`] or with bytes other than printable
/// ASCII (it must fit in a header).
pub fn placeholder(value: &[u8]) -> Result<Vec<u8>, String> {
    if value.len() < MIN_VALUE {
        return Err(format!(
            "{} bytes: a value shorter than {MIN_VALUE} bytes is too short to stand in for",
            value.len()
        ));
    }
    if !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces can be injected into requests".into());
    }
    let limit = (value.len() / 2).min(16);
    let prefix = value[..limit]
        .iter()
        .rposition(|&b| b == b'-' || b == b'_')
        .map_or(0, |i| i + 1);
    let tail = &value[prefix..];
    let mut alphabet = Vec::new();
    if tail.iter().any(u8::is_ascii_lowercase) {
        alphabet.extend(b'a'..=b'z');
    }
    if tail.iter().any(u8::is_ascii_uppercase) {
        alphabet.extend(b'A'..=b'Z');
    }
    if tail.iter().any(u8::is_ascii_digit) {
        alphabet.extend(b'0'..=b'9');
    }
    if alphabet.is_empty() {
        return Err("the value has no letters or digits to stand in for".into());
    }
    let mut random = vec![0u8; tail.len() * 2];
    fill_random(&mut random)?;
    let mut out = value[..prefix].to_vec();
    for (i, &b) in tail.iter().enumerate() {
        if b.is_ascii_alphanumeric() {
            let r = u16::from_le_bytes([random[2 * i], random[2 * i + 1]]);
            out.push(alphabet[usize::from(r) % alphabet.len()]);
        } else {
            out.push(b);
        }
    }
    if out == value {
        return Err("no placeholder different from the value could be made".into());
    }
    Ok(out)
}

fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("random number generator: {e}")),
        }
    }
    Ok(())
}

/// Replaces every occurrence of `from` in `hay` with `to` (in place when
/// they have the same length); whether there was one.
pub(crate) fn replace_all(hay: &mut Vec<u8>, from: &[u8], to: &[u8]) -> bool {
    let Some(first) = memchr::memmem::find(hay, from) else {
        return false;
    };
    if from.len() == to.len() {
        overwrite(hay, from, to, first);
        return true;
    }
    let mut out = Vec::with_capacity(hay.len() + to.len().saturating_sub(from.len()) * 4);
    let mut at = 0;
    let mut next = Some(first);
    while let Some(i) = next {
        out.extend_from_slice(&hay[at..i]);
        out.extend_from_slice(to);
        at = i + from.len();
        next = memchr::memmem::find(&hay[at..], from).map(|j| at + j);
    }
    out.extend_from_slice(&hay[at..]);
    // The old buffer may hold a secret: cleared before it is freed.
    zeroize::Zeroize::zeroize(hay);
    *hay = out;
    true
}

/// What a body rewriter does with one pattern.
pub(crate) enum Rule {
    /// Replace it.
    Replace {
        from: Vec<u8>,
        to: Zeroizing<Vec<u8>>,
    },
    /// Stop the body: this pattern must not leave.
    Forbid { pattern: Vec<u8>, name: String },
}

impl Rule {
    fn pattern(&self) -> &[u8] {
        match self {
            Rule::Replace { from, .. } => from,
            Rule::Forbid { pattern, .. } => pattern,
        }
    }

    pub(crate) fn changes_length(&self) -> bool {
        matches!(self, Rule::Replace { from, to } if from.len() != to.len())
    }
}

/// Applies `rules` to a whole body; an error names the first forbidden
/// pattern found.
pub(crate) fn apply_rules(body: &mut Vec<u8>, rules: &[Rule]) -> Result<(), Forbidden> {
    for r in rules {
        match r {
            Rule::Replace { from, to } => {
                replace_all(body, from, to);
            }
            Rule::Forbid { pattern, name } => {
                if memchr::memmem::find(body, pattern).is_some() {
                    return Err(Forbidden(name.clone()));
                }
            }
        }
    }
    Ok(())
}

/// Overwrites `from` with `to` (same length) in `hay`, from `first` on.
fn overwrite(hay: &mut [u8], from: &[u8], to: &[u8], first: usize) {
    let mut at = first;
    loop {
        hay[at..at + from.len()].copy_from_slice(to);
        at += from.len();
        match memchr::memmem::find(&hay[at..], from) {
            Some(i) => at += i,
            None => return,
        }
    }
}

/// [`replace_all`] on a buffer being streamed.
fn replace_held(held: &mut BytesMut, from: &[u8], to: &[u8]) {
    let Some(first) = memchr::memmem::find(held, from) else {
        return;
    };
    if from.len() == to.len() {
        return overwrite(held, from, to, first);
    }
    let mut v = Zeroizing::new(held.to_vec());
    replace_all(&mut v, from, to);
    held.iter_mut().for_each(|b| *b = 0);
    held.clear();
    held.extend_from_slice(&v);
}

/// Why a body was stopped.
#[derive(Debug)]
pub(crate) struct Forbidden(pub String);

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the placeholder of {} is in the body", self.0)
    }
}

impl std::error::Error for Forbidden {}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body rewritten as it streams: data is held back only as far as a
/// pattern could still be completed by what comes next.
pub(crate) struct Rewriting<B> {
    inner: B,
    rules: Vec<Rule>,
    keep: usize,
    /// Whether the rewritten body keeps the inner body's length.
    same_length: bool,
    held: BytesMut,
    /// Set when a forbidden pattern was found (the caller answers 403).
    pub(crate) tripped: Option<std::sync::Arc<std::sync::Mutex<Option<String>>>>,
    done: bool,
    /// Trailers that arrived while data was held, sent after it.
    trailers: Option<Frame<Bytes>>,
}

impl<B> Rewriting<B> {
    pub(crate) fn new(
        inner: B,
        rules: Vec<Rule>,
        tripped: Option<std::sync::Arc<std::sync::Mutex<Option<String>>>>,
    ) -> Rewriting<B> {
        let keep = rules
            .iter()
            .map(|r| r.pattern().len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let same_length = !rules.iter().any(Rule::changes_length);
        Rewriting {
            inner,
            rules,
            keep,
            same_length,
            held: BytesMut::new(),
            tripped,
            done: false,
            trailers: None,
        }
    }

    /// Applies the rules to what is held; an error names a forbidden
    /// pattern found.
    fn apply(&mut self) -> Result<(), Forbidden> {
        for r in &self.rules {
            match r {
                Rule::Replace { from, to } => replace_held(&mut self.held, from, to),
                Rule::Forbid { pattern, name } => {
                    if memchr::memmem::find(&self.held, pattern).is_some() {
                        if let Some(t) = &self.tripped {
                            *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(name.clone());
                        }
                        return Err(Forbidden(name.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}

impl<B> Body for Rewriting<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.rules.is_empty() {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into)));
        }
        loop {
            if this.done {
                if this.held.is_empty() {
                    return Poll::Ready(this.trailers.take().map(Ok));
                }
                let rest = this.held.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    if let Err(e) = this.apply() {
                        this.held.clear();
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            this.held.extend_from_slice(chunk);
                            data.advance(n);
                        }
                        if let Err(e) = this.apply() {
                            this.held.clear();
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                        if this.held.len() > this.keep {
                            let out = this.held.split_to(this.held.len() - this.keep).freeze();
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    // Trailers end the data: what is held goes first.
                    Err(frame) => {
                        this.done = true;
                        if let Err(e) = this.apply() {
                            this.held.clear();
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                        this.trailers = Some(frame);
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.rules.is_empty() {
            return self.inner.is_end_stream();
        }
        self.held.is_empty() && self.trailers.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.same_length {
            self.inner.size_hint()
        } else {
            http_body::SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_the_shape_and_nothing_of_the_secret() {
        let value = b"sk-ant-api03-Zx9kQ2mN7pL4vR8tY1wE5uI3oA6sD0fG";
        let p = placeholder(value).unwrap();
        assert_eq!(p.len(), value.len());
        assert!(p.starts_with(b"sk-ant-api03-"));
        assert_ne!(&p[..], &value[..]);
        // Another session gets another one.
        assert_ne!(p, placeholder(value).unwrap());
        let gh = placeholder(b"ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6").unwrap();
        assert!(gh.starts_with(b"ghp_"));
        assert!(gh[4..].iter().all(u8::is_ascii_alphanumeric));
        // Punctuation stays where it was (a JWT keeps its dots).
        let jwt = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl";
        let pj = placeholder(jwt).unwrap();
        for (a, b) in jwt.iter().zip(&pj) {
            assert_eq!(*a == b'.', *b == b'.');
        }
        // Only the classes the value uses.
        let hex = placeholder(b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(hex
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert!(placeholder(b"short-secret").is_err());
        assert!(placeholder(b"has a space in it, so no").is_err());
        assert!(placeholder("non-ascii-valüe-0123456789".as_bytes()).is_err());
    }

    /// A body arriving in pieces of `step` bytes.
    struct Pieces(std::collections::VecDeque<Bytes>);

    impl Pieces {
        fn new(data: &[u8], step: usize) -> Pieces {
            Pieces(data.chunks(step).map(Bytes::copy_from_slice).collect())
        }
    }

    impl Body for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn run(
        data: &[u8],
        step: usize,
        rules: Vec<Rule>,
    ) -> (Result<Vec<u8>, String>, Option<String>) {
        use http_body_util::BodyExt;
        let tripped = std::sync::Arc::new(std::sync::Mutex::new(None));
        let body = Rewriting::new(Pieces::new(data, step), rules, Some(tripped.clone()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let mut out = Vec::new();
            let mut body = body;
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => out.extend_from_slice(&f.into_data().unwrap_or_default()),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(out)
        });
        let t = tripped.lock().unwrap().clone();
        (got, t)
    }

    #[test]
    fn bodies_are_rewritten_across_any_split() {
        let ph = b"sk-ant-PLACEHOLDER-0123456789".to_vec();
        let real = b"sk-ant-REALVALUEXX-9876543210".to_vec();
        let mut data = Vec::new();
        for i in 0..50 {
            data.extend_from_slice(format!("{{\"n\":{i},\"key\":\"").as_bytes());
            data.extend_from_slice(&ph);
            data.extend_from_slice(b"\"}\n");
        }
        let want: Vec<u8> = {
            let mut w = data.clone();
            replace_all(&mut w, &ph, &real);
            w
        };
        for step in [1, 2, 3, 7, 28, 29, 30, 64, 1000, data.len()] {
            let rules = vec![Rule::Replace {
                from: ph.clone(),
                to: Zeroizing::new(real.clone()),
            }];
            let (got, tripped) = run(&data, step, rules);
            assert_eq!(got.unwrap(), want, "step {step}");
            assert!(tripped.is_none());
        }
        // A value fetched on first use has another length than its
        // placeholder: longer and shorter both.
        for real in [
            &b"sk-ant-REAL-but-much-longer-than-the-placeholder-0123456789"[..],
            b"short-real-1",
        ] {
            let mut want = data.clone();
            assert!(replace_all(&mut want, &ph, real));
            assert_eq!(want.len(), data.len() + 50 * real.len() - 50 * ph.len());
            for step in [1, 3, 28, 29, 30, 1000, data.len()] {
                let rules = vec![Rule::Replace {
                    from: ph.clone(),
                    to: Zeroizing::new(real.to_vec()),
                }];
                let mut whole = data.clone();
                apply_rules(&mut whole, &rules).unwrap();
                assert_eq!(whole, want);
                assert_eq!(run(&data, step, rules).0.unwrap(), want, "step {step}");
            }
        }
    }

    #[test]
    fn a_first_use_secret_is_fetched_once_and_checked() {
        let ph = shaped_placeholder("sk-ant-api03-", 108).unwrap();
        assert_eq!(ph.len(), 108);
        assert!(ph.starts_with(b"sk-ant-api03-"));
        assert!(ph[13..].iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(ph, shaped_placeholder("sk-ant-api03-", 108).unwrap());
        assert!(shaped_placeholder("abc", 18).is_err());
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&calls);
        let c = std::sync::Arc::new(Credential::on_first_use(
            "K".into(),
            ph,
            Box::new(move |host| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                assert_eq!(host, "api.test");
                Ok(Zeroizing::new(b"the-real-value-0123".to_vec()))
            }),
            Vec::new(),
            false,
        ));
        assert!(c.value().is_none());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    c.fetch_blocking("api.test")
                        .map(|(v, now)| (v.to_vec(), now))
                })
            })
            .collect();
        let got: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(got.iter().filter(|(_, now)| *now).count(), 1);
        assert!(got.iter().all(|(v, _)| v == b"the-real-value-0123"));
        // A failed fetch is tried again by the next request; a value that
        // cannot go into a header is refused.
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = std::sync::Arc::clone(&tries);
        let bad = Credential::on_first_use(
            "B".into(),
            b"cordon-0123456789abcdef".to_vec(),
            Box::new(move |_| {
                if t.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    Err("the server is down".into())
                } else {
                    Ok(Zeroizing::new(b"has a space".to_vec()))
                }
            }),
            Vec::new(),
            false,
        );
        assert_eq!(bad.fetch_blocking("h").unwrap_err(), "the server is down");
        assert!(bad.fetch_blocking("h").unwrap_err().contains("printable"));
        assert!(bad.value().is_none());
    }

    #[test]
    fn a_forbidden_pattern_stops_the_body_before_it_leaves() {
        let ph = b"ghp_PLACEHOLDERabcdefghijklmnop".to_vec();
        let mut data = vec![b'x'; 10_000];
        data.extend_from_slice(&ph);
        data.extend_from_slice(&[b'y'; 100]);
        for step in [1, 5, 31, 4096, data.len()] {
            let rules = vec![Rule::Forbid {
                pattern: ph.clone(),
                name: "GITHUB_TOKEN".into(),
            }];
            let (got, tripped) = run(&data, step, rules);
            assert!(got.is_err(), "step {step}");
            assert_eq!(tripped.as_deref(), Some("GITHUB_TOKEN"));
        }
        // What was let through before the stop never holds the pattern,
        // nor a part of it at its end.
        let rules = vec![Rule::Forbid {
            pattern: ph.clone(),
            name: "T".into(),
        }];
        let tripped = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mut body = Rewriting::new(Pieces::new(&data, 7), rules, Some(tripped));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let passed = rt.block_on(async {
            use http_body_util::BodyExt;
            let mut out = Vec::new();
            while let Some(Ok(f)) = body.frame().await {
                out.extend_from_slice(&f.into_data().unwrap_or_default());
            }
            out
        });
        assert!(passed.len() <= 10_000, "{}", passed.len());
        // A body without it passes whole.
        let clean = vec![b'z'; 5000];
        let rules = vec![Rule::Forbid {
            pattern: ph,
            name: "T".into(),
        }];
        assert_eq!(run(&clean, 13, rules).0.unwrap(), clean);
    }
}
