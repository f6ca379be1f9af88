//! What the first bytes of a connection say about where it is going: the
//! server name of a TLS ClientHello, or the `Host` of an HTTP request.
//! Sans-IO: the caller feeds what it has read so far and reads more while
//! the answer is [`Peek::NeedMore`].

/// The most the caller buffers before deciding (a ClientHello with
/// post-quantum key shares is a few KiB; HTTP heads are small).
pub const MAX_PEEK: usize = 64 * 1024;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A TLS ClientHello, with the server name it asks for (lower-case,
    /// without a trailing dot), if any.
    Tls {
        /// The SNI host name.
        sni: Option<String>,
    },
    /// An HTTP/1 request head, with its `Host` header (name only, lower-case).
    Http {
        /// The name in `Host`, without port.
        host: Option<String>,
    },
    /// TLS or HTTP that does not parse: refused, since its destination name
    /// cannot be checked.
    Malformed(&'static str),
    /// Some other protocol (SSH, a database's wire protocol): nothing to
    /// compare, the connection's own name stands.
    Other,
}

/// Classifies the first bytes a client sent.
pub fn peek(buf: &[u8]) -> Peek {
    if buf.first() == Some(&0x16) {
        return client_hello(buf);
    }
    // Servers skip empty lines before a request line (RFC 9112 §2.2), so
    // they cannot hide one.
    match buf.iter().find(|b| !matches!(b, b'\r' | b'\n')) {
        None if buf.len() >= MAX_PEEK => Peek::Malformed("only empty lines"),
        None => Peek::NeedMore,
        Some(b) if b.is_ascii_alphabetic() => http(buf),
        // A request line after blanks: servers that split on any
        // whitespace would take it. Wait for the line to tell.
        Some(b' ' | b'\t') => match buf.iter().position(|&b| b == b'\n') {
            None if buf.len() < MAX_PEEK => Peek::NeedMore,
            _ if request_line(buf) => Peek::Malformed("an HTTP request line after blanks"),
            _ => Peek::Other,
        },
        Some(_) => Peek::Other,
    }
}

/// Lower-cases and strips one trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The most header lines a request head may have (here and wherever cordon
/// reads requests).
pub(crate) const MAX_HEADERS: usize = 96;

fn http(buf: &[u8]) -> Peek {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() < MAX_PEEK => Peek::NeedMore,
        Ok(httparse::Status::Partial) => Peek::Malformed("HTTP request head too long"),
        Ok(httparse::Status::Complete(_)) => {
            let mut hosts = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"));
            let host = match (hosts.next(), hosts.next()) {
                (Some(_), Some(_)) => return Peek::Malformed("several Host headers"),
                (None, _) => None,
                (Some(h), None) => match std::str::from_utf8(h.value) {
                    Ok(v) => Some(normalize(host_of(v.trim()))),
                    Err(_) => return Peek::Malformed("Host header is not text"),
                },
            };
            Peek::Http { host }
        }
        // A request line followed by something that does not parse (too
        // many headers, a broken one) cannot be checked: refused, never
        // passed on unexamined.
        Err(httparse::Error::TooManyHeaders) => Peek::Malformed("too many HTTP headers"),
        Err(_) if request_line(buf) => Peek::Malformed("an HTTP request that does not parse"),
        // Letters that are not an HTTP request (an SSH banner).
        Err(_) => Peek::Other,
    }
}

/// Whether the first line reads like an HTTP request line: it names
/// `HTTP/` anywhere, in any case, after any whitespace (any version:
/// HTTP/2 without TLS, `PRI * HTTP/2.0`, names its host inside frames
/// cordon does not read, so it is refused too).
fn request_line(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\n')
        .find(|l| !l.is_empty() && *l != b"\r")
        .unwrap_or_default();
    line.windows(5).any(|w| w.eq_ignore_ascii_case(b"HTTP/"))
}

/// The name part of `host[:port]` or `[v6]:port`.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // `[v6]` or `[v6]:port`; anything else after `]` is returned whole,
        // so that it matches no name.
        return match rest.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, port))
                if port.len() > 1
                    && port.starts_with(':')
                    && port[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                inside
            }
            _ => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Reads TLS records until the whole first handshake message is there.
fn client_hello(buf: &[u8]) -> Peek {
    let mut hs = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return need_more(buf);
        }
        if rest[0] != 0x16 {
            return Peek::Malformed("TLS handshake interrupted by another record");
        }
        if rest[1] != 3 {
            return Peek::Malformed("not a TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16384 + 2048 {
            return Peek::Malformed("bad TLS record length");
        }
        if rest.len() < 5 + len {
            return need_more(buf);
        }
        hs.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Peek::Malformed("the first TLS message is not a ClientHello");
            }
            let body = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            if body > MAX_PEEK {
                return Peek::Malformed("ClientHello too long");
            }
            if hs.len() >= 4 + body {
                return match sni(&hs[4..4 + body]) {
                    Ok(sni) => Peek::Tls { sni },
                    Err(why) => Peek::Malformed(why),
                };
            }
        }
    }
}

