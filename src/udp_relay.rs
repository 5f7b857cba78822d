//! UDP ASSOCIATE (RFC 1928 §7): one association's sockets and datagram handling.
//!
//! Each association owns two UDP sockets, never shared with another client:
//!
//! * the **client side** (token side `Aux`), bound to the address the client reached us on;
//!   its address is what the reply to UDP ASSOCIATE advertises. Only datagrams from the
//!   client's IP (and from the port it named, when it named one) are accepted; the rest are
//!   counted and dropped.
//! * the **upstream side** (token side `Upstream`), bound to the outbound address, from which
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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry};

use crate::acl::{self, Rules};
use crate::protocol::{TargetAddr, encode_udp_header, parse_udp_header};
use crate::resolver::{self, Lookup, NameCheck, Resolver};
use crate::token::{self, Side};

/// Room kept in front of a received datagram for the header added on the way to the client
/// (the longest, for an IPv6 source, is 22 bytes).
pub const HEADER_ROOM: usize = 22;
/// Datagrams handled per socket per wakeup before yielding to other connections.
const DATAGRAM_BUDGET: usize = 64;
/// Datagrams waiting for one name to resolve, and names remembered, per association.
const MAX_QUEUED_PER_NAME: usize = 16;
const MAX_NAMES: usize = 64;

/// What happened to datagrams, for the connection's log line.
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
    Resolving(Vec<(u16, Vec<u8>)>),
    Resolved(Vec<IpAddr>),
    Failed,
}

/// The sockets and state of one UDP association.
pub struct UdpAssociation {
    client_side: UdpSocket,
    upstream_side: UdpSocket,
    client_ip: IpAddr,
    /// Fixed by a non-zero DST.PORT in the request, or learned from the first datagram.
    client_port: Option<u16>,
    names: HashMap<String, Name>,
    header: Vec<u8>,
    pub stats: UdpStats,
}

/// The result of handling a batch of datagrams.
pub enum Handled {
    Done,
    /// The budget ran out with datagrams possibly left: come back soon.
    More,
}

impl UdpAssociation {
    /// Open both sockets. `local_ip` is the address the client's TCP connection reached;
    /// `bind_out` the outbound address, if one is configured.
    pub fn open(
        local_ip: IpAddr,
        client_ip: IpAddr,
        client_port: Option<u16>,
        bind_out: Option<IpAddr>,
    ) -> io::Result<UdpAssociation> {
        let client_side = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
        let upstream_side = match bind_out {
            Some(ip) => UdpSocket::bind(SocketAddr::new(ip, 0))?,
            None => bind_dual_stack()?,
        };
        Ok(UdpAssociation {
            client_side,
            upstream_side,
            client_ip: acl::canonical(client_ip),
            client_port,
            names: HashMap::new(),
            header: Vec::with_capacity(HEADER_ROOM),
            stats: UdpStats::default(),
        })
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(&mut self.client_side, token::conn(key, Side::Aux), Interest::READABLE)?;
        registry.register(&mut self.upstream_side, token::conn(key, Side::Upstream), Interest::READABLE)
    }

    /// The client-side socket's address: what the UDP ASSOCIATE reply advertises.
    pub fn relay_addr(&self) -> io::Result<SocketAddr> {
        self.client_side.local_addr()
    }

