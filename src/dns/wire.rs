//! The DNS wire format (RFC 1035 §4), pure: bytes in, meaning out. A small codec of our own
//! that knows just what the client asks and reads: one question, the A, AAAA, CNAME and SOA
//! records, and the OPT record's extended RCODE. Why not a library: see "Why a codec of our
//! own" below.
//!
//! A query asks one question (A or AAAA, class IN) with recursion desired and an EDNS(0) OPT
//! record (RFC 6891) offering [`EDNS_PAYLOAD`] bytes (the DNS flag day 2020 size: it fits one
//! unfragmented datagram on any path). A reply is taken only if it **matches**: it is a
//! response to a standard query, carries our id, and repeats our question exactly (name
//! without regard to ASCII case, RFC 4343; type and class). Everything else is [`Ignored`],
//! never an error for the lookup: a spoofed or stray datagram must not be able to end a query,
//! only the real server can. The source address is checked by the caller (it is not in the
//! bytes).
//!
//! A matching reply is read in two steps: the header and question first, so a truncated reply
//! (TC bit) is recognised even when the records after them are cut short; then every record of
//! every section, each checked against the message's bounds (a record that does not fit, a
//! name that is too long or badly compressed, an A record that is not 4 bytes: the reply is
//! [`Ignored::Malformed`]). Records of other types are skipped by their length. Addresses are
//! collected by following the CNAME chain from the question's name (at most
//! [`MAX_CNAME_HOPS`] links) and the TTL is the smallest along that chain. A negative reply's
//! TTL is the SOA's (RFC 2308 §5: the smaller of the SOA record's TTL and its MINIMUM field);
//! without an SOA there is none and the reply must not be cached. A TTL with its top bit set
//! counts as 0 (RFC 2181 §8).
//!
//! **Names and compression.** A name is read into a fixed 255-byte buffer (the most RFC 1035
//! allows; longer is malformed), labels of 1 to 63 bytes; the label types `01` and `10` are
//! malformed. A compression pointer must point before the start of the labels that led to it,
//! and the name there must end before them too (as a name compressed against an earlier one
//! does), so the offsets jumped to strictly decrease: a loop, or a pointer to itself or
//! forward, is malformed, and no name costs more than one pass over the message. Every read of the message
//! is checked against its length, so no sequence of bytes can make it panic
//! (`fuzz/fuzz_targets/dns_response.rs` and the tests below try).
//!
//! # Why a codec of our own
//!
//! This module used `hickory-proto` (no default features: only its message codec) until
//! measurements showed what it cost an idle process that never looks a name up. Replacing it
//! and what it pulled in (`idna` with the ICU normalizer tables, `url`, `data-encoding`,
//! `tracing`: 55 crates left `Cargo.lock`) with this codec took 224 KB off the release
//! binary's text and 124 KB off its read-only data (1.65 MB → 1.20 MB in all), and since the
//! kernel maps the pages around every page a process touches (fault-around), 200–280 KiB
//! off the idle process's resident memory (`docs/benchmarks.md`, "Idle RSS"). The client
//! needs a sliver of a general DNS library: one question, four record types, no DNSSEC, no
//! IDNA (names arrive as ASCII from SOCKS clients), no name edits. This codec is a few hundred
//! lines with no `unsafe`, unit-tested against hand-built replies (compression, loops,
//! truncation, bad lengths), tested against a real dnsmasq (`super::tests`), and fuzzed
//! (`dns_response`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Family;

/// The UDP payload size offered in the EDNS(0) OPT record; answers larger than this come back
/// truncated and are asked again over TCP.
pub const EDNS_PAYLOAD: u16 = 1232;

/// How many CNAME links are followed before the answer is taken as having no address.
pub const MAX_CNAME_HOPS: usize = 8;

/// The longest name on the wire, length bytes and the root's 0 included (RFC 1035 §3.1).
const MAX_NAME: usize = 255;

/// The fixed header's length (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;

/// Record types (RFC 1035 §3.2.2, RFC 3596, RFC 6891).
pub mod rtype {
    pub const A: u16 = 1;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
}

/// The Internet class.
pub const CLASS_IN: u16 = 1;

/// Response codes (RFC 1035 §4.1.1) that the client tells apart.
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
}

/// Header flag bits (the second 16-bit word).
const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RCODE: u16 = 0x000f;

/// A domain name in wire form: its labels, each after its length byte, then the root's 0.
/// Case is kept as given; comparisons ignore ASCII case.
#[derive(Clone)]
struct Name {
    len: usize,
    bytes: [u8; MAX_NAME],
}

impl Name {
    /// The root name (a single 0).
    fn root() -> Name {
        Name { len: 1, bytes: [0; MAX_NAME] }
    }

    /// `text` (`www.example.com`, with or without the trailing dot) in wire form: labels of 1
    /// to 63 printable ASCII characters other than `.` and `\`, at most [`MAX_NAME`] bytes in all.
    fn from_text(text: &str) -> Option<Name> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return None;
        }
        let mut name = Name::root();
        for label in text.split('.') {
            if !label.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
                return None;
            }
            name.push_label(label.as_bytes())?;
        }
        Some(name)
    }

    /// Append `label` before the root's 0; `None` if it is empty, longer than 63 bytes or
    /// would make the name longer than [`MAX_NAME`].
    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        let len = u8::try_from(label.len()).ok().filter(|&l| (1..=63).contains(&l))?;
        let end = self.len + 1 + label.len();
        if end > MAX_NAME {
            return None;
        }
        // The root's 0 moves to the end.
        self.bytes[self.len - 1] = len;
        self.bytes[self.len..end - 1].copy_from_slice(label);
        self.bytes[end - 1] = 0;
        self.len = end;
        Some(())
    }

    /// The wire form.
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The same name, regardless of ASCII case. Comparing whole wire forms is comparing label
    /// by label: length bytes (at most 63) are never letters, so folding leaves them alone.
    fn matches(&self, other: &Name) -> bool {
        self.as_bytes().eq_ignore_ascii_case(other.as_bytes())
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.matches(other)
    }
}

