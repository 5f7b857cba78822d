//! A real client: curl through the proxy to a tiny HTTP server in the test.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

use super::*;

const BODY_LEN: usize = MIB;
const BODY_SEED: u64 = 0xc0de;

/// Answer any request with the same 1 MiB body. Result: the request line.
pub fn http_server() -> Target<String> {
    let body = DataGen::bytes(BODY_SEED, BODY_LEN);
    Target::start("127.0.0.1:0", move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        let mut line = String::new();
        // Bounded: a request has a handful of header lines.
        for _ in 0..100 {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if request_line.is_empty() {
                request_line = line.trim_end().to_string();
            }
        }
        let mut stream = stream;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        request_line
    })
}

/// The body every request to [`http_server`] gets.
pub fn expected_body() -> Vec<u8> {
    DataGen::bytes(BODY_SEED, BODY_LEN)
}

/// `body` is the whole of [`expected_body`]: its length and its checksum.
pub fn check_body(body: &[u8]) {
    assert_eq!(body.len(), BODY_LEN);
    assert_eq!(checksum(body), checksum(&expected_body()));
}

/// Run curl with a proxy option (`--socks5`, `--socks4a`, `-x URL`, ...) and return the body.
pub fn curl_with(proxy_flag: &str, proxy: &str, url: &str) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20", "--noproxy", ""])
        .args([proxy_flag, proxy, url])
        // Proxy variables from the environment must not change the route.
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl is not installed: run .ci/run (it installs curl) or `apt-get install curl`")
        }
        Err(e) => panic!("cannot run curl: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "curl {proxy_flag} {url} failed: {}\n{stderr}", output.status);
    // Proof the request went through the proxy and not straight to the server.
    assert!(stderr.to_ascii_lowercase().contains("socks"), "curl did not use the proxy:\n{stderr}");
    output.stdout
}
