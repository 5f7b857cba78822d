#![no_main]

use libfuzzer_sys::fuzz_target;
use socksloop::protocol::{UdpHeaderError, parse_udp_header};

// A datagram is whole, so the contract is the UDP form of `common::check_parse`: Ok keeps
// `header_len <= len` and re-parses the same from `&data[..header_len]` (the payload never
// changes the header), and Truncated stays Truncated one byte shorter.
fuzz_target!(|data: &[u8]| {
    match parse_udp_header(data) {
        Ok(header) => {
            assert!(header.header_len <= data.len());
            assert_eq!(parse_udp_header(&data[..header.header_len]), Ok(header));
        }
        Err(UdpHeaderError::Truncated) => {
            if let Some((_, shorter)) = data.split_last() {
                assert_eq!(parse_udp_header(shorter), Err(UdpHeaderError::Truncated));
            }
        }
        Err(_) => {}
    }
});
