//! The hosts file (`/etc/hosts`), parsed once: a pure parser, text in, table out.
//!
//! Format (hosts(5)): one address per line followed by its names, separated by blanks; `#`
//! starts a comment. A line whose address does not parse (or carries a zone, `fe80::1%eth0`,
//! which a plain `IpAddr` cannot hold) is skipped, as are names that could never be asked for.
//! Names match without regard to case and without a trailing dot; a name listed on several
//! lines keeps every address, in file order, each once.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Family;
use crate::resolver::{NameCheck, check_name};

/// The addresses the hosts file gives each name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hosts {
    names: HashMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// Parse the text of a hosts file. Never fails: what cannot be understood is skipped.
    pub fn parse(text: &str) -> Hosts {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let Some(ip) = fields.next().and_then(|f| f.parse::<IpAddr>().ok()) else {
                continue;
            };
            for name in fields {
                if check_name(name) != NameCheck::Lookup {
                    continue;
                }
                let addrs = names.entry(normalize(name)).or_default();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
        Hosts { names }
    }

    /// Whether the file names `name` at all (with any family). `name` must be normalised
    /// (see [`normalize`]).
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The addresses of one family the file gives `name` (normalised), in file order.
    pub fn lookup(&self, name: &str, family: Family) -> Vec<IpAddr> {
        self.names
            .get(name)
            .map(|addrs| addrs.iter().copied().filter(|ip| Family::of(*ip) == family).collect())
            .unwrap_or_default()
    }

    /// How many names the file gives addresses to.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The form names are compared in: ASCII lower case, without a trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_names_and_comments() {
        let hosts = Hosts::parse(
            "# a comment line\n\
             127.0.0.1\tlocalhost\n\
             ::1     localhost ip6-localhost   # trailing comment\n\
             \n   \t\n\
             192.0.2.7 Web.Example.  web alias.example\n\
             192.0.2.8 web.example\n\
             192.0.2.7 web.example\n\
             2001:db8::7 web.example\n",
        );
        assert_eq!(hosts.lookup("localhost", Family::V4), vec![ip("127.0.0.1")]);
        assert_eq!(hosts.lookup("localhost", Family::V6), vec![ip("::1")]);
        assert_eq!(hosts.lookup("ip6-localhost", Family::V4), Vec::<IpAddr>::new());
        assert!(hosts.contains("ip6-localhost"));
        // Case and a trailing dot do not matter; file order kept, duplicates once.
        assert_eq!(hosts.lookup("web.example", Family::V4), vec![ip("192.0.2.7"), ip("192.0.2.8")]);
        assert_eq!(hosts.lookup("web.example", Family::V6), vec![ip("2001:db8::7")]);
        assert_eq!(hosts.lookup("alias.example", Family::V4), vec![ip("192.0.2.7")]);
        assert_eq!(hosts.lookup("web", Family::V4), vec![ip("192.0.2.7")], "a bare label is a name too");
        assert!(!hosts.contains("example"), "names are whole, never suffixes");
    }

    #[test]
    fn skips_what_it_cannot_use() {
        let hosts = Hosts::parse(
            "not-an-ip name.one\n\
             fe80::1%eth0 scoped.example\n\
             192.0.2.1\n\
             192.0.2.2 bad..name ok.example\n\
             300.1.1.1 overflow.example\n\
             192.0.2.3#comment-right-away glued.example\n",
        );
        assert!(!hosts.contains("name.one"));
        assert!(!hosts.contains("scoped.example"));
        assert!(!hosts.contains("bad..name"));
        assert!(!hosts.contains("overflow.example"));
        assert!(!hosts.contains("glued.example"), "the names after a # are a comment");
        assert_eq!(hosts.lookup("ok.example", Family::V4), vec![ip("192.0.2.2")]);
        assert_eq!(hosts.len(), 1);
    }

    #[test]
    fn empty_and_odd_input_gives_an_empty_table() {
        for text in ["", "\n\n", "#", "   ", "\u{feff}", "\0\0\0", "1.2.3.4 \u{e9}t\u{e9}.example"] {
            assert_eq!(Hosts::parse(text).len(), 0, "{text:?}");
        }
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("WWW.Example.COM."), "www.example.com");
        assert_eq!(normalize("a"), "a");
    }
}
