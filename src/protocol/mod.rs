//! The pure SOCKS codec: bytes in, messages out. No sockets, no logging, no clocks.
//!
//! Every parser takes the bytes received so far and answers with a [`Parse`]:
//!
//! * [`Parse::Partial`]: the message is not complete yet; call again with more bytes.
//!   Parsers never assume one `read()` is one message (the bug in this project's seed).
//! * [`Parse::Complete`]`(msg, consumed)`: a whole message was found in the first `consumed`
//!   bytes. Whatever follows is the *next* message (or early payload) and must be kept.
//! * [`Parse::Invalid`]: the bytes can never become a valid message. For SOCKS it carries what
//!   the protocol says to answer before closing (an [`Invalid`]: a reply code, or nothing); the
//!   PROXY protocol header has no answer at all, so its parser carries why ([`ProxyError`]).
//!
//! Guarantees: no panic on any input, `consumed <= input.len()`, no heap allocation except
//! for a domain name's copy. Non-guarantees: parsers do not check policy (which commands are
//! enabled, which methods are acceptable); that is the connection's job.

pub mod auth;
pub mod proxy;
pub mod socks4;
pub mod socks5;
pub mod udp;

pub use auth::{AuthRequest, AuthStatus, encode_auth_status, parse_auth_request};
pub use proxy::{ProxyCommand, ProxyError, ProxyHeader, ProxyVersion, parse_proxy_header};
pub use socks4::{
    Socks4Command, Socks4Reply, Socks4Request, Socks4Target, encode_socks4_reply, parse_socks4_request,
};
pub use socks5::{
    AddrType, Command, Greeting, Method, Reply, Request, TargetAddr, encode_method_selection, encode_reply,
    parse_greeting, parse_request,
};
pub use udp::{UdpHeader, UdpHeaderError, encode_udp_header, parse_udp_header};

/// The outcome of running a parser over the bytes received so far.
///
/// `E` is what an invalid input carries: [`Invalid`] for every SOCKS parser, [`ProxyError`]
/// for [`parse_proxy_header`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T, E = Invalid> {
    /// More bytes are needed; nothing was consumed.
    Partial,
    /// A complete message and how many bytes of the input it used.
    Complete(T, usize),
    /// The input can never become a valid message.
    Invalid(E),
}

/// Why a message is invalid, and what to tell the peer before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The first byte is not the version this parser speaks. There is no reply format both
    /// sides agree on, so the connection is closed silently.
    BadVersion(u8),
    /// A SOCKS5 request that must be answered with this reply code (RFC 1928 §6),
    /// e.g. [`Reply::CommandNotSupported`] or [`Reply::AddressTypeNotSupported`].
    Reply(Reply),
}
