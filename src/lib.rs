//! socksloop: a SOCKS5 proxy server on one single-threaded `mio` event loop.
//!
//! Reading order for newcomers (`docs/walkthrough.md` follows one CONNECT through them):
//! [`protocol`] (the pure codec), [`net`] (the I/O boundary), [`connection`] (one client's
//! state machine, a module per phase), `relay` (moving bytes with backpressure), and the
//! `server` (the loop that drives them all). `docs/architecture.md` draws the whole picture.
//!
//! The public modules are what the binary, the integration tests, the benches and the fuzz
//! targets use; the rest is private so the compiler can say when something is unused.
//! The reference a reader browses is built with the private items:
//! `cargo doc --no-deps --document-private-items --open`.

// The docs are meant to be read with private items (see above), so a public module's docs may
// point at the private types that do its work.
#![allow(rustdoc::private_intra_doc_links)]

pub mod acl;
pub mod auth;
pub mod config;
pub mod config_file;
mod connect;
pub mod connection;
pub mod dns;
pub mod limits;
pub mod listen;
pub mod logging;
mod metrics;
pub mod net;
pub mod protocol;
pub mod ratelimit;
mod relay;
pub mod resolver;
mod server;
pub mod settings;
pub mod sim;
pub mod systemd;
pub mod timer;
pub mod token;
pub mod usage;
pub mod users;
pub mod verifier;

pub use config::{Config, LogFormat, RelayMode};

/// What the `dns_response` fuzz target reaches of the (private) DNS client: the reply parser
/// and matcher. Only in fuzzing builds (`RUSTFLAGS="--cfg fuzzing"`, as cargo-fuzz sets).
#[cfg(fuzzing)]
pub mod dns_fuzz {
    pub use crate::dns::Family;
    pub use crate::dns::wire::{Question, Reply, parse_reply};
}
/// What the `metrics_request` fuzz target reaches of the (private) metrics endpoint: the
/// HTTP request parser and the routing and responses built on it. Only in fuzzing builds.
#[cfg(fuzzing)]
pub mod metrics_fuzz {
    pub use crate::metrics::http::{HttpError, MAX_HEAD, Request, Route, parse_request, response, route};
}
pub use server::{Heartbeats, Launch, Reloader, Server, StartError, Stopper};
