//! Per-phase unit tests over the simulated network ([`crate::sim`]): no socket, no thread,
//! no clock. [`Rig`] holds one connection and what the loop would lend it; constructors put
//! the connection in a given phase through the real transitions (as smoltcp's
//! `socket_established()` does), and each test drives one transition and checks the phase,
//! the bytes on the wire and the sockets opened.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::*;
use crate::acl::Cidr;
use crate::auth::AuthSource;
use crate::net::{Net as _, Stream as _};
use crate::protocol::encode_udp_header;
use crate::sim::{ConnectPlan, DatagramScript, ListenerScript, Script, SimNet};
use crate::token::UPSTREAM_SLOTS;

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
const TARGET: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 80);

/// ATYP ADDR PORT for `addr`, as requests and replies carry it.
fn addr_bytes(addr: SocketAddr) -> Vec<u8> {
    let mut reply = Vec::new();
    crate::protocol::encode_reply(Reply::Succeeded, Some(addr), &mut reply);
    reply.split_off(3)
}

fn connect_request(target: SocketAddr) -> Vec<u8> {
    let mut bytes = vec![5, 1, 0];
    bytes.extend_from_slice(&addr_bytes(target));
    bytes
}

fn domain_request(cmd: u8, host: &str, port: u16) -> Vec<u8> {
    let mut bytes = vec![5, cmd, 0, 3, host.len() as u8];
    bytes.extend_from_slice(host.as_bytes());
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes
}

/// One connection on a simulated network, and everything the loop would lend it.
struct Rig {
    net: SimNet,
    resolver: Resolver,
    passwords: crate::verifier::Passwords,
    timers: Timers,
    scratch: Vec<u8>,
    config: Config,
    settings: Settings,
    usage: Arc<Usage>,
    conn: Connection<SimNet>,
    client: Script,
    last: Step,
    /// The rig's clock: `Ctx::now` for every call (tests move it with `advance`).
    now: Instant,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Rig {
        let mut config = Config::default();
        tweak(&mut config);
        let settings = Settings::from_config(&config).unwrap();
        let client = Script::default();
        client.grant(usize::MAX);
        let now = Instant::now();
        let conn = Connection::new(client.stream(), CLIENT, 7, now);
        Rig {
            net: SimNet::new(),
            resolver: Resolver::detached(),
            passwords: crate::verifier::Passwords::new(
                std::sync::Arc::new(crate::verifier::Verifier::new(1).unwrap()),
                None,
            ),
            timers: Timers::default(),
            scratch: vec![0; 64 * 1024 + HEADER_ROOM],
            config,
            settings,
            usage: Arc::default(),
            conn,
            client,
            last: Step::Wait,
            now,
        }
    }

    fn advance(&mut self, by: std::time::Duration) {
        self.now += by;
    }

    /// Run `f` with a context, as the loop's `with_conn` does.
    fn with_ctx<R>(&mut self, f: impl FnOnce(&mut Connection<SimNet>, &mut Ctx<'_, SimNet>) -> R) -> R {
        let mut ctx = Ctx {
            net: &self.net,
            names: &mut self.resolver,
            passwords: &mut self.passwords,
            timers: &mut self.timers,
            scratch: &mut self.scratch,
            #[cfg(target_os = "linux")]
            pipes: None,
            config: &self.config,
            settings: &self.settings,
            usage: &self.usage,
            now: self.now,
            key: 3,
            conn: 7,
        };
        f(&mut self.conn, &mut ctx)
    }

    fn drive(&mut self) -> &Step {
        self.last = self.with_ctx(|conn, ctx| conn.drive(ctx));
        &self.last
    }

    /// Bytes arrive from the client; the connection is driven.
    fn client_sends(&mut self, bytes: &[u8]) -> &Step {
        self.client.supply(bytes);
        self.conn.on_ready(Side::Client, Readiness::READABLE);
        self.drive()
    }

    fn timeout(&mut self) -> &Step {
        self.last = self.with_ctx(|conn, ctx| conn.on_timeout(ctx));
        &self.last
    }

    fn resolve(&mut self, result: io::Result<Vec<SocketAddr>>) -> &Step {
        let ips = result.map(|addrs| addrs.iter().map(SocketAddr::ip).collect());
        self.answer(Resolution::All(ips))
    }

    /// An answer as the loop hands it over: then the connection is driven.
    fn answer(&mut self, answer: Resolution) -> &Step {
        self.last = self.with_ctx(|conn, ctx| {
            conn.on_resolved(ctx, "example.test", answer);
            conn.drive(ctx)
        });
        &self.last
    }

    fn phase(&self) -> &'static str {
        self.conn.phase_name()
    }

    /// A rig whose one user, "h", has an argon2id hash of "pw" (cheap parameters).
    fn hashed_user() -> Rig {
        Rig::hashed_user_expiring(None)
    }

    /// [`Rig::hashed_user`], the account expiring at `expires`.
    fn hashed_user_expiring(expires: Option<std::time::SystemTime>) -> Rig {
        let params = crate::verifier::params(8, 1, 1).unwrap();
        let mut user = crate::users::User::plain("h", b"");
        user.secret =
            crate::users::Secret::Argon2id(crate::verifier::hash_password_with(b"pw", params).unwrap());
        user.expires = expires;
        Rig::with(|c| c.users.add(user).unwrap())
    }