impl Eq for Name {}

impl fmt::Display for Name {
    /// `www.example.com.`; bytes outside printable ASCII, `.` and `\` inside a label are
    /// escaped as `\DDD` (RFC 1035 §5.1).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.as_bytes();
        if rest == [0] {
            return f.write_str(".");
        }
        while let Some((&len, tail)) = rest.split_first() {
            let Some((label, tail)) = tail.split_at_checked(usize::from(len)) else { break };
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", char::from(b))?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            if len > 0 {
                f.write_str(".")?;
            }
            rest = tail;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

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
        Ok(Question { name: Name::from_text(name).ok_or(WireError::BadName)?, family })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    fn record_type(&self) -> u16 {
        record_type(self.family)
    }
}

fn record_type(family: Family) -> u16 {
    match family {
        Family::V4 => rtype::A,
        Family::V6 => rtype::AAAA,
    }
}

/// A query could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Not a name DNS can carry.
    BadName,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::BadName => "not a valid DNS name",
        })
    }
}

impl std::error::Error for WireError {}

/// The bytes of a query for `question` with id `id` (the same over UDP and, after a 2-byte
/// length, over TCP): the header (RD set, one question, one additional record), the question,
/// and the OPT record (root owner, class = [`EDNS_PAYLOAD`], TTL 0: extended RCODE 0, version
/// 0, DO clear; no options).
pub fn build_query(id: u16, question: &Question) -> Vec<u8> {
    let name = question.name.as_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 4 + 11);
    for word in [id, RD, 1, 0, 0, 1] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(name);
    out.extend_from_slice(&question.record_type().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.push(0);
    for word in [rtype::OPT, EDNS_PAYLOAD, 0, 0, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
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
    /// another server may. `rcode` includes the OPT record's extended bits (RFC 6891 §6.1.3).
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
    let header = Header::read(bytes).ok_or(Ignored::Malformed)?;
    if header.flags & QR == 0 || header.flags & OPCODE != 0 {
        return Err(Ignored::NotAResponse);
    }
    if header.id != id {
        return Err(Ignored::WrongId);
    }
    if header.counts[0] != 1 {
        return Err(Ignored::WrongQuestion);
    }
    let (asked, at) = read_name(bytes, HEADER_LEN).ok_or(Ignored::Malformed)?;
    let (qtype, qclass) = (u16_at(bytes, at), u16_at(bytes, at + 2));
    let (Some(qtype), Some(qclass)) = (qtype, qclass) else { return Err(Ignored::Malformed) };
    if !asked.matches(&question.name) || qtype != question.record_type() || qclass != CLASS_IN {
        return Err(Ignored::WrongQuestion);
    }
    if header.flags & TC != 0 {
        return Ok(Reply::Truncated);
    }
    let sections = Sections::read(bytes, at + 4, header.counts).ok_or(Ignored::Malformed)?;
    let rcode = sections.extended_rcode << 4 | header.flags & RCODE;
    if rcode == rcode::NXDOMAIN {
        return Ok(Reply::NxDomain { negative_ttl: sections.negative_ttl(bytes) });
    }
    if rcode != rcode::NOERROR {
        return Ok(Reply::Failed { rcode });
    }
    match sections.addresses(bytes, question) {
        Some((addrs, ttl)) => Ok(Reply::Addrs { addrs, ttl }),
        None => Ok(Reply::NoData { negative_ttl: sections.negative_ttl(bytes) }),
    }
}

/// The big-endian u16 at `at`, if the message has it.
fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let word = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([word[0], word[1]]))
}

/// The big-endian u32 at `at`, if the message has it.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// The fixed header.
struct Header {
    id: u16,
    flags: u16,
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    counts: [u16; 4],
}

impl Header {
    fn read(bytes: &[u8]) -> Option<Header> {
        let word = |i: usize| u16_at(bytes, 2 * i);
        Some(Header { id: word(0)?, flags: word(1)?, counts: [word(2)?, word(3)?, word(4)?, word(5)?] })
    }
}

/// Read the name at `start`: the name, and where the bytes after it begin (after its first
/// pointer, if it has one). `None` for a name that runs past the message, has a label type
/// other than length or pointer, or is longer than [`MAX_NAME`], and for a pointer that does
/// not point before the labels that led to it, or whose name does not end before them (as
/// a name compressed against an earlier one does). Each jump lands earlier than the last and
/// reads less of the message, so there are no loops.
fn read_name(bytes: &[u8], start: usize) -> Option<(Name, usize)> {
    let mut name = Name::root();
    // What may be read: the whole message, then only what lies before the last jump's labels.
    let mut view = bytes;
    let mut at = start;
    // Where the labels now being read began: a pointer must point before it.
    let mut segment = start;
    let mut end = None;
    loop {
        let len = *view.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some((name, end.unwrap_or(at + 1))),
            0x00 => {
                let label = view.get(at + 1..at + 1 + usize::from(len))?;
                name.push_label(label)?;
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let target = usize::from(u16_at(view, at)? & 0x3fff);
                if target >= segment {
                    return None;
                }
                end.get_or_insert(at + 2);
                view = view.get(..segment)?;
                segment = target;
                at = target;
            }
            // 0x40 and 0x80: extended and reserved label types (RFC 6891 §5), not for us.
            _ => return None,
        }
    }
}

/// A resource record, its rdata left where it is.
struct Record {
    /// Where its owner name starts.
    owner: usize,
    rtype: u16,
    class: u16,
    /// The TTL field as sent (in an OPT record: the extended RCODE, version and flags).
    raw_ttl: u32,
    /// Where its rdata starts and ends.
    data: usize,
    data_end: usize,
}

