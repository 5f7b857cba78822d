//! The token scheme: how a `mio::Token` names the socket an event is for.
//!
//! ```text
//!   Token(key << 2 | side)     side 0 = client, 1 = upstream, 2 = auxiliary
//!   Token(usize::MAX)          the waker (resolver answers, shutdown)
//!   Token(usize::MAX - 1 - i)  listener i
//! ```
//! `key` is the connection's slab key, so one slab entry owns up to three sockets and no
//! map from token to socket is needed. The auxiliary slot is for the extra socket some
//! commands own: the UDP relay socket of a UDP ASSOCIATE or the listener of a BIND.
//! Slab keys stay far below `usize::MAX >> 2`, so the reserved tokens never collide.

use mio::Token;

/// Which of a connection's sockets an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Aux,
}

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Waker,
    Listener(usize),
    Conn(usize, Side),
}

const SIDE_BITS: u32 = 2;
/// Listener indices live just below the waker; this many are reserved.
pub const MAX_LISTENERS: usize = 256;

pub const WAKER: Token = Token(usize::MAX);

pub fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(usize::MAX - 1 - index)
}

pub fn conn(key: usize, side: Side) -> Token {
    let side_bits = match side {
        Side::Client => 0,
        Side::Upstream => 1,
        Side::Aux => 2,
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
    let side = match raw & ((1 << SIDE_BITS) - 1) {
        0 => Side::Client,
        1 => Side::Upstream,
        _ => Side::Aux,
    };
    Target::Conn(raw >> SIDE_BITS, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for key in [0, 1, 7, 9_000, 1 << 40] {
            for side in [Side::Client, Side::Upstream, Side::Aux] {
                assert_eq!(decode(conn(key, side)), Target::Conn(key, side));
            }
        }
        assert_eq!(decode(WAKER), Target::Waker);
        for i in [0, 1, MAX_LISTENERS - 1] {
            assert_eq!(decode(listener(i)), Target::Listener(i));
        }
    }
}