    /// Wait (at most 10 s) for the verifier thread's verdict and hand it over as the loop
    /// does: then the connection is driven.
    fn verdict(&mut self) -> &Step {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let (waiter, verdict) = loop {
            if let Some(answer) = self.passwords.next_verdict(self.now) {
                break answer;
            }
            assert!(Instant::now() < deadline, "no verdict in 10 s");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!((waiter.key, waiter.conn), (3, 7), "the verdict names the connection");
        self.last = self.with_ctx(|conn, ctx| {
            conn.on_verified(ctx, verdict);
            conn.drive(ctx)
        });
        &self.last
    }

    /// What the client received since the last call.
    fn client_got(&self) -> Vec<u8> {
        let got = self.client.written();
        self.client.discard_written();
        got
    }

    /// Past the greeting (no auth): `AwaitRequest`.
    fn awaiting_request() -> Rig {
        let mut rig = Rig::new();
        rig.client_sends(&[5, 1, 0]);
        assert_eq!(rig.client_got(), [5, 0]);
        rig
    }

    /// A CONNECT to `TARGET` in flight: `Connecting`.
    fn connecting() -> Rig {
        let mut rig = Rig::awaiting_request();
        rig.client_sends(&connect_request(TARGET));
        assert_eq!(rig.phase(), "Connecting");
        rig
    }

    /// The upstream of the newest attempt finishes connecting (`ok`) or is refused.
    fn finish_connect(&mut self, ok: bool) -> &Step {
        let (_, id, script) = self.net.connects().pop().expect("an attempt");
        script.finish_connect(ok);
        self.conn.on_ready(id.side, Readiness::WRITABLE);
        self.drive()
    }

    /// A relay to `TARGET`: `Relaying`, the success reply consumed; returns the upstream.
    fn relaying() -> (Rig, Script) {
        let mut rig = Rig::connecting();
        rig.finish_connect(true);
        assert_eq!(rig.phase(), "Relaying");
        assert_eq!(rig.client_got()[..2], [5, 0]);
        let upstream = rig.net.last_upstream().unwrap();
        upstream.grant(usize::MAX);
        (rig, upstream)
    }
}

// ---- Handshake -------------------------------------------------------------------------

#[test]
fn handshake_transitions() {
    // (greeting, auth configured, expected phase, expected reply)
    let table: [(&[u8], bool, &str, &[u8]); 5] = [
        (&[5, 1, 0], false, "AwaitRequest", &[5, 0]),
        (&[5, 1, 2], false, "Rejecting", &[5, 0xFF]),
        (&[5, 2, 0, 2], true, "AwaitAuth", &[5, 2]),
        (&[5, 1, 0], true, "Rejecting", &[5, 0xFF]),
        (&[5], false, "AwaitGreeting", &[]),
    ];
    for (greeting, auth, phase, reply) in table {
        let mut rig = Rig::with(|c| {
            if auth {
                c.auth = AuthSource { file: None, env_user: Some(("u".into(), "p".into())) };
            }
        });
        assert_eq!(rig.client_sends(greeting), &Step::Wait, "{greeting:?}");
        assert_eq!(rig.phase(), phase, "{greeting:?} auth={auth}");
        assert_eq!(rig.client_got(), reply, "{greeting:?} auth={auth}");
    }
}

#[test]
fn handshake_closes_with_typed_reasons() {
    let table: [(&[u8], bool, CloseReason); 4] = [
        (&[0x47, 0x45, 0x54], false, CloseReason::NotSocks), // "GET"
        (&[0x16, 3, 1], false, CloseReason::NotSocks),       // a TLS ClientHello
        (&[5, 1, 0], true, CloseReason::ClientClosedHandshake),
        (&[5, 1, 0, 4, 1, 0, 1], false, CloseReason::BadRequestVersion),
    ];
    for (bytes, eof, reason) in table {
        let mut rig = Rig::new();
        rig.client.supply(bytes);
        if eof {
            rig.client.close();
        }
        // A FIN is reported with the data, as epoll's RDHUP does.
        rig.conn.on_ready(Side::Client, Readiness { peer_closed: eof, ..Readiness::READABLE });
        assert_eq!(rig.drive(), &Step::Close(reason), "{bytes:?}");
    }
}

#[test]
fn early_payload_behind_a_request_reaches_the_target_first_and_whole() {
    let mut rig = Rig::awaiting_request();
    let payload: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let mut bytes = domain_request(1, &"a".repeat(60), 80);
    bytes.extend_from_slice(&payload);
    rig.client_sends(&bytes);
    assert_eq!(rig.phase(), "Resolving");
    rig.resolve(Ok(vec![TARGET]));
    let upstream = rig.net.last_upstream().unwrap();
    upstream.grant(usize::MAX);
    rig.finish_connect(true);
    assert_eq!(rig.phase(), "Relaying");
    // Part came with the request (kept from the handshake buffer), the rest is read by the relay.
    rig.conn.on_ready(Side::Client, Readiness::READABLE);
    rig.drive();
    assert_eq!(upstream.written(), payload);
}

#[test]
fn username_password_success_and_failure() {
    for (password, phase, status) in [(&b"p"[..], "AwaitRequest", 0u8), (b"wrong", "Rejecting", 1)] {
        let mut rig =
            Rig::with(|c| c.auth = AuthSource { file: None, env_user: Some(("u".into(), "p".into())) });
        rig.client_sends(&[5, 1, 2]);
        assert_eq!(rig.client_got(), [5, 2]);
        let mut auth = vec![1, 1, b'u', password.len() as u8];
        auth.extend_from_slice(password);
        rig.client_sends(&auth);
        assert_eq!(rig.phase(), phase);
        assert_eq!(rig.client_got(), [1, status]);
    }
}

#[test]
fn a_hashed_password_waits_for_the_verifier_without_reading_the_client() {
    let mut rig = Rig::hashed_user();
    rig.client_sends(&[5, 1, 2]);
    assert_eq!(rig.client_got(), [5, 2]);
    // The sub-negotiation and the request in one segment.
    let mut bytes = vec![1, 1, b'h', 2, b'p', b'w'];
    bytes.extend_from_slice(&connect_request(TARGET));
    assert_eq!(rig.client_sends(&bytes), &Step::Wait);
    assert_eq!(rig.phase(), "VerifyingAuth");
    assert_eq!(rig.client_got(), [], "no answer before the verdict");
    // More bytes meanwhile are left in the socket; the connection waits.
    assert_eq!(rig.client_sends(b"early"), &Step::Wait);
    assert_eq!(rig.phase(), "VerifyingAuth");
    // The verdict answers the sub-negotiation, and the buffered request goes on at once.
    assert_eq!(rig.verdict(), &Step::Wait);
    assert_eq!(rig.client_got(), [1, 0]);
    assert_eq!(rig.phase(), "Connecting");
}

#[test]
fn a_wrong_hashed_password_is_rejected_after_the_verdict() {
    let mut rig = Rig::hashed_user();
    rig.client_sends(&[5, 1, 2]);
    rig.client_got();
    rig.client_sends(&[1, 1, b'h', 3, b'b', b'a', b'd']);
    assert_eq!(rig.phase(), "VerifyingAuth");
    rig.verdict();
    assert_eq!(rig.phase(), "Rejecting");
    assert_eq!(rig.client_got(), [1, 1]);
}

#[test]
fn an_expired_user_with_the_right_hashed_password_is_refused_after_the_verdict() {
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let mut rig = Rig::hashed_user_expiring(Some(past));
    rig.client_sends(&[5, 1, 2]);
    rig.client_got();
    rig.client_sends(&[1, 1, b'h', 2, b'p', b'w']);
    assert_eq!(rig.phase(), "VerifyingAuth");
    rig.verdict();
    assert_eq!(rig.phase(), "Rejecting");
    assert_eq!(rig.client_got(), [1, 1]);
}

#[test]
fn the_handshake_deadline_applies_while_verifying_and_a_late_verdict_is_ignored() {
    let mut rig = Rig::hashed_user();
    rig.client_sends(&[5, 1, 2]);
    rig.client_got();
    rig.client_sends(&[1, 1, b'h', 2, b'p', b'w']);
    assert_eq!(rig.phase(), "VerifyingAuth");
    assert_eq!(rig.timeout(), &Step::Close(CloseReason::HandshakeTimeout));
    rig.conn.mark_closed();
    // The answer still comes (the loop would drop it for a stale id); a closed connection
    // ignores it.
    rig.verdict();
    assert_eq!(rig.phase(), "Closed");
    assert_eq!(rig.client_got(), []);
}

#[test]
fn request_transitions() {
    // (request, phase, reply bytes sent at once)
    let table: Vec<(Vec<u8>, &str, Vec<u8>)> = vec![
        (connect_request(TARGET), "Connecting", vec![]),
        (domain_request(1, "example.test", 80), "Resolving", vec![]),
        (domain_request(1, "bad host", 80), "Rejecting", vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0]),
        (vec![5, 9, 0, 1, 1, 2, 3, 4, 0, 80], "Rejecting", vec![5, 7, 0, 1, 0, 0, 0, 0, 0, 0]),
        (vec![5, 1, 0, 9, 1, 2, 3, 4, 0, 80], "Rejecting", vec![5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
    ];
    for (request, phase, reply) in table {
        let mut rig = Rig::awaiting_request();
        rig.client_sends(&request);
        assert_eq!(rig.phase(), phase, "{request:?}");
        assert_eq!(rig.client_got(), reply, "{request:?}");
    }
}

#[test]
fn socks4_connect_and_refusal() {
    let socks4 = [4, 1, 0, 80, 192, 0, 2, 7, b'u', 0];
    let mut rig = Rig::new();
    rig.client_sends(&socks4);
    assert_eq!(rig.phase(), "Connecting");
    rig.finish_connect(true);
    assert_eq!(rig.client_got()[..2], [0, 0x5a], "SOCKS4 reply format");

    let mut rig = Rig::with(|c| c.socks4 = false);
    rig.client_sends(&socks4);
    assert_eq!(rig.phase(), "Rejecting");
    assert_eq!(rig.client_got(), [0, 0x5b, 0, 0, 0, 0, 0, 0]);
}

// ---- PROXY protocol ------------------------------------------------------------------

/// A connection from a listed balancer (127.0.0.1 here) with `--allow-client 192.0.2.0/24`.
fn behind_balancer() -> Rig {
    let mut rig = Rig::with(|c| c.rules.allow_clients = vec!["192.0.2.0/24".parse().unwrap()]);
    rig.conn.expect_proxy_header();
    assert_eq!(rig.phase(), "AwaitProxyHeader");
    rig
}

#[test]
fn a_proxy_header_names_the_client_and_the_greeting_behind_it_is_kept() {
    let mut rig = behind_balancer();
    let mut bytes = b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 1080\r\n".to_vec();
    bytes.extend_from_slice(&[5, 1, 0]);
    rig.client_sends(&bytes);
    assert_eq!(rig.conn.client_addr(), "192.0.2.10:40000".parse().unwrap());
    assert_eq!((rig.phase(), rig.client_got()), ("AwaitRequest", vec![5, 0]));
}

#[test]
fn a_split_v2_header_waits_for_the_rest() {
    let mut rig = behind_balancer();
    let mut header = crate::protocol::proxy::V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 20, 198, 51, 100, 1, 0x9c, 0x40, 0x04, 0x38]);
    rig.client_sends(&header[..9]);
    assert_eq!(rig.phase(), "AwaitProxyHeader");
    rig.client_sends(&header[9..]);
    assert_eq!(rig.conn.client_addr(), "192.0.2.20:40000".parse().unwrap());
    rig.client_sends(&[5, 1, 0]);
    assert_eq!(rig.client_got(), [5, 0]);
}

