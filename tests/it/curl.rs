//! A real client: curl through the proxy (`--socks5` with an IP, `--socks5-hostname` with a
//! name the proxy resolves) to a tiny HTTP server in the test. (curl with SOCKS4, with
//! credentials and through a splice-mode proxy is in `socks4.rs`, `auth.rs` and `relay.rs`.)

use std::net::SocketAddr;

use crate::support::*;

fn curl(proxy_flag: &str, proxy: SocketAddr, url: &str) -> Vec<u8> {
    curl_with(proxy_flag, &proxy.to_string(), url)
}

#[test]
fn curl_socks5_with_ip() {
    let server = start_server();
    let http = http_server();
    let url = format!("http://127.0.0.1:{}/file", http.addr.port());
    check_body(&curl("--socks5", proxy_addr(&server), &url));
    assert!(http.next_result().starts_with("GET /file "));
}

#[test]
fn curl_socks5_hostname_localhost() {
    let server = start_server();
    let http = http_server();
    let url = format!("http://localhost:{}/file", http.addr.port());
    check_body(&curl("--socks5-hostname", proxy_addr(&server), &url));
    assert!(http.next_result().starts_with("GET /file "));
}
