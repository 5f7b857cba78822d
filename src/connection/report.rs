//! What a finished connection reports: one [`Report`], from which the access log line in
//! either format (text: its `Display`; JSON: [`Report::json`]) and, later, the metrics are
//! made, so they can never disagree.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::logging::{JsonOption, JsonString, Rfc3339};

use crate::protocol::{Command, Reply, TargetAddr};

use super::{CloseReason, UdpStats};

/// Everything the access log and the metrics say about one connection, taken as it closes.
#[derive(Debug)]
pub struct Report<'a> {
    pub id: u64,
    /// The client (as a PROXY header named it, when one did).
    pub client: SocketAddr,
    pub user: Option<&'a str>,
    pub command: Option<Command>,
    /// The target as requested (an address or a name).
    pub target: Option<&'a TargetAddr>,
    /// The address actually connected to: CONNECT's winning attempt, BIND's peer.
    pub connected: Option<SocketAddr>,
    /// Our side of the outbound socket (the egress address).
    pub local: Option<SocketAddr>,
    pub reply: Option<Reply>,
    /// Payload bytes delivered to the target (up) and to the client (down), replies excluded.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// A UDP association's datagram counts.
    pub udp: Option<UdpStats>,
    pub duration: Duration,
    pub reason: CloseReason,
}

/// The text log line: `conn 7: 127.0.0.1:50000 -> example.com:443 reply 00 up 10 B down 20 B in
/// 0.120 s (done)`, with a second line of datagram counts before it for a UDP association.
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.udp {
            writeln!(
                f,
                "conn {}: UDP datagrams to targets {} to client {}; dropped: fragmented {} foreign {} denied {} other {}",
                self.id,
                s.to_targets,
                s.to_client,
                s.dropped_fragmented,
                s.dropped_foreign,
                s.dropped_denied,
                s.dropped_other
            )?;
        }
        write!(f, "conn {}: {} -> ", self.id, self.client)?;
        match self.target {
            Some(target) => write!(f, "{target}")?,
            None => f.write_str("-")?,
        }
        match self.reply {
            Some(reply) => write!(f, " reply {reply}")?,
            None => f.write_str(" reply -")?,
        }
        if let Some(user) = self.user {
            write!(f, " user '{}'", user.escape_debug())?;
        }
        write!(
            f,
            " up {} B down {} B in {:.3} s ({})",
            self.bytes_up,
            self.bytes_down,
            self.duration.as_secs_f64(),
            self.reason
        )
    }
}

impl Report<'_> {
    /// The JSON access-log line (`--log-format json`) of a connection that closed at `at`:
    /// one object, no newline.
    pub fn json(&self, at: SystemTime) -> JsonReport<'_> {
        JsonReport { report: self, at }
    }
}

/// A [`Report`] as one JSON object, written by its `Display`:
///
/// ```text
/// {"ts":"2026-11-29T20:46:09.054Z","conn":7,"client":"127.0.0.1:50000","user":null,
///  "command":"connect","target":"example.com:443","connected":"93.184.215.14:443",
///  "local":"192.0.2.1:40000","reply":"succeeded","bytes_up":10,"bytes_down":20,
///  "duration_ms":120.532,"reason":"done"}
/// ```
///
/// (on one line). Absent values are `null`: `user` without authentication, `command` and
/// `target` when no request came, `connected` and `local` when nothing was connected, `reply`
/// when none was sent. `reply` is RFC 1928's name ([`Reply::name`]), `duration_ms`
/// milliseconds with microseconds as the fraction. A UDP association adds `datagrams_up`,
/// `datagrams_down` and `datagrams_dropped` (all reasons together).
pub struct JsonReport<'a> {
    report: &'a Report<'a>,
    at: SystemTime,
}