#[test]
fn proxy_header_refusals() {
    // A balancer's connection without a header is closed, not taken for SOCKS.
    let mut rig = behind_balancer();
    assert_eq!(rig.client_sends(&[5, 1, 0]), &Step::Close(CloseReason::BadProxyHeader));
    // A header naming a client outside --allow-client.
    let mut rig = behind_balancer();
    let header = b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 1080\r\n";
    assert_eq!(rig.client_sends(header), &Step::Close(CloseReason::ClientNotAllowed));
    // Without --proxy-protocol, a header is just bytes that are not SOCKS.
    let mut rig = Rig::new();
    assert_eq!(
        rig.client_sends(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 1080\r\n"),
        &Step::Close(CloseReason::NotSocks)
    );
    assert_eq!(rig.conn.client_addr(), CLIENT, "never honoured");
}

#[test]
fn a_local_header_proceeds_as_the_balancer_even_outside_allow_client() {
    // A v2 LOCAL header (a health check): the balancer itself is the client; it is trusted
    // as a balancer though --allow-client names only 192.0.2.0/24.
    let mut rig = behind_balancer();
    let mut local = crate::protocol::proxy::V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(&[5, 1, 0]);
    rig.client_sends(&local);
    assert_eq!((rig.phase(), rig.conn.client_addr()), ("AwaitRequest", CLIENT));
}

// ---- Resolving -------------------------------------------------------------------------

#[test]
fn resolving_transitions() {
    type Case = (io::Result<Vec<SocketAddr>>, &'static str, Option<u8>);
    let cases: [Case; 3] = [
        (Ok(vec![TARGET]), "Connecting", None),
        (Ok(vec![]), "Rejecting", Some(4)),
        (Err(io::Error::other("NXDOMAIN")), "Rejecting", Some(4)),
    ];
    for (answer, phase, reply) in cases {
        let mut rig = Rig::awaiting_request();
        rig.client_sends(&domain_request(1, "example.test", 80));
        rig.resolve(answer);
        assert_eq!(rig.phase(), phase);
        assert_eq!(rig.client_got().get(1).copied(), reply);
    }
    let mut rig = Rig::awaiting_request();
    rig.client_sends(&domain_request(1, "example.test", 80));
    rig.timeout();
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 6), "connect timeout while resolving");
}

// ---- Connecting ------------------------------------------------------------------------

