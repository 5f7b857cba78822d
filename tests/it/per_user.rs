//! Per-user and per-client limits and the life of an account (#13): a user's
//! `max-connections` and `--max-connections-per-client` (over two workers, and for the client
//! a PROXY header names) refuse the extra request with 02 (SOCKS4: 5B) and free the place when
//! a connection ends; an expired user is refused at login, and one that expires while
//! connected is closed; a reload that removes bob closes bob's open relay within a second
//! while alice's keeps working; per-user metrics.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use socksloop::users::User;
use socksloop::{Config, Launch, Server};

use crate::support::*;

fn user(name: &str) -> User {
    User::plain(name, format!("{name}-pw").as_bytes())
}

/// Log in as `name` (password `{name}-pw`) and CONNECT to `dest`: the stream and reply code.
fn user_connect(proxy: SocketAddr, name: &str, dest: SocketAddr) -> (TcpStream, u8) {
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, name, &format!("{name}-pw")), 0, "login as {name}");
    stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(dest))).unwrap();
    let reply = read_reply(&mut stream).expect("reply");
    (stream, reply.code)
}

/// Keep trying `attempt` until it returns `Some` (a place freed by a close shows at the end of
/// the proxy's loop pass, and the client's own close takes a moment to reach the proxy).
fn eventually<T>(what: &str, attempt: impl FnMut() -> Option<T>) -> T {
    poll_until(SETTLE, attempt).unwrap_or_else(|| panic!("{what}: not within {SETTLE:?}"))
}

#[test]
fn a_users_max_connections_refuses_the_extra_request_over_all_workers() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.workers = 2;
        let mut alice = user("alice");
        alice.max_connections = Some(2);
        c.users.add(alice).unwrap();
        c.users.add(user("bob")).unwrap();
    });
    let proxy = proxy_addr(&server);
    let (mut first, code) = user_connect(proxy, "alice", echo.addr);
    assert_eq!(code, REP_OK);
    let (_second, code) = user_connect(proxy, "alice", echo.addr);
    assert_eq!(code, REP_OK);
    // The kernel spreads clients over the two workers' listeners: whichever takes the third,
    // it sees the other's count.
    for _ in 0..4 {
        let (mut third, code) = user_connect(proxy, "alice", echo.addr);
        assert_eq!(code, REP_NOT_ALLOWED, "alice's third connection");
        expect_closed(&mut third, "after 02");
    }
    let (mut bobs, code) = user_connect(proxy, "bob", echo.addr);
    assert_eq!(code, REP_OK, "bob has no cap");
    assert_echo(&mut bobs, b"bob");
    assert_echo(&mut first, b"alice's first still relays");

    // A closed connection gives its place back.
    drop(first);
    let (mut again, _) = eventually("alice's place back", || {
        let (stream, code) = user_connect(proxy, "alice", echo.addr);
        (code == REP_OK).then_some((stream, code))
    });
    assert_echo(&mut again, b"alice again");
}

