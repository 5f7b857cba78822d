#![no_main]
//! Arbitrary bytes as a scraper's request to the `/metrics` endpoint: the HTTP request-head
//! parser keeps the `Parse` contract (`common::check_parse`), never looks past `MAX_HEAD`
//! bytes, and what it accepts is a head that ends in an empty line; routing it and building
//! the response never panic.

use libfuzzer_sys::fuzz_target;
use socksloop::metrics_fuzz::{HttpError, MAX_HEAD, parse_request, response, route};
use socksloop::protocol::Parse;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check_parse(data, parse_request);
    let routed = match parse_request(data) {
        Parse::Complete(request, used) => {
            assert!(used <= MAX_HEAD, "consumed {used}");
            let head = &data[..used];
            assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"), "a head ends with an empty line");
            assert!(!request.method.is_empty() && !request.target.is_empty());
            assert!(request.minor_version <= 9);
            route(Ok(&request))
        }
        Parse::Invalid(HttpError::TooLong) => {
            assert!(data.len() >= MAX_HEAD);
            route(Err(HttpError::TooLong))
        }
        Parse::Invalid(why) => route(Err(why)),
        Parse::Partial => {
            assert!(data.len() < MAX_HEAD, "partial at {} bytes", data.len());
            return;
        }
    };
    let out = response(routed, b"body\n");
    assert!(out.starts_with(b"HTTP/1.1 ") && out.windows(4).any(|w| w == b"\r\n\r\n"));
});
