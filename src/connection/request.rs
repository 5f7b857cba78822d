//! Carrying out a parsed request, whichever dialect it came in: pick the phase that serves
//! the command, and the `Resolving` phase for commands whose target is a domain name.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::net::{End, Net, Stream};
use crate::protocol::{Command, Reply, TargetAddr};
use crate::relay::Outbox;
use crate::resolver::{self, Lookup, NameCheck};

use super::{Ctx, Outcome, Phase, Summary, bind, connecting, reject, udp};

/// What a request carries from phase to phase until relaying begins: replies queued for the
/// client and not yet written, and early payload the client sent behind its request.
#[derive(Debug, Default)]
pub struct Carry {
    pub out: Outbox,
    pub early: Outbox,
}

impl Carry {
    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity() + self.early.capacity()
    }
}

/// Begin carrying out `command` toward `target`.
pub fn start<N: Net>(
    command: Command,
    target: TargetAddr,
    carry: Carry,
    client: &End<N::Stream>,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    log::debug!("conn {}: {:?} {}", ctx.conn, command, target);
    summary.target = Some(target.clone());
    if command == Command::UdpAssociate {
        return udp::begin(target.port(), carry.out, client, ctx, summary);
    }
    let ip = match target {
        TargetAddr::Ip(addr) => addr,
        TargetAddr::Domain(host, port) => match resolver::check_name(&host) {
            NameCheck::Literal(ip) => SocketAddr::new(ip, port),
            NameCheck::Invalid => return reject(summary, carry.out, Reply::HostUnreachable),
            NameCheck::Lookup => {
                ctx.resolver.submit(Lookup { key: ctx.key, conn: ctx.conn, host, port });
                return Outcome::Go(Phase::Resolving(Resolving { command, carry }));
            }
        },
    };
    serve(command, vec![ip], carry, client, ctx, summary)
}

/// The target's addresses are known: connect to them, or (BIND) listen for one of them.
fn serve<N: Net>(
    command: Command,
    addrs: Vec<SocketAddr>,
    carry: Carry,
    client: &End<N::Stream>,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    if command == Command::Bind {
        let expected: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        // Listen where the peer can reach us: toward the first address it may come from.
        let toward = expected[0];
        let local = client.socket.local_addr().ok().map(|a| a.ip());
        return bind::begin(expected, toward, local, carry, ctx, summary);
    }
    connecting::begin(addrs, carry, ctx, summary)
}

/// `Resolving`: the command waits for the resolver's answer; what it carries waits with it.
#[derive(Debug)]
pub struct Resolving {
    command: Command,
    carry: Carry,
}

impl Resolving {
    pub fn buffered_bytes(&self) -> usize {
        self.carry.buffered_bytes()
    }

    /// The queued replies (for an error reply that must follow them).
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.carry.out)
    }

    /// The answer arrived: serve the command, or reply 04 when the name has no address.
    pub fn on_answer<N: Net>(
        &mut self,
        result: io::Result<Vec<SocketAddr>>,
        client: &End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        let carry = std::mem::take(&mut self.carry);
        match result {
            Ok(addrs) if !addrs.is_empty() => serve(self.command, addrs, carry, client, ctx, summary),
            Ok(_) => reject(summary, carry.out, Reply::HostUnreachable),
            Err(e) => {
                log::debug!("conn {}: lookup failed: {e}", ctx.conn);
                reject(summary, carry.out, Reply::HostUnreachable)
            }
        }
    }
}
