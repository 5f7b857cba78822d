//! Why a connection ended: one typed reason per way out, shown in the log line
//! ([`CloseReason::as_str`]) and counted by the metrics under a snake_case label
//! ([`CloseReason::label`]).

use std::fmt;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// No complete request within `--handshake-timeout`.
    HandshakeTimeout,
    /// The client sent FIN before its request was complete.
    ClientClosedHandshake,
    /// Reading the client failed (reset) before its request was complete.
    ClientFailedHandshake,
    /// Writing to the client failed (reset, broken pipe) while a reply waited.
    ClientWriteFailed,
    /// A handshake message larger than any valid one.
    HandshakeTooLong,
    /// The first byte was neither SOCKS5's 5 nor SOCKS4's 4.
    NotSocks,
    /// A listed load balancer's connection did not begin with a valid PROXY header.
    BadProxyHeader,
    /// The client (as a PROXY header names it) is outside `--allow-client`.
    ClientNotAllowed,
    /// A SOCKS5 greeting that can never be valid (no methods).
    BadGreeting,
    /// An RFC 1929 sub-negotiation with the wrong version byte.
    BadAuthVersion,
    /// A SOCKS5 request with the wrong version byte.
    BadRequestVersion,
    /// A SOCKS4 request that can never be valid.
    BadSocks4Request,
    /// An error reply (or `05 FF`, or `01 01`) was delivered, or its linger ended.
    Rejected,
    /// Both directions of a relay finished (FIN each way).
    Done,
    /// A peer reset the relay.
    Reset,
    /// A peer had gone when the relay wrote to it.
    BrokenPipe,
    /// Any other relay I/O error.
    RelayError,
    /// No relay traffic for `--idle-timeout`.
    IdleTimeout,
    /// No datagram for `--idle-timeout` on a UDP association.
    UdpIdleTimeout,
    /// The client closed a UDP association's control connection (RFC 1928 §7).
    UdpEndedByClient,
    /// A UDP association's control connection failed.
    UdpControlFailed,
    /// A reload removed the connection's user or changed their password.
    UserRevoked,
    /// The connection's user expired (`expires` passed, or a reload moved it into the past).
    UserExpired,
    /// The state machine did not settle (a bug; logged as an error).
    Stuck,
}

impl CloseReason {
    /// Every reason, in declaration order: `ALL[r.index()] == r`.
    pub const ALL: [CloseReason; 24] = [
        CloseReason::HandshakeTimeout,
        CloseReason::ClientClosedHandshake,
        CloseReason::ClientFailedHandshake,
        CloseReason::ClientWriteFailed,
        CloseReason::HandshakeTooLong,
        CloseReason::NotSocks,
        CloseReason::BadProxyHeader,
        CloseReason::ClientNotAllowed,
        CloseReason::BadGreeting,
        CloseReason::BadAuthVersion,
        CloseReason::BadRequestVersion,
        CloseReason::BadSocks4Request,
        CloseReason::Rejected,
        CloseReason::Done,
        CloseReason::Reset,
        CloseReason::BrokenPipe,
        CloseReason::RelayError,
        CloseReason::IdleTimeout,
        CloseReason::UdpIdleTimeout,
        CloseReason::UdpEndedByClient,
        CloseReason::UdpControlFailed,
        CloseReason::UserRevoked,
        CloseReason::UserExpired,
        CloseReason::Stuck,
    ];

    /// The reason's place in [`CloseReason::ALL`] (a metric's counter array index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name: the `reason` label of `socksloop_closed_total`. The match
    /// has no wildcard, so a new variant cannot compile without a label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::ClientClosedHandshake => "client_closed_handshake",
            CloseReason::ClientFailedHandshake => "client_failed_handshake",
            CloseReason::ClientWriteFailed => "client_write_failed",
            CloseReason::HandshakeTooLong => "handshake_too_long",
            CloseReason::NotSocks => "not_socks",
            CloseReason::BadProxyHeader => "bad_proxy_header",
            CloseReason::ClientNotAllowed => "client_not_allowed",
            CloseReason::BadGreeting => "bad_greeting",
            CloseReason::BadAuthVersion => "bad_auth_version",
            CloseReason::BadRequestVersion => "bad_request_version",
            CloseReason::BadSocks4Request => "bad_socks4_request",
            CloseReason::Rejected => "rejected",
            CloseReason::Done => "done",
            CloseReason::Reset => "reset",
            CloseReason::BrokenPipe => "broken_pipe",
            CloseReason::RelayError => "relay_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::UdpIdleTimeout => "udp_idle_timeout",
            CloseReason::UdpEndedByClient => "udp_ended_by_client",
            CloseReason::UdpControlFailed => "udp_control_failed",
            CloseReason::UserRevoked => "user_revoked",
            CloseReason::UserExpired => "user_expired",
            CloseReason::Stuck => "internal_error",
        }
    }

    /// A short stable name (log lines).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake timeout",
            CloseReason::ClientClosedHandshake => "client closed during handshake",
            CloseReason::ClientFailedHandshake => "client error during handshake",
            CloseReason::ClientWriteFailed => "client write failed",
            CloseReason::HandshakeTooLong => "handshake message too long",
            CloseReason::NotSocks => "not SOCKS",
            CloseReason::BadProxyHeader => "bad PROXY header",
            CloseReason::ClientNotAllowed => "client not allowed",
            CloseReason::BadGreeting => "bad greeting",
            CloseReason::BadAuthVersion => "bad auth version",
            CloseReason::BadRequestVersion => "bad request version",
            CloseReason::BadSocks4Request => "bad SOCKS4 request",
            CloseReason::Rejected => "rejected",
            CloseReason::Done => "done",
            CloseReason::Reset => "reset",
            CloseReason::BrokenPipe => "broken pipe",
            CloseReason::RelayError => "relay error",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::UdpIdleTimeout => "UDP idle timeout",
            CloseReason::UdpEndedByClient => "UDP association ended by client",
            CloseReason::UdpControlFailed => "UDP control connection failed",
            CloseReason::UserRevoked => "user revoked",
            CloseReason::UserExpired => "user expired",
            CloseReason::Stuck => "internal error",
        }
    }

    /// The reason a revoked user's connection ends with.
    pub fn of_revocation(why: crate::users::Revoked) -> CloseReason {
        match why {
            crate::users::Revoked::Expired => CloseReason::UserExpired,
            crate::users::Revoked::Removed | crate::users::Revoked::PasswordChanged => {
                CloseReason::UserRevoked
            }
        }
    }

    /// The reason a relay I/O error gives.
    pub fn of_relay_error(error: &std::io::Error) -> CloseReason {
        match error.kind() {
            std::io::ErrorKind::ConnectionReset => CloseReason::Reset,
            std::io::ErrorKind::BrokenPipe => CloseReason::BrokenPipe,
            _ => CloseReason::RelayError,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant is in `ALL` at its own index, with a label of its own: a variant missing
    /// from `ALL` would fail the index check of the one after it, or the count.
    #[test]
    fn every_reason_has_a_distinct_snake_case_label() {
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?} out of place in ALL");
            let label = reason.label();
            assert!(
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{label}"
            );
            assert!(
                CloseReason::ALL[..i].iter().all(|other| other.label() != label),
                "{label} is used twice"
            );
        }
        // The last variant's discriminant is the count minus one: nothing after it.
        assert_eq!(CloseReason::Stuck.index(), CloseReason::ALL.len() - 1);
    }
}
