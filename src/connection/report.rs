//! What a finished connection reports: one [`Report`], from which the log line (and, later,
//! the access log and the metrics) are made, so they can never disagree.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::{Command, Reply, TargetAddr};

use super::{CloseReason, UdpStats};

/// Everything the access log and the metrics say about one connection, taken as it closes.
#[derive(Debug)]
pub struct Report<'a> {
    pub id: u64,
    /// The client (as a PROXY header named it, when one did).
    pub client: SocketAddr,
    pub user: Option<&'a str>,
    pub command: Option<Command>,
    /// The target as requested (an address or a name).
    pub target: Option<&'a TargetAddr>,
    /// The address actually connected to: CONNECT's winning attempt, BIND's peer.
    pub connected: Option<SocketAddr>,
    /// Our side of the outbound socket (the egress address).
    pub local: Option<SocketAddr>,
    pub reply: Option<Reply>,
    /// Payload bytes delivered to the target (up) and to the client (down), replies excluded.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// A UDP association's datagram counts.
    pub udp: Option<UdpStats>,
    pub duration: Duration,
    pub reason: CloseReason,
}

/// The text log line: `conn 7: 127.0.0.1:50000 -> example.com:443 reply 00 up 10 B down 20 B in
/// 0.120 s (done)`, with a second line of datagram counts before it for a UDP association.
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.udp {
            writeln!(
                f,
                "conn {}: UDP datagrams to targets {} to client {}; dropped: fragmented {} foreign {} denied {} other {}",
                self.id,
                s.to_targets,
                s.to_client,
                s.dropped_fragmented,
                s.dropped_foreign,
                s.dropped_denied,
                s.dropped_other
            )?;
        }
        write!(f, "conn {}: {} -> ", self.id, self.client)?;
        match self.target {
            Some(target) => write!(f, "{target}")?,
            None => f.write_str("-")?,
        }
        match self.reply {
            Some(reply) => write!(f, " reply {reply}")?,
            None => f.write_str(" reply -")?,
        }
        if let Some(user) = self.user {
            write!(f, " user '{}'", user.escape_debug())?;
        }
        write!(
            f,
            " up {} B down {} B in {:.3} s ({})",
            self.bytes_up,
            self.bytes_down,
            self.duration.as_secs_f64(),
            self.reason
        )
    }
}
