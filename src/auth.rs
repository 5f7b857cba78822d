//! Credentials from an auth file: one `user:password` per line; `#` starts a comment line and
//! blank lines are ignored. The password is everything after the first `:`, so it may contain
//! colons. A single user may also come from the environment (`SOCKSLOOP_USER` and
//! `SOCKSLOOP_PASS`), never from the command line, where `ps` would show it.
//!
//! Both become [`User`]s without settings of their own (`src/users.rs`), beside the config
//! file's `[[users]]`. Plaintext passwords are compared in constant time, and an unknown user
//! costs the same comparison as a known one, so response timing tells an attacker neither.
//! Passwords are never logged.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::users::{User, Users};

/// Why an auth file (or config file) was rejected; names the file and line.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthFileError(pub String);

impl fmt::Display for AuthFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthFileError {}

/// Parse the text of an auth file; `source` names it in error messages.
pub fn parse_auth_file(text: &str, source: &str) -> Result<Users, AuthFileError> {
    let mut users = Users::default();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fail = |why: &str| AuthFileError(format!("{source}:{line_no}: {why}"));
        let Some((user, password)) = line.split_once(':') else {
            return Err(fail("expected user:password"));
        };
        users.add(User::plain(user, password.as_bytes())).map_err(|why| fail(&why))?;
    }
    if users.is_empty() {
        return Err(AuthFileError(format!("{source}: no users (expected lines of user:password)")));
    }
    Ok(users)
}

/// Read and parse an auth file.
pub fn load_auth_file(path: &Path) -> Result<Users, AuthFileError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AuthFileError(format!("{source}: {e}")))?;
    parse_auth_file(&text, &source)
}

/// Where auth-file credentials come from, so they can be read again on reload.
#[derive(Debug, Clone, Default)]
pub struct AuthSource {
    pub file: Option<PathBuf>,
    /// A single user from `SOCKSLOOP_USER` / `SOCKSLOOP_PASS`.
    pub env_user: Option<(String, String)>,
}

impl AuthSource {
    pub fn is_configured(&self) -> bool {
        self.file.is_some() || self.env_user.is_some()
    }

    /// Read the current users from the file and the environment user, added to `users`.
    pub fn load_into(&self, users: &mut Users) -> Result<(), AuthFileError> {
        if let Some(path) = &self.file {
            for user in load_auth_file(path)?.iter() {
                users
                    .add(User::clone(user))
                    .map_err(|why| AuthFileError(format!("{}: {why}", path.display())))?;
            }
        }
        if let Some((user, password)) = &self.env_user {
            users
                .add(User::plain(user, password.as_bytes()))
                .map_err(|why| AuthFileError(format!("SOCKSLOOP_USER: {why}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_comments_and_colons_in_passwords() {
        let text = "# users\nalice:wonder:land\n\n  # indented comment\nbob:b0b\r\n";
        let u = parse_auth_file(text, "users.txt").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u.verify_plain(b"alice", b"wonder:land"), Some(true));
        assert_eq!(u.verify_plain(b"bob", b"b0b"), Some(true));
        assert_eq!(u.verify_plain(b"bob", b"b0"), Some(false));
        assert_eq!(u.verify_plain(b"bob", b"b0b0"), Some(false));
        assert_eq!(u.verify_plain(b"carol", b"b0b"), Some(false));
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("alice:x\nno-colon\n", "users.txt:2: expected user:password"),
            (":pw\n", "users.txt:1: empty user name"),
            ("a:1\na:2\n", "users.txt:2: user 'a' is listed twice"),
            ("# only comments\n", "users.txt: no users"),
        ];
        for (text, expected) in cases {
            let err = parse_auth_file(text, "users.txt").unwrap_err();
            assert!(err.0.starts_with(expected), "{text:?} gave {err}");
        }
        let long = format!("{}:x\n", "u".repeat(256));
        assert!(parse_auth_file(&long, "f").unwrap_err().0.contains("255 bytes"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let u = parse_auth_file("alice:secret\n", "f").unwrap();
        assert_eq!(format!("{u:?}"), "Users(1 users)");
    }

    #[test]
    fn env_user_joins_the_file_users() {
        let source = AuthSource { file: None, env_user: Some(("env".into(), "pw".into())) };
        let mut users = Users::default();
        source.load_into(&mut users).unwrap();
        assert_eq!(users.verify_plain(b"env", b"pw"), Some(true));
    }
}
