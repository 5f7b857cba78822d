//! What a connection has done so far, as the metrics count it while it happens: a
//! [`Tally`] is cheap to take (a few loads, no arithmetic, no allocation), and the loop takes
//! one before and one after each time it drives a connection; the difference is what that
//! drive did.
//!
//! Counting the difference, instead of everything when the connection closes, makes the
//! counters move while a long relay runs (bytes, datagrams) and observes each latency once,
//! when it becomes known; the state machine itself knows nothing of metrics.

use std::time::{Duration, Instant};

use crate::net::Net;

use super::{Connection, Phase};

/// A connection's counts so far, and the instants its latencies are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Payload bytes delivered to the target (up) and to the client (down), replies excluded.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// A UDP association's datagrams delivered to targets (up) and to the client (down).
    pub datagrams_up: u64,
    pub datagrams_down: u64,
    /// When the connection was accepted.
    pub started: Instant,
    /// When the request was complete, once it was.
    pub requested: Option<Instant>,
    /// When a CONNECT's upstream connected, once it did.
    pub upstream_connected: Option<Instant>,
    /// The RFC 1929 sub-negotiation failed.
    pub auth_failed: bool,
}

impl Tally {
    /// Nothing done yet, for a connection accepted at `started`.
    pub fn new(started: Instant) -> Tally {
        Tally {
            bytes_up: 0,
            bytes_down: 0,
            datagrams_up: 0,
            datagrams_down: 0,
            started,
            requested: None,
            upstream_connected: None,
            auth_failed: false,
        }
    }

    /// From accept until the request was complete (the handshake), once it was.
    pub fn handshake(&self) -> Option<Duration> {
        self.requested.map(|at| at.saturating_duration_since(self.started))
    }

    /// From the complete request until a CONNECT's upstream connected (resolution
    /// included), once it did.
    pub fn connect(&self) -> Option<Duration> {
        self.upstream_connected.zip(self.requested).map(|(up, req)| up.saturating_duration_since(req))
    }
}

impl<N: Net> Connection<N> {
    /// What the connection has done so far.
    pub fn tally(&self) -> Tally {
        let s = &self.summary;
        let mut tally = Tally {
            requested: s.requested,
            upstream_connected: s.upstream_connected,
            auth_failed: s.auth_failed,
            ..Tally::new(s.started)
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
