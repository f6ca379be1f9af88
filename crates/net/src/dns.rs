//! The sandbox's DNS, answered by cordon (sans-IO): a query for a name the
//! policy allows gets a **fake IP** from a private pool, mapped to that name
//! for the session; anything else gets NXDOMAIN (or REFUSED for query types
//! that only tunnels need). No query ever leaves the machine: the real
//! resolution happens when a connection to the fake IP is made, by the
//! supervisor, for the name the fake IP stands for.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use cordon_detect::check::entropy;

/// The gateway: the sandbox's DNS server and the TUN's peer.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The sandbox's own address on the TUN.
pub const SANDBOX_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// First and last fake IP (198.18.0.0/15 is reserved for benchmarking:
/// never a real destination).
const POOL_FIRST: u32 = u32::from_be_bytes([198, 18, 1, 0]);
const POOL_LAST: u32 = u32::from_be_bytes([198, 19, 255, 254]);

/// Record types.
pub const TYPE_A: u16 = 1;
/// IPv6 address record.
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Response codes.
pub const RCODE_NOERROR: u8 = 0;
/// Malformed query.
pub const RCODE_FORMERR: u8 = 1;
/// The pool is exhausted.
pub const RCODE_SERVFAIL: u8 = 2;
/// No such name (here: not allowed).
pub const RCODE_NXDOMAIN: u8 = 3;
/// Not answered by policy.
pub const RCODE_REFUSED: u8 = 5;

/// A parsed query with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Transaction id.
    pub id: u16,
    /// The request's flags (opcode and RD are echoed).
    pub flags: u16,
    /// The name asked for, lower-cased, without the trailing dot; labels
    /// are raw bytes made text (non-ASCII bytes are kept as U+FFFD, which no
    /// rule matches).
    pub name: String,
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
    /// End of the question section in the request.
    question_end: usize,
}

/// Parses a query. Errors name what is wrong (the caller answers FORMERR
/// when there is at least a header).
pub fn parse_query(buf: &[u8]) -> Result<Query, &'static str> {
    if buf.len() < 12 {
        return Err("shorter than a DNS header");
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    if flags & 0x8000 != 0 {
        return Err("a response, not a query");
    }
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    if qdcount != 1 {
        return Err("not exactly one question");
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*buf.get(i).ok_or("truncated name")?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Err("label too long or compressed");
        }
        let label = buf.get(i..i + len).ok_or("truncated label")?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
        if i > 12 + 255 {
            return Err("name too long");
        }
    }
    let tail = buf.get(i..i + 4).ok_or("truncated question")?;
    Ok(Query {
        id,
        flags,
        name: labels.join("."),
        qtype: u16::from_be_bytes([tail[0], tail[1]]),
        qclass: u16::from_be_bytes([tail[2], tail[3]]),
        question_end: i + 4,
    })
}

impl Query {
    /// Whether this is a question class IN.
    pub fn is_internet(&self) -> bool {
        self.qclass == CLASS_IN
    }
}

/// The response to `q` (whose bytes are `req`): `rcode`, and one A record
/// when `answer` is given.
pub fn response(q: &Query, req: &[u8], rcode: u8, answer: Option<(Ipv4Addr, u32)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question_end + 16);
    out.extend(q.id.to_be_bytes());
    // QR, the request's opcode and RD, RA, and the code.
    let flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | u16::from(rcode & 0x0f);
    out.extend(flags.to_be_bytes());
    out.extend(1u16.to_be_bytes());
    out.extend(u16::from(answer.is_some()).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend_from_slice(&req[12..q.question_end]);
    if let Some((ip, ttl)) = answer {
        out.extend([0xc0, 0x0c]);
        out.extend(TYPE_A.to_be_bytes());
        out.extend(CLASS_IN.to_be_bytes());
        out.extend(ttl.to_be_bytes());
        out.extend(4u16.to_be_bytes());
        out.extend(ip.octets());
    }
    out
}

/// A FORMERR answer to whatever header `req` has (`None` if not even that).
pub fn format_error(req: &[u8]) -> Option<Vec<u8>> {
    if req.len() < 12 {
        return None;
    }
    let mut out = req[..4].to_vec();
    out[2] = 0x80 | (req[2] & 0x79);
    out[3] = 0x80 | RCODE_FORMERR;
    out.extend([0; 8]);
    Some(out)
}

/// The session's fake IPs: name to address and back.
#[derive(Debug, Default)]
pub struct FakeIps {
    by_name: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, String>,
    next: u32,
}

