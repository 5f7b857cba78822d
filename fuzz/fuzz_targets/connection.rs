//! Drives one whole `Connection` state machine with arbitrary events from every side, on the
//! simulated network (`socksloop::sim`): no socket, no kernel, every phase reachable,
//! BIND and UDP ASSOCIATE included.
//!
//! The fuzz input is a list of operations: bytes arriving from the client or the upstream,
//! EOF, reset, room to write on either side, a connect completing, failing, or failing at
//! once, a resolver answer, time passing and a deadline, a peer connecting to a BIND listener (expected or a
//! stranger), a datagram arriving on either UDP socket. After every operation the connection
//! is driven, and the harness checks:
//!
//! * no panic and no endless drive (the state machine's own iteration guard);
//! * bounded buffering: the connection never holds more than a scratch buffer's worth plus the
//!   handshake remainder per direction;
//! * conservation: the upstreams never receive more bytes than the client sent, and the
//!   client never receives more than the upstreams sent plus the SOCKS replies.
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz connection fuzz/seeds/connection
//! ```

#![no_main]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use socksloop::Config;
use socksloop::settings::Settings;
use socksloop::usage::Usage;
use socksloop::users::User;
use socksloop::connection::{Connection, Ctx, HEADER_ROOM, Resolution, Step};
use socksloop::dns::{DnsError, Family};
use socksloop::net::{Readiness, SocketId};
use socksloop::resolver::Resolver;
use socksloop::sim::{ConnectPlan, Script, SimNet};
use socksloop::timer::Timers;
use socksloop::token::Side;
use socksloop::verifier::{Passwords, Verifier};

fn family(kind: u8) -> Family {
    if kind == 1 { Family::V4 } else { Family::V6 }
}

/// A byte reader over the fuzz input that yields 0 when exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Settings with one user, `user`/`pass`.
fn with_user() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let mut settings = Settings::default();
        settings.users.add(User::plain("user", b"pass")).expect("user");
        settings
    })
}

/// Scratch size used by the server (64 KiB plus the UDP header room).
const SCRATCH: usize = 64 * 1024 + HEADER_ROOM;
/// Per direction: a scratch buffer's worth refused by the destination, plus the handshake
/// remainder (early payload) or the SOCKS replies queued ahead of it.
const BUFFER_BOUND: usize = 2 * (SCRATCH + 1024 + 64);
/// Replies the client may receive besides payload: method selection 2, auth status 2, and at
/// most two command replies (BIND sends two) of at most 22 bytes.
const REPLY_BYTES: u64 = 2 + 2 + 22 + 22;

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);

/// The upstream streams the connection has had (connect attempts and BIND peers), each with
/// the socket id its readiness is reported under.
#[derive(Default)]
struct Upstreams(Vec<(SocketId, Script)>);

impl Upstreams {
    fn refresh(&mut self, net: &SimNet) {
        for (_, id, script) in net.connects() {
            if !self.0.iter().any(|(_, s)| s.same(&script)) {
                self.0.push((id, script));
            }
        }
    }

    fn newest(&self) -> Option<(SocketId, Script)> {
        self.0.last().cloned()
    }