#[test]
fn max_connections_per_client_counts_the_client_ip_and_the_balancers_client() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.workers = 2;
        c.max_connections_per_client = Some(2);
        c.proxy_protocol = vec!["127.0.0.9/32".parse().unwrap()];
    });
    let proxy = proxy_addr(&server);
    let from = |ip: [u8; 4]| connect_from(Ipv4Addr::from(ip), proxy);
    let request = |mut stream: TcpStream| {
        greet(&mut stream);
        stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr))).unwrap();
        let code = read_reply(&mut stream).expect("reply").code;
        (stream, code)
    };
    let (a, code) = request(from([127, 0, 0, 2]));
    assert_eq!(code, REP_OK);
    let (_b, code) = request(from([127, 0, 0, 2]));
    assert_eq!(code, REP_OK);
    let (mut c, code) = request(from([127, 0, 0, 2]));
    assert_eq!(code, REP_NOT_ALLOWED, "the client's third connection");
    expect_closed(&mut c, "after 02");
    let (mut other, code) = request(from([127, 0, 0, 3]));
    assert_eq!(code, REP_OK, "another client is not limited by 127.0.0.2's count");
    assert_echo(&mut other, b"other client");

    // SOCKS4 is refused with 5B.
    let mut socks4 = from([127, 0, 0, 2]);
    let port = echo.addr.port().to_be_bytes();
    socks4.write_all(&[4, 1, port[0], port[1], 127, 0, 0, 1, 0]).unwrap();
    let mut answer = [0u8; 8];
    std::io::Read::read_exact(&mut socks4, &mut answer).unwrap();
    assert_eq!(answer[1], 0x5b, "SOCKS4's refusal");

    drop(a);
    let (mut a, _) = eventually("127.0.0.2's place back", || {
        let (stream, code) = request(from([127, 0, 0, 2]));
        (code == REP_OK).then_some((stream, code))
    });
    assert_echo(&mut a, b"again");

    // Behind a balancer (127.0.0.9), the client its PROXY header names is the one counted.
    let behind = |client: &str, port: u16| {
        let mut stream = from([127, 0, 0, 9]);
        stream.write_all(format!("PROXY TCP4 {client} 127.0.0.1 {port} 1080\r\n").as_bytes()).unwrap();
        request(stream)
    };
    let (_x, code) = behind("192.0.2.1", 40001);
    assert_eq!(code, REP_OK);
    let (_y, code) = behind("192.0.2.1", 40002);
    assert_eq!(code, REP_OK);
    let (_, code) = behind("192.0.2.1", 40003);
    assert_eq!(code, REP_NOT_ALLOWED, "192.0.2.1's third, though all came from the balancer");
    let (_z, code) = behind("192.0.2.2", 40004);
    assert_eq!(code, REP_OK, "the balancer's other client");
}

#[test]
fn an_expired_user_is_refused_and_one_expiring_while_connected_is_closed() {
    let echo = echo_server("127.0.0.1:0");
    let expires_at = SystemTime::now() + Duration::from_secs(3);
    let server = start_server_with(|c| {
        let mut old = user("old");
        old.expires = Some(SystemTime::now() - Duration::from_secs(60));
        c.users.add(old).unwrap();
        let mut soon = user("soon");
        soon.expires = Some(expires_at);
        c.users.add(soon).unwrap();
        c.users.add(user("alice")).unwrap();
    });
    let proxy = proxy_addr(&server);
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, "old", "old-pw"), 1, "an expired account is refused at login");
    expect_closed(&mut stream, "after 01 01");

    let (mut soon, code) = user_connect(proxy, "soon", echo.addr);
    assert_eq!(code, REP_OK, "not expired yet");
    assert_echo(&mut soon, b"before expiry");
    let (mut alice, _) = user_connect(proxy, "alice", echo.addr);
    // The relay is closed at the expiry (the loop looks at least once a second), not at the
    // idle timeout (300 s).
    expect_closed(&mut soon, "the relay of an account that expired");
    let now = SystemTime::now();
    assert!(now >= expires_at, "closed before the expiry");
    assert!(now.duration_since(expires_at).unwrap() < Duration::from_secs(5), "closed long after the expiry");
    assert_echo(&mut alice, b"alice does not expire");
}

/// A server whose reload re-reads `next` (what a new config file would say).
fn reloadable(config: Config) -> (Server, Arc<Mutex<Config>>) {
    let next = Arc::new(Mutex::new(config.clone()));
    let source = Arc::clone(&next);
    let launch =
        Launch { reread: Some(Box::new(move || Ok(source.lock().unwrap().clone()))), ..Launch::default() };
    let server = Server::launch(config, launch, || {}).expect("proxy starts");
    (server, next)
}

