//! socksloop: a SOCKS5 proxy server on one single-threaded `mio` event loop.
//!
//! Reading order for newcomers: [`protocol`] (the pure codec), [`connection`] (one client's
//! state machine), [`relay`] (moving bytes with backpressure), [`server`] (the loop that
//! drives them all). `docs/architecture.md` draws the whole picture.

pub mod acl;
pub mod auth;
pub mod bind;
pub mod config;
pub mod connect;
pub mod connection;
pub mod limits;
pub mod listen;
pub mod protocol;
pub mod relay;
pub mod resolver;
pub mod server;
pub mod socket;
pub mod sockio;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod timer;
pub mod token;
pub mod udp_relay;

pub use config::{Config, RelayMode};
pub use server::{Server, StartError, Stopper};