fn need_more(buf: &[u8]) -> Peek {
    if buf.len() >= MAX_PEEK {
        Peek::Malformed("ClientHello too long")
    } else {
        Peek::NeedMore
    }
}

/// A cursor over a ClientHello body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated ClientHello");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn sni(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Ok(None);
    }
    let mut exts = Reader(r.vec16()?);
    let mut found = None;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        if found.is_some() {
            return Err("two server_name extensions");
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                if found.is_some() {
                    return Err("two host names in server_name");
                }
                let name = std::str::from_utf8(name).map_err(|_| "SNI is not text")?;
                found = Some(normalize(name));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal but well-formed ClientHello record carrying `sni`.
    pub(crate) fn hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            exts.extend(0u16.to_be_bytes());
            exts.extend((list.len() as u16).to_be_bytes());
            exts.extend(list);
        }
        // supported_versions, to have a second extension.
        exts.extend([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn sni_is_found_at_any_split() {
        let h = hello(Some("Api.Example.COM."));
        for cut in 0..h.len() {
            assert_eq!(peek(&h[..cut]), Peek::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            peek(&h),
            Peek::Tls {
                sni: Some("api.example.com".into())
            }
        );
        assert_eq!(peek(&hello(None)), Peek::Tls { sni: None });
    }

    #[test]
    fn a_hello_split_over_two_records_is_reassembled() {
        let h = hello(Some("a.test"));
        let hs = &h[5..];
        let (a, b) = hs.split_at(20);
        let mut two = vec![0x16, 3, 1];
        two.extend((a.len() as u16).to_be_bytes());
        two.extend(a);
        two.extend([0x16, 3, 1]);
        two.extend((b.len() as u16).to_be_bytes());
        two.extend(b);
        assert_eq!(
            peek(&two),
            Peek::Tls {
                sni: Some("a.test".into())
            }
        );
    }

    #[test]
    fn broken_hellos_are_malformed() {
        let mut h = hello(Some("a.test"));
        h[5] = 2; // ServerHello
        assert!(matches!(peek(&h), Peek::Malformed(_)));
        let mut h = hello(Some("a.test"));
        let n = h.len();
        h[3..5].copy_from_slice(&((n - 5 + 10) as u16).to_be_bytes());
        h.extend([0x17; 10]);
        // The record is longer than the handshake claims: the SNI is still read.
        assert!(matches!(peek(&h), Peek::Tls { .. } | Peek::Malformed(_)));
        let mut h = hello(Some("a.test"));
        h[8] = 0xff; // handshake length beyond the record
        assert!(matches!(peek(&h), Peek::NeedMore | Peek::Malformed(_)));
        assert!(matches!(peek(&[0x16, 9, 9, 0, 1, 0]), Peek::Malformed(_)));
    }

    #[test]
    fn http_heads_give_their_host() {
        let req = b"GET / HTTP/1.1\r\nHost: Example.org:8080\r\nAccept: */*\r\n\r\n";
        for cut in 1..req.len() {
            assert_eq!(peek(&req[..cut]), Peek::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            peek(req),
            Peek::Http {
                host: Some("example.org".into())
            }
        );
        assert_eq!(peek(b"GET / HTTP/1.0\r\n\r\n"), Peek::Http { host: None });
        assert!(matches!(
            peek(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Peek::Malformed(_)
        ));
        assert_eq!(peek(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"), Peek::Other);
        // Requests that cannot be checked are refused, never passed on.
        let many = format!(
            "GET / HTTP/1.1\r\n{}Host: evil.test\r\n\r\n",
            "X-A: 1\r\n".repeat(100)
        );
        assert_eq!(
            peek(many.as_bytes()),
            Peek::Malformed("too many HTTP headers")
        );
        assert!(matches!(
            peek(b"GET / HTTP/1.1\r\nHost evil.test\r\n\r\n"),
            Peek::Malformed(_)
        ));
        assert_eq!(
            peek(b"\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            Peek::Http {
                host: Some("evil.test".into())
            }
        );
        assert_eq!(peek(b"\r\n"), Peek::NeedMore);
        assert!(matches!(
            peek(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Peek::Malformed(_)
        ));
        for hidden in [
            &b"GET\t/\tHTTP/1.1\r\nHost: evil.test\r\n\r\n"[..],
            b" GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            b"\tget / http/1.1\r\nHost: evil.test\r\n\r\n",
        ] {
            assert!(matches!(peek(hidden), Peek::Malformed(_)), "{hidden:?}");
        }
        assert_eq!(peek(b" not a request"), Peek::NeedMore);
        assert_eq!(peek(b" not a request\n"), Peek::Other);
        assert_eq!(host_of("[web.test]evil.test"), "[web.test]evil.test");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(
            peek(b"get / HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            Peek::Http {
                host: Some("evil.test".into())
            }
        );
        assert_eq!(peek(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), Peek::Other);
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("a.test"), "a.test");
    }
}
