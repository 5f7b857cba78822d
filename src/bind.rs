//! BIND (RFC 1928 §4, and SOCKS4's BIND): wait for one inbound connection for the client.
//!
//! Used by protocols that connect back to the client (active-mode FTP). The server listens
//! on an ephemeral port of its outbound address, tells the client where (first reply),
//! accepts one connection from the expected host (second reply), then relays it exactly
//! like a CONNECT's upstream. Connections from other hosts are closed at once and the
//! listener keeps waiting, until the connect timeout ends the BIND.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use crate::acl;
use crate::listen;
use crate::token::{self, Side};

/// A BIND's listener and who may connect to it.
pub struct BindWait {
    listener: TcpListener,
    /// Addresses the peer may come from; empty means any (the client sent 0.0.0.0 or ::).
    expected: Vec<IpAddr>,
}

impl BindWait {
    /// Listen on an ephemeral port of `local_ip`, registered under the connection's aux token.
    pub fn open(
        local_ip: IpAddr,
        expected: Vec<IpAddr>,
        registry: &Registry,
        key: usize,
    ) -> io::Result<BindWait> {
        let mut listener = listen::bind(SocketAddr::new(local_ip, 0), false)?;
        registry.register(&mut listener, token::conn(key, Side::Aux), Interest::READABLE)?;
        let expected = expected.into_iter().filter(|ip| !ip.is_unspecified()).map(acl::canonical).collect();
        Ok(BindWait { listener, expected })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept until the expected peer arrives or the backlog is empty (`Ok(None)`).
    pub fn accept_expected(&mut self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let ip = acl::canonical(peer.ip());
                    if self.expected.is_empty() || self.expected.contains(&ip) {
                        return Ok(Some((stream, peer)));
                    }
                    log::debug!("BIND: refused connection from unexpected {peer}");
                    drop(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The local address the kernel would use to reach `target`: connecting a UDP socket only
/// consults the routing table (no packet is sent), so this is cheap and never blocks.
pub fn outbound_ip_for(target: IpAddr) -> Option<IpAddr> {
    if target.is_unspecified() {
        return None;
    }
    let any: SocketAddr = match target {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(SocketAddr::new(target, 9)).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_ip_for_loopback_is_loopback() {
        assert_eq!(outbound_ip_for("127.0.0.1".parse().unwrap()), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(outbound_ip_for("0.0.0.0".parse().unwrap()), None);
    }

    #[test]
    fn accepts_only_the_expected_host() {
        let poll = mio::Poll::new().unwrap();
        let mut wait = BindWait::open(
            "127.0.0.1".parse().unwrap(),
            vec!["127.0.0.2".parse().unwrap()],
            poll.registry(),
            0,
        )
        .unwrap();
        let addr = wait.local_addr().unwrap();
        let _wrong = std::net::TcpStream::connect(addr).unwrap();
        let right = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        right.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
        right.connect(&addr.into()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some((_, peer)) = wait.accept_expected().unwrap() {
                assert_eq!(peer.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
                break;
            }
            assert!(std::time::Instant::now() < deadline, "expected peer never accepted");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
