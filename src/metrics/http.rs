//! Just enough HTTP/1.x for a scrape: a pure, incremental request-head parser and the
//! responses the endpoint sends. No sockets.
//!
//! [`parse_request`] takes the bytes received so far and answers like the SOCKS parsers
//! ([`Parse`]): *partial* (read more), *complete(request, consumed)* once the empty line that
//! ends the head has arrived, or *invalid* as soon as a byte shows the input can never be a
//! request head. The head is bounded ([`MAX_HEAD`]): a client that has not finished its head
//! within that many bytes gets [`HttpError::TooLong`], so a scraper can never make the
//! endpoint hold more than that.
//!
//! What is accepted (RFC 9112 §2–5): `METHOD SP TARGET SP HTTP/1.D` then header lines
//! `NAME ":" VALUE`, each line ending in CRLF or a bare LF (§2.2 lets a recipient accept LF),
//! then an empty line. The method and header names are tokens, the target is visible ASCII,
//! header values are visible characters, spaces, tabs and obs-text. Obsolete line folding, a
//! header name followed by white space, a bare CR and every other control character are
//! rejected (§5.1, §5.2). Headers are checked but not kept: the endpoint needs none of them
//! (the response is always `Connection: close`, and a body is never read). HTTP/2 and later
//! in the request line are [`HttpError::BadVersion`].
//!
//! Routing ([`route`]) is a pure function too: `GET` or `HEAD` of `/metrics` (a query string
//! is ignored) is the exposition; any other method is 405, any other path 404, anything the
//! parser refused 400.

use crate::protocol::Parse;

/// The longest request head (request line and headers) read: 4 KiB.
pub const MAX_HEAD: usize = 4096;

/// A request line, borrowed from the input (its headers were checked and skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent: `/metrics`, `/metrics?x=1`, `*`, `http://host/metrics`.
    pub target: &'a str,
    /// `D` in `HTTP/1.D`.
    pub minor_version: u8,
}

impl Request<'_> {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(path, _)| path)
    }
}

/// Why the input can never be a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// No complete head within [`MAX_HEAD`] bytes.
    TooLong,
    /// The request line is not `METHOD SP TARGET SP HTTP/x.y`.
    BadRequestLine,
    /// `HTTP/x.y` with a major version other than 1.
    BadVersion,
    /// A header line that is not `NAME ":" VALUE`, or obsolete line folding.
    BadHeader,
}

/// Where the scanner is.
#[derive(Clone, Copy)]
enum State {
    /// In the method, `n` bytes so far.
    Method(usize),
    /// In the target, `n` bytes so far.
    Target(usize),
    /// In `HTTP/1.D`, `i` bytes of it so far (8 once complete).
    Version(usize),
    /// A CR ended the request line or a header line: LF must follow.
    LineCr,
    /// At the start of a header line (or of the empty line that ends the head).
    LineStart,
    /// In a header name, `n` bytes so far.
    Name(usize),
    /// In a header value.
    Value,
    /// A CR at the start of a line: the LF that ends the head must follow.
    EndCr,
}

