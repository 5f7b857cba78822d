//! What a connection has done so far, as the metrics count it while it happens: a
//! [`Tally`] is cheap to take (a few loads, no allocation), and the loop takes one before and
//! one after each time it drives a connection; the difference is what that drive did.
//!
//! Counting the difference, instead of everything when the connection closes, makes the
//! counters move while a long relay runs (bytes, datagrams) and observes each latency once,
//! when it becomes known; the state machine itself knows nothing of metrics.

use std::time::Duration;

use crate::net::Net;

use super::{Connection, Phase};

/// A connection's counts and latencies so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Payload bytes delivered to the target (up) and to the client (down), replies excluded.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// A UDP association's datagrams delivered to targets (up) and to the client (down).
    pub datagrams_up: u64,
    pub datagrams_down: u64,
    /// From accept until the request was complete, once it was.
    pub handshake: Option<Duration>,
    /// From the complete request until a CONNECT's upstream connected (resolution
    /// included), once it did.
    pub connect: Option<Duration>,
    /// The RFC 1929 sub-negotiation failed.
    pub auth_failed: bool,
}

impl<N: Net> Connection<N> {
    /// What the connection has done so far.
    pub fn tally(&self) -> Tally {
        let s = &self.summary;
        let mut tally = Tally {
            handshake: s.requested.map(|at| at.saturating_duration_since(s.started)),
            connect: s.upstream_connected.zip(s.requested).map(|(up, req)| up.saturating_duration_since(req)),
            auth_failed: s.auth_failed,
            ..Tally::default()
        };
        match &self.phase {
            Phase::Relaying(relay) => (tally.bytes_up, tally.bytes_down) = relay.payload_bytes(),
            Phase::UdpAssociated(udp) => {
                let stats = udp.stats();
                (tally.datagrams_up, tally.datagrams_down) = (stats.to_targets, stats.to_client);
            }
            _ => {}
        }
        tally
    }
}