impl fmt::Display for JsonReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        write!(
            f,
            "{{\"ts\":\"{}\",\"conn\":{},\"client\":{},\"user\":{},\"command\":{},\"target\":{},\
             \"connected\":{},\"local\":{},\"reply\":{},\"bytes_up\":{},\"bytes_down\":{},\
             \"duration_ms\":{:.3},\"reason\":{}",
            Rfc3339(self.at),
            r.id,
            JsonString(r.client),
            JsonOption(r.user),
            JsonOption(r.command.map(Command::name)),
            JsonOption(r.target),
            JsonOption(r.connected),
            JsonOption(r.local),
            JsonOption(r.reply.map(Reply::name)),
            r.bytes_up,
            r.bytes_down,
            r.duration.as_secs_f64() * 1000.0,
            JsonString(r.reason),
        )?;
        if let Some(s) = &r.udp {
            let dropped = s.dropped_fragmented + s.dropped_foreign + s.dropped_denied + s.dropped_other;
            write!(
                f,
                ",\"datagrams_up\":{},\"datagrams_down\":{},\"datagrams_dropped\":{dropped}",
                s.to_targets, s.to_client
            )?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_985_169_054)
    }

    fn connect_report(target: &TargetAddr) -> Report<'_> {
        Report {
            id: 7,
            client: "127.0.0.1:50000".parse().unwrap(),
            user: None,
            command: Some(Command::Connect),
            target: Some(target),
            connected: Some("93.184.215.14:443".parse().unwrap()),
            local: Some("192.0.2.1:40000".parse().unwrap()),
            reply: Some(Reply::Succeeded),
            bytes_up: 10,
            bytes_down: 20,
            udp: None,
            duration: Duration::from_micros(120_532),
            reason: CloseReason::Done,
        }
    }

    #[test]
    fn json_connect() {
        let target = TargetAddr::Domain("example.com".into(), 443);
        assert_eq!(
            connect_report(&target).json(at()).to_string(),
            concat!(
                r#"{"ts":"2026-11-29T20:46:09.054Z","conn":7,"client":"127.0.0.1:50000","user":null,"#,
                r#""command":"connect","target":"example.com:443","connected":"93.184.215.14:443","#,
                r#""local":"192.0.2.1:40000","reply":"succeeded","bytes_up":10,"bytes_down":20,"#,
                r#""duration_ms":120.532,"reason":"done"}"#
            )
        );
    }

    /// A client that closed before its request: everything about the request is null.
    #[test]
    fn json_nothing_requested() {
        let report = Report {
            id: 1,
            client: "[2001:db8::1]:1".parse().unwrap(),
            user: None,
            command: None,
            target: None,
            connected: None,
            local: None,
            reply: None,
            bytes_up: 0,
            bytes_down: 0,
            udp: None,
            duration: Duration::ZERO,
            reason: CloseReason::ClientClosedHandshake,
        };
        assert_eq!(
            report.json(at()).to_string(),
            concat!(
                r#"{"ts":"2026-11-29T20:46:09.054Z","conn":1,"client":"[2001:db8::1]:1","user":null,"#,
                r#""command":null,"target":null,"connected":null,"local":null,"reply":null,"#,
                r#""bytes_up":0,"bytes_down":0,"duration_ms":0.000,"reason":"client closed during handshake"}"#
            )
        );
    }

    #[test]
    fn json_refused_udp_and_users() {
        let target = TargetAddr::Ip("127.0.0.1:9".parse().unwrap());
        let mut report = connect_report(&target);
        report.connected = None;
        report.local = None;
        report.reply = Some(Reply::ConnectionRefused);
        report.reason = CloseReason::Rejected;
        let json = report.json(at()).to_string();
        assert!(
            json.contains(
                r#""target":"127.0.0.1:9","connected":null,"local":null,"reply":"connection_refused""#
            ),
            "{json}"
        );

        report.command = Some(Command::UdpAssociate);
        report.udp = Some(UdpStats {
            to_targets: 3,
            to_client: 2,
            dropped_fragmented: 1,
            dropped_foreign: 2,
            dropped_denied: 3,
            dropped_other: 4,
        });
        let json = report.json(at()).to_string();
        assert!(json.contains(r#""command":"udp_associate""#), "{json}");
        assert!(
            json.ends_with(
                r#""reason":"rejected","datagrams_up":3,"datagrams_down":2,"datagrams_dropped":10}"#
            ),
            "{json}"
        );

        for (user, expected) in [
            ("alice", r#""user":"alice""#),
            (r#"we"ird\user"#, r#""user":"we\"ird\\user""#),
            ("tab\tnew\nline\u{1b}", r#""user":"tab\tnew\nline\u001b""#),
        ] {
            report.user = Some(user);
            let json = report.json(at()).to_string();
            assert!(json.contains(expected), "{user:?}: {json}");
            assert!(!json.contains('\n'), "one line: {json}");
        }

        let odd = TargetAddr::Domain("a\"b\\c".into(), 80);
        let json = connect_report(&odd).json(at()).to_string();
        assert!(json.contains(r#""target":"a\"b\\c:80""#), "{json}");
    }
}
