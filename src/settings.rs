//! The part of the configuration that a reload (SIGHUP) replaces while the server runs: users,
//! client and destination rules, egress, per-client limits.
//!
//! The rest of [`Config`] (listeners, workers, timeouts, relay mode) is fixed at start: changing
//! it would mean rebinding sockets or rebuilding loops under open connections.
//!
//! [`SettingsStore`] is shared by the workers. A reload builds a complete new [`Settings`]
//! first and swaps it in whole, so a file with an error changes nothing. Each loop keeps its
//! own `Arc<Settings>` and compares [`SettingsStore::generation`] once per pass (an atomic
//! load, no lock on the hot path); when it moved, the loop takes the new settings and ends the
//! connections of users the new set revokes ([`crate::users::revocation`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::acl::Rules;
use crate::auth::AuthFileError;
use crate::config::Config;
use crate::ratelimit::RateLimits;
use crate::users::{Egress, Users};

/// What new connections are checked against.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Who may log in; empty: no authentication.
    pub users: Users,
    pub rules: Rules,
    /// The global egress; a user's own overlays it.
    pub egress: Egress,
    /// Simultaneous connections from one client IP address, over all workers.
    pub max_connections_per_client: Option<usize>,
    /// The limited users' token buckets, shared by every worker and carried across reloads.
    pub rate_limits: RateLimits,
}

impl Settings {
    /// The settings `config` describes, reading the auth file it names.
    pub fn from_config(config: &Config) -> Result<Settings, AuthFileError> {
        let mut users = config.users.clone();
        config.auth.load_into(&mut users)?;
        Ok(Settings {
            rate_limits: RateLimits::default().carry_over(&users, std::time::Instant::now()),
            users,
            rules: config.rules.clone(),
            egress: config.egress(),
            max_connections_per_client: config.max_connections_per_client,
        })
    }

    /// Whether clients must log in (RFC 1929).
    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }
}

/// Reads the configuration again (the command line and the config file it names).
pub type Reread = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What a successful reload changed, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub users: usize,
    /// The file asks for other listeners than the running ones: not applied.
    pub listeners_ignored: bool,
}

/// The current settings, replaceable while the loops run.
pub struct SettingsStore {
    current: RwLock<Arc<Settings>>,
    generation: AtomicU64,
    reread: Reread,
    /// Fixed at start: a server that required passwords keeps requiring them.
    auth_required: bool,
    listen: Vec<std::net::SocketAddr>,
}

impl std::fmt::Debug for SettingsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SettingsStore(generation {})", self.generation())
    }
}

impl SettingsStore {
    /// The settings of `config`; `reread` produces the configuration again on reload.
    pub fn open(config: &Config, reread: Reread) -> Result<SettingsStore, AuthFileError> {
        let settings = Settings::from_config(config)?;
        Ok(SettingsStore {
            auth_required: settings.auth_required(),
            current: RwLock::new(Arc::new(settings)),
            generation: AtomicU64::new(0),
            reread,
            listen: config.listen.clone(),
        })
    }

    /// A store that re-reads only `config`'s auth file on reload (library use, tests).
    pub fn of(config: &Config) -> Result<SettingsStore, AuthFileError> {
        let again = config.clone();
        SettingsStore::open(config, Box::new(move || Ok(again.clone())))
    }

    pub fn current(&self) -> Arc<Settings> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Bumped by every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Read the configuration again and swap the new settings in whole; on any error the old
    /// ones stay. The caller wakes the loops.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let config = (self.reread)()?;
        let mut fresh = Settings::from_config(&config).map_err(|e| e.0)?;
        if self.auth_required && !fresh.auth_required() {
            return Err("the new configuration has no users, but this server requires authentication \
                        (restart it to turn authentication off)"
                .into());
        }
        if !self.auth_required && fresh.auth_required() {
            return Err("the new configuration adds users, but this server runs without \
                        authentication (restart it to turn authentication on)"
                .into());
        }
        let reloaded = Reloaded { users: fresh.users.len(), listeners_ignored: config.listen != self.listen };
        // The users' buckets go on (a changed rate applies to open connections at once).
        fresh.rate_limits = self.current().rate_limits.carry_over(&fresh.users, std::time::Instant::now());
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(reloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthSource;
    use std::sync::Mutex;

    #[test]
    fn reload_keeps_old_settings_on_error() {
        let dir = std::env::temp_dir().join(format!("socksloop-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        std::fs::write(&path, "alice:one\n").unwrap();
        let config =
            Config { auth: AuthSource { file: Some(path.clone()), env_user: None }, ..Config::default() };
        let store = SettingsStore::of(&config).unwrap();
        assert_eq!(store.current().users.verify_plain(b"alice", b"one"), Some(true));
        std::fs::write(&path, "alice:two\n").unwrap();
        assert_eq!(store.reload(), Ok(Reloaded { users: 1, listeners_ignored: false }));
        assert_eq!(store.generation(), 1);
        assert_eq!(store.current().users.verify_plain(b"alice", b"two"), Some(true));
        std::fs::write(&path, "broken line\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.generation(), 1, "a failed reload is not a new generation");
        assert_eq!(store.current().users.verify_plain(b"alice", b"two"), Some(true), "old set kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_cannot_switch_authentication_or_listeners() {
        let next = Arc::new(Mutex::new(Config::default()));
        let source = Arc::clone(&next);
        let reread: Reread = Box::new(move || Ok(source.lock().unwrap().clone()));
        let store = SettingsStore::open(&Config::default(), reread).unwrap();
        assert!(!store.current().auth_required());
        next.lock().unwrap().auth.env_user = Some(("u".into(), "p".into()));
        assert!(store.reload().unwrap_err().contains("restart"));
        next.lock().unwrap().auth.env_user = None;
        next.lock().unwrap().listen = vec!["127.0.0.1:1".parse().unwrap()];
        assert_eq!(store.reload(), Ok(Reloaded { users: 0, listeners_ignored: true }));
    }
}