/// Parse an HTTP/1.x request head from the bytes received so far.
///
/// Guarantees (those of every [`Parse`] parser): no panic on any input, `consumed <=
/// input.len()`, the request depends only on the consumed bytes, and a decision to refuse
/// depends only on the bytes before the refused one (so every prefix of a partial input is
/// partial too). Bytes after the head (a body, a second request) are not looked at.
pub fn parse_request(input: &[u8]) -> Parse<Request<'_>, HttpError> {
    let mut state = State::Method(0);
    let mut method_end = 0;
    let mut target = (0, 0);
    let mut minor_version = 0;
    for (i, &b) in input.iter().enumerate().take(MAX_HEAD) {
        state = match state {
            State::Method(n) if is_tchar(b) => State::Method(n + 1),
            State::Method(n) if b == b' ' && n > 0 => {
                method_end = i;
                State::Target(0)
            }
            State::Method(_) => return Parse::Invalid(HttpError::BadRequestLine),
            State::Target(n) if (0x21..=0x7e).contains(&b) => State::Target(n + 1),
            State::Target(n) if b == b' ' && n > 0 => {
                target = (method_end + 1, i);
                State::Version(0)
            }
            State::Target(_) => return Parse::Invalid(HttpError::BadRequestLine),
            State::Version(5) if b.is_ascii_digit() && b != b'1' => {
                return Parse::Invalid(HttpError::BadVersion);
            }
            State::Version(7) if b.is_ascii_digit() => {
                minor_version = b - b'0';
                State::Version(8)
            }
            State::Version(n) if n < 8 && b == b"HTTP/1."[n.min(6)] && n != 7 => State::Version(n + 1),
            State::Version(8) if b == b'\r' => State::LineCr,
            State::Version(8) if b == b'\n' => State::LineStart,
            State::Version(_) => return Parse::Invalid(HttpError::BadRequestLine),
            State::LineCr if b == b'\n' => State::LineStart,
            State::LineCr => return Parse::Invalid(HttpError::BadHeader),
            State::LineStart if b == b'\r' => State::EndCr,
            State::LineStart if b == b'\n' => {
                return complete(input, method_end, target, minor_version, i + 1);
            }
            State::LineStart if is_tchar(b) => State::Name(1),
            // Obsolete line folding (a line that starts with white space) and anything else.
            State::LineStart => return Parse::Invalid(HttpError::BadHeader),
            State::Name(n) if is_tchar(b) => State::Name(n + 1),
            State::Name(_) if b == b':' => State::Value,
            State::Name(_) => return Parse::Invalid(HttpError::BadHeader),
            State::Value if b == b'\r' => State::LineCr,
            State::Value if b == b'\n' => State::LineStart,
            State::Value if b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b) || b >= 0x80 => {
                State::Value
            }
            State::Value => return Parse::Invalid(HttpError::BadHeader),
            State::EndCr if b == b'\n' => return complete(input, method_end, target, minor_version, i + 1),
            State::EndCr => return Parse::Invalid(HttpError::BadHeader),
        };
    }
    if input.len() >= MAX_HEAD { Parse::Invalid(HttpError::TooLong) } else { Parse::Partial }
}

fn complete(
    input: &[u8],
    method_end: usize,
    (target_start, target_end): (usize, usize),
    minor_version: u8,
    consumed: usize,
) -> Parse<Request<'_>, HttpError> {
    // Both are ASCII by construction; the error arm cannot happen.
    match (std::str::from_utf8(&input[..method_end]), std::str::from_utf8(&input[target_start..target_end])) {
        (Ok(method), Ok(target)) => Parse::Complete(Request { method, target, minor_version }, consumed),
        _ => Parse::Invalid(HttpError::BadRequestLine),
    }
}