#[test]
fn connect_success_replies_with_the_bound_address_and_relays_early_payload_first() {
    let mut rig = Rig::awaiting_request();
    let mut request = connect_request(TARGET);
    request.extend_from_slice(b"early");
    rig.client_sends(&request);
    let (addr, id, upstream) = rig.net.connects().pop().unwrap();
    assert_eq!((addr, id), (TARGET, SocketId { key: 3, side: Side::Upstream(0) }));
    upstream.grant(usize::MAX);
    rig.finish_connect(true);
    assert_eq!(rig.phase(), "Relaying");
    let bound = addr_bytes(upstream.stream().local_addr().unwrap());
    assert_eq!(rig.client_got(), [&[5, 0, 0][..], &bound].concat());
    assert_eq!(upstream.written(), b"early");
}

#[test]
fn connect_tries_the_next_address_and_replies_from_the_last_error() {
    let second: SocketAddr = "192.0.2.8:80".parse().unwrap();
    let mut rig = Rig::awaiting_request();
    rig.client_sends(&domain_request(1, "example.test", 80));
    rig.resolve(Ok(vec![TARGET, second]));
    rig.finish_connect(false);
    assert_eq!(rig.phase(), "Connecting", "the second address is tried");
    let connects = rig.net.connects();
    assert_eq!(connects.len(), 2);
    assert_eq!(connects[1].0, second);
    assert_ne!(connects[0].1, connects[1].1, "each attempt has its own slot");
    // Readiness for the closed first attempt's slot is stale and ignored.
    rig.conn.on_ready(connects[0].1.side, Readiness::BOTH);
    assert_eq!(rig.drive(), &Step::Wait);
    rig.finish_connect(false);
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 5), "refused");
}

#[test]
fn connect_failing_at_once_and_egress_rules() {
    let mut rig = Rig::awaiting_request();
    rig.net.plan_connect(ConnectPlan::FailAtOnce(io::ErrorKind::NetworkUnreachable));
    rig.client_sends(&connect_request(TARGET));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 3));

    let mut rig = Rig::with(|c| c.rules.deny_dest = vec![Cidr::new(TARGET.ip(), 32).unwrap()]);
    rig.client_sends(&[5, 1, 0]);
    rig.client_got();
    rig.client_sends(&connect_request(TARGET));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 2));
    assert!(rig.net.connects().is_empty(), "a denied address is never connected to");

    let mut rig = Rig::connecting();
    rig.advance(rig.config.connect_timeout);
    rig.timeout();
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 6));
}

// ---- Happy Eyeballs -------------------------------------------------------------------

const V6_TARGET: SocketAddr =
    SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)), 80);

/// A rig whose CONNECT by name resolved to `addrs`.
fn resolved_to(addrs: Vec<SocketAddr>, tweak: impl FnOnce(&mut Config)) -> Rig {
    let mut rig = Rig::with(tweak);
    rig.client_sends(&[5, 1, 0]);
    rig.client_got();
    rig.client_sends(&domain_request(1, "example.test", 80));
    rig.resolve(Ok(addrs));
    rig
}

fn targets(rig: &Rig) -> Vec<SocketAddr> {
    rig.net.connects().iter().map(|(addr, _, _)| *addr).collect()
}

#[test]
fn the_next_family_starts_after_the_attempt_delay_and_the_first_to_connect_wins() {
    let mut rig = resolved_to(vec![V6_TARGET, TARGET], |_| {});
    assert_eq!(targets(&rig), [V6_TARGET], "one attempt at first");
    let delay = rig.config.connect_attempt_delay;
    assert_eq!(rig.conn.deadline.at, rig.now + delay, "woken for the next attempt");
    rig.advance(delay);
    rig.timeout();
    assert_eq!(rig.phase(), "Connecting");
    assert_eq!(targets(&rig), [V6_TARGET, TARGET], "the IPv4 attempt joins the IPv6 one");
    let connects = rig.net.connects();
    assert_ne!(connects[0].1, connects[1].1, "each attempt its own token");
    // IPv4 answers first: it wins, and BND.ADDR is its local address.
    connects[1].2.finish_connect(true);
    rig.conn.on_ready(connects[1].1.side, Readiness::WRITABLE);
    rig.drive();
    assert_eq!(rig.phase(), "Relaying");
    let bound = addr_bytes(connects[1].2.stream().local_addr().unwrap());
    assert_eq!(rig.client_got(), [&[5, 0, 0][..], &bound].concat());
    assert_eq!(
        connects[1].2.keepalive(),
        Some(rig.config.tcp_keepalive.unwrap()),
        "keepalive on the upstream"
    );
    // The losing attempt's late readiness is stale.
    connects[0].2.finish_connect(true);
    rig.conn.on_ready(connects[0].1.side, Readiness::WRITABLE);
    assert_eq!(rig.drive(), &Step::Wait);
}

#[test]
fn a_refused_attempt_starts_the_next_at_once_and_families_interleave() {
    let v6b: SocketAddr = "[2001:db8::8]:80".parse().unwrap();
    let mut rig = resolved_to(vec![V6_TARGET, v6b, TARGET], |_| {});
    rig.finish_connect(false);
    assert_eq!(targets(&rig), [V6_TARGET, TARGET], "IPv4 second (RFC 8305 §4), without waiting");
    rig.finish_connect(false);
    assert_eq!(targets(&rig), [V6_TARGET, TARGET, v6b]);
    rig.finish_connect(false);
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 5), "all refused");
}

#[test]
fn prefer_family_and_a_cap_on_attempts_in_flight() {
    let addrs: Vec<SocketAddr> = (1..=8).map(|i| SocketAddr::from(([192, 0, 2, i], 80))).collect();
    let mut all = addrs.clone();
    all.push(V6_TARGET);
    let mut rig = resolved_to(all, |c| {
        c.prefer_family = crate::config::PreferFamily::Ipv6;
        c.connect_attempt_delay = std::time::Duration::ZERO;
    });
    assert_eq!(targets(&rig)[0], V6_TARGET, "--prefer-family ipv6 goes first");
    for _ in 0..10 {
        rig.timeout();
    }
    assert_eq!(rig.net.connects().len(), usize::from(UPSTREAM_SLOTS), "at most one attempt per slot");
    rig.finish_connect(false); // the newest fails: a slot frees and the next starts
    assert_eq!(rig.net.connects().len(), usize::from(UPSTREAM_SLOTS) + 1);
}

#[test]
fn out_of_time_the_most_telling_error_is_the_reply() {
    // One refused, one still silent when the connect timeout ends: 05, not 06.
    let mut rig = resolved_to(vec![V6_TARGET, TARGET], |_| {});
    rig.finish_connect(false);
    rig.advance(rig.config.connect_timeout);
    rig.timeout();
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 5));
    // Only silence: 06.
    let mut rig = resolved_to(vec![V6_TARGET, TARGET], |_| {});
    rig.advance(rig.config.connect_timeout);
    rig.timeout();
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 6));
}

