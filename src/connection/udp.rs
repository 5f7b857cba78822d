//! The `UdpAssociated` phase (UDP ASSOCIATE, RFC 1928 §7): one association's sockets and
//! datagram handling, until the TCP control connection closes.
//!
//! Each association owns two UDP sockets, never shared with another client:
//!
//! * the **client side** (token side `Aux`), bound to the address the client reached us on;
//!   its address is what the reply to UDP ASSOCIATE advertises. Only datagrams from the
//!   client's IP (and from the port it named, when it named one) are accepted; the rest are
//!   counted and dropped.
//! * the **upstream side** (token side `Upstream(0)`), bound to the outbound address, from which
//!   payloads go to targets and replies come back. Keeping it separate means a target can
//!   never inject datagrams that look as if they came from the client, and an IPv4 client can
//!   still reach IPv6 targets.
//!
//! Datagrams are relayed one at a time through the loop's scratch buffer; when a socket's
//! send buffer is full the datagram is dropped, as UDP would. A domain DST.ADDR is resolved
//! off the loop like a CONNECT's; datagrams wait (boundedly) while their name resolves, and
//! answers are cached for the association's life.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::acl::{self, Rules};
use crate::net::{Datagram, DatagramBind, End, Net, Outbound, ReadOutcome, Readiness};
use crate::protocol::{Reply, TargetAddr, encode_udp_header, parse_udp_header};
use crate::relay::Outbox;
use crate::resolver::{self, NameCheck};
use crate::timer::Deadline;
use crate::token::Side;
use crate::users::User;

use super::policy::{self, command_reply};
use super::{CloseReason, Ctx, Lookups, Outcome, Phase, Resolution, Summary, reject};

/// Room kept in front of a received datagram for the header added on the way to the client
/// (the longest, for an IPv6 source, is 22 bytes).
pub const HEADER_ROOM: usize = 22;
/// Datagrams handled per socket per wakeup before yielding to other connections.
const DATAGRAM_BUDGET: usize = 64;
/// Datagrams waiting for one name to resolve, and names remembered, per association.
const MAX_QUEUED_PER_NAME: usize = 16;
const MAX_NAMES: usize = 64;

/// What happened to a UDP association's datagrams, for its report.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpStats {
    pub to_targets: u64,
    pub to_client: u64,
    pub dropped_fragmented: u64,
    pub dropped_foreign: u64,
    pub dropped_denied: u64,
    pub dropped_other: u64,
}

/// A name's state within one association.
enum Name {
    /// Datagrams waiting for the name's first addresses, and the address families whose
    /// answers are still to come (two; the resolver threads answer both at once, the in-loop
    /// client one at a time).
    Resolving {
        waiting: Vec<(u16, Vec<u8>)>,
        families_left: u8,
    },
    /// Addresses known (more may join while `families_left` > 0).
    Resolved {
        ips: Vec<IpAddr>,
        families_left: u8,
    },
    Failed,
}

/// The sockets and state of one UDP association, and the reply still to deliver.
pub struct UdpAssociated<D> {
    client_side: End<D>,
    upstream_side: End<D>,
    client_ip: IpAddr,
    /// Fixed by a non-zero DST.PORT in the request, or learned from the first datagram.
    client_port: Option<u16>,
    names: HashMap<String, Name>,
    header: Vec<u8>,
    stats: UdpStats,
    /// The reply (and any earlier handshake reply) not yet written to the client.
    out: Outbox,
    /// The user whose destination rules apply on top of the global ones.
    user: Option<Arc<User>>,
}

/// Most ports of a `--udp-ports` range one association tries before giving up (reply 01):
/// each try is a `bind` on the loop, so a full range of thousands costs a bounded amount.
const PORT_TRIES: usize = 1024;

/// The client-facing socket: on an ephemeral port, or in `--udp-ports` (the only socket a
/// client behind NAT, or a container's published ports, must reach; the target-facing one
/// only sends and gets replies back through the same connection tracking).
fn bind_client_side<N: Net>(ip: IpAddr, ctx: &Ctx<'_, N>) -> io::Result<N::Datagram> {
    let id = ctx.socket_id(Side::Aux);
    let Some((low, high)) = ctx.config.udp_ports else {
        return ctx.net.bind_datagram(DatagramBind::At(SocketAddr::new(ip, 0)), &Outbound::default(), id);
    };
    let span = usize::from(high - low) + 1;
    // Start somewhere different for each connection, so a busy range is not scanned from its
    // first port every time.
    let start = (ctx.conn as usize) % span;
    for i in 0..span.min(PORT_TRIES) {
        let port = low + ((start + i) % span) as u16;
        match ctx.net.bind_datagram(DatagramBind::At(SocketAddr::new(ip, port)), &Outbound::default(), id) {
            Ok(socket) => return Ok(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, format!("no free port in --udp-ports {low}-{high}")))
}

/// What a UDP association needs to look names up.
struct Names<'a> {
    lookups: &'a mut dyn Lookups,
    key: usize,
    conn: u64,
    now: Instant,
}

