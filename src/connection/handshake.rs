//! The `Handshake` phase: collect the client's bytes and parse them, message by message,
//! until a request is complete.
//!
//! SOCKS5 goes `AwaitGreeting` → `AwaitAuth` (if a password is required) → `AwaitRequest` (RFC 1928 §3–4, RFC 1929);
//! a first byte of 4 is a SOCKS4/4a request instead, all in one message. Bytes are collected
//! in a fixed buffer larger than the longest message (greeting 257, auth 513, request 262),
//! and the parser runs again after each read: a message split into single bytes works, and
//! several messages in one segment work too. Bytes after the request are early payload for
//! the target and are kept.

use std::io;

use crate::acl;
use crate::net::{End, Net, ReadOutcome, Stream};
use crate::protocol::proxy::{self, ProxyCommand};
use crate::protocol::socks4::{self, Socks4Command, Socks4Target};
use crate::protocol::{
    self, AuthStatus, Command, Invalid, Method, Parse, Reply, TargetAddr, encode_auth_status,
    encode_method_selection,
};
use crate::relay::Outbox;
use crate::users::User;
use crate::verifier::{Login, Verdict};
use zeroize::Zeroize;

use super::policy::{self, Dialect};
use super::{CloseReason, Ctx, Outcome, Summary, reject, reject_with, request};
use std::net::SocketAddr;

/// Whether `user`, whose password was right, is refused because the account has expired
/// (logged: the operator must be able to tell this from a wrong password).
fn login_expired(user: &User, conn: u64) -> bool {
    let expired = user.expired_at(std::time::SystemTime::now());
    if expired {
        log::info!("conn {conn}: login refused: user '{}' has expired", user.name.escape_debug());
    }
    expired
}

/// Handshake bytes are collected here: larger than the longest greeting (257), auth (513)
/// or request (262), so a complete message always fits, with room for coalesced early data.
const HANDSHAKE_BUF: usize = 1024;

/// Which message the handshake waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A PROXY protocol header (v1 or v2) from a listed load balancer, naming the client.
    ProxyHeader,
    /// `05 NMETHODS METHODS` (RFC 1928 §3), or a SOCKS4 request.
    Greeting,
    /// `01 ULEN UNAME PLEN PASSWD` (RFC 1929), after username/password was selected.
    Auth,
    /// The password's hash is with a verifier thread (`src/verifier/`): the client is not
    /// read until the verdict comes (`Handshake::on_verdict`); the handshake deadline runs on.
    Verifying,
    /// `05 CMD 00 ATYP ADDR PORT` (RFC 1928 §4).
    Request,
}

/// The handshake's buffer, where it stands, and the replies (method selection, auth status)
/// not yet written.
pub struct Handshake {
    stage: Stage,
    buf: [u8; HANDSHAKE_BUF],
    len: usize,
    out: Outbox,
}

impl Drop for Handshake {
    /// A connection that ends in the middle of an RFC 1929 message (or with a malformed one)
    /// leaves part of a password in the buffer: wipe it. (A parsed message is wiped at once.)
    fn drop(&mut self) {
        if self.stage == Stage::Auth {
            self.buf[..self.len].zeroize();
        }
    }
}

/// What parsing the bytes so far gave.
enum Parsed<N: Net> {
    /// The message is incomplete: read more.
    Partial,
    /// A message moved the handshake to its next stage: parse again.
    Advanced,
    /// The handshake is over: this is what comes next.
    Finished(Outcome<N>),
}

impl Handshake {
    pub fn new() -> Box<Handshake> {
        Box::new(Handshake {
            stage: Stage::Greeting,
            buf: [0; HANDSHAKE_BUF],
            len: 0,
            out: Outbox::default(),
        })
    }

    /// The stage as it appears in logs.
    pub fn stage_name(&self) -> &'static str {
        match self.stage {
            Stage::ProxyHeader => "AwaitProxyHeader",
            Stage::Greeting => "AwaitGreeting",
            Stage::Auth => "AwaitAuth",
            Stage::Verifying => "VerifyingAuth",
            Stage::Request => "AwaitRequest",
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity()
    }

    /// The connection comes from a listed load balancer: a PROXY header comes first.
    pub fn expect_proxy_header(&mut self) {
        if self.stage == Stage::Greeting && self.len == 0 {
            self.stage = Stage::ProxyHeader;
        }
    }