// ---- Per-family answers (the in-loop DNS client) ---------------------------------------

fn awaiting_answers() -> Rig {
    let mut rig = Rig::new();
    rig.client_sends(&[5, 1, 0]);
    rig.client_got();
    rig.client_sends(&domain_request(1, "example.test", 80));
    assert_eq!(rig.phase(), "Resolving");
    rig
}

#[test]
fn aaaa_first_connects_at_once_and_a_joins_later() {
    let mut rig = awaiting_answers();
    rig.answer(Resolution::Family(crate::dns::Family::V6, Ok(vec![V6_TARGET.ip()])));
    assert_eq!((rig.phase(), targets(&rig)), ("Connecting", vec![V6_TARGET]), "no wait for A");
    rig.answer(Resolution::Family(crate::dns::Family::V4, Ok(vec![TARGET.ip()])));
    rig.finish_connect(false);
    assert_eq!(targets(&rig), [V6_TARGET, TARGET], "the late IPv4 address is tried");
}

#[test]
fn a_first_waits_the_resolution_delay_for_aaaa() {
    let mut rig = awaiting_answers();
    rig.answer(Resolution::Family(crate::dns::Family::V4, Ok(vec![TARGET.ip()])));
    assert_eq!(rig.phase(), "Resolving", "A first: wait for AAAA");
    assert_eq!(rig.conn.deadline.at, rig.now + super::request::RESOLUTION_DELAY);
    // AAAA in time: both are used, IPv6 first.
    rig.answer(Resolution::Family(crate::dns::Family::V6, Ok(vec![V6_TARGET.ip()])));
    assert_eq!((rig.phase(), targets(&rig)), ("Connecting", vec![V6_TARGET]));

    // AAAA late: the delay ends and IPv4 goes alone; AAAA then joins.
    let mut rig = awaiting_answers();
    let connect_deadline = rig.conn.deadline.at;
    rig.answer(Resolution::Family(crate::dns::Family::V4, Ok(vec![TARGET.ip()])));
    rig.advance(super::request::RESOLUTION_DELAY);
    rig.timeout();
    assert_eq!((rig.phase(), targets(&rig)), ("Connecting", vec![TARGET]));
    assert_eq!(rig.conn.deadline.at, connect_deadline, "the connect timeout is back in force");
    rig.answer(Resolution::Family(crate::dns::Family::V6, Ok(vec![V6_TARGET.ip()])));
    rig.finish_connect(false);
    assert_eq!(targets(&rig), [TARGET, V6_TARGET]);
}

#[test]
fn no_address_in_either_family_is_host_unreachable() {
    let mut rig = awaiting_answers();
    rig.answer(Resolution::Family(crate::dns::Family::V6, Ok(vec![])));
    assert_eq!(rig.phase(), "Resolving", "NODATA for AAAA: wait for A");
    rig.answer(Resolution::Family(crate::dns::Family::V4, Err(crate::dns::DnsError::NxDomain)));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 4));
}

#[test]
fn running_out_of_addresses_waits_for_the_other_family() {
    let mut rig = awaiting_answers();
    rig.answer(Resolution::Family(crate::dns::Family::V6, Ok(vec![V6_TARGET.ip()])));
    rig.finish_connect(false);
    assert_eq!(rig.phase(), "Connecting", "IPv6 refused, but A is still to come");
    rig.answer(Resolution::Family(crate::dns::Family::V4, Ok(vec![])));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 5), "the refusal is the reply");
}

// ---- Relaying --------------------------------------------------------------------------

#[test]
fn relay_moves_bytes_half_closes_and_finishes() {
    let (mut rig, upstream) = Rig::relaying();
    rig.client_sends(b"ping");
    assert_eq!(upstream.written(), b"ping");
    upstream.supply(b"pong");
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    rig.drive();
    assert_eq!(rig.client_got(), b"pong");
    rig.client.close();
    rig.conn.on_ready(Side::Client, Readiness { peer_closed: true, ..Readiness::READABLE });
    assert_eq!(rig.drive(), &Step::Wait);
    assert!(upstream.is_shut(), "client FIN becomes upstream FIN");
    upstream.close();
    rig.conn.on_ready(Side::Upstream(0), Readiness { peer_closed: true, ..Readiness::READABLE });
    assert_eq!(rig.drive(), &Step::Close(CloseReason::Done));
    // The last FIN goes with the close (the loop drops the connection): no shutdown call.
    assert!(!rig.client.is_shut(), "the relay's end closes the client; shutting it first is a syscall more");
}

#[test]
fn relay_closes_on_reset_and_idle_timeout() {
    let (mut rig, upstream) = Rig::relaying();
    upstream.reset();
    rig.conn.on_ready(Side::Upstream(0), Readiness { peer_closed: true, ..Readiness::BOTH });
    assert_eq!(rig.drive(), &Step::Close(CloseReason::Reset));

    let (mut rig, _) = Rig::relaying();
    assert_eq!(rig.timeout(), &Step::Close(CloseReason::IdleTimeout));
}

#[test]
fn relay_backpressure_stops_reading_the_source() {
    let (mut rig, upstream) = Rig::relaying();
    rig.client.set_room(1000);
    upstream.supply(&vec![1; 300_000]);
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    assert_eq!(rig.drive(), &Step::Wait);
    assert_eq!(rig.client_got().len(), 1000);
    // One read: the scratch buffer, or the quantum if that is smaller.
    let one_read = rig.scratch.len().min(super::relaying::QUANTUM);
    assert_eq!(upstream.unread(), 300_000 - one_read, "reading stopped while the client is full");
    assert!(rig.conn.buffered_bytes() <= 64 * 1024 + HEADER_ROOM, "bounded: {}", rig.conn.buffered_bytes());
    rig.client.set_room(usize::MAX);
    for _ in 0..100 {
        rig.conn.on_ready(Side::Client, Readiness::WRITABLE);
        rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
        rig.drive();
    }
    assert_eq!(rig.client_got().len(), 300_000 - 1000, "nothing lost");
    assert_eq!(rig.conn.buffered_bytes(), 0, "drained: no memory held");
}

/// A relay of user `u`, limited to `rate` bytes per second each way.
fn limited_relay(rate: u64, idle: std::time::Duration) -> (Rig, Script) {
    let mut rig = Rig::with(|c| {
        c.users
            .add(crate::users::User { rate_limit: Some(rate), ..crate::users::User::plain("u", b"p") })
            .unwrap();
        c.idle_timeout = idle;
    });
    rig.client_sends(&[5, 1, 2]);
    rig.client_sends(&[1, 1, b'u', 1, b'p']);
    assert_eq!(rig.client_got(), [5, 2, 1, 0]);
    rig.client_sends(&connect_request(TARGET));
    rig.finish_connect(true);
    assert_eq!(rig.phase(), "Relaying");
    rig.client_got();
    let upstream = rig.net.last_upstream().unwrap();
    upstream.grant(usize::MAX);
    (rig, upstream)
}

