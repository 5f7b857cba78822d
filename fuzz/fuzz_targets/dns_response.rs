#![no_main]
//! Arbitrary bytes as a nameserver's reply to the DNS client: the parser and matcher
//! (`dns::wire::parse_reply`) must never panic, and what they accept must make sense.
//!
//! The first byte chooses the question (family, one of a few names) and whether the id we
//! expect is taken from the reply itself (so that the fuzzer gets past the id check and into
//! the question, the records and the CNAME chain) or is a fixed one.

use libfuzzer_sys::fuzz_target;
use socksloop::dns_fuzz::{Family, Question, Reply, parse_reply};

const NAMES: [&str; 4] = ["example.com", "a.b", "www.example.com", "x"];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, reply)) = data.split_first() else { return };
    let family = if choice & 1 == 0 { Family::V4 } else { Family::V6 };
    let own_id = match reply {
        [hi, lo, ..] if choice & 2 == 0 => u16::from_be_bytes([*hi, *lo]),
        _ => 0x5eed,
    };
    let question = Question::new(NAMES[usize::from(choice >> 2) % NAMES.len()], family).unwrap();
    let Ok(parsed) = parse_reply(reply, own_id, &question) else { return };
    // Whatever was taken carries our id...
    assert!(reply.len() >= 12 && u16::from_be_bytes([reply[0], reply[1]]) == own_id);
    // ...and addresses are never empty, of the family asked, each once.
    if let Reply::Addrs { addrs, .. } = parsed {
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|ip| ip.is_ipv4() == (family == Family::V4)));
        for (i, ip) in addrs.iter().enumerate() {
            assert!(!addrs[..i].contains(ip), "{ip} twice");
        }
    }
});
