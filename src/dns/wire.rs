//! The DNS wire format, pure: bytes in, messages out. Building and parsing is `hickory-proto`'s;
//! this module decides what a reply *means* for the question we asked.
//!
//! A query asks one question (A or AAAA, class IN) with recursion desired and an EDNS(0) OPT
//! record offering [`EDNS_PAYLOAD`] bytes (the DNS flag day 2020 size: it fits one unfragmented
//! datagram on any path). A reply is taken only if it **matches**: it is a response to a
//! standard query, carries our id, and repeats our question exactly (name without regard to
//! case, type and class). Everything else is [`Ignored`], never an error for the lookup: a
//! spoofed or stray datagram must not be able to end a query, only the real server can. The
//! source address is checked by the caller (it is not in the bytes).
//!
//! A matching reply is read in two steps: the header and question first, so a truncated reply
//! (TC bit) is recognised even when the records after them are cut short; then the whole
//! message. Addresses are collected by following the CNAME chain from the question's name (at
//! most [`MAX_CNAME_HOPS`] links) and the TTL is the smallest along that chain. A negative
//! reply's TTL is the SOA's (RFC 2308 §5: the smaller of the SOA record's TTL and its MINIMUM
//! field); without an SOA there is none and the reply must not be cached.

use std::fmt;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::Family;

/// The UDP payload size offered in the EDNS(0) OPT record; answers larger than this come back
/// truncated and are asked again over TCP.
pub const EDNS_PAYLOAD: u16 = 1232;

/// How many CNAME links are followed before the answer is taken as having no address.
pub const MAX_CNAME_HOPS: usize = 8;

/// One question: a name and the family of addresses wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    name: Name,
    family: Family,
}

impl Question {
    /// The question for `name` (a host name such as `www.example.com`, with or without the
    /// trailing dot). Fails for what is not a valid DNS name.
    pub fn new(name: &str, family: Family) -> Result<Question, WireError> {
        let mut name = Name::from_ascii(name).map_err(|_| WireError::BadName)?;
        name.set_fqdn(true);
        Ok(Question { name, family })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    fn record_type(&self) -> RecordType {
        record_type(self.family)
    }
}

fn record_type(family: Family) -> RecordType {
    match family {
        Family::V4 => RecordType::A,
        Family::V6 => RecordType::AAAA,
    }
}

/// A query could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Not a name DNS can carry.
    BadName,
    /// The encoder refused the message.
    Encode,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::BadName => "not a valid DNS name",
            WireError::Encode => "cannot encode the query",
        })
    }
}

impl std::error::Error for WireError {}

/// The bytes of a query for `question` with id `id` (the same over UDP and, after a 2-byte
/// length, over TCP).
pub fn build_query(id: u16, question: &Question) -> Result<Vec<u8>, WireError> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(question.name.clone(), question.record_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    message.to_vec().map_err(|_| WireError::Encode)
}

/// What a matching reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The TC bit: the answer did not fit; ask again over TCP.
    Truncated,
    /// Addresses (never empty, in the server's order, each once) and how long they may be kept.
    Addrs { addrs: Vec<IpAddr>, ttl: u32 },
    /// The name exists but has no address of the family asked (NOERROR, no such record).
    NoData { negative_ttl: Option<u32> },
    /// The name does not exist.
    NxDomain { negative_ttl: Option<u32> },
    /// The server could not or would not answer (SERVFAIL, REFUSED, NOTIMP, FORMERR, …):
    /// another server may.
    Failed { rcode: u16 },
}

/// Why a datagram was not taken as the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not a DNS message (or one cut short, or broken inside).
    Malformed,
    /// A query, or a response to something other than a standard query.
    NotAResponse,
    /// Another id than ours.
    WrongId,
    /// Our id, but not our question (name, type or class), or not exactly one question.
    WrongQuestion,
}

/// Read `bytes` as the reply to query `id` asking `question`.
pub fn parse_reply(bytes: &[u8], id: u16, question: &Question) -> Result<Reply, Ignored> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).map_err(|_| Ignored::Malformed)?;
    if header.metadata.message_type != MessageType::Response || header.metadata.op_code != OpCode::Query {
        return Err(Ignored::NotAResponse);
    }
    if header.metadata.id != id {
        return Err(Ignored::WrongId);
    }
    if header.counts.queries != 1 {
        return Err(Ignored::WrongQuestion);
    }
    let asked = Query::read(&mut decoder).map_err(|_| Ignored::Malformed)?;
    if asked.name() != &question.name
        || asked.query_type() != question.record_type()
        || asked.query_class() != DNSClass::IN
    {
        return Err(Ignored::WrongQuestion);
    }
    if header.metadata.truncation {
        return Ok(Reply::Truncated);
    }
    let message = Message::from_vec(bytes).map_err(|_| Ignored::Malformed)?;
    let rcode = message.metadata.response_code;
    if rcode == ResponseCode::NXDomain {
        return Ok(Reply::NxDomain { negative_ttl: negative_ttl(&message) });
    }
    if rcode != ResponseCode::NoError {
        return Ok(Reply::Failed { rcode: u16::from(rcode) });
    }
    match addresses(&message, question) {
        Some((addrs, ttl)) => Ok(Reply::Addrs { addrs, ttl }),
        None => Ok(Reply::NoData { negative_ttl: negative_ttl(&message) }),
    }
}