#[test]
fn a_limited_relay_reads_its_burst_then_waits_for_a_wake_up_not_a_poll() {
    use crate::ratelimit::{burst, quantum};
    use std::time::Duration;
    let rate = 64 << 10; // burst 64 KiB, quantum 4 KiB
    let idle = Duration::from_millis(20);
    let (mut rig, upstream) = limited_relay(rate, idle);
    upstream.supply(&vec![7; 1 << 20]);
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    // One quantum per drive, coming back (`Again`) while the bucket has tokens for the next.
    let mut drives = 0;
    while rig.drive() == &Step::Again {
        drives += 1;
        assert!(drives < 100, "the bucket must run dry");
    }
    assert_eq!(drives as u64, burst(rate) / quantum(rate) - 1);
    assert_eq!(rig.client_got().len() as u64, burst(rate), "the burst, and not a byte more");
    // Starved: no busy loop (`Wait`), one wake-up when the reserved quantum is due, and the
    // idle deadline moved beyond it.
    assert_eq!(rig.timers.wakes(), 1);
    let due = rig.now + Duration::from_nanos(1_000_000_000 / 16);
    assert!(rig.conn.deadline.at >= due + idle);
    // The idle deadline's old entry fires first and finds the relay not idle.
    rig.advance(idle);
    let (key, id, entry_at) = rig.timers.pop_due(rig.now).expect("the old idle entry");
    assert!(!rig.timers.check(&mut rig.conn.deadline, entry_at, rig.now, key, id), "not idle");
    assert_eq!(rig.timers.next_deadline(), Some(due), "the wake-up is next");
    // Another event before it is due reads nothing and asks for no second wake-up.
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    assert_eq!(rig.drive(), &Step::Wait);
    assert!(rig.client_got().is_empty());
    assert_eq!(rig.timers.wakes(), 1);
    // Due: the loop pops it and drives: one quantum moves, the next is reserved.
    rig.advance(due - rig.now);
    assert_eq!(rig.timers.pop_wake(rig.now), Some((3, 7)));
    assert_eq!(rig.drive(), &Step::Wait);
    assert_eq!(rig.client_got().len() as u64, quantum(rate));
    assert_eq!(rig.timers.wakes(), 1);
    // The client → target direction has its own bucket, untouched by all this.
    assert_eq!(rig.client_sends(&[1; 1000]), &Step::Wait);
    assert_eq!(upstream.written().len(), 1000);
}

#[test]
fn unlimited_users_relays_have_no_throttle() {
    let (mut rig, upstream) = Rig::relaying();
    upstream.supply(&vec![7; 1 << 20]);
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    assert_eq!(rig.drive(), &Step::Again, "the quantum ran out");
    assert_eq!(rig.client_got().len(), super::relaying::QUANTUM);
    assert_eq!(rig.timers.wakes(), 0);
}

#[test]
fn a_relay_yields_after_one_quantum_per_direction_and_says_work_is_left() {
    let quantum = super::relaying::QUANTUM;
    let (mut rig, upstream) = Rig::relaying();
    rig.client.set_room(usize::MAX);
    upstream.supply(&vec![1; 3 * quantum + 100]);
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    // One turn moves one quantum and asks for another turn: the source is still readable.
    assert_eq!(rig.drive(), &Step::Again);
    let mut got = rig.client_got().len();
    assert_eq!(got, quantum);
    assert_eq!(rig.drive(), &Step::Again);
    assert_eq!(rig.drive(), &Step::Again);
    // The last 100 bytes are a short read: the source is drained, nothing is left to do.
    assert_eq!(rig.drive(), &Step::Wait);
    got += rig.client_got().len();
    assert_eq!(got, 3 * quantum + 100, "nothing lost");
}

// ---- BindWaiting -----------------------------------------------------------------------

#[test]
fn bind_replies_twice_and_accepts_only_the_expected_peer() {
    let mut rig = Rig::awaiting_request();
    let mut request = vec![5, 2, 0];
    request.extend_from_slice(&addr_bytes(TARGET));
    rig.client_sends(&request);
    assert_eq!(rig.phase(), "BindWaiting");
    let (id, listener): (SocketId, ListenerScript) = rig.net.listeners().pop().unwrap();
    assert_eq!(id.side, Side::Aux);
    let first = rig.client_got();
    assert_eq!(first, [&[5, 0, 0][..], &addr_bytes(listener.addr())].concat());

    let stranger = listener.connect_from("192.0.2.99:1234".parse().unwrap());
    rig.conn.on_ready(Side::Aux, Readiness::READABLE);
    rig.drive();
    assert_eq!(rig.phase(), "BindWaiting", "a stranger is refused");
    drop(stranger);

    let peer_addr: SocketAddr = "192.0.2.7:2000".parse().unwrap();
    let peer = listener.connect_from(peer_addr);
    peer.grant(usize::MAX);
    rig.conn.on_ready(Side::Aux, Readiness::READABLE);
    rig.drive();
    assert_eq!(rig.phase(), "Relaying");
    assert_eq!(rig.client_got(), [&[5, 0, 0][..], &addr_bytes(peer_addr)].concat());
    assert_eq!(rig.net.adopted(), [SocketId { key: 3, side: Side::Upstream(0) }]);
    rig.client_sends(b"to peer");
    assert_eq!(peer.written(), b"to peer");
}

#[test]
fn bind_times_out_with_ttl_expired() {
    let mut rig = Rig::awaiting_request();
    let mut request = vec![5, 2, 0];
    request.extend_from_slice(&addr_bytes(TARGET));
    rig.client_sends(&request);
    rig.client_got();
    rig.timeout();
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 6));
}

// ---- UdpAssociated ---------------------------------------------------------------------

