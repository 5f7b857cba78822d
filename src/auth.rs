//! Credentials for RFC 1929 username/password authentication.
//!
//! The auth file holds one `user:password` per line; `#` starts a comment line and blank
//! lines are ignored. The password is everything after the first `:`, so it may contain
//! colons. A single user may also come from the environment (`SOCKSLOOP_USER` and
//! `SOCKSLOOP_PASS`), never from the command line, where `ps` would show it.
//!
//! Passwords are compared in constant time, and an unknown user costs the same comparison
//! as a known one, so response timing tells an attacker neither. Passwords are never logged.
//!
//! [`CredentialStore`] is what the event loop holds: a lock around the current set, swapped
//! whole on reload (SIGHUP), so a bad file on reload leaves the old set in place.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// RFC 1929 carries each field with a one-byte length.
const MAX_FIELD: usize = 255;

/// A set of users and their passwords.
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<Vec<u8>, Vec<u8>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

/// Why an auth file was rejected; names the file and line.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthFileError(pub String);

impl fmt::Display for AuthFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthFileError {}

impl Credentials {
    /// Parse the text of an auth file; `source` names it in error messages.
    pub fn parse(text: &str, source: &str) -> Result<Credentials, AuthFileError> {
        let mut credentials = Credentials::default();
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
            credentials.add(user.as_bytes(), password.as_bytes()).map_err(|why| fail(&why))?;
        }
        if credentials.users.is_empty() {
            return Err(AuthFileError(format!("{source}: no users (expected lines of user:password)")));
        }
        Ok(credentials)
    }

    /// Read and parse an auth file.
    pub fn load(path: &Path) -> Result<Credentials, AuthFileError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AuthFileError(format!("{source}: {e}")))?;
        Credentials::parse(&text, &source)
    }

    /// Add one user; fails on an empty or over-long field, or a duplicate user.
    pub fn add(&mut self, user: &[u8], password: &[u8]) -> Result<(), String> {
        if user.is_empty() {
            return Err("empty user name".into());
        }
        if user.len() > MAX_FIELD || password.len() > MAX_FIELD {
            return Err(format!("user name and password are limited to {MAX_FIELD} bytes (RFC 1929)"));
        }
        if self.users.insert(user.to_vec(), password.to_vec()).is_some() {
            return Err(format!("user '{}' is listed twice", String::from_utf8_lossy(user)));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` exists and `password` is theirs, in time independent of the password.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        // Compare against a dummy for unknown users so both paths cost the same.
        const DUMMY: [u8; MAX_FIELD] = [0; MAX_FIELD];
        match self.users.get(user) {
            Some(expected) => constant_time_eq(expected, password),
            None => {
                let _ = constant_time_eq(&DUMMY, password);
                false
            }
        }
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

/// Where credentials come from, so they can be read again on reload.
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

    /// Read the current credentials from the file and the environment user.
    pub fn load(&self) -> Result<Credentials, AuthFileError> {
        let mut credentials = match &self.file {
            Some(path) => Credentials::load(path)?,
            None => Credentials::default(),
        };
        if let Some((user, password)) = &self.env_user {
            credentials
                .add(user.as_bytes(), password.as_bytes())
                .map_err(|why| AuthFileError(format!("SOCKSLOOP_USER: {why}")))?;
        }
        Ok(credentials)
    }
}

/// The credentials the loop consults, replaceable while it runs.
#[derive(Debug)]
pub struct CredentialStore {
    source: AuthSource,
    current: RwLock<Arc<Credentials>>,
}

impl CredentialStore {
    pub fn open(source: AuthSource) -> Result<CredentialStore, AuthFileError> {
        let credentials = source.load()?;
        Ok(CredentialStore { source, current: RwLock::new(Arc::new(credentials)) })
    }

    pub fn current(&self) -> Arc<Credentials> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Read the source again; on error the old credentials stay. Returns the user count.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let fresh = Arc::new(self.source.load()?);
        let users = fresh.len();
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_comments_and_colons_in_passwords() {
        let text = "# users\nalice:wonder:land\n\n  # indented comment\nbob:b0b\r\n";
        let c = Credentials::parse(text, "users.txt").unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.verify(b"alice", b"wonder:land"));
        assert!(c.verify(b"bob", b"b0b"));
        assert!(!c.verify(b"bob", b"b0"));
        assert!(!c.verify(b"bob", b"b0b0"));
        assert!(!c.verify(b"carol", b"b0b"));
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
            let err = Credentials::parse(text, "users.txt").unwrap_err();
            assert!(err.0.starts_with(expected), "{text:?} gave {err}");
        }
        let long = format!("{}:x\n", "u".repeat(256));
        assert!(Credentials::parse(&long, "f").unwrap_err().0.contains("255 bytes"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::parse("alice:secret\n", "f").unwrap();
        assert_eq!(format!("{c:?}"), "Credentials(1 users)");
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
    fn reload_keeps_old_credentials_on_error() {
        let dir = std::env::temp_dir().join(format!("socksloop-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        std::fs::write(&path, "alice:one\n").unwrap();
        let store = CredentialStore::open(AuthSource { file: Some(path.clone()), env_user: None }).unwrap();
        assert!(store.current().verify(b"alice", b"one"));
        std::fs::write(&path, "alice:two\n").unwrap();
        assert_eq!(store.reload(), Ok(1));
        assert!(store.current().verify(b"alice", b"two"));
        std::fs::write(&path, "broken line\n").unwrap();
        assert!(store.reload().is_err());
        assert!(store.current().verify(b"alice", b"two"), "old set kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_user_joins_the_file_users() {
        let source = AuthSource { file: None, env_user: Some(("env".into(), "pw".into())) };
        let c = source.load().unwrap();
        assert!(c.verify(b"env", b"pw"));
    }
}