/// RFC 9110 §5.6.2: `tchar`, the characters of a token (methods, header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a parsed (or refused) request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// 200 with the exposition; `head`: without the body (a `HEAD` request).
    Metrics { head: bool },
    /// 404: not `/metrics`.
    NotFound,
    /// 405: not `GET` or `HEAD`.
    MethodNotAllowed,
    /// 400: the parser refused the request.
    BadRequest,
}

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// Decide the answer: the method first (only `GET` and `HEAD` exist here), then the path.
pub fn route(request: Result<&Request<'_>, HttpError>) -> Route {
    let Ok(request) = request else { return Route::BadRequest };
    let head = match request.method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    if request.path() == METRICS_PATH { Route::Metrics { head } } else { Route::NotFound }
}

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A complete HTTP/1.1 response that closes the connection: status line, `Content-Type`,
/// `Content-Length` (the body's, also for `HEAD`, which then sends none), `Connection: close`,
/// `Allow` for a 405.
pub fn response(route: Route, body: &[u8]) -> Vec<u8> {
    let (status, content_type, body, send_body): (&str, &str, &[u8], bool) = match route {
        Route::Metrics { head } => ("200 OK", CONTENT_TYPE, body, !head),
        Route::NotFound => {
            ("404 Not Found", "text/plain; charset=utf-8", b"not found: try GET /metrics\n", true)
        }
        Route::MethodNotAllowed => {
            ("405 Method Not Allowed", "text/plain; charset=utf-8", b"only GET and HEAD\n", true)
        }
        Route::BadRequest => ("400 Bad Request", "text/plain; charset=utf-8", b"bad request\n", true),
    };
    let allow = if route == Route::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + if send_body { body.len() } else { 0 });
    out.extend_from_slice(head.as_bytes());
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &[u8] =
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUser-Agent: Prometheus/2.42.0\r\n\
Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\
Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

    fn request(method: &'static str, target: &'static str, minor_version: u8) -> Request<'static> {
        Request { method, target, minor_version }
    }

    #[test]
    fn a_prometheus_scrape_is_complete_at_its_empty_line_and_no_sooner() {
        let expected = Parse::Complete(request("GET", "/metrics", 1), PROMETHEUS.len());
        assert_eq!(parse_request(PROMETHEUS), expected);
        // Every split point: each prefix is partial, the whole is complete.
        for end in 0..PROMETHEUS.len() {
            assert_eq!(parse_request(&PROMETHEUS[..end]), Parse::Partial, "prefix of {end} bytes");
        }
        // What follows the head (a body, a pipelined request) is not consumed.
        let mut more = PROMETHEUS.to_vec();
        more.extend_from_slice(b"GET /other HTTP/1.1\r\n\r\n");
        assert_eq!(parse_request(&more), expected);
    }

    #[test]
    fn accepted_forms() {
        let cases: &[(&[u8], Request<'static>)] = &[
            (b"GET /metrics HTTP/1.0\r\n\r\n", request("GET", "/metrics", 0)),
            (b"GET /metrics HTTP/1.1\n\n", request("GET", "/metrics", 1)),
            (b"HEAD /metrics?name[]=x HTTP/1.1\r\nA:\r\n\r\n", request("HEAD", "/metrics?name[]=x", 1)),
            (b"OPTIONS * HTTP/1.1\r\nX: a\tb \xff\r\n\n", request("OPTIONS", "*", 1)),
            (b"get http://h/metrics HTTP/1.9\r\n\r\n", request("get", "http://h/metrics", 9)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_request(input), Parse::Complete(*expected, input.len()), "{input:?}");
        }
    }

    #[test]
    fn refused_as_soon_as_a_byte_says_so() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"\x16\x03\x01", HttpError::BadRequestLine), // a TLS ClientHello
            (b" GET", HttpError::BadRequestLine),
            (b"GET  /", HttpError::BadRequestLine),
            (b"GET /a\x00", HttpError::BadRequestLine),
            (b"GET /metrics\r\n", HttpError::BadRequestLine), // HTTP/0.9
            (b"GET /metrics HTTP/2", HttpError::BadVersion),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HttpError::BadVersion),
            (b"GET /metrics HTTP/1.1x", HttpError::BadRequestLine),
            (b"GET /metrics HTTP/1.12", HttpError::BadRequestLine),
            (b"GET /metrics HTTP/1.1\rX", HttpError::BadHeader),
            (b"GET /metrics HTTP/1.1\r\n folded", HttpError::BadHeader),
            (b"GET /metrics HTTP/1.1\r\nHost : x", HttpError::BadHeader),
            (b"GET /metrics HTTP/1.1\r\n: x", HttpError::BadHeader),
            (b"GET /metrics HTTP/1.1\r\nA: b\x01", HttpError::BadHeader),
            (b"GET /metrics HTTP/1.1\r\nA: b\rc", HttpError::BadHeader),
            (b"GET /metrics HTTP/1.1\r\n\rX", HttpError::BadHeader),
        ];
        for (input, why) in cases {
            assert_eq!(parse_request(input), Parse::Invalid(*why), "{input:?}");
            // Every shorter prefix is still undecided.
            for end in 0..input.len() - 1 {
                assert!(!matches!(parse_request(&input[..end]), Parse::Complete(..)), "{input:?}");
            }
        }
    }

    #[test]
    fn a_head_that_never_ends_is_too_long_at_the_bound() {
        let mut endless = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while endless.len() < MAX_HEAD - 1 {
            endless.extend_from_slice(b"X-Padding: yes\r\n");
        }
        endless.truncate(MAX_HEAD - 1);
        assert_eq!(parse_request(&endless), Parse::Partial);
        endless.push(b'a');
        assert_eq!(parse_request(&endless), Parse::Invalid(HttpError::TooLong));
        endless.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&endless), Parse::Invalid(HttpError::TooLong));
        // A head of exactly MAX_HEAD bytes still fits.
        let mut fits = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        fits.resize(MAX_HEAD - 4, b'v');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&fits), Parse::Complete(request("GET", "/metrics", 1), MAX_HEAD));
    }

    /// The `metrics_request` fuzz target's seeds say what their names say.
    #[test]
    fn fuzz_seeds_are_the_requests_they_claim_to_be() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/metrics_request");
        let seed = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let route_of = |name: &str| match parse_request(&seed(name)) {
            Parse::Complete(request, _) => route(Ok(&request)),
            Parse::Invalid(why) => route(Err(why)),
            Parse::Partial => panic!("{name} is partial"),
        };
        assert_eq!(route_of("prometheus_scrape"), Route::Metrics { head: false });
        assert_eq!(route_of("http10_no_headers"), Route::Metrics { head: false });
        assert_eq!(route_of("head_lf_only"), Route::Metrics { head: true });
        assert_eq!(route_of("post_with_body"), Route::MethodNotAllowed);
        assert_eq!(parse_request(&seed("obs_fold")), Parse::Invalid(HttpError::BadHeader));
        assert_eq!(parse_request(&seed("http2_preface")), Parse::Invalid(HttpError::BadVersion));
        assert_eq!(parse_request(&seed("partial")), Parse::Partial);
        let body = seed("post_with_body");
        assert!(matches!(parse_request(&body), Parse::Complete(_, used) if &body[used..] == b"hi"));
    }

    #[test]
    fn routes() {
        let get = request("GET", "/metrics", 1);
        assert_eq!(route(Ok(&get)), Route::Metrics { head: false });
        assert_eq!(route(Ok(&request("GET", "/metrics?debug=1", 0))), Route::Metrics { head: false });
        assert_eq!(route(Ok(&request("HEAD", "/metrics", 1))), Route::Metrics { head: true });
        assert_eq!(route(Ok(&request("GET", "/", 1))), Route::NotFound);
        assert_eq!(route(Ok(&request("GET", "/metrics/", 1))), Route::NotFound);
        assert_eq!(route(Ok(&request("POST", "/metrics", 1))), Route::MethodNotAllowed);
        assert_eq!(
            route(Ok(&request("get", "/metrics", 1))),
            Route::MethodNotAllowed,
            "methods are case-sensitive"
        );
        assert_eq!(route(Err(HttpError::TooLong)), Route::BadRequest);
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let ok = String::from_utf8(response(Route::Metrics { head: false }, b"a 1\n")).unwrap();
        assert_eq!(
            ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let head = String::from_utf8(response(Route::Metrics { head: true }, b"a 1\n")).unwrap();
        assert!(head.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"), "{head}");
        let not_allowed = String::from_utf8(response(Route::MethodNotAllowed, b"")).unwrap();
        assert!(not_allowed.starts_with("HTTP/1.1 405 ") && not_allowed.contains("\r\nAllow: GET, HEAD\r\n"));
        for (route, status) in [(Route::NotFound, "404"), (Route::BadRequest, "400")] {
            let text = String::from_utf8(response(route, b"ignored")).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
            assert!(head.ends_with("Connection: close"));
        }
    }
}
