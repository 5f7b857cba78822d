//! Username/password sub-negotiation (RFC 1929).
//!
//! ```text
//! request  +----+------+----------+------+----------+      response +----+--------+
//!          |VER | ULEN |  UNAME   | PLEN |  PASSWD  |               |VER | STATUS |
//!          | 1  |  1   | 1 to 255 |  1   | 1 to 255 |               | 1  |   1    |
//!          +----+------+----------+------+----------+               +----+--------+
//! ```
//! VER is 0x01 (the sub-negotiation's own version, not SOCKS's 5).

use super::{Invalid, Parse};

/// Version of the RFC 1929 sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;

/// Credentials as sent, borrowed from the input. Never log `password`.
#[derive(PartialEq, Eq)]
pub struct AuthRequest<'a> {
    pub username: &'a [u8],
    pub password: &'a [u8],
}

impl std::fmt::Debug for AuthRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("username", &String::from_utf8_lossy(self.username))
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parse `01 ULEN UNAME PLEN PASSWD`. Empty fields are returned as they are (RFC 1929 says
/// 1 to 255, but an empty name simply fails the credential check, which is the clearer answer).
pub fn parse_auth_request(input: &[u8]) -> Parse<AuthRequest<'_>> {
    let Some(&version) = input.first() else {
        return Parse::Partial;
    };
    if version != AUTH_VERSION {
        return Parse::Invalid(Invalid::BadVersion(version));
    }
    let Some(&ulen) = input.get(1) else {
        return Parse::Partial;
    };
    let user_end = 2 + usize::from(ulen);
    let (Some(username), Some(&plen)) = (input.get(2..user_end), input.get(user_end)) else {
        return Parse::Partial;
    };
    let pass_end = user_end + 1 + usize::from(plen);
    match input.get(user_end + 1..pass_end) {
        Some(password) => Parse::Complete(AuthRequest { username, password }, pass_end),
        None => Parse::Partial,
    }
}

/// The sub-negotiation's answer: STATUS 0 means success, anything else failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStatus {
    Success = 0x00,
    Failure = 0x01,
}

pub fn encode_auth_status(status: AuthStatus) -> [u8; 2] {
    [AUTH_VERSION, status as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_at_every_split() {
        let bytes = [1, 4, b'u', b's', b'e', b'r', 3, b'p', b'w', b'd'];
        for cut in 0..bytes.len() {
            assert_eq!(parse_auth_request(&bytes[..cut]), Parse::Partial, "cut {cut}");
        }
        let mut with_request = bytes.to_vec();
        with_request.extend_from_slice(&[5, 1, 0, 1]);
        assert_eq!(
            parse_auth_request(&with_request),
            Parse::Complete(AuthRequest { username: b"user", password: b"pwd" }, bytes.len())
        );
    }

    #[test]
    fn longest_fields() {
        let mut bytes = vec![1, 255];
        bytes.extend(std::iter::repeat_n(b'u', 255));
        bytes.push(255);
        bytes.extend(std::iter::repeat_n(b'p', 255));
        match parse_auth_request(&bytes) {
            Parse::Complete(req, used) => {
                assert_eq!(used, 513);
                assert_eq!(req.username.len(), 255);
                assert_eq!(req.password.len(), 255);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_version_is_invalid() {
        assert_eq!(parse_auth_request(&[5, 1, 0]), Parse::Invalid(Invalid::BadVersion(5)));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let req = AuthRequest { username: b"alice", password: b"hunter2" };
        let shown = format!("{req:?}");
        assert!(shown.contains("alice") && !shown.contains("hunter2"));
    }

    #[test]
    fn status_bytes() {
        assert_eq!(encode_auth_status(AuthStatus::Success), [1, 0]);
        assert_eq!(encode_auth_status(AuthStatus::Failure), [1, 1]);
    }
}
