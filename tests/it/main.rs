//! Integration tests for socksloop: real sockets on loopback against the in-process server
//! and the binary. Helpers live in `support`; each other module covers one topic.

mod access;
mod cli;
mod connect;
mod curl;
mod exhaustion;
mod faults;
mod handshake;
mod lifecycle;
mod limits;
mod memory;
mod protocol_ext;
mod reliability;
mod scale;
mod soak;
mod splice;
mod support;
mod timeouts;
mod transfer;
