//! Drives one whole `Connection` state machine with arbitrary events from both sides,
//! without any socket.
//!
//! The client and the upstream are scripted in-memory streams (`Fake`, implementing
//! `socksloop::socket::Socket`); readiness is hinted directly; resolver answers and deadlines
//! are delivered by the harness. The fuzz input is a list of operations: bytes arriving from
//! the client or the upstream, EOF, reset, room to write on either side, the connect
//! completing or failing, a resolver answer, a deadline. After every operation the connection
//! is driven, and the harness checks:
//!
//! * no panic and no endless drive (the state machine's own iteration guard);
//! * bounded buffering: the relay pipes never hold more than a scratch buffer's worth plus the
//!   handshake remainder per direction;
//! * conservation: the upstream never receives more bytes than the client sent, and the client
//!   never receives more than the upstream sent plus the SOCKS replies.
//!
//! BIND and UDP ASSOCIATE open sockets of their own, so `Fake` declares it cannot serve them
//! and they are answered with 07 here; the socket-based `session` target covers them.
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz connection fuzz/seeds/connection
//! ```

#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mio::event::Source;
use mio::{Interest, Registry, Token};
use socksloop::Config;
use socksloop::auth::{AuthSource, CredentialStore};
use socksloop::connect::Progress;
use socksloop::connection::{Connection, Ctx, Step};
use socksloop::relay::Stream;
use socksloop::resolver::Resolver;
use socksloop::socket::Socket;
use socksloop::sockio::Readiness;
use socksloop::timer::Timers;
use socksloop::token::Side;

/// What one scripted stream will do.
#[derive(Default)]
struct Script {
    incoming: VecDeque<u8>,
    /// Once `incoming` is drained, reads see EOF.
    closed: bool,
    reset: bool,
    reset_reported: bool,
    /// How many more bytes writes accept.
    room: usize,
    written: u64,
    shut: bool,
    /// For an upstream: `None` while connecting, then connected or refused.
    connected: Option<bool>,
    /// Everything ever queued in `incoming` (for the conservation check).
    supplied: u64,
}

struct Fake {
    script: Rc<RefCell<Script>>,
    /// Any descriptor satisfies `AsFd` (needed only by the splice path, which is off here).
    null: File,
}

impl Fake {
    fn new(script: Rc<RefCell<Script>>) -> Fake {
        Fake { script, null: File::open("/dev/null").expect("/dev/null") }
    }
}

thread_local! {
    /// Outcomes for the next `Socket::connect` calls (`false` = fails at once); default: pending.
    static CONNECTS: RefCell<VecDeque<bool>> = RefCell::default();
    /// The scripts of every upstream the connection created, newest last.
    static UPSTREAMS: RefCell<Vec<Rc<RefCell<Script>>>> = RefCell::default();
}

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.script.borrow_mut();
        if s.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.incoming.is_empty() {
            return if s.closed { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(s.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(s.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.script.borrow_mut();
        if s.reset || s.shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if s.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(s.room);
        s.room -= n;
        s.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Fake {
    fn shutdown_write(&self) -> io::Result<()> {
        self.script.borrow_mut().shut = true;
        Ok(())
    }
}

impl Source for Fake {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Fake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.null.as_fd()
    }
}

impl Socket for Fake {
    fn connect(_: SocketAddr, _: Option<IpAddr>) -> io::Result<Self> {
        if CONNECTS.with(|c| c.borrow_mut().pop_front()) == Some(false) {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let script = Rc::new(RefCell::new(Script::default()));
        UPSTREAMS.with(|u| u.borrow_mut().push(Rc::clone(&script)));
        Ok(Fake::new(script))
    }

    fn connect_progress(&self) -> Progress {
        match self.script.borrow().connected {
            None => Progress::Pending,
            Some(true) => Progress::Connected,
            Some(false) => Progress::Failed(io::ErrorKind::ConnectionRefused.into()),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 40000)))
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut s = self.script.borrow_mut();
        if s.reset && !s.reset_reported {
            s.reset_reported = true;
            return Ok(Some(io::ErrorKind::ConnectionReset.into()));
        }
        Ok(None)
    }

    fn from_accepted(_: mio::net::TcpStream) -> Self {
        // Never called: `supports_listeners` is false, so no BIND listener exists.
        Fake::new(Rc::default())
    }

    fn supports_listeners() -> bool {
        false
    }
}

/// A byte reader over the fuzz input that yields 0 when exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fn credentials() -> &'static CredentialStore {
    static STORE: OnceLock<CredentialStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let source = AuthSource { file: None, env_user: Some(("user".into(), "pass".into())) };
        CredentialStore::open(source).expect("credentials")
    })
}

/// Scratch size used by the server (64 KiB plus the UDP header room).
const SCRATCH: usize = 64 * 1024 + 22;
/// Per direction: a scratch buffer's worth refused by the destination, plus the handshake
/// remainder (early payload) or the SOCKS replies queued ahead of it.
const PIPE_BOUND: usize = 2 * (SCRATCH + 1024 + 64);