impl FakeIps {
    /// The fake IP of `name`, assigning one if needed; `None` when the pool
    /// (about 130 000 names) is used up.
    pub fn assign(&mut self, name: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_name.get(name) {
            return Some(*ip);
        }
        let n = POOL_FIRST.checked_add(self.next)?;
        if n > POOL_LAST {
            return None;
        }
        self.next += 1;
        let ip = Ipv4Addr::from(n);
        self.by_name.insert(name.to_owned(), ip);
        self.by_ip.insert(ip, name.to_owned());
        Some(ip)
    }

    /// The name a fake IP stands for.
    pub fn name_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }

    /// Whether `ip` is in the fake pool (assigned or not).
    pub fn in_pool(ip: Ipv4Addr) -> bool {
        (POOL_FIRST..=POOL_LAST).contains(&u32::from(ip))
    }
}

/// Why a name looks like data smuggled through DNS, if it does: a very long
/// name, or a long label of letters and digits with the entropy of encoded
/// data (base32/base64/hex), not of words.
pub fn tunnel_suspect(name: &str) -> Option<String> {
    if name.len() > 180 {
        return Some(format!("a {}-character name", name.len()));
    }
    for label in name.split('.') {
        if label.len() >= 24
            && label.bytes().all(|b| b.is_ascii_alphanumeric())
            && label.bytes().any(|b| b.is_ascii_digit())
            && entropy(label.as_bytes()) >= 3.5
        {
            return Some(format!(
                "the label {label:?} ({} characters, {:.1} bits per character) looks like \
                 encoded data",
                label.len(),
                entropy(label.as_bytes())
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.push(0);
        q.extend(qtype.to_be_bytes());
        q.extend(1u16.to_be_bytes());
        q
    }

    #[test]
    fn queries_parse_and_answers_are_well_formed() {
        let req = query("API.Example.com", TYPE_A);
        let q = parse_query(&req).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype),
            (0x1234, "api.example.com", 1)
        );
        let r = response(
            &q,
            &req,
            RCODE_NOERROR,
            Some((Ipv4Addr::new(198, 18, 1, 0), 60)),
        );
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[2] & 0x01, 0x01, "RD echoed");
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[198, 18, 1, 0]);
        let nx = response(&q, &req, RCODE_NXDOMAIN, None);
        assert_eq!(nx[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(&nx[6..8], &[0, 0]);
        assert_eq!(nx.len(), req.len());
    }

    #[test]
    fn bad_queries_are_errors() {
        assert!(parse_query(&[0; 5]).is_err());
        let mut two = query("a.test", TYPE_A);
        two[5] = 2;
        assert!(parse_query(&two).is_err());
        let mut resp = query("a.test", TYPE_A);
        resp[2] |= 0x80;
        assert!(parse_query(&resp).is_err());
        let mut ptr = query("a.test", TYPE_A);
        ptr[12] = 0xc0;
        assert!(parse_query(&ptr).is_err());
        let cut = query("a.test", TYPE_A);
        assert!(parse_query(&cut[..cut.len() - 2]).is_err());
        let fe = format_error(&cut).unwrap();
        assert_eq!(fe[3] & 0x0f, RCODE_FORMERR);
    }

    #[test]
    fn fake_ips_are_stable_per_name_and_map_back() {
        let mut f = FakeIps::default();
        let a = f.assign("a.test").unwrap();
        let b = f.assign("b.test").unwrap();
        assert_ne!(a, b);
        assert_eq!(f.assign("a.test"), Some(a));
        assert_eq!(f.name_of(b), Some("b.test"));
        assert!(FakeIps::in_pool(a) && !FakeIps::in_pool(GATEWAY));
        assert_eq!(f.name_of(Ipv4Addr::new(198, 19, 0, 0)), None);
    }

    #[test]
    fn encoded_data_in_names_is_suspect_and_words_are_not() {
        assert!(tunnel_suspect("mzxw6ytboi2dqmbrgeztinjwg44dsmbrge.t.example.com").is_some());
        assert!(tunnel_suspect("4f2a9c81e07b3d56a1c9e2f0b8d7a6c5.example.com").is_some());
        assert!(tunnel_suspect(&format!("{}.example.com", "a.".repeat(95))).is_some());
        for ok in [
            "objects.githubusercontent.com",
            "my-company-artifacts-production-us-east-1.s3.amazonaws.com",
            "generativelanguage.googleapis.com",
            "d1a2b3c4d5e6f7.cloudfront.net",
        ] {
            assert_eq!(tunnel_suspect(ok), None, "{ok}");
        }
    }
}