#[test]
fn a_reload_removing_bob_closes_his_relay_within_a_second_and_alices_goes_on() {
    let echo = echo_server("127.0.0.1:0");
    let mut config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        log_level: log::LevelFilter::Warn,
        workers: 2,
        ..Config::default()
    };
    for name in ["alice", "bob", "carol"] {
        config.users.add(user(name)).unwrap();
    }
    let (server, next) = reloadable(config.clone());
    let proxy = proxy_addr(&server);
    let (mut alices, _) = user_connect(proxy, "alice", echo.addr);
    let (mut bobs, code) = user_connect(proxy, "bob", echo.addr);
    assert_eq!(code, REP_OK);
    assert_echo(&mut bobs, b"bob before");
    // Carol's password changes: her relay ends too; a change of limits alone would not.
    let mut changed = Config { users: Default::default(), ..config };
    changed.users.add(user("alice")).unwrap();
    changed.users.add(User::plain("carol", b"new-pw")).unwrap();
    let (mut carols, _) = user_connect(proxy, "carol", echo.addr);
    *next.lock().unwrap() = changed;

    let reloaded_at = Instant::now();
    server.reload().expect("reload");
    expect_closed(&mut bobs, "bob's relay after bob was removed");
    let took = reloaded_at.elapsed();
    assert!(took < Duration::from_secs(1), "bob's relay closed {took:?} after the reload");
    expect_closed(&mut carols, "carol's relay after her password changed");
    assert_echo(&mut alices, b"alice after the reload");

    // Bob cannot log in any more; carol can with her new password.
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, "bob", "bob-pw"), 1);
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, "carol", "new-pw"), 0);
}

/// A `[[users]]` table for `name` (password `{name}-pw`) with `extra` keys.
fn user_table(name: &str, extra: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\npassword = \"{name}-pw\"\n{extra}\n")
}

#[test]
fn sighup_with_a_config_file_removing_bob_closes_his_relay_within_a_second() {
    let echo = echo_server("127.0.0.1:0");
    let alice = user_table("alice", "bind-out = \"127.0.0.5\"");
    let bob = user_table("bob", "bind-out = \"127.0.0.6\"\nmax-connections = 1");
    let file = TempFile::new("users-sighup.toml", &format!("workers = 2\n\n{alice}\n{bob}"));
    let proxy = ProxyProcess::spawn(&["--config", file.path()]);
    let (mut alices, code) = user_connect(proxy.addr, "alice", echo.addr);
    assert_eq!(code, REP_OK);
    assert_eq!(echo.next_peer().ip().to_string(), "127.0.0.5", "alice's bind-out, from the file");
    let (mut bobs, code) = user_connect(proxy.addr, "bob", echo.addr);
    assert_eq!(code, REP_OK);
    assert_eq!(echo.next_peer().ip().to_string(), "127.0.0.6", "bob's bind-out, from the file");
    let (_, code) = user_connect(proxy.addr, "bob", echo.addr);
    assert_eq!(code, REP_NOT_ALLOWED, "bob's max-connections, from the file");
    assert_echo(&mut bobs, b"bob before the reload");

    file.write(&format!("workers = 2\n\n{alice}"));
    let signalled = Instant::now();
    proxy.signal(libc::SIGHUP);
    expect_closed(&mut bobs, "bob's relay after the reload removed him");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(1), "bob's relay closed {took:?} after SIGHUP");
    assert_echo(&mut alices, b"alice after the reload");
    assert!(
        proxy.wait_for_log("user 'bob' revoked (user removed): closed 1 open connection", TIMEOUT),
        "{:?}",
        proxy.stderr.lock().unwrap()
    );
    assert!(proxy.wait_for_log("reply 00 succeeded user 'bob'", TIMEOUT), "the access line names bob");
    let lines = proxy.stderr.lock().unwrap().clone();
    let access = lines.iter().find(|l| l.contains("reply 00 succeeded user 'bob'")).unwrap();
    assert!(access.ends_with("(user revoked)"), "the typed close reason: {access}");
    let mut stream = tcp_connect(proxy.addr);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, "bob", "bob-pw"), 1, "bob is gone");
}
