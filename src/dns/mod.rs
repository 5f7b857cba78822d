//! A DNS client that runs inside the event loop (being built): the pure parts first, the
//! hosts file ([`hosts`]), the answer cache ([`cache`]) and the wire format ([`wire`]).

// Wired into the loop by the next change.
#![allow(dead_code)]

pub mod cache;
pub mod hosts;
pub mod wire;

use std::net::IpAddr;

/// An address family: which query (AAAA or A) an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}
