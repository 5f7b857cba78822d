//! Codec micro-benchmarks: nanoseconds per SOCKS5 message parsed or encoded, with
//! `socksloop::protocol` exactly as the event loop calls it.
//!
//! `cargo bench --bench codec`. Each message is a fixed byte string: these measure the
//! parser's own cost, not allocation of input buffers.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use socksloop::protocol::{Parse, Reply, encode_reply, parse_greeting, parse_request};

const GREETING: &[u8] = &[0x05, 0x01, 0x00];
const REQUEST_IPV4: &[u8] = &[0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x1f, 0x90];
const REQUEST_DOMAIN: &[u8] = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb";

fn codec(c: &mut Criterion) {
    // Sanity first: a benchmark of a parser that rejects its input measures nothing.
    assert!(matches!(parse_greeting(GREETING), Parse::Complete(_, 3)));
    assert!(matches!(parse_request(REQUEST_IPV4), Parse::Complete(_, 10)));
    assert!(matches!(parse_request(REQUEST_DOMAIN), Parse::Complete(_, 18)));

    let mut group = c.benchmark_group("codec");
    group.bench_function("parse_greeting", |b| b.iter(|| parse_greeting(black_box(GREETING))));
    group.bench_function("parse_request_ipv4", |b| b.iter(|| parse_request(black_box(REQUEST_IPV4))));
    // Includes the one allocation the codec makes: the domain name's copy.
    group.bench_function("parse_request_domain", |b| b.iter(|| parse_request(black_box(REQUEST_DOMAIN))));
    let bound: SocketAddr = "10.1.2.3:40000".parse().expect("valid address");
    let mut out = Vec::with_capacity(32);
    group.bench_function("encode_reply_ipv4", |b| {
        b.iter(|| {
            out.clear(); // reuse the buffer, as a connection reuses its queue
            encode_reply(black_box(Reply::Succeeded), black_box(Some(bound)), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
