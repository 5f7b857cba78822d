//! Pure decisions of the state machine: no sockets, no clock, no logging. Each is a function
//! of the message and the configuration, tested by the tables below.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::acl::Rules;
use crate::config::Config;
use crate::net::Outbound;
use crate::protocol::socks4::{self, Socks4Reply};
use crate::protocol::{Greeting, Method, Reply, encode_reply};
use crate::settings::Settings;
use crate::users::{Egress, User};

/// Which protocol the client speaks, so replies take its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    #[default]
    Socks5,
    Socks4,
}

/// The method to select from a greeting (RFC 1928 §3), or `None` for `05 FF`. With
/// credentials configured only username/password will do (RFC 1929); without, only "no
/// authentication".
pub fn choose_method(greeting: &Greeting<'_>, auth_required: bool) -> Option<u8> {
    let wanted = if auth_required { Method::USERNAME_PASSWORD } else { Method::NO_AUTH };
    greeting.offers(wanted).then_some(wanted)
}

/// Why a SOCKS4 request is refused, if it is: SOCKS4 has no passwords.
pub fn socks4_refusal(config: &Config, auth_required: bool) -> Option<&'static str> {
    if !config.socks4 {
        Some("SOCKS4 is disabled (--no-socks4)")
    } else if auth_required && !config.socks4_without_auth {
        Some("SOCKS4 has no passwords and authentication is required")
    } else {
        None
    }
}

/// Whether `addr` may be reached: by the global rules and, on top of them, the user's own
/// `allow-dest`/`deny-dest`.
pub fn destination_allowed(addr: SocketAddr, rules: &Rules, user: Option<&User>) -> bool {
    rules.destination_allowed(addr) && user.is_none_or(|user| user.allows_dest(addr.ip()))
}

/// The addresses a connect may use: those the egress rules allow, the global ones and the
/// user's (checked after resolution, so a name cannot smuggle a denied address) and, with a
/// source address (`bind-out`), of its family (an IPv4 source cannot reach an IPv6 target).
/// `Err` is the reply when none is left.
pub fn usable_destinations(
    mut addrs: Vec<SocketAddr>,
    rules: &Rules,
    user: Option<&User>,
    bind_out: Option<IpAddr>,
) -> Result<Vec<SocketAddr>, Reply> {
    let user_rules = user.filter(|u| !u.allow_dest.is_empty() || !u.deny_dest.is_empty());
    if rules.restricts_destinations() || user_rules.is_some() {
        addrs.retain(|&addr| destination_allowed(addr, rules, user_rules));
        if addrs.is_empty() {
            return Err(Reply::NotAllowedByRuleset);
        }
    }
    if let Some(local) = bind_out {
        addrs.retain(|addr| addr.is_ipv4() == local.is_ipv4());
        if addrs.is_empty() {
            return Err(Reply::AddressTypeNotSupported);
        }
    }
    Ok(addrs)
}

/// The egress that applies to a connection: its user's settings over the global ones, part by
/// part (the global ones alone without a user).
pub fn egress<'a>(settings: &'a Settings, user: Option<&User>) -> std::borrow::Cow<'a, Egress> {
    match user {
        Some(user) if !user.egress.is_default() => {
            std::borrow::Cow::Owned(settings.egress.overlay(&user.egress))
        }
        _ => std::borrow::Cow::Borrowed(&settings.egress),
    }
}

/// How a connection's outbound sockets are set up: `egress` resolved, with `bind-out =
/// "incoming"` read as the address the client reached (`incoming` is asked only then; an
/// IPv4-mapped address counts as the IPv4 one, which is what a socket can bind).
pub fn outbound(egress: &Egress, incoming: impl FnOnce() -> Option<IpAddr>) -> Outbound {
    let from = match egress.bind_out {
        Some(crate::users::BindOut::Incoming) => incoming().map(crate::acl::canonical),
        _ => egress.source_ip(None),
    };
    Outbound { from, interface: egress.interface.clone(), fwmark: egress.fwmark }
}