    /// (bytes written to them, bytes supplied by them)
    fn totals(&self) -> (u64, u64) {
        self.0.iter().fold((0, 0), |(w, s), (_, script)| (w + script.written_len(), s + script.supplied()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.byte();
    let net = SimNet::new();
    let mut resolver = Resolver::detached();
    let mut timers = Timers::default();
    let mut scratch = vec![0u8; SCRATCH];
    let mut config = Config::default();
    config.rules.block_private = flags & 2 == 2;
    config.socks4 = flags & 4 == 0;
    let mut settings = if flags & 1 == 1 { with_user().clone() } else { Settings::default() };
    settings.rules.block_private = config.rules.block_private;
    let usage = Arc::new(Usage::default());
    // A verifier of this input's own, so one input's failed logins cannot lock out the next's.
    // Its user is plaintext: no verifier thread ever starts.
    let mut passwords = Passwords::new(Arc::new(Verifier::new(1).expect("verifier")), None);

    let client = Script::default();
    client.grant(4096);
    let mut conn: Connection<SimNet> = Connection::new(client.stream(), CLIENT, 1, Instant::now());
    let mut upstreams = Upstreams::default();
    let mut client_written = 0u64;
    // The harness's clock: deadlines fire when the input moves it far enough.
    let mut now = Instant::now();

    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        upstreams.refresh(&net);
        let upstream = upstreams.newest();
        let mut ctx = Ctx {
            net: &net,
            names: &mut resolver,
            passwords: &mut passwords,
            timers: &mut timers,
            scratch: &mut scratch,
            #[cfg(target_os = "linux")]
            pipes: None,
            config: &config,
            settings: &settings,
            usage: &usage,
            now,
            key: 0,
            conn: 1,
        };
        let step = match op % 16 {
            0 => {
                let len = usize::from(input.byte());
                client.supply(input.bytes(len));
                conn.on_ready(Side::Client, Readiness::READABLE);
                conn.drive(&mut ctx)
            }
            1 => {
                client.close();
                conn.on_ready(Side::Client, Readiness { peer_closed: true, ..Readiness::READABLE });
                conn.drive(&mut ctx)
            }
            2 => {
                client.reset();
                conn.on_ready(Side::Client, Readiness { peer_closed: true, ..Readiness::BOTH });
                conn.drive(&mut ctx)
            }
            3 => {
                client.grant(usize::from(input.byte()) * 256);
                conn.on_ready(Side::Client, Readiness::WRITABLE);
                conn.drive(&mut ctx)
            }
            4..=8 => {
                if let Some((id, up)) = &upstream {
                    match op % 16 {
                        4 => {
                            let len = usize::from(input.byte()) * 4;
                            up.supply(input.bytes(len));
                        }
                        5 => up.close(),
                        6 => up.reset(),
                        7 => up.grant(usize::from(input.byte()) * 256),
                        _ => up.finish_connect(input.byte() % 4 != 0),
                    }
                    let peer_closed = matches!(op % 16, 5 | 6);
                    conn.on_ready(id.side, Readiness { peer_closed, ..Readiness::BOTH });
                }
                conn.drive(&mut ctx)
            }
            9 => {
                net.plan_connect(ConnectPlan::FailAtOnce(io::ErrorKind::ConnectionRefused));
                conn.drive(&mut ctx)
            }
            10 => {
                let count = input.byte() % 4;
                let result = if count == 0 {
                    Err(io::Error::other("lookup failed"))
                } else {
                    let octet = input.byte();
                    let addrs = (0..count)
                        .map(|i| SocketAddr::from(([10, 0, i, octet], 80)))
                        .chain(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))))
                        .collect();
                    Ok(addrs)
                };
                let answer = match (count, input.byte() % 3) {
                    // The resolver threads' answer: every address at once.
                    (_, 0) => Resolution::All(result.map(|addrs: Vec<SocketAddr>| addrs.iter().map(SocketAddr::ip).collect())),
                    // The in-loop client's: one family at a time.
                    (0, kind) => Resolution::Family(family(kind), Err(DnsError::NxDomain)),
                    (_, kind) => Resolution::Family(family(kind), result.map(|a| a.iter().map(SocketAddr::ip).collect()).map_err(|_| DnsError::Timeout)),
                };
                conn.on_resolved(&mut ctx, "fuzzed.example", answer);
                conn.drive(&mut ctx)
            }
            11 => {
                // Time passes (up to 25.5 s: past attempt delays and the connect timeout).
                now += Duration::from_millis(u64::from(input.byte()) * 100);
                ctx.now = now;
                conn.on_timeout(&mut ctx)
            }
            12 => {
                // A peer connects to the BIND listener, from a fuzzed IPv4 address.
                if let Some((_, listener)) = net.listeners().last() {
                    let from = SocketAddr::from(([input.byte(), 0, 0, input.byte()], 2000));
                    let peer = listener.connect_from(from);
                    upstreams.0.push((SocketId { key: 0, side: Side::Upstream(0) }, peer));
                    conn.on_ready(Side::Aux, Readiness::READABLE);
                }
                conn.drive(&mut ctx)
            }
            13 | 14 => {
                // A datagram on the UDP association's client side (13) or upstream side (14).
                let sockets = net.datagrams();
                let index = usize::from(op % 16 == 14);
                if let Some((id, socket)) = sockets.get(index) {
                    let len = usize::from(input.byte());
                    let payload = input.bytes(len).to_vec();
                    let from = if input.byte() % 2 == 0 {
                        SocketAddr::new(CLIENT.ip(), u16::from(input.byte()) + 1)
                    } else {
                        SocketAddr::from(([127, 0, 0, input.byte()], 53))
                    };
                    socket.deliver(&payload, from);
                    conn.on_ready(id.side, Readiness::READABLE);
                    for (_, socket) in &sockets {
                        socket.take_sent(); // what was sent is not checked here
                    }
                }
                conn.drive(&mut ctx)
            }
            _ => conn.drive(&mut ctx),
        };

        let buffered = conn.buffered_bytes();
        assert!(buffered <= BUFFER_BOUND, "the connection holds {buffered} bytes");
        let (up_written, up_supplied) = upstreams.totals();
        assert!(up_written <= client.supplied(), "upstreams got {up_written} of {} client bytes", client.supplied());
        client_written += client.discard_written();
        assert!(client_written <= up_supplied + REPLY_BYTES, "client got {client_written} of {up_supplied}");
        if let Step::Close(_) = step {
            break;
        }
    }
});
