//! The `BindWaiting` phase (RFC 1928 §4, and SOCKS4's BIND): wait for one inbound connection
//! for the client.
//!
//! Used by protocols that connect back to the client (active-mode FTP). The server listens
//! on an ephemeral port of its outbound address, tells the client where (first reply),
//! accepts one connection from the expected host (second reply), then relays it exactly
//! like a CONNECT's upstream. Connections from other hosts are closed at once and the
//! listener keeps waiting, until the connect timeout ends the BIND.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::acl;
use crate::net::{End, Listener, Net, Readiness, Stream};
use crate::protocol::Reply;
use crate::relay::{Direction, Outbox};
use crate::token::Side;

use super::policy::command_reply;
use super::relaying::Relay;
use super::request::Carry;
use super::{CloseReason, Ctx, Outcome, Phase, Summary, reject};

/// A BIND's listener, who may connect to it, and what the request carries.
pub struct BindWaiting<L> {
    listener: End<L>,
    /// Addresses the peer may come from; empty means any (the client sent 0.0.0.0 or ::).
    expected: Vec<IpAddr>,
    carry: Carry,
}

/// Listen where the peer can reach us: the connection's egress address (`from`: its
/// `bind-out`, the user's or the global one), else the route toward the expected peer, else
/// `local` (the address the client reached us on); then send the first reply with the
/// listening address. (The interface and mark of the egress are for outbound sockets; the
/// listener does not take them.)
pub fn begin<N: Net>(
    expected: Vec<IpAddr>,
    toward: IpAddr,
    from: Option<IpAddr>,
    local: Option<IpAddr>,
    mut carry: Carry,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    let local_ip = from.or_else(|| ctx.net.outbound_ip_for(toward)).or(local);
    let opened = local_ip
        .ok_or_else(|| io::Error::other("no local address"))
        .and_then(|ip| ctx.net.listen(SocketAddr::new(ip, 0), ctx.socket_id(Side::Aux)));
    let listener = match opened {
        Ok(listener) => listener,
        Err(e) => {
            log::warn!("conn {}: cannot listen for BIND: {e}", ctx.conn);
            return reject(summary, carry.out, Reply::GeneralFailure);
        }
    };
    carry.out.queue(&command_reply(summary.dialect, Reply::Succeeded, listener.local_addr().ok()));
    let expected = expected.into_iter().filter(|ip| !ip.is_unspecified()).map(acl::canonical).collect();
    Outcome::Go(Phase::BindWaiting(Box::new(BindWaiting {
        listener: End::new(listener, Readiness::NONE),
        expected,
        carry,
    })))
}

impl<L: Listener> BindWaiting<L> {
    pub fn on_ready(&mut self, news: Readiness) {
        self.listener.ready.add(news);
    }

    pub fn buffered_bytes(&self) -> usize {
        self.carry.buffered_bytes()
    }

    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.carry.out)
    }

    /// Deliver the first reply; accept until the expected peer arrives, then relay with it.
    pub fn drive<N: Net<Listener = L, Stream = L::Stream>>(
        &mut self,
        client: &mut End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        if self.carry.out.flush(client).is_err() {
            return Outcome::Close(CloseReason::ClientWriteFailed);
        }
        if !self.listener.ready.readable {
            return Outcome::Wait;
        }
        let (mut peer_stream, peer) = match self.accept_expected() {
            Ok(Some(accepted)) => accepted,
            Ok(None) => {
                self.listener.ready.readable = false;
                return Outcome::Wait;
            }
            Err(e) => {
                log::debug!("conn {}: BIND accept failed: {e}", ctx.conn);
                return reject(summary, self.take_outbox(), Reply::GeneralFailure);
            }
        };
        if let Err(e) = ctx.net.adopt(&mut peer_stream, ctx.socket_id(Side::Upstream(0))) {
            log::warn!("conn {}: cannot register BIND peer: {e}", ctx.conn);
            return reject(summary, self.take_outbox(), Reply::GeneralFailure);
        }
        log::debug!("conn {}: BIND peer {peer} connected", ctx.conn);
        if let Err(e) = peer_stream.set_keepalive(ctx.config.tcp_keepalive) {
            log::debug!("conn {}: TCP keepalive on the BIND peer: {e}", ctx.conn);
        }
        // The second reply names the peer (RFC 1928 §4); the listener closes with this phase.
        let Carry { mut out, early } = std::mem::take(&mut self.carry);
        out.queue(&command_reply(summary.dialect, Reply::Succeeded, Some(peer)));
        summary.reply = Some(Reply::Succeeded);
        summary.connected = Some(peer);
        summary.local = self.listener.socket.local_addr().ok();
        let control = out.pending();
        Outcome::Go(Phase::Relaying(Relay::new(
            End::new(peer_stream, Readiness::BOTH),
            0,
            Direction::with_queued(early),
            Direction::with_queued(out),
            control,
        )))
    }

    /// Accept until the expected peer arrives or the backlog is empty (`Ok(None)`).
    fn accept_expected(&mut self) -> io::Result<Option<(L::Stream, SocketAddr)>> {
        loop {
            match self.listener.socket.accept() {
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