#[test]
fn udp_association_relays_both_ways_and_ends_with_the_control_connection() {
    let mut rig = Rig::awaiting_request();
    rig.client_sends(&[5, 3, 0, 1, 0, 0, 0, 0, 0x13, 0x88]); // client sends from port 5000
    assert_eq!(rig.phase(), "UdpAssociated");
    let sockets = rig.net.datagrams();
    let (client_side, upstream_side): (&DatagramScript, &DatagramScript) = (&sockets[0].1, &sockets[1].1);
    assert_eq!((sockets[0].0.side, sockets[1].0.side), (Side::Aux, Side::Upstream(0)));
    assert_eq!(rig.client_got(), [&[5, 0, 0][..], &addr_bytes(client_side.addr())].concat());

    let from_client = SocketAddr::new(CLIENT.ip(), 5000);
    let mut datagram = Vec::new();
    encode_udp_header(TARGET, &mut datagram);
    datagram.extend_from_slice(b"question");
    client_side.deliver(&datagram, from_client);
    client_side.deliver(&datagram, "192.0.2.50:5000".parse().unwrap()); // foreign: dropped
    rig.conn.on_ready(Side::Aux, Readiness::READABLE);
    rig.drive();
    let sent = upstream_side.take_sent();
    assert_eq!(sent.len(), 1, "the foreign sender's datagram is dropped");
    assert_eq!(sent[0].0, b"question");

    upstream_side.deliver(b"answer", TARGET);
    rig.conn.on_ready(Side::Upstream(0), Readiness::READABLE);
    rig.drive();
    let back = client_side.take_sent();
    let mut expected = Vec::new();
    encode_udp_header(TARGET, &mut expected);
    expected.extend_from_slice(b"answer");
    assert_eq!(back, [(expected, from_client)]);

    rig.client.close();
    rig.conn.on_ready(Side::Client, Readiness::READABLE);
    assert_eq!(rig.drive(), &Step::Close(CloseReason::UdpEndedByClient));
}

#[test]
fn udp_ports_confine_the_client_side_and_a_full_range_is_01() {
    let associate = |rig: &mut Rig| {
        rig.client_sends(&[5, 1, 0]);
        rig.client_got();
        rig.client_sends(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    };
    let mut rig = Rig::with(|c| c.udp_ports = Some((40_000, 40_001)));
    associate(&mut rig);
    assert_eq!(rig.phase(), "UdpAssociated");
    let port = rig.net.datagrams()[0].1.addr().port();
    assert!((40_000..=40_001).contains(&port), "client side on {port}");

    // Both ports taken (by whatever): the association is refused with 01.
    let mut rig = Rig::with(|c| c.udp_ports = Some((40_000, 40_001)));
    for port in [40_000, 40_001] {
        let at = crate::net::DatagramBind::At(SocketAddr::new(CLIENT.ip(), port));
        rig.net
            .bind_datagram(at, &crate::net::Outbound::default(), SocketId { key: 9, side: Side::Aux })
            .unwrap();
    }
    associate(&mut rig);
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 1));
}

// ---- Per-user policy: egress, destination rules, caps, expiry ------------------------

/// A rig whose client logged in as `user` (the only user), with `tweak` applied to the config.
fn logged_in(user: crate::users::User, tweak: impl FnOnce(&mut Config)) -> Rig {
    let (name, password) = match &user.secret {
        crate::users::Secret::Plain(p) => (user.name.clone(), p.clone()),
        crate::users::Secret::Argon2id(_) => unreachable!("plain users only here"),
    };
    let mut rig = Rig::with(|c| {
        c.users.add(user).unwrap();
        tweak(c);
    });
    rig.client_sends(&[5, 1, 2]);
    assert_eq!(rig.client_got(), [5, 2]);
    let mut auth = vec![1, name.len() as u8];
    auth.extend_from_slice(name.as_bytes());
    auth.push(password.len() as u8);
    auth.extend_from_slice(&password);
    rig.client_sends(&auth);
    rig
}

fn alice() -> crate::users::User {
    crate::users::User::plain("alice", b"wonderland")
}

#[test]
fn a_users_egress_overlays_the_global_one_on_every_attempt() {
    use crate::net::Outbound;
    use crate::users::{BindOut, Egress};
    let mut user = alice();
    user.egress = Egress { bind_out: Some(BindOut::Addr("127.0.0.5".parse().unwrap())), ..Egress::default() };
    let mut rig = logged_in(user, |c| c.fwmark = Some(3));
    assert_eq!(rig.client_got(), [1, 0]);
    rig.client_sends(&domain_request(1, "example.test", 80));
    rig.resolve(Ok(vec![V6_TARGET, TARGET]));
    assert_eq!(targets(&rig), [TARGET], "an IPv4 source filters the IPv6 address out");
    let expected = Outbound { from: Some("127.0.0.5".parse().unwrap()), interface: None, fwmark: Some(3) };
    assert_eq!(rig.net.outbounds(), [expected]);
    rig.finish_connect(true);
    let reply = rig.client_got();
    assert_eq!(reply[..8], [5, 0, 0, 1, 127, 0, 0, 5], "BND.ADDR is the egress address");

    // Without a user, the global egress alone.
    let mut rig = Rig::with(|c| c.fwmark = Some(3));
    rig.client_sends(&[5, 1, 0]);
    rig.client_sends(&connect_request(TARGET));
    assert_eq!(rig.net.outbounds(), [Outbound { fwmark: Some(3), ..Outbound::default() }]);
}

#[test]
fn incoming_leaves_from_the_address_the_client_reached() {
    let mut rig = Rig::with(|c| c.bind_out = Some(crate::users::BindOut::Incoming));
    rig.client.set_local_addr("[::ffff:127.0.0.7]:1080".parse().unwrap());
    rig.client_sends(&[5, 1, 0]);
    rig.client_sends(&connect_request(TARGET));
    assert_eq!(rig.net.outbounds()[0].from, Some("127.0.0.7".parse().unwrap()), "as IPv4, not mapped");

    // A BIND listens there too.
    let mut rig = Rig::with(|c| c.bind_out = Some(crate::users::BindOut::Incoming));
    rig.client.set_local_addr("127.0.0.8:1080".parse().unwrap());
    rig.client_sends(&[5, 1, 0]);
    rig.client_sends(&[&[5, 2, 0][..], &addr_bytes(TARGET)].concat());
    assert_eq!(rig.net.listeners()[0].1.addr().ip(), "127.0.0.8".parse::<IpAddr>().unwrap());
}

#[test]
fn an_egress_setup_failure_is_a_general_failure_not_a_refusal() {
    let mut rig = Rig::with(|c| c.fwmark = Some(1));
    rig.client_sends(&[5, 1, 0]);
    rig.client_got();
    // EPERM would read as "not allowed by ruleset" (02) if it came from connect itself.
    rig.net.plan_connect(ConnectPlan::EgressFails(libc::EPERM));
    rig.client_sends(&connect_request(TARGET));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 1));
    assert!(rig.net.connects().is_empty());
}