impl Record {
    /// Read the record at `at` and check its rdata if it is of a type we read (A, AAAA,
    /// CNAME, SOA); the record and where the next one starts.
    fn read(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
        let (_, fixed) = read_name(bytes, at)?;
        let data = fixed + 10;
        let data_end = data + usize::from(u16_at(bytes, fixed + 8)?);
        if data_end > bytes.len() {
            return None;
        }
        let record = Record {
            owner: at,
            rtype: u16_at(bytes, fixed)?,
            class: u16_at(bytes, fixed + 2)?,
            raw_ttl: u32_at(bytes, fixed + 4)?,
            data,
            data_end,
        };
        let well_formed = match record.rtype {
            rtype::A => data_end - data == 4,
            rtype::AAAA => data_end - data == 16,
            rtype::CNAME => record.cname(bytes).is_some(),
            rtype::SOA => record.soa_minimum(bytes).is_some(),
            _ => true,
        };
        well_formed.then_some((record, data_end))
    }

    /// RFC 2181 §8: a TTL with the top bit set is taken as 0.
    fn ttl(&self) -> u32 {
        sane_ttl(self.raw_ttl)
    }

    fn owner_is(&self, bytes: &[u8], name: &Name) -> bool {
        read_name(bytes, self.owner).is_some_and(|(owner, _)| owner.matches(name))
    }

    /// A CNAME's target, if the rdata is exactly one name.
    fn cname(&self, bytes: &[u8]) -> Option<Name> {
        read_name(bytes, self.data).filter(|&(_, end)| end == self.data_end).map(|(target, _)| target)
    }

    /// The SOA's MINIMUM (after MNAME, RNAME, SERIAL, REFRESH, RETRY, EXPIRE), if the rdata
    /// is exactly that.
    fn soa_minimum(&self, bytes: &[u8]) -> Option<u32> {
        let (_, after_mname) = read_name(bytes, self.data)?;
        let (_, after_rname) = read_name(bytes, after_mname)?;
        if after_rname + 20 != self.data_end {
            return None;
        }
        u32_at(bytes, after_rname + 16)
    }

    /// The address in an A or AAAA record.
    fn ip(&self, bytes: &[u8]) -> Option<IpAddr> {
        let data = bytes.get(self.data..self.data_end)?;
        match self.rtype {
            rtype::A => <[u8; 4]>::try_from(data).ok().map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            rtype::AAAA => <[u8; 16]>::try_from(data).ok().map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            _ => None,
        }
    }
}

fn sane_ttl(ttl: u32) -> u32 {
    if ttl > i32::MAX as u32 { 0 } else { ttl }
}

/// Where the answer and authority sections are, once every record after the question has
/// been read and checked.
struct Sections {
    /// Where the first answer starts, and how many there are.
    answers: (usize, u16),
    authorities: (usize, u16),
    /// The upper 8 bits of the RCODE, from the first OPT record in the additional section.
    extended_rcode: u16,
}

impl Sections {
    fn read(bytes: &[u8], mut at: usize, counts: [u16; 4]) -> Option<Sections> {
        let answers = (at, counts[1]);
        at = skip(bytes, at, counts[1])?;
        let authorities = (at, counts[2]);
        at = skip(bytes, at, counts[2])?;
        let mut extended_rcode = None;
        for _ in 0..counts[3] {
            let (record, next) = Record::read(bytes, at)?;
            if record.rtype == rtype::OPT {
                extended_rcode.get_or_insert((record.raw_ttl >> 24) as u16);
            }
            at = next;
        }
        Some(Sections { answers, authorities, extended_rcode: extended_rcode.unwrap_or(0) })
    }

