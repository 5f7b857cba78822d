//! The token scheme: how a `mio::Token` names the socket an event is for.
//!
//! ```text
//!   Token(key << 3 | 0)        the connection's client
//!   Token(key << 3 | 1)        its auxiliary socket (a BIND listener, a UDP client-side socket)
//!   Token(key << 3 | 2 + i)    its upstream slot i (0..6): connect attempts, the upstream
//!   Token(usize::MAX)          the waker (resolver answers, shutdown)
//!   Token(usize::MAX - 1 - i)  listener i
//!   Token(usize::MAX - 1 - MAX_LISTENERS - i)   DNS socket i (the in-loop DNS client's)
//!   Token(usize::MAX - 1 - MAX_LISTENERS - MAX_DNS_SOCKETS - i)   metrics socket i
//! ```
//! `key` is the connection's slab key, so one slab entry owns all of its sockets and no map
//! from token to socket is needed. Several upstream slots exist so that a connection can keep
//! several connect attempts in flight at once (each attempt its own token); the attempt that
//! wins keeps its slot as the upstream. Slab keys stay far below `usize::MAX >> 3`, so the
//! reserved tokens never collide.
//!
//! The DNS range (`dns(i)`, `i < MAX_DNS_SOCKETS`) names the sockets of the in-loop DNS
//! client (`crate::dns`): one per query in flight, each a slot of its own
//! ([`Target::Dns`]). The metrics range (`metrics(i)`, `i < MAX_METRICS_SOCKETS`) names the
//! `/metrics` endpoint's listener (0) and its scrape connections (1 and up), on worker 0
//! only ([`Target::Metrics`], `crate::metrics::endpoint`).

use mio::Token;

/// How many upstream slots a connection has: the most connect attempts in flight at once.
pub const UPSTREAM_SLOTS: u8 = 6;

/// Which of a connection's sockets an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Aux,
    /// Upstream slot `0..UPSTREAM_SLOTS`.
    Upstream(u8),
}

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Waker,
    Listener(usize),
    /// A socket of the in-loop DNS client.
    Dns(usize),
    /// A socket of the metrics endpoint: 0 its listener, then scrape connections.
    Metrics(usize),
    Conn(usize, Side),
}

const SIDE_BITS: u32 = 3;
/// Listener indices live just below the waker; this many are reserved.
pub const MAX_LISTENERS: usize = 256;

pub const WAKER: Token = Token(usize::MAX);

pub fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(usize::MAX - 1 - index)
}

/// DNS sockets live just below the listeners; this many are reserved (at most this many DNS
/// queries are in flight at once, each with one socket).
pub const MAX_DNS_SOCKETS: usize = 1024;

/// The token of the in-loop DNS client's socket `index`.
pub fn dns(index: usize) -> Token {
    debug_assert!(index < MAX_DNS_SOCKETS);
    Token(usize::MAX - 1 - MAX_LISTENERS - index)
}

/// The DNS socket a token names, if it is in the DNS range.
pub fn dns_index(token: Token) -> Option<usize> {
    // The waker (usize::MAX) has no place below the top: None.
    let from_top = (usize::MAX - 1).checked_sub(token.0)?;
    from_top.checked_sub(MAX_LISTENERS).filter(|&i| i < MAX_DNS_SOCKETS)
}

/// Metrics sockets live just below the DNS range; this many are reserved.
pub const MAX_METRICS_SOCKETS: usize = 64;

/// The token of the metrics endpoint's socket `index` (0: the listener).
pub fn metrics(index: usize) -> Token {
    debug_assert!(index < MAX_METRICS_SOCKETS);
    Token(usize::MAX - 1 - MAX_LISTENERS - MAX_DNS_SOCKETS - index)
}

/// The metrics socket a token names, if it is in the metrics range.
fn metrics_index(token: Token) -> Option<usize> {
    let from_top = (usize::MAX - 1).checked_sub(token.0)?;
    from_top.checked_sub(MAX_LISTENERS + MAX_DNS_SOCKETS).filter(|&i| i < MAX_METRICS_SOCKETS)
}

pub fn conn(key: usize, side: Side) -> Token {
    let side_bits = match side {
        Side::Client => 0,
        Side::Aux => 1,
        Side::Upstream(slot) => {
            debug_assert!(slot < UPSTREAM_SLOTS);
            2 + usize::from(slot)
        }
    };
    Token(key << SIDE_BITS | side_bits)
}

pub fn decode(token: Token) -> Target {
    let raw = token.0;
    if raw == WAKER.0 {
        return Target::Waker;
    }
    let from_top = usize::MAX - 1 - raw;
    if from_top < MAX_LISTENERS {
        return Target::Listener(from_top);
    }
    if let Some(index) = dns_index(token) {
        return Target::Dns(index);
    }
    if let Some(index) = metrics_index(token) {
        return Target::Metrics(index);
    }
    let side = match raw & ((1 << SIDE_BITS) - 1) {
        0 => Side::Client,
        1 => Side::Aux,
        n => Side::Upstream((n - 2) as u8),
    };
    Target::Conn(raw >> SIDE_BITS, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let sides = [Side::Client, Side::Aux].into_iter().chain((0..UPSTREAM_SLOTS).map(Side::Upstream));
        for key in [0, 1, 7, 9_000, 1 << 40] {
            for side in sides.clone() {
                assert_eq!(decode(conn(key, side)), Target::Conn(key, side));
            }
        }
        assert_eq!(decode(WAKER), Target::Waker);
        for i in [0, 1, MAX_LISTENERS - 1] {
            assert_eq!(decode(listener(i)), Target::Listener(i));
            assert_eq!(dns_index(listener(i)), None);
        }
        for i in [0, 1, MAX_DNS_SOCKETS - 1] {
            assert_eq!(dns_index(dns(i)), Some(i));
            assert_eq!(decode(dns(i)), Target::Dns(i));
        }
        assert_eq!(dns_index(WAKER), None);
        assert_eq!(dns_index(Token(usize::MAX - 1 - MAX_LISTENERS - MAX_DNS_SOCKETS)), None);
        assert_eq!(dns_index(conn(9_000, Side::Client)), None);
        for i in [0, 1, MAX_METRICS_SOCKETS - 1] {
            assert_eq!(decode(metrics(i)), Target::Metrics(i));
            assert_eq!(dns_index(metrics(i)), None);
        }
        assert_eq!(metrics_index(dns(MAX_DNS_SOCKETS - 1)), None);
        assert_eq!(metrics_index(WAKER), None);
        let below = Token(usize::MAX - 1 - MAX_LISTENERS - MAX_DNS_SOCKETS - MAX_METRICS_SOCKETS);
        assert!(
            matches!(decode(below), Target::Conn(..)),
            "the first token below the ranges is a connection's"
        );
    }
}