#[test]
fn a_users_destination_rules_apply_on_top_of_the_global_ones() {
    let mut user = alice();
    user.deny_dest = vec![Cidr::new(TARGET.ip(), 32).unwrap()];
    let mut rig = logged_in(user, |_| {});
    rig.client_got();
    rig.client_sends(&connect_request(TARGET));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 2));
    assert!(rig.net.connects().is_empty(), "a denied address is never connected to");
}

#[test]
fn caps_refuse_the_request_with_02_or_5b_and_places_come_back() {
    // The client already holds its one place (on another worker, say).
    let mut rig = Rig::with(|c| c.max_connections_per_client = Some(1));
    let other = rig.usage.acquire(CLIENT.ip(), Some(1), None).unwrap();
    rig.client_sends(&[5, 1, 0]);
    rig.client_got();
    rig.client_sends(&connect_request(TARGET));
    assert_eq!((rig.phase(), rig.client_got()[1]), ("Rejecting", 2));
    assert!(rig.net.connects().is_empty());

    let mut rig4 = Rig::with(|c| c.max_connections_per_client = Some(1));
    rig4.usage = Arc::clone(&rig.usage);
    rig4.client_sends(&[4, 1, 0, 80, 192, 0, 2, 7, b'u', 0]);
    assert_eq!((rig4.phase(), rig4.client_got()), ("Rejecting", vec![0, 0x5b, 0, 0, 0, 0, 0, 0]));
    drop(other);

    // Per user: alice may have one connection.
    let mut user = alice();
    user.max_connections = Some(1);
    let mut first = logged_in(user.clone(), |_| {});
    first.client_got();
    first.client_sends(&connect_request(TARGET));
    assert_eq!(first.phase(), "Connecting");
    assert_eq!(first.usage.users()[0].open, 1);
    let mut second = logged_in(user, |_| {});
    second.usage = Arc::clone(&first.usage);
    second.client_got();
    second.client_sends(&connect_request(TARGET));
    assert_eq!((second.phase(), second.client_got()[1]), ("Rejecting", 2));
    // The place is given back when the connection goes, whatever ended it.
    first.conn = Connection::new(Script::default().stream(), CLIENT, 8, first.now);
    assert_eq!(first.usage.users()[0].open, 0);
    assert_eq!(first.usage.client_connections(CLIENT.ip()), 0);
}

#[test]
fn an_expired_user_is_refused_at_login() {
    let mut user = alice();
    user.expires = Some(std::time::SystemTime::now() - std::time::Duration::from_secs(1));
    let rig = logged_in(user, |_| {});
    assert_eq!((rig.phase(), rig.client_got()), ("Rejecting", vec![1, 1]));
    assert!(rig.conn.user().is_none());

    let mut user = alice();
    user.expires = Some(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    let rig = logged_in(user, |_| {});
    assert_eq!((rig.phase(), rig.client_got()), ("AwaitRequest", vec![1, 0]));
    assert_eq!(rig.conn.user().map(|u| u.name.as_str()), Some("alice"));
}

#[test]
fn a_udp_association_takes_the_users_egress_and_rules() {
    use crate::users::{BindOut, Egress};
    let mut user = alice();
    user.egress = Egress {
        bind_out: Some(BindOut::Addr("127.0.0.6".parse().unwrap())),
        interface: Some("lo".into()),
        fwmark: None,
    };
    user.deny_dest = vec![Cidr::new(TARGET.ip(), 32).unwrap()];
    let mut rig = logged_in(user, |_| {});
    rig.client_got();
    rig.client_sends(&[5, 3, 0, 1, 0, 0, 0, 0, 0x13, 0x88]);
    assert_eq!(rig.phase(), "UdpAssociated");
    let sockets = rig.net.datagrams();
    let (client_side, upstream_side) = (&sockets[0].1, &sockets[1].1);
    assert_eq!(upstream_side.addr().ip(), "127.0.0.6".parse::<IpAddr>().unwrap());
    assert_eq!(rig.net.outbounds().len(), 1, "the target side only");
    assert_eq!(rig.net.outbounds()[0].interface.as_deref(), Some("lo"));
    let allowed: SocketAddr = "192.0.2.8:53".parse().unwrap();
    for target in [TARGET, allowed] {
        let mut datagram = Vec::new();
        encode_udp_header(target, &mut datagram);
        datagram.extend_from_slice(b"q");
        client_side.deliver(&datagram, SocketAddr::new(CLIENT.ip(), 5000));
    }
    rig.conn.on_ready(Side::Aux, Readiness::READABLE);
    rig.drive();
    let sent = upstream_side.take_sent();
    assert_eq!(sent.iter().map(|(_, to)| *to).collect::<Vec<_>>(), [allowed], "the denied one is dropped");
}

// ---- Rejecting -------------------------------------------------------------------------

#[test]
fn rejecting_flushes_half_closes_and_lingers_until_the_clients_fin() {
    let mut rig = Rig::new();
    rig.client_sends(&[5, 1, 2]); // no acceptable method
    assert_eq!(rig.phase(), "Rejecting");
    assert_eq!(rig.client_got(), [5, 0xFF]);
    assert!(rig.client.is_shut(), "FIN after the reply");
    rig.client_sends(b"more junk");
    assert_eq!(rig.phase(), "Rejecting", "lingers, discarding");
    rig.client.close();
    rig.conn.on_ready(Side::Client, Readiness::READABLE);
    assert_eq!(rig.drive(), &Step::Close(CloseReason::Rejected));

    let mut rig = Rig::new();
    rig.client_sends(&[5, 1, 2]);
    assert_eq!(rig.timeout(), &Step::Close(CloseReason::Rejected));
}

#[test]
fn a_reply_the_client_cannot_take_yet_waits_and_is_delivered_in_order() {
    let mut rig = Rig::new();
    rig.client.set_room(1);
    rig.client_sends(&[5, 1, 0]);
    assert_eq!(rig.client_got(), [5], "half the method selection");
    rig.client_sends(&connect_request(TARGET));
    rig.finish_connect(true);
    rig.client.set_room(usize::MAX);
    rig.conn.on_ready(Side::Client, Readiness::WRITABLE);
    rig.drive();
    assert_eq!(rig.client_got()[..3], [0, 5, 0], "rest of the selection, then the reply");
}

#[test]
fn an_idle_relay_is_small() {
    // What a relaying connection costs in the slab (docs/architecture.md quotes it): 456
    // bytes, of which 208 are the summary's (the report's user, command, addresses and
    // instants, and the connection's place in the caps, boxed) and 8 the pointer to a
    // rate-limited relay's throttle.
    let size = std::mem::size_of::<Connection<mio::Registry>>();
    assert!(size <= 456, "Connection<Registry> is {size} bytes");
}