/// Order a target's addresses for Happy Eyeballs (RFC 8305 §4): interleave the families,
/// starting with the preferred one (`prefer_v6`: IPv6 first; `None`: the family of the
/// resolver's first answer), each family keeping the resolver's order. Duplicates go.
pub fn interleave_families(addrs: Vec<SocketAddr>, prefer_v6: Option<bool>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else { return addrs };
    let mut v6_first = prefer_v6.unwrap_or(first.is_ipv6());
    if !addrs.iter().any(|a| a.is_ipv6() == v6_first) {
        v6_first = !v6_first; // the preferred family has no address
    }
    let mut seen = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !seen.contains(&addr) {
            seen.push(addr);
        }
    }
    let (preferred, other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        seen.into_iter().partition(|a| a.is_ipv6() == v6_first);
    let mut ordered = Vec::with_capacity(preferred.len() + other.len());
    let (mut p, mut o) = (preferred.into_iter(), other.into_iter());
    loop {
        match (p.next(), o.next()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

/// How telling a connect error is, for the reply when every attempt has failed: a refusal
/// (the host is there and said no) beats unreachability, which beats a timeout (we learned
/// nothing).
pub fn error_rank(error: &io::Error) -> u8 {
    match reply_for_error(error) {
        Reply::ConnectionRefused => 5,
        Reply::HostUnreachable => 4,
        Reply::NetworkUnreachable => 3,
        Reply::NotAllowedByRuleset => 2,
        Reply::TtlExpired => 0,
        _ => 1,
    }
}

/// Map the final connect error to a reply code (RFC 1928 §6).
pub fn reply_for_error(error: &io::Error) -> Reply {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => Reply::NetworkUnreachable,
        io::ErrorKind::TimedOut => Reply::TtlExpired,
        // A local firewall rule (EPERM/EACCES) is a ruleset refusal in SOCKS terms.
        io::ErrorKind::PermissionDenied => Reply::NotAllowedByRuleset,
        _ => Reply::GeneralFailure,
    }
}

/// A reply to a command in the client's dialect, naming `bound` (the server-side address).
pub fn command_reply(dialect: Dialect, reply: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    match dialect {
        Dialect::Socks5 => {
            let mut bytes = Vec::with_capacity(22);
            encode_reply(reply, bound, &mut bytes);
            bytes
        }
        Dialect::Socks4 => {
            // SOCKS4 replies carry only IPv4; anything else is sent as 0.0.0.0.
            let v4 = match bound {
                Some(SocketAddr::V4(v4)) => v4,
                _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            };
            socks4::encode_socks4_reply(Socks4Reply::for_reply(reply), v4).to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Cidr;
    use crate::protocol::{Parse, parse_greeting};

    fn greeting(bytes: &[u8]) -> Greeting<'_> {
        match parse_greeting(bytes) {
            Parse::Complete(g, _) => g,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn method_choice() {
        let table: [(&[u8], bool, Option<u8>); 6] = [
            (&[5, 1, 0], false, Some(Method::NO_AUTH)),
            (&[5, 1, 0], true, None),
            (&[5, 2, 0, 2], true, Some(Method::USERNAME_PASSWORD)),
            (&[5, 2, 0, 2], false, Some(Method::NO_AUTH)),
            (&[5, 1, 2], false, None),
            (&[5, 1, 1], false, None), // GSSAPI only
        ];
        for (bytes, auth, expected) in table {
            assert_eq!(choose_method(&greeting(bytes), auth), expected, "{bytes:?} auth={auth}");
        }
    }

    #[test]
    fn socks4_policy() {
        let mut config = Config::default();
        assert_eq!(socks4_refusal(&config, false), None);
        assert!(socks4_refusal(&config, true).is_some(), "no passwords in SOCKS4");
        config.socks4_without_auth = true;
        assert_eq!(socks4_refusal(&config, true), None);
        config.socks4 = false;
        assert!(socks4_refusal(&config, false).unwrap().contains("--no-socks4"));
    }

    #[test]
    fn destinations_after_rules_and_bind_out() {
        let v4: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let open = Rules::default();
        assert_eq!(usable_destinations(vec![v4, v6], &open, None, None), Ok(vec![v4, v6]));
        let from_v4 = Some("127.0.0.1".parse().unwrap());
        assert_eq!(usable_destinations(vec![v4, v6], &open, None, from_v4), Ok(vec![v4]));
        assert_eq!(usable_destinations(vec![v6], &open, None, from_v4), Err(Reply::AddressTypeNotSupported));
        let deny = Rules { deny_dest: vec![Cidr::new(v4.ip(), 32).unwrap()], ..Rules::default() };
        assert_eq!(usable_destinations(vec![v4, v6], &deny, None, None), Ok(vec![v6]));
        assert_eq!(usable_destinations(vec![v4], &deny, None, None), Err(Reply::NotAllowedByRuleset));
    }

    #[test]
    fn user_rules_apply_on_top_of_the_global_ones() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let (inside, outside, denied) = (a("192.0.2.1:80"), a("198.51.100.1:80"), a("192.0.2.200:80"));
        let mut user = User::plain("u", b"p");
        user.allow_dest = vec!["192.0.2.0/24".parse().unwrap()];
        user.deny_dest = vec!["192.0.2.128/25".parse().unwrap()];
        let open = Rules::default();
        let all = vec![inside, outside, denied];
        assert_eq!(usable_destinations(all.clone(), &open, Some(&user), None), Ok(vec![inside]));
        assert_eq!(usable_destinations(all.clone(), &open, None, None), Ok(all), "no user, no user rules");
        assert_eq!(
            usable_destinations(vec![outside, denied], &open, Some(&user), None),
            Err(Reply::NotAllowedByRuleset)
        );
        // The user's allow-dest narrows; it does not open what the global rules deny.
        let global = Rules { deny_dest: vec![Cidr::new(inside.ip(), 32).unwrap()], ..Rules::default() };
        assert_eq!(
            usable_destinations(vec![inside], &global, Some(&user), None),
            Err(Reply::NotAllowedByRuleset)
        );
        assert!(!destination_allowed(inside, &global, Some(&user)));
        assert!(destination_allowed(a("[::ffff:192.0.2.1]:80"), &open, Some(&user)), "mapped is IPv4");
    }

    #[test]
    fn egress_is_the_users_over_the_global_and_incoming_is_resolved() {
        use crate::users::BindOut;
        let settings = Settings {
            egress: Egress { bind_out: Some(BindOut::Incoming), interface: None, fwmark: Some(3) },
            ..Settings::default()
        };
        let here: IpAddr = "::ffff:127.0.0.7".parse().unwrap();
        let global = outbound(&egress(&settings, None), || Some(here));
        assert_eq!(
            global,
            Outbound { from: Some("127.0.0.7".parse().unwrap()), interface: None, fwmark: Some(3) }
        );
        let mut alice = User::plain("alice", b"p");
        alice.egress =
            Egress { bind_out: Some(BindOut::Addr("127.0.0.5".parse().unwrap())), ..Egress::default() };
        let asked = std::cell::Cell::new(false);
        let hers = outbound(&egress(&settings, Some(&alice)), || {
            asked.set(true);
            Some(here)
        });
        assert_eq!(
            hers,
            Outbound { from: Some("127.0.0.5".parse().unwrap()), interface: None, fwmark: Some(3) }
        );
        assert!(!asked.get(), "the incoming address is only looked up for bind-out = incoming");
        let plain = User::plain("bob", b"p");
        assert!(matches!(egress(&settings, Some(&plain)), std::borrow::Cow::Borrowed(_)));
        assert_eq!(outbound(&Egress::default(), || None), Outbound::default());
    }

    #[test]
    fn happy_eyeballs_order() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let (v6a, v6b, v6c) = (a("[2001:db8::1]:80"), a("[2001:db8::2]:80"), a("[2001:db8::3]:80"));
        let (v4a, v4b) = (a("192.0.2.1:80"), a("192.0.2.2:80"));
        // (resolver order, preference, expected)
        let table: [(Vec<SocketAddr>, Option<bool>, Vec<SocketAddr>); 6] = [
            (vec![v6a, v6b, v6c, v4a], None, vec![v6a, v4a, v6b, v6c]),
            (vec![v4a, v4b, v6a], None, vec![v4a, v6a, v4b]),
            (vec![v4a, v4b, v6a], Some(true), vec![v6a, v4a, v4b]),
            (vec![v6a, v4a, v4b], Some(false), vec![v4a, v6a, v4b]),
            (vec![v4a, v4b], Some(true), vec![v4a, v4b]),
            (vec![v6a, v6a, v4a, v4a], None, vec![v6a, v4a]),
        ];
        for (addrs, prefer, expected) in table {
            assert_eq!(interleave_families(addrs.clone(), prefer), expected, "{addrs:?} {prefer:?}");
        }
        assert!(interleave_families(vec![], None).is_empty());
    }

    #[test]
    fn refused_beats_unreachable_beats_timeout() {
        let e = io::Error::from_raw_os_error;
        let ranked = [
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EACCES,
            libc::EMFILE,
            libc::ETIMEDOUT,
        ];
        for pair in ranked.windows(2) {
            assert!(error_rank(&e(pair[0])) > error_rank(&e(pair[1])), "{pair:?}");
        }
    }

    #[test]
    fn error_mapping_covers_the_rfc_codes() {
        let cases = [
            (libc::ECONNREFUSED, Reply::ConnectionRefused),
            (libc::EHOSTUNREACH, Reply::HostUnreachable),
            (libc::ENETUNREACH, Reply::NetworkUnreachable),
            (libc::ENETDOWN, Reply::NetworkUnreachable),
            (libc::ETIMEDOUT, Reply::TtlExpired),
            (libc::EACCES, Reply::NotAllowedByRuleset),
            (libc::EPERM, Reply::NotAllowedByRuleset),
            (libc::EADDRNOTAVAIL, Reply::GeneralFailure),
            (libc::EMFILE, Reply::GeneralFailure),
        ];
        for (errno, reply) in cases {
            assert_eq!(reply_for_error(&io::Error::from_raw_os_error(errno)), reply, "errno {errno}");
        }
    }

    #[test]
    fn replies_take_the_clients_dialect() {
        let bound: SocketAddr = "127.0.0.1:4660".parse().unwrap();
        assert_eq!(
            command_reply(Dialect::Socks5, Reply::Succeeded, Some(bound)),
            [5, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34]
        );
        assert_eq!(
            command_reply(Dialect::Socks4, Reply::Succeeded, Some(bound)),
            [0, 0x5a, 0x12, 0x34, 127, 0, 0, 1]
        );
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(
            command_reply(Dialect::Socks4, Reply::ConnectionRefused, Some(v6)),
            [0, 0x5b, 0, 0, 0, 0, 0, 0]
        );
    }
}