fn fill(script: &Rc<RefCell<Script>>, bytes: &[u8]) {
    let mut s = script.borrow_mut();
    s.incoming.extend(bytes);
    s.supplied += bytes.len() as u64;
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(flags) = input.byte() else { return };
    CONNECTS.with(|c| c.borrow_mut().clear());
    UPSTREAMS.with(|u| u.borrow_mut().clear());

    let poll = mio::Poll::new().expect("poll");
    let resolver = Resolver::detached();
    let mut timers = Timers::default();
    let mut scratch = vec![0u8; SCRATCH];
    let mut config = Config::default();
    config.rules.block_private = flags & 2 == 2;
    config.socks4 = flags & 4 == 0;
    let credentials = (flags & 1 == 1).then(credentials);

    let client_script = Rc::new(RefCell::new(Script { room: 4096, ..Script::default() }));
    let client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 50000));
    let mut conn = Connection::new(Fake::new(Rc::clone(&client_script)), client_addr, 1, Instant::now());

    for _ in 0..256 {
        let Some(op) = input.byte() else { break };
        let mut ctx = Ctx {
            registry: poll.registry(),
            resolver: &resolver,
            timers: &mut timers,
            scratch: &mut scratch,
            config: &config,
            credentials,
            now: Instant::now(),
            key: 0,
        };
        let upstream = UPSTREAMS.with(|u| u.borrow().last().cloned());
        let step = match op % 13 {
            0 => {
                let len = usize::from(input.byte().unwrap_or(0));
                fill(&client_script, input.bytes(len));
                conn.hint_ready(Side::Client, Readiness::READABLE);
                conn.drive(&mut ctx)
            }
            1 => {
                client_script.borrow_mut().closed = true;
                conn.hint_ready(Side::Client, Readiness { peer_closed: true, ..Readiness::READABLE });
                conn.drive(&mut ctx)
            }
            2 => {
                client_script.borrow_mut().reset = true;
                conn.hint_ready(Side::Client, Readiness { peer_closed: true, ..Readiness::BOTH });
                conn.drive(&mut ctx)
            }
            3 => {
                client_script.borrow_mut().room += usize::from(input.byte().unwrap_or(0)) * 256;
                conn.hint_ready(Side::Client, Readiness::WRITABLE);
                conn.drive(&mut ctx)
            }
            4..=8 => {
                if let Some(up) = &upstream {
                    match op % 13 {
                        4 => {
                            let len = usize::from(input.byte().unwrap_or(0)) * 4;
                            fill(up, input.bytes(len));
                        }
                        5 => up.borrow_mut().closed = true,
                        6 => up.borrow_mut().reset = true,
                        7 => up.borrow_mut().room += usize::from(input.byte().unwrap_or(0)) * 256,
                        _ => {
                            let mut s = up.borrow_mut();
                            if s.connected.is_none() {
                                s.connected = Some(input.byte().unwrap_or(0) % 4 != 0);
                            }
                        }
                    }
                    let peer_closed = matches!(op % 13, 5 | 6);
                    conn.hint_ready(Side::Upstream, Readiness { peer_closed, ..Readiness::BOTH });
                }
                conn.drive(&mut ctx)
            }
            9 => {
                // The next connect attempt fails at once.
                CONNECTS.with(|c| c.borrow_mut().push_back(false));
                conn.drive(&mut ctx)
            }
            10 => {
                let count = input.byte().unwrap_or(0) % 4;
                let result = if count == 0 {
                    Err(io::Error::other("lookup failed"))
                } else {
                    let octet = input.byte().unwrap_or(1);
                    let addrs = (0..count)
                        .map(|i| SocketAddr::from(([10, 0, i, octet], 80)))
                        .chain(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))))
                        .collect();
                    Ok(addrs)
                };
                conn.on_resolved(&mut ctx, "fuzzed.example", result);
                conn.drive(&mut ctx)
            }
            11 => conn.on_timeout(&mut ctx),
            _ => conn.drive(&mut ctx),
        };

        assert!(conn.buffered_bytes() <= PIPE_BOUND, "pipes hold {} bytes", conn.buffered_bytes());
        let client = client_script.borrow();
        let (up_written, up_supplied) = UPSTREAMS.with(|u| {
            u.borrow().iter().fold((0, 0), |(w, s), up| (w + up.borrow().written, s + up.borrow().supplied))
        });
        assert!(
            up_written <= client.supplied,
            "upstream got {up_written} of {} client bytes",
            client.supplied
        );
        // Replies: method selection 2, auth status 2, at most two command replies of 22.
        assert!(client.written <= up_supplied + 48, "client got {} of {up_supplied}", client.written);
        drop(client);
        if let Step::Close(_) = step {
            break;
        }
    }
});
