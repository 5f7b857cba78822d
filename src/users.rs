//! Users and what each may do: the per-user policy.
//!
//! Users come from the config file's `[[users]]` tables (`src/config_file.rs`), from an auth
//! file of `user:password` lines (`src/auth.rs`) and from `SOCKSLOOP_USER`/`SOCKSLOOP_PASS`.
//! All three become the same [`User`]; a user from an auth file simply has no settings of its
//! own and follows the global ones.
//!
//! A [`User`] is immutable and shared (`Arc`): a connection that logged in keeps the `Arc` of
//! the user it logged in as, so a reload that replaces the set does not change what an open
//! connection was granted. Whether an open connection must end after a reload (its user was
//! removed, expired or got a new password) is decided by [`revocation`], comparing the user the
//! connection holds with the same name in the new set.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::acl::Cidr;

/// RFC 1929 carries each field with a one-byte length.
pub const MAX_FIELD: usize = 255;

/// How a user's password is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself (auth files, `password = "..."`): compared in constant time, cheap
    /// enough to do on the loop thread.
    Plain(Vec<u8>),
    /// An argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`). Verifying costs
    /// milliseconds of CPU, so it never runs on the loop thread (`src/verifier.rs`).
    Argon2id(String),
}

impl fmt::Debug for Secret {
    // Never show a password or a hash in logs or test output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(..)"),
            Secret::Argon2id(_) => f.write_str("Argon2id(..)"),
        }
    }
}

/// Where outbound connections leave from (`bind-out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOut {
    /// This local IP address.
    Addr(IpAddr),
    /// The local address the client connected to (a server with several addresses sends each
    /// client's traffic out of the address that client chose).
    Incoming,
}

/// How outbound sockets are set up: source address, device, firewall mark. Each part is
/// optional; a user's settings overlay the global ones part by part ([`Egress::overlay`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    pub bind_out: Option<BindOut>,
    /// `SO_BINDTODEVICE`: route only through this interface.
    pub interface: Option<String>,
    /// `SO_MARK`: the firewall mark policy routing and nftables can match.
    pub fwmark: Option<u32>,
}

impl Egress {
    /// These settings, with each part `user` sets replacing the global one.
    pub fn overlay(&self, user: &Egress) -> Egress {
        Egress {
            bind_out: user.bind_out.or(self.bind_out),
            interface: user.interface.clone().or_else(|| self.interface.clone()),
            fwmark: user.fwmark.or(self.fwmark),
        }
    }

    /// The local IP address to bind outbound sockets to, if any: `incoming` is the address the
    /// client reached (`None` when it is not known, e.g. in a test without sockets).
    pub fn source_ip(&self, incoming: Option<IpAddr>) -> Option<IpAddr> {
        match self.bind_out? {
            BindOut::Addr(ip) => Some(ip),
            BindOut::Incoming => incoming,
        }
    }

    /// Nothing set: connect from wherever the kernel chooses.
    pub fn is_default(&self) -> bool {
        *self == Egress::default()
    }
}

/// One user and their settings (all optional beyond the name and secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub secret: Secret,
    pub egress: Egress,
    /// Simultaneous connections of this user, over all workers.
    pub max_connections: Option<usize>,
    /// Bytes per second in each direction, summed over all of the user's connections.
    pub rate_limit: Option<u64>,
    /// After this instant the user is refused, and a reload closes their open connections.
    pub expires: Option<SystemTime>,
    /// Destination rules on top of the global ones: `allow_dest`, when not empty, narrows the
    /// destinations to these ranges; `deny_dest` refuses these.
    pub allow_dest: Vec<Cidr>,
    pub deny_dest: Vec<Cidr>,
}

impl User {
    /// A user with a password and no settings of their own (auth file, environment).
    pub fn plain(name: &str, password: &[u8]) -> User {
        User {
            name: name.to_owned(),
            secret: Secret::Plain(password.to_vec()),
            egress: Egress::default(),
            max_connections: None,
            rate_limit: None,
            expires: None,
            allow_dest: Vec::new(),
            deny_dest: Vec::new(),
        }
    }

    /// Whether the account has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    /// Whether `dest` is allowed by this user's own rules (the global ones are checked apart).
    pub fn allows_dest(&self, dest: IpAddr) -> bool {
        let allowed = self.allow_dest.is_empty() || self.allow_dest.iter().any(|c| c.contains(dest));
        allowed && !self.deny_dest.iter().any(|c| c.contains(dest))
    }
}

/// A set of users by name.
#[derive(Clone, Default)]
pub struct Users {
    by_name: HashMap<Vec<u8>, Arc<User>>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} users)", self.by_name.len())
    }
}

impl Users {
    /// Add one user; fails on an empty or over-long name or password, an invalid password hash
    /// ([`crate::verifier::check_phc`]), or a duplicate name.
    pub fn add(&mut self, user: User) -> Result<(), String> {
        if user.name.is_empty() {
            return Err("empty user name".into());
        }
        let password_len = match &user.secret {
            Secret::Plain(p) => p.len(),
            Secret::Argon2id(phc) => {
                crate::verifier::check_phc(phc).map_err(|why| format!("invalid password hash: {why}"))?;
                0
            }
        };
        if user.name.len() > MAX_FIELD || password_len > MAX_FIELD {
            return Err(format!("user name and password are limited to {MAX_FIELD} bytes (RFC 1929)"));
        }
        let name = user.name.as_bytes().to_vec();
        if self.by_name.contains_key(&name) {
            return Err(format!("user '{}' is listed twice", user.name));
        }
        self.by_name.insert(name, Arc::new(user));
        Ok(())
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }

    /// Whether `name` exists with the plaintext `password`, in time independent of the password.
    /// `None` when the user's secret is a hash: that check belongs to a verifier thread.
    pub fn verify_plain(&self, name: &[u8], password: &[u8]) -> Option<bool> {
        // Compare against a dummy for unknown users so both paths cost the same.
        const DUMMY: [u8; MAX_FIELD] = [0; MAX_FIELD];
        match self.by_name.get(name).map(|u| &u.secret) {
            Some(Secret::Plain(expected)) => Some(constant_time_eq(expected, password)),
            Some(Secret::Argon2id(_)) => None,
            None => {
                let _ = constant_time_eq(&DUMMY, password);
                Some(false)
            }
        }
    }
}

/// Why a reload ends a logged-in user's open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revoked {
    /// The user is no longer in the file.
    Removed,
    /// The account's `expires` has passed.
    Expired,
    /// The password (or hash) changed: whoever logged in with the old one is out.
    PasswordChanged,
}

impl Revoked {
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::Removed => "user removed",
            Revoked::Expired => "user expired",
            Revoked::PasswordChanged => "password changed",
        }
    }
}

/// Whether a connection logged in as `held` must end under the user set `now_users` at `now`.
/// Other changes (egress, caps, rules) apply to new connections only; a changed `rate-limit`
/// reaches open connections too, through the bucket they share (`src/ratelimit.rs`).
pub fn revocation(held: &User, now_users: &Users, now: SystemTime) -> Option<Revoked> {
    match now_users.get(held.name.as_bytes()) {
        None => Some(Revoked::Removed),
        Some(current) if current.secret != held.secret => Some(Revoked::PasswordChanged),
        Some(current) if current.expired_at(now) => Some(Revoked::Expired),
        Some(_) => None,
    }
}

/// Equality whose running time depends only on the lengths, not on where bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    let len = a.len().max(b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // Keep the optimizer from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn users(list: Vec<User>) -> Users {
        let mut set = Users::default();
        for user in list {
            set.add(user).unwrap();
        }
        set
    }

    #[test]
    fn plain_verification_and_hashes_deferred() {
        let mut hashed = User::plain("h", b"");
        hashed.secret =
            Secret::Argon2id("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into());
        let set = users(vec![User::plain("alice", b"wonder:land"), hashed]);
        assert_eq!(set.verify_plain(b"alice", b"wonder:land"), Some(true));
        assert_eq!(set.verify_plain(b"alice", b"wonder"), Some(false));
        assert_eq!(set.verify_plain(b"carol", b"x"), Some(false));
        assert_eq!(set.verify_plain(b"h", b"x"), None);
    }

    #[test]
    fn add_rejects_bad_names_and_duplicates() {
        let mut set = Users::default();
        assert!(set.add(User::plain("", b"x")).unwrap_err().contains("empty"));
        assert!(set.add(User::plain(&"u".repeat(256), b"x")).unwrap_err().contains("255"));
        set.add(User::plain("a", b"1")).unwrap();
        assert!(set.add(User::plain("a", b"2")).unwrap_err().contains("twice"));
        let mut bad_hash = User::plain("b", b"");
        bad_hash.secret = Secret::Argon2id("$2y$10$not-argon2".into());
        let err = set.add(bad_hash).unwrap_err();
        assert!(err.contains("invalid password hash"), "{err}");
    }

    #[test]
    fn egress_overlay_is_per_part() {
        let global =
            Egress { bind_out: Some(BindOut::Incoming), interface: Some("eth0".into()), fwmark: Some(1) };
        let user = Egress { fwmark: Some(7), ..Egress::default() };
        let merged = global.overlay(&user);
        assert_eq!(merged.bind_out, Some(BindOut::Incoming));
        assert_eq!(merged.interface.as_deref(), Some("eth0"));
        assert_eq!(merged.fwmark, Some(7));
        assert!(Egress::default().is_default());
    }

    #[test]
    fn user_dest_rules_narrow_and_deny() {
        let mut u = User::plain("u", b"p");
        assert!(u.allows_dest("192.0.2.1".parse().unwrap()));
        u.allow_dest = vec!["192.0.2.0/24".parse().unwrap()];
        u.deny_dest = vec!["192.0.2.128/25".parse().unwrap()];
        assert!(u.allows_dest("192.0.2.1".parse().unwrap()));
        assert!(!u.allows_dest("192.0.2.200".parse().unwrap()));
        assert!(!u.allows_dest("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn revocation_on_removal_password_change_and_expiry() {
        let now = SystemTime::now();
        let alice = User::plain("alice", b"one");
        let same = users(vec![alice.clone()]);
        assert_eq!(revocation(&alice, &same, now), None);
        assert_eq!(revocation(&alice, &Users::default(), now), Some(Revoked::Removed));
        let changed = users(vec![User::plain("alice", b"two")]);
        assert_eq!(revocation(&alice, &changed, now), Some(Revoked::PasswordChanged));
        let mut expiring = alice.clone();
        expiring.expires = Some(now - Duration::from_secs(1));
        assert_eq!(revocation(&alice, &users(vec![expiring]), now), Some(Revoked::Expired));
        // A change of settings only is not a revocation.
        let mut limited = alice.clone();
        limited.rate_limit = Some(1024);
        assert_eq!(revocation(&alice, &users(vec![limited]), now), None);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"\0"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let u = User::plain("alice", b"secret");
        assert!(!format!("{u:?}").contains("secret\""));
        assert!(!format!("{:?}", u.secret).contains("secret"));
    }
}