/// The addresses the answer section gives the question's name, following CNAMEs, with the
/// smallest TTL met on the way; `None` if it gives none.
fn addresses(message: &Message, question: &Question) -> Option<(Vec<IpAddr>, u32)> {
    let mut name = &question.name;
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_HOPS {
        let mut addrs = Vec::new();
        let mut addrs_ttl = u32::MAX;
        let mut alias = None;
        for record in message.answers.iter().filter(|r| r.dns_class == DNSClass::IN && &r.name == name) {
            let ip = match (&record.data, question.family) {
                (RData::A(a), Family::V4) => IpAddr::V4(a.0),
                (RData::AAAA(aaaa), Family::V6) => IpAddr::V6(aaaa.0),
                (RData::CNAME(target), _) => {
                    alias.get_or_insert((&target.0, record.ttl));
                    continue;
                }
                _ => continue,
            };
            addrs_ttl = addrs_ttl.min(record.ttl);
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
        if !addrs.is_empty() {
            return Some((addrs, ttl.min(addrs_ttl)));
        }
        let (target, alias_ttl) = alias?;
        ttl = ttl.min(alias_ttl);
        name = target;
    }
    None
}

/// RFC 2308 §5: a negative answer is cached for the smaller of the SOA record's TTL and the
/// SOA's MINIMUM field. No SOA in the authority section: no negative caching.
fn negative_ttl(message: &Message) -> Option<u32> {
    message.authorities.iter().find_map(|record| match &record.data {
        RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
        _ => None,
    })
}

/// Replies built for tests (the fake servers in `super::tests` and the parser's own tests).
#[cfg(test)]
pub mod build {
    use std::net::IpAddr;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    /// A response to `id` asking (`name`, `rtype`) with `rcode`; add records with the methods.
    pub struct Response(pub Message);

    pub fn name(s: &str) -> Name {
        let mut name = Name::from_ascii(s).unwrap();
        name.set_fqdn(true);
        name
    }

    impl Response {
        pub fn new(id: u16, qname: &str, rtype: RecordType, rcode: ResponseCode) -> Response {
            let mut message = Message::new(id, MessageType::Response, OpCode::Query);
            message.metadata.response_code = rcode;
            message.metadata.recursion_desired = true;
            message.metadata.recursion_available = true;
            message.add_query(Query::query(name(qname), rtype));
            Response(message)
        }

        pub fn ip(mut self, owner: &str, ttl: u32, ip: IpAddr) -> Response {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            self.0.add_answer(Record::from_rdata(name(owner), ttl, data));
            self
        }

        pub fn cname(mut self, owner: &str, ttl: u32, target: &str) -> Response {
            self.0.add_answer(Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target)))));
            self
        }

        pub fn soa(mut self, zone: &str, ttl: u32, minimum: u32) -> Response {
            let soa =
                SOA::new(name(&format!("ns.{zone}")), name(&format!("host.{zone}")), 1, 60, 60, 600, minimum);
            self.0.add_authority(Record::from_rdata(name(zone), ttl, RData::SOA(soa)));
            self
        }

        pub fn truncated(mut self) -> Response {
            self.0.metadata.truncation = true;
            self
        }

        pub fn bytes(&self) -> Vec<u8> {
            self.0.to_vec().unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::build::Response;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn q(name: &str, family: Family) -> Question {
        Question::new(name, family).unwrap()
    }

    #[test]
    fn builds_a_query_with_edns_and_recursion() {
        let bytes = build_query(0xbeef, &q("www.Example.com", Family::V6)).unwrap();
        let message = Message::from_vec(&bytes).unwrap();
        assert_eq!(message.metadata.id, 0xbeef);
        assert_eq!(message.metadata.message_type, MessageType::Query);
        assert!(message.metadata.recursion_desired);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.queries[0].name().to_ascii(), "www.Example.com.");
        assert_eq!(message.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(message.queries[0].query_class(), DNSClass::IN);
        assert_eq!(message.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
        // A trailing dot changes nothing.
        assert_eq!(bytes, build_query(0xbeef, &q("www.Example.com.", Family::V6)).unwrap());
        let v4 = Message::from_vec(&build_query(1, &q("a.b", Family::V4)).unwrap()).unwrap();
        assert_eq!(v4.queries[0].query_type(), RecordType::A);
        assert_eq!(Question::new("bad..name", Family::V4), Err(WireError::BadName));
    }

    #[test]
    fn parses_addresses_with_the_smallest_ttl() {
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(7, "www.example.com", RecordType::A, ResponseCode::NoError)
            .ip("www.example.com", 300, ip("192.0.2.1"))
            .ip("WWW.example.com", 60, ip("192.0.2.2"))
            .ip("www.example.com", 300, ip("192.0.2.1"))
            .ip("other.example.com", 5, ip("192.0.2.9"))
            .soa("example.com", 1, 1);
        assert_eq!(
            parse_reply(&reply.bytes(), 7, &question),
            Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1"), ip("192.0.2.2")], ttl: 60 })
        );
        let question = q("www.example.com", Family::V6);
        let reply = Response::new(8, "www.example.com", RecordType::AAAA, ResponseCode::NoError).ip(
            "www.example.com",
            30,
            ip("2001:db8::1"),
        );
        assert_eq!(
            parse_reply(&reply.bytes(), 8, &question),
            Ok(Reply::Addrs { addrs: vec![ip("2001:db8::1")], ttl: 30 })
        );
    }

    #[test]
    fn follows_cname_chains() {
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(1, "www.example.com", RecordType::A, ResponseCode::NoError)
            .cname("www.example.com", 600, "edge.cdn.example")
            .cname("edge.cdn.example", 20, "node7.cdn.example")
            .ip("node7.cdn.example", 300, ip("198.51.100.7"))
            .ip("unrelated.example", 300, ip("198.51.100.8"));
        assert_eq!(
            parse_reply(&reply.bytes(), 1, &question),
            Ok(Reply::Addrs { addrs: vec![ip("198.51.100.7")], ttl: 20 })
        );

        // A chain that ends without an address is NODATA (not cacheable without an SOA).
        let dangling = Response::new(2, "www.example.com", RecordType::A, ResponseCode::NoError).cname(
            "www.example.com",
            600,
            "gone.example",
        );
        assert_eq!(parse_reply(&dangling.bytes(), 2, &question), Ok(Reply::NoData { negative_ttl: None }));

        // A loop is followed only MAX_CNAME_HOPS times.
        let looped = Response::new(3, "www.example.com", RecordType::A, ResponseCode::NoError)
            .cname("www.example.com", 60, "b.example")
            .cname("b.example", 60, "www.example.com");
        assert_eq!(parse_reply(&looped.bytes(), 3, &question), Ok(Reply::NoData { negative_ttl: None }));

        // Addresses of the other family along the chain are not ours.
        let wrong_family = Response::new(4, "www.example.com", RecordType::A, ResponseCode::NoError)
            .cname("www.example.com", 60, "b.example")
            .ip("b.example", 60, ip("2001:db8::1"));
        assert_eq!(
            parse_reply(&wrong_family.bytes(), 4, &question),
            Ok(Reply::NoData { negative_ttl: None })
        );
    }

    #[test]
    fn negative_answers_carry_the_soa_ttl() {
        let question = q("nx.example.com", Family::V4);
        let nx = Response::new(5, "nx.example.com", RecordType::A, ResponseCode::NXDomain).soa(
            "example.com",
            900,
            60,
        );
        assert_eq!(parse_reply(&nx.bytes(), 5, &question), Ok(Reply::NxDomain { negative_ttl: Some(60) }));
        let nx = Response::new(5, "nx.example.com", RecordType::A, ResponseCode::NXDomain).soa(
            "example.com",
            30,
            60,
        );
        assert_eq!(parse_reply(&nx.bytes(), 5, &question), Ok(Reply::NxDomain { negative_ttl: Some(30) }));
        let nx = Response::new(5, "nx.example.com", RecordType::A, ResponseCode::NXDomain);
        assert_eq!(parse_reply(&nx.bytes(), 5, &question), Ok(Reply::NxDomain { negative_ttl: None }));
        let nodata = Response::new(6, "nx.example.com", RecordType::A, ResponseCode::NoError).soa(
            "example.com",
            300,
            120,
        );
        assert_eq!(parse_reply(&nodata.bytes(), 6, &question), Ok(Reply::NoData { negative_ttl: Some(120) }));
    }

    #[test]
    fn server_failures_and_truncation() {
        let question = q("www.example.com", Family::V4);
        for rcode in
            [ResponseCode::ServFail, ResponseCode::Refused, ResponseCode::NotImp, ResponseCode::FormErr]
        {
            let reply = Response::new(9, "www.example.com", RecordType::A, rcode);
            assert_eq!(
                parse_reply(&reply.bytes(), 9, &question),
                Ok(Reply::Failed { rcode: u16::from(rcode) })
            );
        }
        let truncated = Response::new(9, "www.example.com", RecordType::A, ResponseCode::NoError)
            .ip("www.example.com", 60, ip("192.0.2.1"))
            .truncated();
        let bytes = truncated.bytes();
        assert_eq!(parse_reply(&bytes, 9, &question), Ok(Reply::Truncated));
        // Truncated replies are recognised even when the records are cut off mid-way.
        assert_eq!(parse_reply(&bytes[..bytes.len() - 3], 9, &question), Ok(Reply::Truncated));
    }

    #[test]
    fn mismatches_are_ignored() {
        let question = q("www.example.com", Family::V4);
        let good = Response::new(42, "www.example.com", RecordType::A, ResponseCode::NoError).ip(
            "www.example.com",
            60,
            ip("192.0.2.1"),
        );
        assert!(parse_reply(&good.bytes(), 42, &question).is_ok());
        assert_eq!(parse_reply(&good.bytes(), 43, &question), Err(Ignored::WrongId));
        assert_eq!(
            parse_reply(&good.bytes(), 42, &q("www.example.org", Family::V4)),
            Err(Ignored::WrongQuestion)
        );
        assert_eq!(
            parse_reply(&good.bytes(), 42, &q("www.example.com", Family::V6)),
            Err(Ignored::WrongQuestion)
        );
        assert!(parse_reply(&good.bytes(), 42, &q("WWW.EXAMPLE.COM", Family::V4)).is_ok(), "case-blind");

        let mut chaos = Response::new(42, "www.example.com", RecordType::A, ResponseCode::NoError);
        chaos.0.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(parse_reply(&chaos.bytes(), 42, &question), Err(Ignored::WrongQuestion));

        let mut two = Response::new(42, "www.example.com", RecordType::A, ResponseCode::NoError);
        two.0.add_query(Query::query(build::name("www.example.com"), RecordType::A));
        assert_eq!(parse_reply(&two.bytes(), 42, &question), Err(Ignored::WrongQuestion));

        // Our own query echoed back is not a response.
        let query = build_query(42, &question).unwrap();
        assert_eq!(parse_reply(&query, 42, &question), Err(Ignored::NotAResponse));

        let mut notify = Response::new(42, "www.example.com", RecordType::A, ResponseCode::NoError);
        notify.0.metadata.op_code = OpCode::Notify;
        assert_eq!(parse_reply(&notify.bytes(), 42, &question), Err(Ignored::NotAResponse));

        assert_eq!(parse_reply(&[], 42, &question), Err(Ignored::Malformed));
        assert_eq!(parse_reply(&[0; 11], 42, &question), Err(Ignored::Malformed));
    }

    /// The `dns_response` fuzz target's seeds say what their names say (first byte: the
    /// question, `www.example.com` with bit 0 the family; the id is the reply's own).
    #[test]
    fn fuzz_seeds_are_the_replies_they_claim_to_be() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/dns_response");
        let seed = |name: &str| {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let family = if bytes[0] & 1 == 0 { Family::V4 } else { Family::V6 };
            let id = u16::from_be_bytes([bytes[1], bytes[2]]);
            parse_reply(&bytes[1..], id, &q("www.example.com", family))
        };
        assert_eq!(seed("a_via_cname"), Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1")], ttl: 60 }));
        assert_eq!(seed("aaaa"), Ok(Reply::Addrs { addrs: vec![ip("2001:db8::1")], ttl: 60 }));
        assert_eq!(seed("nxdomain_soa"), Ok(Reply::NxDomain { negative_ttl: Some(30) }));
        assert_eq!(seed("truncated"), Ok(Reply::Truncated));
    }

    #[test]
    fn every_prefix_and_every_flipped_byte_of_a_reply_is_handled() {
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(42, "www.example.com", RecordType::A, ResponseCode::NoError)
            .cname("www.example.com", 60, "a.example.com")
            .ip("a.example.com", 60, ip("192.0.2.1"))
            .soa("example.com", 60, 60)
            .bytes();
        for end in 0..reply.len() {
            assert!(
                parse_reply(&reply[..end], 42, &question).is_err(),
                "a prefix of {end} bytes is no reply"
            );
        }
        for at in 0..reply.len() {
            for bits in [0x01, 0x80, 0xff] {
                let mut bent = reply.clone();
                bent[at] ^= bits;
                let _ = parse_reply(&bent, 42, &question); // must not panic
            }
        }
    }
}