    /// Relay datagrams from the client to their targets.
    pub fn from_client(
        &mut self,
        scratch: &mut [u8],
        rules: &Rules,
        resolver: &Resolver,
        lookup_id: (usize, u64),
    ) -> Handled {
        for _ in 0..DATAGRAM_BUDGET {
            let (len, from) = match receive(&self.client_side, scratch, &mut self.stats) {
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
                    NameCheck::Lookup => self.send_to_name(host, port, payload, rules, resolver, lookup_id),
                },
            }
        }
        Handled::More
    }

    /// Relay datagrams from targets back to the client, each behind a header naming its source.
    pub fn from_targets(&mut self, scratch: &mut [u8]) -> Handled {
        for _ in 0..DATAGRAM_BUDGET {
            let (len, from) = match receive(&self.upstream_side, &mut scratch[HEADER_ROOM..], &mut self.stats)
            {
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
            match self.client_side.send_to(&scratch[start..HEADER_ROOM + len], client) {
                Ok(_) => self.stats.to_client += 1,
                Err(_) => self.stats.dropped_other += 1,
            }
        }
        Handled::More
    }

    /// A lookup for `host` answered: send what waited for it.
    pub fn on_resolved(&mut self, host: &str, result: io::Result<Vec<SocketAddr>>, rules: &Rules) {
        let ips: Vec<IpAddr> = match result {
            Ok(addrs) => addrs.iter().map(SocketAddr::ip).collect(),
            Err(_) => Vec::new(),
        };
        let state = if ips.is_empty() { Name::Failed } else { Name::Resolved(ips.clone()) };
        let Some(Name::Resolving(waiting)) = self.names.insert(host.to_owned(), state) else {
            return;
        };
        for (port, payload) in waiting {
            match self.pick_address(&ips, port, rules) {
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
        if !rules.destination_allowed(addr) {
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
        resolver: &Resolver,
        (key, generation): (usize, u64),
    ) {
        match self.names.get_mut(&host) {
            Some(Name::Resolved(ips)) => {
                let ips = ips.clone();
                match self.pick_address(&ips, port, rules) {
                    Some(addr) => self.send_payload(payload, addr),
                    None => self.stats.dropped_denied += 1,
                }
            }
            Some(Name::Failed) => self.stats.dropped_other += 1,
            Some(Name::Resolving(waiting)) if waiting.len() < MAX_QUEUED_PER_NAME => {
                waiting.push((port, payload.to_vec()));
            }
            Some(Name::Resolving(_)) => self.stats.dropped_other += 1,
            None => {
                if self.names.len() >= MAX_NAMES {
                    // Forget finished lookups; keep the ones datagrams are waiting on.
                    self.names.retain(|_, name| matches!(name, Name::Resolving(_)));
                    if self.names.len() >= MAX_NAMES {
                        self.stats.dropped_other += 1;
                        return;
                    }
                }
                self.names.insert(host.clone(), Name::Resolving(vec![(port, payload.to_vec())]));
                resolver.submit(Lookup { key, generation, host, port });
            }
        }
    }

    /// The first resolved address the rules allow and the upstream socket can reach.
    fn pick_address(&self, ips: &[IpAddr], port: u16, rules: &Rules) -> Option<SocketAddr> {
        let v4_only = self.upstream_side.local_addr().is_ok_and(|a| a.is_ipv4());
        ips.iter()
            .map(|&ip| SocketAddr::new(ip, port))
            .filter(|addr| !v4_only || addr.is_ipv4())
            .find(|&addr| rules.destination_allowed(addr))
    }

    fn send_payload(&mut self, payload: &[u8], addr: SocketAddr) {
        // A dual-stack IPv6 socket reaches IPv4 targets through mapped addresses.
        let addr = match (self.upstream_side.local_addr(), addr.ip()) {
            (Ok(local), IpAddr::V4(v4)) if local.is_ipv6() => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port())
            }
            _ => addr,
        };
        match self.upstream_side.send_to(payload, addr) {
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

fn receive(socket: &UdpSocket, buf: &mut [u8], stats: &mut UdpStats) -> Received {
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

/// An IPv6 socket that also speaks IPv4 (through mapped addresses), or IPv4 alone where
/// the host has no IPv6.
fn bind_dual_stack() -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM.nonblocking(), None);
    match socket {
        Ok(socket) => {
            socket.set_only_v6(false)?;
            socket.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into())?;
            Ok(UdpSocket::from_std(socket.into()))
        }
        Err(_) => UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
    }
}
