//! Integration tests for socksloop: real sockets on loopback against the in-process server
//! and the binary. One module per feature; helpers live in `support/`.

mod access_log;
mod auth;
mod bind;
mod cli;
mod config_file;
mod connect;
mod curl;
mod dns;
mod egress;
mod exhaustion;
mod faults;
mod handshake;
mod happy_eyeballs;
mod keepalive;
mod lifecycle;
mod limits;
mod metrics;
mod passwords;
mod per_user;
mod proxy_protocol;
mod ratelimit;
mod relay;
mod rules;
mod scale;
mod soak;
mod socks4;
mod support;
mod systemd;
mod timeouts;
mod udp;
