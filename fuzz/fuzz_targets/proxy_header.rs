#![no_main]

use libfuzzer_sys::fuzz_target;
use socksloop::protocol::{Parse, parse_proxy_header};

mod common;

// The codec's contract (`common::check_parse`: no panic, consumed <= len, re-parsing the
// consumed bytes gives the same header, a Partial input's prefix stays Partial), and on top
// of it what a caller buffering a connection's first bytes relies on: every strict prefix of
// a complete header is Partial, so the header is never decided, or refused, too early.
fuzz_target!(|data: &[u8]| {
    common::check_parse(data, parse_proxy_header);
    if let Parse::Complete(_, used) = parse_proxy_header(data) {
        for cut in 0..used {
            assert_eq!(parse_proxy_header(&data[..cut]), Parse::Partial, "prefix of {cut} bytes");
        }
    }
});