/// The result of handling a batch of datagrams.
enum Handled {
    Done,
    /// The budget ran out with datagrams possibly left: come back soon.
    More,
}

/// Open this association's own sockets and reply with the relay address.
///
/// `client_port` is DST.PORT: if not 0, the port the client will send from. Its IP is always
/// the TCP peer's (a DST.ADDR from behind NAT would be wrong, and trusting it would let a
/// client aim the relay at someone else).
pub fn begin<N: Net>(
    client_port: u16,
    mut out: Outbox,
    client: &End<N::Stream>,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    let client_port = Some(client_port).filter(|&p| p != 0);
    let local = match crate::net::Stream::local_addr(&client.socket) {
        Ok(local) => local,
        Err(e) => {
            log::warn!("conn {}: {e}", ctx.conn);
            return reject(summary, out, Reply::GeneralFailure);
        }
    };
    // The client side listens where the client reached us; the upstream side leaves as the
    // connection's egress says (source address, interface, mark), or from anywhere, dual-stack.
    let egress = policy::egress(ctx.settings, summary.user.as_deref());
    let outbound = policy::outbound(&egress, || Some(local.ip()));
    let upstream_at =
        outbound.from.map_or(DatagramBind::DualStack, |ip| DatagramBind::At(SocketAddr::new(ip, 0)));
    let opened = bind_client_side(local.ip(), ctx).and_then(|client_side| {
        let upstream_side =
            ctx.net.bind_datagram(upstream_at, &outbound, ctx.socket_id(Side::Upstream(0)))?;
        Ok((client_side, upstream_side))
    });
    let (client_side, upstream_side) = match opened {
        Ok(sockets) => sockets,
        Err(e) => {
            log::warn!("conn {}: cannot open UDP relay: {e}", ctx.conn);
            return reject(summary, out, Reply::GeneralFailure);
        }
    };
    let mut advertised = client_side.local_addr().ok();
    if let (Some(addr), Some(ip)) = (advertised.as_mut(), ctx.config.udp_advertise) {
        addr.set_ip(ip);
    }
    out.queue(&command_reply(summary.dialect, Reply::Succeeded, advertised));
    summary.reply = Some(Reply::Succeeded);
    summary.local = upstream_side.local_addr().ok();
    Outcome::Go(Phase::UdpAssociated(Box::new(UdpAssociated {
        client_side: End::new(client_side, Readiness::BOTH),
        upstream_side: End::new(upstream_side, Readiness::BOTH),
        client_ip: acl::canonical(summary.client_addr.ip()),
        client_port,
        names: HashMap::new(),
        header: Vec::with_capacity(HEADER_ROOM),
        stats: UdpStats::default(),
        out,
        user: summary.user.clone(),
    })))
}

impl<D: Datagram> UdpAssociated<D> {
    pub fn on_client_side_ready(&mut self, news: Readiness) {
        self.client_side.ready.add(news);
    }

