#![no_main]

use libfuzzer_sys::fuzz_target;
use socksloop::protocol::parse_auth_request;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check_parse(data, parse_auth_request);
});
