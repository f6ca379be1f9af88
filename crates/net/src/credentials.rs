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

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use cordon_policy::network::HostPattern;
use http_body::{Body, Frame};
use zeroize::Zeroizing;

/// The shortest value a placeholder can stand in for: shorter ones leave
/// too little to randomise.
pub const MIN_VALUE: usize = 16;

/// One secret the egress engine injects.
pub struct Credential {
    /// The variable the agent sees.
    pub name: String,
    /// What the agent holds.
    pub placeholder: Vec<u8>,
    /// The real value.
    pub value: Zeroizing<Vec<u8>>,
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
    /// Whether requests to `host` (normalised) on `port` may carry it.
    pub fn bound_to(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }
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

/// Replaces every occurrence of `from` in `hay` with `to` (same length).
pub(crate) fn replace_all(hay: &mut [u8], from: &[u8], to: &[u8]) -> bool {
    debug_assert_eq!(from.len(), to.len());
    let mut found = false;
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&hay[at..], from) {
        let start = at + i;
        hay[start..start + from.len()].copy_from_slice(to);
        at = start + from.len();
        found = true;
    }
    found
}

/// What a body rewriter does with one pattern.
pub(crate) enum Rule {
    /// Replace it (same length).
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
        Rewriting {
            inner,
            rules,
            keep,
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
                Rule::Replace { from, to } => {
                    replace_all(&mut self.held, from, to);
                }
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
        // Same-length rewriting: the size is the inner body's.
        self.inner.size_hint()
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