    pub fn on_upstream_ready(&mut self, news: Readiness) {
        self.upstream_side.ready.add(news);
    }

    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity()
    }

    /// The datagram counts so far.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Relay datagrams both ways; the TCP connection only signals the end.
    pub fn drive<N: Net<Datagram = D>>(
        &mut self,
        client: &mut End<N::Stream>,
        deadline: &mut Deadline,
        ctx: &mut Ctx<'_, N>,
    ) -> Outcome<N> {
        if self.out.flush(client).is_err() {
            return Outcome::Close(CloseReason::ClientWriteFailed);
        }
        // RFC 1928 §7: the association ends when its TCP connection does. Anything the
        // client sends on it is meaningless and discarded.
        let mut discard = [0u8; 256];
        loop {
            match client.read(&mut discard) {
                ReadOutcome::Data(_) => {}
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Eof => return Outcome::Close(CloseReason::UdpEndedByClient),
                ReadOutcome::Failed(_) => return Outcome::Close(CloseReason::UdpControlFailed),
            }
        }
        let mut more = false;
        let mut active = false;
        if self.client_side.ready.readable {
            active = true;
            let mut names = Names { lookups: &mut *ctx.names, key: ctx.key, conn: ctx.conn, now: ctx.now };
            match self.relay_from_client(ctx.scratch, &ctx.settings.rules, &mut names) {
                Handled::Done => self.client_side.ready.readable = false,
                Handled::More => more = true,
            }
        }
        if self.upstream_side.ready.readable {
            active = true;
            match self.relay_from_targets(ctx.scratch) {
                Handled::Done => self.upstream_side.ready.readable = false,
                Handled::More => more = true,
            }
        }
        if active {
            ctx.rearm(deadline, ctx.config.idle_timeout);
        }
        if more { Outcome::Again } else { Outcome::Wait }
    }

    /// Relay datagrams from the client to their targets.
    fn relay_from_client(&mut self, scratch: &mut [u8], rules: &Rules, names: &mut Names<'_>) -> Handled {
        for _ in 0..DATAGRAM_BUDGET {
            let (len, from) = match receive(&self.client_side.socket, scratch, &mut self.stats) {
                Received::Datagram(len, from) => (len, from),
                Received::Empty => return Handled::Done,
                Received::Skip => continue,
            };
            if !self.is_from_client(from) {
                self.stats.dropped_foreign += 1;
                continue;
            }
            let datagram = &scratch[..len];
            let header = match parse_udp_header(datagram) {
                Ok(header) => header,
                Err(_) => {
                    self.stats.dropped_other += 1;
                    continue;
                }
            };
            if header.frag != 0 {
                // RFC 1928 §7: a server that does not reassemble drops fragments.
                self.stats.dropped_fragmented += 1;
                continue;
            }
            let payload = &datagram[header.header_len..];
            match header.target {
                TargetAddr::Ip(addr) => self.send_to_target(payload, addr, rules),
                TargetAddr::Domain(host, port) => match resolver::check_name(&host) {
                    NameCheck::Literal(ip) => self.send_to_target(payload, SocketAddr::new(ip, port), rules),
                    NameCheck::Invalid => self.stats.dropped_other += 1,
                    NameCheck::Lookup => self.send_to_name(host, port, payload, rules, names),
                },
            }
        }
        Handled::More
    }

    /// Relay datagrams from targets back to the client, each behind a header naming its source.
    fn relay_from_targets(&mut self, scratch: &mut [u8]) -> Handled {
        for _ in 0..DATAGRAM_BUDGET {
            let (len, from) =
                match receive(&self.upstream_side.socket, &mut scratch[HEADER_ROOM..], &mut self.stats) {
                    Received::Datagram(len, from) => (len, from),
                    Received::Empty => return Handled::Done,
                    Received::Skip => continue,
                };
            let Some(client_port) = self.client_port else {
                // The client has not sent anything yet, so we do not know where it listens.
                self.stats.dropped_other += 1;
                continue;
            };
            let source = SocketAddr::new(acl::canonical(from.ip()), from.port());
            self.header.clear();
            encode_udp_header(source, &mut self.header);
            // Put the header right in front of the payload: no copy of the payload itself.
            let start = HEADER_ROOM - self.header.len();
            scratch[start..HEADER_ROOM].copy_from_slice(&self.header);
            let client = SocketAddr::new(self.client_ip, client_port);
            match self.client_side.socket.send_to(&scratch[start..HEADER_ROOM + len], client) {
                Ok(_) => self.stats.to_client += 1,
                Err(_) => self.stats.dropped_other += 1,
            }
        }
        Handled::More
    }

    /// A lookup for `host` answered (all at once, or one family): send what waited for it.
    pub fn on_resolved(&mut self, host: &str, answer: Resolution, rules: &Rules) {
        let families = match answer {
            Resolution::All(_) => 2,
            Resolution::Family(..) => 1,
        };
        let ips: Vec<IpAddr> = match answer {
            Resolution::All(Ok(ips)) | Resolution::Family(_, Ok(ips)) => ips,
            Resolution::All(Err(_)) | Resolution::Family(_, Err(_)) => Vec::new(),
        };
        let Some(name) = self.names.get_mut(host) else { return };
        let (waiting, known) = match name {
            Name::Resolving { waiting, families_left } => {
                *families_left = families_left.saturating_sub(families);
                let left = *families_left;
                if ips.is_empty() {
                    if left == 0 {
                        let dropped = waiting.len() as u64;
                        *name = Name::Failed;
                        self.stats.dropped_other += dropped;
                    }
                    return;
                }
                let waiting = std::mem::take(waiting);
                *name = Name::Resolved { ips: ips.clone(), families_left: left };
                (waiting, ips)
            }
            Name::Resolved { ips: known, families_left } => {
                *families_left = families_left.saturating_sub(families);
                known.extend(ips);
                return;
            }
            Name::Failed => return,
        };
        for (port, payload) in waiting {
            match self.pick_address(&known, port, rules) {
                Some(addr) => self.send_payload(&payload, addr),
                None => self.stats.dropped_denied += 1,
            }
        }
    }

    fn is_from_client(&mut self, from: SocketAddr) -> bool {
        if acl::canonical(from.ip()) != self.client_ip {
            return false;
        }
        match self.client_port {
            Some(port) => port == from.port(),
            None => {
                // DST.PORT was 0: the first datagram from the client's IP tells its port.
                self.client_port = Some(from.port());
                true
            }
        }
    }

    fn send_to_target(&mut self, payload: &[u8], addr: SocketAddr, rules: &Rules) {
        if !policy::destination_allowed(addr, rules, self.user.as_deref()) {
            self.stats.dropped_denied += 1;
            return;
        }
        self.send_payload(payload, addr);
    }

    fn send_to_name(
        &mut self,
        host: String,
        port: u16,
        payload: &[u8],
        rules: &Rules,
        names: &mut Names<'_>,
    ) {
        // Keyed as the in-loop client names its answers (lower case, no trailing dot), so an
        // answer finds its entry whichever resolver gave it.
        let host = crate::dns::hosts::normalize(&host);
        match self.names.get_mut(&host) {
            Some(Name::Resolved { ips, .. }) => {
                let ips = ips.clone();
                match self.pick_address(&ips, port, rules) {
                    Some(addr) => self.send_payload(payload, addr),
                    None => self.stats.dropped_denied += 1,
                }
            }
            Some(Name::Failed) => self.stats.dropped_other += 1,
            Some(Name::Resolving { waiting, .. }) if waiting.len() < MAX_QUEUED_PER_NAME => {
                waiting.push((port, payload.to_vec()));
            }
            Some(Name::Resolving { .. }) => self.stats.dropped_other += 1,
            None => {
                if self.names.len() >= MAX_NAMES {
                    // Forget finished lookups; keep the ones datagrams are waiting on.
                    self.names.retain(|_, name| {
                        !matches!(name, Name::Failed | Name::Resolved { families_left: 0, .. })
                    });
                    if self.names.len() >= MAX_NAMES {
                        self.stats.dropped_other += 1;
                        return;
                    }
                }
                self.names.insert(
                    host.clone(),
                    Name::Resolving { waiting: vec![(port, payload.to_vec())], families_left: 2 },
                );
                names.lookups.lookup(&host, names.key, names.conn, names.now);
            }
        }
    }

    /// The first resolved address the rules allow and the upstream socket can reach.
    fn pick_address(&self, ips: &[IpAddr], port: u16, rules: &Rules) -> Option<SocketAddr> {
        let v4_only = self.upstream_side.socket.local_addr().is_ok_and(|a| a.is_ipv4());
        ips.iter()
            .map(|&ip| SocketAddr::new(ip, port))
            .filter(|addr| !v4_only || addr.is_ipv4())
            .find(|&addr| policy::destination_allowed(addr, rules, self.user.as_deref()))
    }

    fn send_payload(&mut self, payload: &[u8], addr: SocketAddr) {
        // A dual-stack IPv6 socket reaches IPv4 targets through mapped addresses.
        let addr = match (self.upstream_side.socket.local_addr(), addr.ip()) {
            (Ok(local), IpAddr::V4(v4)) if local.is_ipv6() => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port())
            }
            _ => addr,
        };
        match self.upstream_side.socket.send_to(payload, addr) {
            Ok(_) => self.stats.to_targets += 1,
            Err(_) => self.stats.dropped_other += 1,
        }
    }
}

/// One `recv_from`, sorted: a datagram, nothing left, or an error to skip past.
enum Received {
    Datagram(usize, SocketAddr),
    Empty,
    Skip,
}

fn receive(socket: &impl Datagram, buf: &mut [u8], stats: &mut UdpStats) -> Received {
    match socket.recv_from(buf) {
        Ok((len, from)) => Received::Datagram(len, from),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::Empty,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Received::Skip,
        Err(_) => {
            // e.g. an ICMP port unreachable from an earlier send, reported now: not fatal
            // for a UDP relay; count it and read on.
            stats.dropped_other += 1;
            Received::Skip
        }
    }
}