    fn filled(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Drop the first `n` bytes (a parsed message), keeping what follows it.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// [`Handshake::consume`] a message that held a password, wiping the bytes it leaves
    /// behind the new end so no copy of the password stays in the buffer.
    fn consume_secret(&mut self, n: usize) {
        let end = self.len;
        self.consume(n);
        self.buf[self.len..end].zeroize();
    }

    /// Parse what has arrived, read more when a message is incomplete, until the handshake
    /// is over or must wait for the client.
    pub fn drive<N: Net>(
        &mut self,
        client: &mut End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        // Each pass parses a message or reads at least one byte; the buffer bounds the reads.
        loop {
            let parsed = match self.stage {
                Stage::ProxyHeader => self.on_proxy_header(client, ctx, summary),
                Stage::Greeting if self.filled().first() == Some(&socks4::VERSION) => {
                    self.on_socks4_request(client, ctx, summary)
                }
                Stage::Greeting => self.on_greeting(client, ctx),
                Stage::Auth => self.on_auth(client, ctx, summary),
                // Not reading: the verdict resumes the handshake (bytes the client sent meanwhile
                // wait in the socket, and its readiness is remembered).
                Stage::Verifying => return Outcome::Wait,
                Stage::Request => self.on_request(client, ctx, summary),
            };
            match parsed {
                Parsed::Advanced => {}
                Parsed::Finished(outcome) => return outcome,
                Parsed::Partial => {
                    if let Some(outcome) = self.read_more(client) {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Read more bytes: `None` when some arrived (parse again), else what to do.
    fn read_more<N: Net>(&mut self, client: &mut End<N::Stream>) -> Option<Outcome<N>> {
        if self.len == self.buf.len() {
            return Some(Outcome::Close(CloseReason::HandshakeTooLong));
        }
        match client.read(&mut self.buf[self.len..]) {
            ReadOutcome::Data(n) => {
                self.len += n;
                None
            }
            ReadOutcome::WouldBlock => Some(Outcome::Wait),
            ReadOutcome::Eof => Some(Outcome::Close(CloseReason::ClientClosedHandshake)),
            ReadOutcome::Failed(_) => Some(Outcome::Close(CloseReason::ClientFailedHandshake)),
        }
    }

    /// Queue a reply and try to send it now; `Err` if the client is gone.
    fn reply<S: Stream>(&mut self, client: &mut End<S>, bytes: &[u8]) -> Result<(), CloseReason> {
        self.out.queue(bytes);
        match self.out.flush(client) {
            Ok(_) => Ok(()),
            Err(_) => Err(CloseReason::ClientFailedHandshake),
        }
    }

    fn advance(&mut self, to: Stage, conn: u64) {
        let from = self.stage_name();
        self.stage = to;
        log::debug!("conn {conn}: {from} -> {}", self.stage_name());
    }

    /// The PROXY header is read with `MSG_PEEK` into the loop's scratch buffer (it can be
    /// 4 KiB, four times the handshake buffer) and consumed only once complete, exactly: the
    /// SOCKS bytes behind it, often in the same segment, stay in the socket for the greeting.
    fn on_proxy_header<N: Net>(
        &mut self,
        client: &mut End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Parsed<N> {
        if !client.ready.readable {
            return Parsed::Finished(Outcome::Wait);
        }
        let buf = &mut ctx.scratch[..proxy::MAX_HEADER_LEN];
        let peeked = loop {
            match client.socket.peek(buf) {
                Ok(0) => return Parsed::Finished(Outcome::Close(CloseReason::ClientClosedHandshake)),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.ready.readable = false;
                    return Parsed::Finished(Outcome::Wait);
                }
                Err(_) => return Parsed::Finished(Outcome::Close(CloseReason::ClientFailedHandshake)),
            }
        };
        let (header, used) = match proxy::parse_proxy_header(&buf[..peeked]) {
            Parse::Partial => {
                // The rest arrives as a new edge; peeking again now would see the same bytes.
                client.ready.readable = false;
                return Parsed::Finished(Outcome::Wait);
            }
            Parse::Invalid(why) => {
                log::info!(
                    "conn {}: no valid PROXY header from balancer {}: {why}",
                    ctx.conn,
                    summary.client_addr
                );
                return Parsed::Finished(Outcome::Close(CloseReason::BadProxyHeader));
            }
            Parse::Complete(header, used) => (header, used),
        };
        // Consume exactly the header; it was peeked, so it is there to read.
        let mut consumed = 0;
        while consumed < used {
            match client.read(&mut buf[..used - consumed]) {
                ReadOutcome::Data(n) => consumed += n,
                ReadOutcome::WouldBlock | ReadOutcome::Eof | ReadOutcome::Failed(_) => {
                    return Parsed::Finished(Outcome::Close(CloseReason::ClientFailedHandshake));
                }
            }
        }
        let balancer = summary.client_addr;
        match (header.command, header.source) {
            (ProxyCommand::Proxy, Some(source)) => {
                summary.client_addr = SocketAddr::new(acl::canonical(source.ip()), source.port());
                log::debug!(
                    "conn {}: PROXY {:?} header from {balancer}: client {source}",
                    ctx.conn,
                    header.version
                );
                if !ctx.settings.rules.client_allowed(summary.client_addr.ip()) {
                    log::debug!("conn {}: client {source} denied by --allow-client rules", ctx.conn);
                    return Parsed::Finished(Outcome::Close(CloseReason::ClientNotAllowed));
                }
            }
            // LOCAL (a health check) or an unspecified client: the connection is the
            // balancer's own. The operator listed it as a balancer, so it is trusted as one
            // even when --allow-client names only client ranges: its health checks pass.
            _ => log::debug!(
                "conn {}: PROXY {:?} header from {balancer}: no client named",
                ctx.conn,
                header.version
            ),
        }
        self.advance(Stage::Greeting, ctx.conn);
        Parsed::Advanced
    }

    fn on_greeting<N: Net>(&mut self, client: &mut End<N::Stream>, ctx: &Ctx<'_, N>) -> Parsed<N> {
        let (chosen, used) = match protocol::parse_greeting(self.filled()) {
            Parse::Partial => return Parsed::Partial,
            Parse::Invalid(Invalid::BadVersion(v)) => {
                log::debug!("conn {}: version byte {v:#04x} is not SOCKS5", ctx.conn);
                return Parsed::Finished(Outcome::Close(CloseReason::NotSocks));
            }
            Parse::Invalid(Invalid::Reply(_)) => {
                return Parsed::Finished(Outcome::Close(CloseReason::BadGreeting));
            }
            Parse::Complete(greeting, used) => {
                (policy::choose_method(&greeting, ctx.settings.auth_required()), used)
            }
        };
        self.consume(used);
        let Some(method) = chosen else {
            let out = std::mem::take(&mut self.out);
            return Parsed::Finished(reject_with(out, &encode_method_selection(Method::NO_ACCEPTABLE)));
        };
        if let Err(reason) = self.reply(client, &encode_method_selection(method)) {
            return Parsed::Finished(Outcome::Close(reason));
        }
        self.advance(if method == Method::NO_AUTH { Stage::Request } else { Stage::Auth }, ctx.conn);
        Parsed::Advanced
    }

    fn on_auth<N: Net>(
        &mut self,
        client: &mut End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Parsed<N> {
        let (login, used) = match protocol::parse_auth_request(self.filled()) {
            Parse::Partial => return Parsed::Partial,
            Parse::Invalid(_) => return Parsed::Finished(Outcome::Close(CloseReason::BadAuthVersion)),
            Parse::Complete(request, used) => {
                // Plaintext and remembered logins are decided now; a hash goes to a verifier
                // thread. Throttling and the failure log line are the verifier's.
                let login = ctx.passwords.login(
                    &ctx.settings.users,
                    request.username,
                    request.password,
                    summary.client_addr,
                    ctx.key,
                    ctx.conn,
                    ctx.now,
                );
                (login, used)
            }
        };
        self.consume_secret(used);
        match login {
            Login::Done(verdict) => self.settle(verdict, client, ctx.conn, summary),
            Login::Pending => {
                self.advance(Stage::Verifying, ctx.conn);
                Parsed::Finished(Outcome::Wait)
            }
        }
    }

    /// A verifier thread answered this connection's login: reply, and go on to the request
    /// (the caller drives the connection after this) or reject.
    pub fn on_verdict<N: Net>(
        &mut self,
        verdict: Verdict,
        client: &mut End<N::Stream>,
        conn: u64,
        summary: &mut Summary,
    ) -> Outcome<N> {
        if self.stage != Stage::Verifying {
            return Outcome::Wait; // not waiting for one: stale
        }
        match self.settle(verdict, client, conn, summary) {
            Parsed::Finished(outcome) => outcome,
            Parsed::Advanced | Parsed::Partial => Outcome::Wait,
        }
    }

    /// Answer the RFC 1929 sub-negotiation with the login's verdict.
    fn settle<N: Net>(
        &mut self,
        verdict: Verdict,
        client: &mut End<N::Stream>,
        conn: u64,
        summary: &mut Summary,
    ) -> Parsed<N> {
        let user = match verdict {
            Verdict::Accepted(user) if !login_expired(&user, conn) => user,
            _ => {
                summary.auth_failed = true;
                let out = std::mem::take(&mut self.out);
                return Parsed::Finished(reject_with(out, &encode_auth_status(AuthStatus::Failure)));
            }
        };
        summary.user = Some(user);
        if let Err(reason) = self.reply(client, &encode_auth_status(AuthStatus::Success)) {
            return Parsed::Finished(Outcome::Close(reason));
        }
        self.advance(Stage::Request, conn);
        Parsed::Advanced
    }

    fn on_request<N: Net>(
        &mut self,
        client: &mut End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Parsed<N> {
        let (request, used) = match protocol::parse_request(self.filled()) {
            Parse::Partial => return Parsed::Partial,
            Parse::Invalid(Invalid::BadVersion(_)) => {
                return Parsed::Finished(Outcome::Close(CloseReason::BadRequestVersion));
            }
            Parse::Invalid(Invalid::Reply(reply)) => {
                // A complete request, answered at once: say which command it was, if any.
                summary.command = self.filled().get(1).and_then(|&cmd| Command::from_byte(cmd));
                summary.requested.get_or_insert(ctx.now);
                return Parsed::Finished(reject(summary, std::mem::take(&mut self.out), reply));
            }
            Parse::Complete(request, used) => (request, used),
        };
        Parsed::Finished(self.start(request.command, request.target, used, client, ctx, summary))
    }

    /// A SOCKS4 or SOCKS4a request (`04 CD PORT IP USERID 00 [HOST 00]`).
    fn on_socks4_request<N: Net>(
        &mut self,
        client: &mut End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Parsed<N> {
        summary.dialect = Dialect::Socks4;
        let (command, target, used) = match socks4::parse_socks4_request(self.filled()) {
            Parse::Partial => return Parsed::Partial,
            Parse::Invalid(Invalid::BadVersion(_)) => {
                return Parsed::Finished(Outcome::Close(CloseReason::BadSocks4Request));
            }
            Parse::Invalid(Invalid::Reply(reply)) => {
                // SOCKS4 has CONNECT (1) and BIND (2), with SOCKS5's numbers.
                summary.command = self
                    .filled()
                    .get(1)
                    .and_then(|&cmd| Command::from_byte(cmd))
                    .filter(|&command| command != Command::UdpAssociate);
                summary.requested.get_or_insert(ctx.now);
                return Parsed::Finished(reject(summary, std::mem::take(&mut self.out), reply));
            }
            Parse::Complete(request, used) => {
                let command = match request.command {
                    Socks4Command::Connect => Command::Connect,
                    Socks4Command::Bind => Command::Bind,
                };
                let target = match request.target {
                    Socks4Target::Ip(ip) => TargetAddr::Ip(SocketAddr::new(ip.into(), request.port)),
                    Socks4Target::Domain(host) => TargetAddr::Domain(host, request.port),
                };
                (command, target, used)
            }
        };
        if let Some(why) = policy::socks4_refusal(ctx.config, ctx.settings.auth_required()) {
            log::info!("conn {}: refused SOCKS4 client {}: {why}", ctx.conn, summary.client_addr);
            summary.target = Some(target);
            summary.command = Some(command);
            summary.requested.get_or_insert(ctx.now);
            return Parsed::Finished(reject(
                summary,
                std::mem::take(&mut self.out),
                Reply::NotAllowedByRuleset,
            ));
        }
        Parsed::Finished(self.start(command, target, used, client, ctx, summary))
    }

    /// The request (`used` bytes) is complete: hand it, the early payload behind it and the
    /// replies still queued to the phase that carries it out.
    fn start<N: Net>(
        &mut self,
        command: Command,
        target: TargetAddr,
        used: usize,
        client: &End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        // Whatever follows the request is early payload for the target: keep it.
        let mut early = Outbox::default();
        early.queue(&self.filled()[used..]);
        let out = std::mem::take(&mut self.out);
        request::start(command, target, request::Carry { out, early }, client, ctx, summary)
    }
}