    /// The addresses the answer section gives the question's name, following CNAMEs, with the
    /// smallest TTL met on the way; `None` if it gives none.
    fn addresses(&self, bytes: &[u8], question: &Question) -> Option<(Vec<IpAddr>, u32)> {
        let mut name = question.name.clone();
        let mut ttl = u32::MAX;
        for _ in 0..=MAX_CNAME_HOPS {
            let mut addrs = Vec::new();
            let mut addrs_ttl = u32::MAX;
            let mut alias = None;
            for record in records(bytes, self.answers) {
                if record.class != CLASS_IN || !record.owner_is(bytes, &name) {
                    continue;
                }
                if record.rtype == rtype::CNAME {
                    if alias.is_none() {
                        alias = record.cname(bytes).map(|target| (target, record.ttl()));
                    }
                } else if record.rtype == question.record_type()
                    && let Some(ip) = record.ip(bytes)
                {
                    addrs_ttl = addrs_ttl.min(record.ttl());
                    if !addrs.contains(&ip) {
                        addrs.push(ip);
                    }
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
    fn negative_ttl(&self, bytes: &[u8]) -> Option<u32> {
        records(bytes, self.authorities)
            .filter(|record| record.rtype == rtype::SOA)
            .find_map(|record| Some(record.ttl().min(record.soa_minimum(bytes)?)))
    }
}

/// Where the `count` records from `at` end; `None` if one of them is malformed.
fn skip(bytes: &[u8], mut at: usize, count: u16) -> Option<usize> {
    for _ in 0..count {
        at = Record::read(bytes, at)?.1;
    }
    Some(at)
}

/// The records of a section already checked by [`Sections::read`].
fn records(bytes: &[u8], (mut at, count): (usize, u16)) -> impl Iterator<Item = Record> {
    (0..count).map_while(move |_| {
        let (record, next) = Record::read(bytes, at)?;
        at = next;
        Some(record)
    })
}

/// Messages built by hand for tests (the fake servers in `super::tests` and the parser's own
/// tests), and queries read back.
#[cfg(test)]
pub mod build {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use super::{CLASS_IN, QR, RD, read_name, rtype, u16_at};

    /// RA: recursion available.
    const RA: u16 = 0x0080;

    enum Data {
        Ip(IpAddr),
        Name(String),
        Soa { zone: String, minimum: u32 },
        Raw(Vec<u8>),
    }

    struct Rr {
        owner: String,
        rtype: u16,
        class: u16,
        ttl: u32,
        data: Data,
    }

    /// A response to `id` asking (`qname`, `qtype`) with `rcode`; add records with the
    /// methods. Names are compressed as a server does (a name, or its tail, already written
    /// becomes a pointer to it) unless [`Response::uncompressed`] says otherwise.
    pub struct Response {
        id: u16,
        flags: u16,
        questions: Vec<(String, u16, u16)>,
        sections: [Vec<Rr>; 3],
        compress: bool,
    }

    impl Response {
        pub fn new(id: u16, qname: &str, qtype: u16, rcode: u16) -> Response {
            let mut response = Response {
                id,
                flags: QR | RD | RA | (rcode & 0xf),
                questions: vec![(qname.to_owned(), qtype, CLASS_IN)],
                sections: [Vec::new(), Vec::new(), Vec::new()],
                compress: true,
            };
            if rcode > 0xf {
                // The upper 8 bits go in the OPT record (RFC 6891 §6.1.3).
                let ttl = u32::from(rcode >> 4) << 24;
                response = response.record(2, "", rtype::OPT, 1232, ttl, &[]);
            }
            response
        }

        fn push(mut self, section: usize, owner: &str, rtype: u16, ttl: u32, data: Data) -> Response {
            self.sections[section].push(Rr { owner: owner.to_owned(), rtype, class: CLASS_IN, ttl, data });
            self
        }

        pub fn ip(self, owner: &str, ttl: u32, ip: IpAddr) -> Response {
            let rtype = if ip.is_ipv4() { rtype::A } else { rtype::AAAA };
            self.push(0, owner, rtype, ttl, Data::Ip(ip))
        }

        pub fn cname(self, owner: &str, ttl: u32, target: &str) -> Response {
            self.push(0, owner, rtype::CNAME, ttl, Data::Name(target.to_owned()))
        }

        pub fn soa(self, zone: &str, ttl: u32, minimum: u32) -> Response {
            self.push(1, zone, rtype::SOA, ttl, Data::Soa { zone: zone.to_owned(), minimum })
        }

        /// Any record, its rdata as given, in section 0 (answer), 1 (authority) or 2
        /// (additional).
        pub fn record(
            mut self,
            section: usize,
            owner: &str,
            rtype: u16,
            class: u16,
            ttl: u32,
            data: &[u8],
        ) -> Response {
            let data = Data::Raw(data.to_vec());
            self.sections[section].push(Rr { owner: owner.to_owned(), rtype, class, ttl, data });
            self
        }

        pub fn truncated(mut self) -> Response {
            self.flags |= super::TC;
            self
        }

        pub fn opcode(mut self, opcode: u16) -> Response {
            self.flags = (self.flags & !super::OPCODE) | (opcode << 11);
            self
        }

        pub fn qclass(mut self, class: u16) -> Response {
            self.questions[0].2 = class;
            self
        }

        /// The question once more (a second question in the same message).
        pub fn twice(mut self) -> Response {
            self.questions.push(self.questions[0].clone());
            self
        }

        pub fn uncompressed(mut self) -> Response {
            self.compress = false;
            self
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut w = Writer { out: Vec::new(), seen: HashMap::new(), compress: self.compress };
            let counts = [
                self.questions.len(),
                self.sections[0].len(),
                self.sections[1].len(),
                self.sections[2].len(),
            ];
            for word in [self.id, self.flags].into_iter().chain(counts.map(|n| n as u16)) {
                w.u16(word);
            }
            for (name, qtype, class) in &self.questions {
                w.name(name);
                w.u16(*qtype);
                w.u16(*class);
            }
            for rr in self.sections.iter().flatten() {
                w.name(&rr.owner);
                w.u16(rr.rtype);
                w.u16(rr.class);
                w.out.extend_from_slice(&rr.ttl.to_be_bytes());
                let len_at = w.out.len();
                w.u16(0);
                match &rr.data {
                    Data::Ip(IpAddr::V4(ip)) => w.out.extend_from_slice(&ip.octets()),
                    Data::Ip(IpAddr::V6(ip)) => w.out.extend_from_slice(&ip.octets()),
                    Data::Name(name) => w.name(name),
                    Data::Soa { zone, minimum } => {
                        w.name(&format!("ns.{zone}"));
                        w.name(&format!("hostmaster.{zone}"));
                        for field in [1, 60, 60, 600, *minimum] {
                            w.out.extend_from_slice(&u32::to_be_bytes(field));
                        }
                    }
                    Data::Raw(data) => w.out.extend_from_slice(data),
                }
                let len = (w.out.len() - len_at - 2) as u16;
                w.out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
            }
            w.out
        }
    }

    struct Writer {
        out: Vec<u8>,
        /// Where each name (and each tail of one) written so far starts, by lowercase text.
        seen: HashMap<String, usize>,
        compress: bool,
    }

    impl Writer {
        fn u16(&mut self, word: u16) {
            self.out.extend_from_slice(&word.to_be_bytes());
        }

        fn name(&mut self, name: &str) {
            let name = name.strip_suffix('.').unwrap_or(name);
            let labels: Vec<&str> = name.split('.').filter(|l| !l.is_empty()).collect();
            for i in 0..labels.len() {
                let tail = labels[i..].join(".").to_ascii_lowercase();
                if let Some(&at) = self.seen.get(&tail).filter(|_| self.compress) {
                    self.u16(0xc000 | at as u16);
                    return;
                }
                self.seen.entry(tail).or_insert(self.out.len());
                self.out.push(labels[i].len() as u8);
                self.out.extend_from_slice(labels[i].as_bytes());
            }
            self.out.push(0);
        }
    }

    /// A query's id, name (`www.example.com.`) and type; `None` if it is not one question.
    pub fn read_query(bytes: &[u8]) -> Option<(u16, String, u16)> {
        if u16_at(bytes, 4)? != 1 {
            return None;
        }
        let (name, at) = read_name(bytes, super::HEADER_LEN)?;
        Some((u16_at(bytes, 0)?, name.to_string(), u16_at(bytes, at)?))
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Response, read_query};
    use super::rcode::*;
    use super::rtype::{A, AAAA};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn q(name: &str, family: Family) -> Question {
        Question::new(name, family).unwrap()
    }

    #[test]
    fn builds_a_query_with_edns_and_recursion() {
        let bytes = build_query(0xbeef, &q("www.Example.com", Family::V6));
        #[rustfmt::skip]
        let expected = [
            0xbe, 0xef, 0x01, 0x00, // id; flags: RD
            0, 1, 0, 0, 0, 0, 0, 1, // one question, one additional record
            3, b'w', b'w', b'w', 7, b'E', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
            0, 28, 0, 1, // AAAA, IN
            0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0, // OPT: root, 1232 bytes, TTL 0, no rdata
        ];
        assert_eq!(bytes, expected);
        assert_eq!(read_query(&bytes), Some((0xbeef, "www.Example.com.".to_owned(), AAAA)));
        // A trailing dot changes nothing.
        assert_eq!(bytes, build_query(0xbeef, &q("www.Example.com.", Family::V6)));
        assert_eq!(read_query(&build_query(1, &q("a.b", Family::V4))), Some((1, "a.b.".to_owned(), A)));
    }

    #[test]
    fn only_names_dns_can_carry_make_a_question() {
        for bad in
            ["", ".", "bad..name", ".lead", "a b", "tab\t.x", "back\\slash", "ünï.code", &"x".repeat(64)]
        {
            assert_eq!(Question::new(bad, Family::V4), Err(WireError::BadName), "{bad:?}");
        }
        // 253 characters of text is 255 bytes on the wire: the most there is.
        let longest = [&"a".repeat(63), &"b".repeat(63), &"c".repeat(63), &"d".repeat(61)]
            .map(|l| l.as_str())
            .join(".");
        assert_eq!(longest.len(), 253);
        let bytes = build_query(1, &q(&longest, Family::V4));
        assert_eq!(read_query(&bytes).map(|(_, name, _)| name), Some(format!("{longest}.")));
        assert_eq!(Question::new(&format!("{longest}e"), Family::V4), Err(WireError::BadName));
        assert_eq!(Question::new(&format!("e.{longest}"), Family::V4), Err(WireError::BadName));
        assert!(Question::new("_srv._tcp.my-host.example", Family::V6).is_ok());
    }

    #[test]
    fn parses_addresses_with_the_smallest_ttl() {
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(7, "www.example.com", A, NOERROR)
            .ip("www.example.com", 300, ip("192.0.2.1"))
            .ip("WWW.example.com", 60, ip("192.0.2.2"))
            .ip("www.example.com", 300, ip("192.0.2.1"))
            .ip("other.example.com", 5, ip("192.0.2.9"))
            .soa("example.com", 1, 1);
        let expected = Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1"), ip("192.0.2.2")], ttl: 60 });
        assert_eq!(parse_reply(&reply.bytes(), 7, &question), expected);
        assert_eq!(parse_reply(&reply.uncompressed().bytes(), 7, &question), expected);
        let question = q("www.example.com", Family::V6);
        let reply =
            Response::new(8, "www.example.com", AAAA, NOERROR).ip("www.example.com", 30, ip("2001:db8::1"));
        assert_eq!(
            parse_reply(&reply.bytes(), 8, &question),
            Ok(Reply::Addrs { addrs: vec![ip("2001:db8::1")], ttl: 30 })
        );
    }

    #[test]
    fn follows_cname_chains() {
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(1, "www.example.com", A, NOERROR)
            .cname("www.example.com", 600, "edge.cdn.example")
            .cname("edge.cdn.example", 20, "node7.cdn.example")
            .ip("node7.cdn.example", 300, ip("198.51.100.7"))
            .ip("unrelated.example", 300, ip("198.51.100.8"));
        let expected = Ok(Reply::Addrs { addrs: vec![ip("198.51.100.7")], ttl: 20 });
        assert_eq!(parse_reply(&reply.bytes(), 1, &question), expected);
        assert_eq!(parse_reply(&reply.uncompressed().bytes(), 1, &question), expected);

        // A chain that ends without an address is NODATA (not cacheable without an SOA).
        let dangling =
            Response::new(2, "www.example.com", A, NOERROR).cname("www.example.com", 600, "gone.example");
        assert_eq!(parse_reply(&dangling.bytes(), 2, &question), Ok(Reply::NoData { negative_ttl: None }));

        // A loop is followed only MAX_CNAME_HOPS times.
        let looped = Response::new(3, "www.example.com", A, NOERROR)
            .cname("www.example.com", 60, "b.example")
            .cname("b.example", 60, "www.example.com");
        assert_eq!(parse_reply(&looped.bytes(), 3, &question), Ok(Reply::NoData { negative_ttl: None }));

        // Addresses of the other family along the chain are not ours.
        let wrong_family = Response::new(4, "www.example.com", A, NOERROR)
            .cname("www.example.com", 60, "b.example")
            .ip("b.example", 60, ip("2001:db8::1"));
        assert_eq!(
            parse_reply(&wrong_family.bytes(), 4, &question),
            Ok(Reply::NoData { negative_ttl: None })
        );
    }

    #[test]
    fn a_chain_of_max_cname_hops_links_is_followed_and_one_more_is_not() {
        let question = q("c0.example", Family::V4);
        let chain = |links: usize| {
            let mut reply = Response::new(1, "c0.example", A, NOERROR);
            for i in 0..links {
                reply = reply.cname(&format!("c{i}.example"), 100 + i as u32, &format!("c{}.example", i + 1));
            }
            reply.ip(&format!("c{links}.example"), 500, ip("192.0.2.1")).bytes()
        };
        assert_eq!(
            parse_reply(&chain(MAX_CNAME_HOPS), 1, &question),
            Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1")], ttl: 100 })
        );
        assert_eq!(
            parse_reply(&chain(MAX_CNAME_HOPS + 1), 1, &question),
            Ok(Reply::NoData { negative_ttl: None })
        );
    }

    #[test]
    fn negative_answers_carry_the_soa_ttl() {
        let question = q("nx.example.com", Family::V4);
        let nx = Response::new(5, "nx.example.com", A, NXDOMAIN).soa("example.com", 900, 60);
        assert_eq!(parse_reply(&nx.bytes(), 5, &question), Ok(Reply::NxDomain { negative_ttl: Some(60) }));
        let nx = Response::new(5, "nx.example.com", A, NXDOMAIN).soa("example.com", 30, 60);
        assert_eq!(parse_reply(&nx.bytes(), 5, &question), Ok(Reply::NxDomain { negative_ttl: Some(30) }));
        assert_eq!(
            parse_reply(&nx.uncompressed().bytes(), 5, &question),
            Ok(Reply::NxDomain { negative_ttl: Some(30) })
        );
        let nx = Response::new(5, "nx.example.com", A, NXDOMAIN);
        assert_eq!(parse_reply(&nx.bytes(), 5, &question), Ok(Reply::NxDomain { negative_ttl: None }));
        let nodata = Response::new(6, "nx.example.com", A, NOERROR).soa("example.com", 300, 120);
        assert_eq!(parse_reply(&nodata.bytes(), 6, &question), Ok(Reply::NoData { negative_ttl: Some(120) }));
        // An SOA in the answer section is not the authority's.
        let misplaced = Response::new(6, "nx.example.com", A, NOERROR).record(
            0,
            "example.com",
            rtype::SOA,
            CLASS_IN,
            300,
            &soa_rdata(120),
        );
        assert_eq!(parse_reply(&misplaced.bytes(), 6, &question), Ok(Reply::NoData { negative_ttl: None }));
    }

    /// An SOA's rdata, uncompressed: `ns.x.`, `h.x.`, serial 1, then 60, 60, 600, `minimum`.
    fn soa_rdata(minimum: u32) -> Vec<u8> {
        let mut data = b"\x02ns\x01x\x00\x01h\x01x\x00".to_vec();
        for field in [1, 60, 60, 600, minimum] {
            data.extend_from_slice(&u32::to_be_bytes(field));
        }
        data
    }

    #[test]
    fn a_ttl_with_its_top_bit_set_counts_as_zero() {
        // RFC 2181 §8.
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(1, "www.example.com", A, NOERROR).ip(
            "www.example.com",
            0x8000_0001,
            ip("192.0.2.1"),
        );
        assert_eq!(
            parse_reply(&reply.bytes(), 1, &question),
            Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1")], ttl: 0 })
        );
        let reply = Response::new(1, "www.example.com", A, NOERROR).ip(
            "www.example.com",
            0x7fff_ffff,
            ip("192.0.2.1"),
        );
        assert_eq!(
            parse_reply(&reply.bytes(), 1, &question),
            Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1")], ttl: 0x7fff_ffff })
        );
        let nx = Response::new(1, "www.example.com", A, NXDOMAIN).soa("example.com", 0x8000_0000, 60);
        assert_eq!(parse_reply(&nx.bytes(), 1, &question), Ok(Reply::NxDomain { negative_ttl: Some(0) }));
        // MINIMUM is no TTL of a record: the SOA's own TTL bounds it anyway.
        let nx = Response::new(1, "www.example.com", A, NXDOMAIN).soa("example.com", 60, 0xffff_ffff);
        assert_eq!(parse_reply(&nx.bytes(), 1, &question), Ok(Reply::NxDomain { negative_ttl: Some(60) }));
    }

    #[test]
    fn server_failures_and_truncation() {
        let question = q("www.example.com", Family::V4);
        for rcode in [SERVFAIL, REFUSED, NOTIMP, FORMERR, 12] {
            let reply = Response::new(9, "www.example.com", A, rcode);
            assert_eq!(parse_reply(&reply.bytes(), 9, &question), Ok(Reply::Failed { rcode }));
        }
        // An extended RCODE (BADVERS, 16) from the OPT record: the header's NOERROR is not all.
        let badvers = Response::new(9, "www.example.com", A, 16).ip("www.example.com", 60, ip("192.0.2.1"));
        assert_eq!(parse_reply(&badvers.bytes(), 9, &question), Ok(Reply::Failed { rcode: 16 }));
        let truncated = Response::new(9, "www.example.com", A, NOERROR)
            .ip("www.example.com", 60, ip("192.0.2.1"))
            .truncated();
        let bytes = truncated.bytes();
        assert_eq!(parse_reply(&bytes, 9, &question), Ok(Reply::Truncated));
        // Truncated replies are recognised even when the records are cut off mid-way.
        assert_eq!(parse_reply(&bytes[..bytes.len() - 3], 9, &question), Ok(Reply::Truncated));
        // But not when the question is.
        assert_eq!(parse_reply(&bytes[..HEADER_LEN + 5], 9, &question), Err(Ignored::Malformed));
    }

    #[test]
    fn mismatches_are_ignored() {
        let question = q("www.example.com", Family::V4);
        let good =
            Response::new(42, "www.example.com", A, NOERROR).ip("www.example.com", 60, ip("192.0.2.1"));
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
        assert_eq!(
            parse_reply(&good.bytes(), 42, &q("example.com", Family::V4)),
            Err(Ignored::WrongQuestion)
        );
        assert_eq!(
            parse_reply(&good.bytes(), 42, &q("www.example.com.x", Family::V4)),
            Err(Ignored::WrongQuestion)
        );
        assert!(parse_reply(&good.bytes(), 42, &q("WWW.EXAMPLE.COM", Family::V4)).is_ok(), "case-blind");

        let chaos = Response::new(42, "www.example.com", A, NOERROR).qclass(3);
        assert_eq!(parse_reply(&chaos.bytes(), 42, &question), Err(Ignored::WrongQuestion));

        let two = Response::new(42, "www.example.com", A, NOERROR).twice();
        assert_eq!(parse_reply(&two.bytes(), 42, &question), Err(Ignored::WrongQuestion));
        let mut none = good.bytes();
        none[5] = 0;
        assert_eq!(parse_reply(&none, 42, &question), Err(Ignored::WrongQuestion));

        // Our own query echoed back is not a response.
        let query = build_query(42, &question);
        assert_eq!(parse_reply(&query, 42, &question), Err(Ignored::NotAResponse));

        let notify = Response::new(42, "www.example.com", A, NOERROR).opcode(4);
        assert_eq!(parse_reply(&notify.bytes(), 42, &question), Err(Ignored::NotAResponse));

        assert_eq!(parse_reply(&[], 42, &question), Err(Ignored::Malformed));
        assert_eq!(parse_reply(&[0; 11], 42, &question), Err(Ignored::Malformed));
    }

    #[test]
    fn records_of_other_types_and_classes_are_passed_over() {
        let question = q("www.example.com", Family::V4);
        let reply = Response::new(1, "www.example.com", A, NOERROR)
            .record(0, "www.example.com", 16, CLASS_IN, 5, b"\x05hello") // TXT
            .record(0, "www.example.com", A, 3, 5, &[203, 0, 113, 1]) // class CH
            .record(0, "www.example.com", rtype::CNAME, 3, 5, b"\x01x\x00") // a CH alias
            .ip("www.example.com", 60, ip("192.0.2.1"))
            .record(1, "example.com", 2, CLASS_IN, 60, b"\x02ns\xc0\x10") // NS, compressed
            .record(2, "ns.example.com", 99, CLASS_IN, 60, &[0xff; 40]); // unknown type
        assert_eq!(
            parse_reply(&reply.bytes(), 1, &question),
            Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1")], ttl: 60 })
        );
    }

    /// A reply to id 1 asking `www.example.com` A (the question at offset 12, 17 bytes), then
    /// `records` as they are and an ANCOUNT of `answers`.
    fn raw_reply(answers: u16, records: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 1, 0x81, 0x80, 0, 1, 0, answers as u8, 0, 0, 0, 0];
        bytes.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        bytes.extend_from_slice(records);
        bytes
    }

    /// An A record of class IN, TTL 60, for 192.0.2.1, after the owner name `owner`.
    fn a_record(owner: &[u8]) -> Vec<u8> {
        let mut record = owner.to_vec();
        record.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        record
    }

    #[test]
    fn compression_pointers_are_followed() {
        let question = q("www.example.com", Family::V4);
        let found = Ok(Reply::Addrs { addrs: vec![ip("192.0.2.1")], ttl: 60 });
        // The owner a pointer to the question's name (offset 12).
        assert_eq!(parse_reply(&raw_reply(1, &a_record(b"\xc0\x0c")), 1, &question), found);
        // A label, then a pointer to the question's tail (`example.com` at 16).
        assert_eq!(parse_reply(&raw_reply(1, &a_record(b"\x03WWW\xc0\x10")), 1, &question), found);
        // A pointer to a name that itself ends in a pointer: a CNAME whose target, `a.example.com`,
        // is compressed against the question; then the A record's owner points to that target.
        let mut records = b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04\x01a\xc0\x10".to_vec();
        records.extend(a_record(b"\xc0\x2d")); // 33 + 12 = 45: the target's first byte
        assert_eq!(parse_reply(&raw_reply(2, &records), 1, &question), found);
        // Without the owner's pointer the address belongs to nobody we asked about.
        let mut records = b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04\x01a\xc0\x10".to_vec();
        records.extend(a_record(b"\xc0\x10"));
        assert_eq!(
            parse_reply(&raw_reply(2, &records), 1, &question),
            Ok(Reply::NoData { negative_ttl: None })
        );
    }

    #[test]
    fn compression_loops_and_forward_pointers_are_malformed() {
        let question = q("www.example.com", Family::V4);
        // The records start at offset 33 (12 + 17 + 4).
        for owner in [
            &b"\xc0\x21"[..],     // a pointer to itself
            b"\xc0\x23\xc0\x21",  // forward to a pointer back to the first: a loop
            b"\x01a\xc0\x21",     // back to its own first label: a loop through a label
            b"\xc0\x23\x01a\x00", // forward, to bytes that would make a name
            b"\xc0\xff",          // past the end
            b"\xc0",              // half a pointer
            b"\xc0\x0e",          // into a label of the question: `w` is no length byte
        ] {
            assert_eq!(
                parse_reply(&raw_reply(1, &a_record(owner)), 1, &question),
                Err(Ignored::Malformed),
                "owner {owner:x?}"
            );
        }
        // A pointer must lead to a whole name before it, not to one that runs on over the
        // pointer itself (here a label of 3 bytes, the third the pointer's first).
        let name = |bytes: &[u8], at| read_name(bytes, at).map(|(name, end)| (name.to_string(), end));
        assert_eq!(name(&[3, b'x', b'y', b'z', 0, 0xc0, 0x00], 5), Some(("xyz.".to_owned(), 7)));
        assert_eq!(name(&[3, b'x', b'y', 0xc0, 0x00, 0x00], 3), None);
        assert_eq!(name(&[3, b'x', b'y', b'z', 0, 0xc0, 0x00, 0xc0, 0x05], 7), Some(("xyz.".to_owned(), 9)));
        assert_eq!(name(&[1, b'x', 0xc0, 0x00], 2), None, "a label, then a pointer back to it");
        // A pointer into the question that lands on a label (`com.`) is fine.
        assert!(parse_reply(&raw_reply(1, &a_record(b"\xc0\x18")), 1, &question).is_ok());
        // In the question itself no pointer can point before it.
        let mut bytes = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
        assert_eq!(parse_reply(&bytes, 1, &question), Err(Ignored::Malformed));
        // Back into the header it is followed, to the id's first byte, 0: the root, not ours.
        bytes[13] = 0;
        assert_eq!(parse_reply(&bytes, 1, &question), Err(Ignored::WrongQuestion));
    }

    #[test]
    fn bad_label_lengths_and_long_names_are_malformed() {
        let question = q("www.example.com", Family::V4);
        for owner in [
            &b"\x40abc\x00"[..], // label type 01 (extended)
            b"\x80abc\x00",      // label type 10 (reserved)
            b"\x05abc",          // a label running past the end
            b"\x03abc",          // no end
        ] {
            assert_eq!(
                parse_reply(&raw_reply(1, &a_record(owner)), 1, &question),
                Err(Ignored::Malformed),
                "owner {owner:x?}"
            );
        }
        // 256 bytes of name: four labels of 63 and the root's 0 are 257; too long even
        // when it is put together from pointers.
        let mut records = Vec::new();
        let label = [b'x'; 63];
        for _ in 0..4 {
            records.push(63);
            records.extend_from_slice(&label);
        }
        records.push(0);
        let owner = records.clone();
        records = a_record(&owner);
        assert_eq!(parse_reply(&raw_reply(1, &records), 1, &question), Err(Ignored::Malformed));
        // Three labels of 63 and one of 61: 255 bytes, the most there is, and fine.
        let mut owner = Vec::new();
        for len in [63, 63, 63, 61] {
            owner.push(len);
            owner.extend(std::iter::repeat_n(b'x', usize::from(len)));
        }
        owner.push(0);
        assert!(parse_reply(&raw_reply(1, &a_record(&owner)), 1, &question).is_ok());
        // One label more, by a pointer to that name (at 33) from a second record.
        let mut records = a_record(&owner);
        records.extend(a_record(b"\x01y\xc0\x21"));
        assert_eq!(parse_reply(&raw_reply(2, &records), 1, &question), Err(Ignored::Malformed));
    }

    #[test]
    fn records_that_do_not_fit_or_do_not_parse_are_malformed() {
        let question = q("www.example.com", Family::V4);
        let record = a_record(b"\xc0\x0c");
        // Cut anywhere: the count promises a record that is not all there.
        for end in 0..record.len() {
            assert_eq!(parse_reply(&raw_reply(1, &record[..end]), 1, &question), Err(Ignored::Malformed));
        }
        // An RDLENGTH past the end.
        let mut long = record.clone();
        long[11] = 5;
        assert_eq!(parse_reply(&raw_reply(1, &long), 1, &question), Err(Ignored::Malformed));
        // A records of 3 and 5 bytes, an AAAA of 4, a CNAME with a byte after its name, an SOA
        // a byte short.
        for (rtype, data) in [
            (A, &[192, 0, 2][..]),
            (A, &[192, 0, 2, 1, 0]),
            (AAAA, &[192, 0, 2, 1]),
            (rtype::CNAME, b"\x01a\x00\x00"),
            (rtype::SOA, &soa_rdata(60)[..soa_rdata(60).len() - 1]),
        ] {
            let reply = Response::new(1, "www.example.com", A, NOERROR).record(
                0,
                "www.example.com",
                rtype,
                CLASS_IN,
                60,
                data,
            );
            assert_eq!(
                parse_reply(&reply.bytes(), 1, &question),
                Err(Ignored::Malformed),
                "type {rtype}: {data:x?}"
            );
        }
        // Broken records in the authority and additional sections spoil the reply too.
        for section in [1, 2] {
            let reply = Response::new(1, "www.example.com", A, NOERROR)
                .ip("www.example.com", 60, ip("192.0.2.1"))
                .record(section, "x.example.com", A, CLASS_IN, 60, &[1, 2, 3]);
            assert_eq!(parse_reply(&reply.bytes(), 1, &question), Err(Ignored::Malformed));
        }
        // Bytes after the last record are passed over.
        let mut trailing = raw_reply(1, &record);
        trailing.extend_from_slice(b"\xff\xff");
        assert!(parse_reply(&trailing, 1, &question).is_ok());
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
        for reply in [
            Response::new(42, "www.example.com", A, NOERROR)
                .cname("www.example.com", 60, "a.example.com")
                .ip("a.example.com", 60, ip("192.0.2.1"))
                .soa("example.com", 60, 60),
            Response::new(42, "www.example.com", A, NXDOMAIN).soa("example.com", 60, 60),
        ] {
            for reply in [reply.bytes(), reply.uncompressed().bytes()] {
                for end in 0..reply.len() {
                    assert!(
                        parse_reply(&reply[..end], 42, &question).is_err(),
                        "a prefix of {end} bytes is no reply"
                    );
                }
                for at in 0..reply.len() {
                    for bits in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                        let mut bent = reply.clone();
                        bent[at] ^= bits;
                        let _ = parse_reply(&bent, 42, &question); // must not panic
                    }
                }
            }
        }
    }
}
