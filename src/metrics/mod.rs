//! Prometheus metrics (`--metrics ADDR:PORT`): counters each event loop keeps for itself, and
//! the `/metrics` endpoint that worker 0's loop serves from all of them.
//!
//! # Who owns what
//!
//! Every worker owns one [`WorkerMetrics`]: plain atomics, written **only by that worker's
//! thread**, so an increment is a relaxed load and a relaxed store (no locked instruction, no
//! lock, no contention: [`Counter::add`]), on a cache line no other writer touches. The
//! [`Registry`] holds every worker's `Arc`; when a scrape arrives, worker 0 reads them all
//! (relaxed loads) and writes their sums. A scrape therefore sees each counter as it was a
//! moment ago on its worker, and two counters of one worker are not read at one instant:
//! fine for monitoring, which only ever looks at rates and trends.
//!
//! Without `--metrics` no `WorkerMetrics` exists and the loop skips every update behind one
//! `Option` check, so the counters cost nothing unless asked for (measured with and without
//! in `docs/benchmarks.md`, "Metrics on vs off").
//!
//! # What is counted where
//!
//! * The loop counts what it sees itself: accepted and denied clients, the open connections
//!   (a gauge set once per pass), the resolver threads' and the in-loop DNS client's answers,
//!   and the DNS client's own counters ([`crate::dns::DnsStats`], copied once per pass).
//! * Around every drive of a connection the loop takes a [`Tally`] before and after and
//!   counts the difference ([`WorkerMetrics::on_progress`]): relayed bytes and datagrams as
//!   they are delivered, and the handshake and connect latencies once each, when known.
//! * When a connection closes, its [`Report`] gives the request (command and reply) and the
//!   close reason ([`WorkerMetrics::on_close`]).
//!
//! [`Report`]: crate::connection::Report
//!
//! The exposition ([`Registry::render`]) and the HTTP side ([`endpoint`], [`http`]) are in
//! their own modules; the `process_*` metrics are read from `/proc` at scrape time
//! ([`process`]).

pub mod endpoint;
pub mod exposition;
pub mod http;
pub mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::connection::{CloseReason, Tally};
use crate::dns::{DnsError, DnsStats};
use crate::protocol::{Command, Reply};
use crate::usage::Usage;

use self::exposition::{Exposition, Kind};
use self::process::ProcessStats;

/// A count written by one thread and read by any: [`Counter::add`] is a relaxed load and a
/// relaxed store, not a read-modify-write, which is exact only because a single thread (the
/// worker that owns it) ever writes it. Readers see a recent value, never a torn one.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning worker's thread may call this (see the type's docs).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Set it (a gauge). Only the owning worker's thread may call this.
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds: 100 µs (a loopback
/// handshake) to 10 s (the default handshake and connect timeouts).
pub const LATENCY_BOUNDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A histogram of durations with [`LATENCY_BOUNDS`]: one counter per bucket (not
/// cumulative; the exposition adds them up) and one above the last bound, and the sum in
/// nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BOUNDS.len() + 1],
    sum_nanos: Counter,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].inc();
        self.sum_nanos.add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Directions of relayed bytes and datagrams: up is client → target.
const DIRECTIONS: [&str; 2] = ["up", "down"];

/// The `command` label of a request whose command byte was not one of the three (reply 07).
const UNKNOWN_COMMAND: &str = "unknown";

/// How a lookup ended (`socksloop_dns_lookups_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    Ok,
    NxDomain,
    Timeout,
    Error,
}

impl LookupResult {
    const ALL: [LookupResult; 4] =
        [LookupResult::Ok, LookupResult::NxDomain, LookupResult::Timeout, LookupResult::Error];

    fn label(self) -> &'static str {
        match self {
            LookupResult::Ok => "ok",
            LookupResult::NxDomain => "nxdomain",
            LookupResult::Timeout => "timeout",
            LookupResult::Error => "error",
        }
    }

    /// The in-loop DNS client's answer for one family.
    pub fn of_dns<T>(result: &Result<T, DnsError>) -> LookupResult {
        match result {
            Ok(_) => LookupResult::Ok,
            Err(DnsError::NxDomain) => LookupResult::NxDomain,
            Err(DnsError::Timeout) => LookupResult::Timeout,
            Err(_) => LookupResult::Error,
        }
    }
}

/// The in-loop DNS client's own counters, copied from its [`DnsStats`] once per pass.
#[derive(Debug, Default)]
struct DnsCounters {
    hits: Counter,
    misses: Counter,
    coalesced: Counter,
    queries_sent: Counter,
    tcp_retries: Counter,
    ignored: Counter,
    in_flight: Counter,
    cached: Counter,
}

/// One worker's counters. Aligned to 128 bytes (two cache lines, for the adjacent-line
/// prefetcher) so that two workers' counters never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerMetrics {
    accepted: Counter,
    denied: Counter,
    active: Counter,
    /// `[command][reply]`; command index 3 is "unknown".
    requests: [[Counter; Reply::ALL.len()]; Command::ALL.len() + 1],
    auth_failures: Counter,
    closed: [Counter; CloseReason::ALL.len()],
    relay_bytes: [Counter; 2],
    udp_datagrams: [Counter; 2],
    handshake: Histogram,
    connect: Histogram,
    lookups: [Counter; LookupResult::ALL.len()],
    dns: DnsCounters,
}

impl WorkerMetrics {
    /// A client was accepted into the connection table.
    pub fn on_accept(&self) {
        self.accepted.inc();
    }

    /// A client was closed at accept by `--allow-client`, before any byte.
    pub fn on_deny(&self) {
        self.denied.inc();
    }

    /// The connections open on this worker now.
    pub fn set_active(&self, n: usize) {
        self.active.set(n as u64);
    }

    /// A drive of one connection moved it from `before` to `after`.
    #[inline]
    pub fn on_progress(&self, before: &Tally, after: &Tally) {
        if before == after {
            return;
        }
        // A phase change can only raise these (a relay starts from its first bytes).
        self.relay_bytes[0].add(after.bytes_up.saturating_sub(before.bytes_up));
        self.relay_bytes[1].add(after.bytes_down.saturating_sub(before.bytes_down));
        self.udp_datagrams[0].add(after.datagrams_up.saturating_sub(before.datagrams_up));
        self.udp_datagrams[1].add(after.datagrams_down.saturating_sub(before.datagrams_down));
        // Each latency once, when its second instant appears (the arithmetic only then).
        if before.requested.is_none()
            && let Some(d) = after.handshake()
        {
            self.handshake.observe(d);
        }
        if before.upstream_connected.is_none()
            && let Some(d) = after.connect()
        {
            self.connect.observe(d);
        }
        if !before.auth_failed && after.auth_failed {
            self.auth_failures.inc();
        }
    }

    /// A connection closed (the loop passes its [`Report`](crate::connection::Report)'s fields): its request, if it got
    /// a reply, and its reason.
    pub fn on_close(&self, command: Option<Command>, reply: Option<Reply>, reason: CloseReason) {
        self.closed[reason.index()].inc();
        if let Some(reply) = reply {
            let command = command.map_or(Command::ALL.len(), |c| c as usize - 1);
            self.requests[command][usize::from(reply.code())].inc();
        }
    }

    /// A lookup's answer (the resolver threads': one per lookup; the in-loop client's: one
    /// per address family).
    pub fn on_lookup(&self, result: LookupResult) {
        self.lookups[result as usize].inc();
    }

    /// Copy the in-loop DNS client's counters.
    pub fn publish_dns(&self, stats: &DnsStats) {
        let d = &self.dns;
        d.hits.set(stats.hits);
        d.misses.set(stats.misses);
        d.coalesced.set(stats.coalesced);
        d.queries_sent.set(stats.queries_sent);
        d.tcp_retries.set(stats.tcp_retries);
        d.ignored.set(stats.ignored);
        d.in_flight.set(stats.in_flight as u64);
        d.cached.set(stats.cached as u64);
    }
}

/// Picks one counter out of a worker's.
type Pick = fn(&WorkerMetrics) -> &Counter;

/// Every worker's counters, and what the exposition needs to know about the process.
#[derive(Debug)]
pub struct Registry {
    workers: Vec<Arc<WorkerMetrics>>,
    /// The in-loop DNS client runs (`--nameserver`): its families are written.
    in_loop_dns: bool,
    /// The per-user numbers (shared by every worker; counted there, not here).
    usage: Option<Arc<Usage>>,
}

impl Registry {
    pub fn new(workers: usize, in_loop_dns: bool) -> Registry {
        Registry { workers: (0..workers.max(1)).map(|_| Arc::default()).collect(), in_loop_dns, usage: None }
    }

    /// Also expose the per-user families from `usage`.
    pub fn with_usage(mut self, usage: Arc<Usage>) -> Registry {
        self.usage = Some(usage);
        self
    }

    /// Worker `index`'s counters, for that worker to write.
    pub fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        Arc::clone(&self.workers[index])
    }

    /// The sum over every worker of what `read` picks out.
    fn sum(&self, read: impl Fn(&WorkerMetrics) -> &Counter) -> u64 {
        self.workers.iter().map(|w| read(w).get()).fold(0, u64::wrapping_add)
    }

    /// The exposition: every family, summed over the workers, then the process's.
    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        self.write_connections(&mut e);
        self.write_relay(&mut e);
        self.write_users(&mut e);
        self.write_dns(&mut e);
        ProcessStats::read().write(&mut e);
        e.finish()
    }

    fn write_connections(&self, e: &mut Exposition) {
        e.family("socksloop_build_info", Kind::Gauge, "The running version; always 1.");
        e.sample("socksloop_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1u64);
        e.single(
            "socksloop_connections_accepted_total",
            Kind::Counter,
            "Client connections accepted (and not denied by --allow-client at accept).",
            self.sum(|w| &w.accepted),
        );
        e.single(
            "socksloop_connections_denied_total",
            Kind::Counter,
            "Client connections closed at accept by --allow-client, before any byte.",
            self.sum(|w| &w.denied),
        );
        e.single(
            "socksloop_connections_active",
            Kind::Gauge,
            "Client connections open now (in any phase), as of each worker's last loop pass.",
            self.sum(|w| &w.active),
        );
        e.family(
            "socksloop_requests_total",
            Kind::Counter,
            "Requests answered, by command and RFC 1928 reply, counted when the connection closes \
             (a BIND's is its last reply). command=\"unknown\": a CMD byte that is no command.",
        );
        for (c, command) in Command::ALL.iter().map(|c| c.name()).chain([UNKNOWN_COMMAND]).enumerate() {
            for reply in Reply::ALL {
                let count = self.sum(|w| &w.requests[c][usize::from(reply.code())]);
                // An unknown command can only be answered "command not supported".
                if command != UNKNOWN_COMMAND || reply == Reply::CommandNotSupported || count > 0 {
                    e.sample(
                        "socksloop_requests_total",
                        &[("command", command), ("reply", reply.name())],
                        count,
                    );
                }
            }
        }
        e.single(
            "socksloop_auth_failures_total",
            Kind::Counter,
            "RFC 1929 username/password sub-negotiations that failed (wrong user or password).",
            self.sum(|w| &w.auth_failures),
        );
        e.family("socksloop_closed_total", Kind::Counter, "Client connections closed, by reason.");
        for reason in CloseReason::ALL {
            e.sample(
                "socksloop_closed_total",
                &[("reason", reason.label())],
                self.sum(|w| &w.closed[reason.index()]),
            );
        }
        self.write_histogram(
            e,
            "socksloop_handshake_seconds",
            "Time from accept until the request was complete (greeting, authentication, request), \
             observed when it completes.",
            |w| &w.handshake,
        );
        self.write_histogram(
            e,
            "socksloop_connect_seconds",
            "Time from a CONNECT's complete request until its upstream connected (resolution and \
             every Happy Eyeballs attempt included), successful connects only.",
            |w| &w.connect,
        );
    }

    fn write_histogram(
        &self,
        e: &mut Exposition,
        name: &str,
        help: &str,
        pick: impl Fn(&WorkerMetrics) -> &Histogram,
    ) {
        let mut counts = [0u64; LATENCY_BOUNDS.len() + 1];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = self.sum(|w| &pick(w).buckets[i]);
        }
        let sum = self.sum(|w| &pick(w).sum_nanos) as f64 / 1e9;
        e.histogram(name, help, &LATENCY_BOUNDS, &counts, sum);
    }

    fn write_relay(&self, e: &mut Exposition) {
        e.family(
            "socksloop_relay_bytes_total",
            Kind::Counter,
            "Payload bytes relayed (CONNECT and BIND), counted as they are delivered: up to the \
             target, down to the client; SOCKS replies excluded.",
        );
        for (i, direction) in DIRECTIONS.iter().enumerate() {
            e.sample(
                "socksloop_relay_bytes_total",
                &[("direction", direction)],
                self.sum(|w| &w.relay_bytes[i]),
            );
        }
        e.family(
            "socksloop_udp_datagrams_total",
            Kind::Counter,
            "UDP ASSOCIATE datagrams relayed, counted as they are sent: up to targets, down to \
             the client.",
        );
        for (i, direction) in DIRECTIONS.iter().enumerate() {
            e.sample(
                "socksloop_udp_datagrams_total",
                &[("direction", direction)],
                self.sum(|w| &w.udp_datagrams[i]),
            );
        }
    }

    /// One series per user seen since the start (auth users only; a user removed by a reload
    /// keeps its last values until the process restarts).
    fn write_users(&self, e: &mut Exposition) {
        let Some(usage) = &self.usage else { return };
        let users = usage.users();
        e.family(
            "socksloop_user_connections_total",
            Kind::Counter,
            "Requests of each user that were served (not refused by a connection cap).",
        );
        for u in &users {
            e.sample("socksloop_user_connections_total", &[("user", &u.name)], u.connections);
        }
        e.family(
            "socksloop_user_connections_active",
            Kind::Gauge,
            "Each user's connections open now (past their request), over all workers.",
        );
        for u in &users {
            e.sample("socksloop_user_connections_active", &[("user", &u.name)], u.open as u64);
        }
        e.family(
            "socksloop_user_relay_bytes_total",
            Kind::Counter,
            "Payload bytes relayed for each user (CONNECT and BIND), as they are delivered: up to \
             the target, down to the client.",
        );
        for u in &users {
            for (direction, bytes) in [("up", u.bytes_up), ("down", u.bytes_down)] {
                e.sample(
                    "socksloop_user_relay_bytes_total",
                    &[("user", &u.name), ("direction", direction)],
                    bytes,
                );
            }
        }
    }

    fn write_dns(&self, e: &mut Exposition) {
        e.family(
            "socksloop_dns_lookups_total",
            Kind::Counter,
            "Name lookups answered, by result. The resolver threads answer once per lookup (ok or \
             error); the in-loop client (--nameserver) once per address family (AAAA and A).",
        );
        for result in LookupResult::ALL {
            e.sample(
                "socksloop_dns_lookups_total",
                &[("result", result.label())],
                self.sum(|w| &w.lookups[result as usize]),
            );
        }
        if !self.in_loop_dns {
            return;
        }
        let families: [(&str, Kind, &str, Pick); 8] = [
            (
                "socksloop_dns_cache_hits_total",
                Kind::Counter,
                "In-loop DNS: lookups (per family) answered without a query: the cache (positive or \
                 negative), the hosts file or an IP literal.",
                |w| &w.dns.hits,
            ),
            (
                "socksloop_dns_cache_misses_total",
                Kind::Counter,
                "In-loop DNS: lookups (per family) that waited for a query, their own or one in flight.",
                |w| &w.dns.misses,
            ),
            (
                "socksloop_dns_coalesced_total",
                Kind::Counter,
                "In-loop DNS: misses that joined a query already in flight.",
                |w| &w.dns.coalesced,
            ),
            (
                "socksloop_dns_queries_sent_total",
                Kind::Counter,
                "In-loop DNS: queries sent to nameservers, over UDP and TCP.",
                |w| &w.dns.queries_sent,
            ),
            (
                "socksloop_dns_tcp_retries_total",
                Kind::Counter,
                "In-loop DNS: truncated UDP replies asked again over TCP.",
                |w| &w.dns.tcp_retries,
            ),
            (
                "socksloop_dns_replies_ignored_total",
                Kind::Counter,
                "In-loop DNS: replies that matched no query (wrong id, question or source, or malformed).",
                |w| &w.dns.ignored,
            ),
            ("socksloop_dns_queries_in_flight", Kind::Gauge, "In-loop DNS: queries in flight now.", |w| {
                &w.dns.in_flight
            }),
            ("socksloop_dns_cache_entries", Kind::Gauge, "In-loop DNS: answers cached now.", |w| {
                &w.dns.cached
            }),
        ];
        for (name, kind, help, read) in families {
            e.single(name, kind, help, self.sum(read));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The value of the sample whose line starts with `series ` in an exposition.
    fn value(text: &str, series: &str) -> String {
        let prefix = format!("{series} ");
        let line =
            text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[prefix.len()..].to_string()
    }

    #[test]
    fn counters_from_two_workers_are_summed() {
        let registry = Registry::new(2, false);
        let (w0, w1) = (registry.worker(0), registry.worker(1));
        w0.on_accept();
        w1.on_accept();
        w1.on_accept();
        w0.set_active(1);
        w1.set_active(2);
        let fresh = Tally::new(Instant::now());
        let relayed = Tally { bytes_up: 100, bytes_down: 250, ..fresh };
        w0.on_progress(&fresh, &relayed);
        w1.on_progress(&relayed, &Tally { bytes_up: 110, ..relayed });
        w0.on_close(Some(Command::Connect), Some(Reply::Succeeded), CloseReason::Done);
        w1.on_close(Some(Command::Connect), Some(Reply::Succeeded), CloseReason::Done);
        w1.on_close(Some(Command::Connect), Some(Reply::ConnectionRefused), CloseReason::Rejected);
        w1.on_close(None, Some(Reply::CommandNotSupported), CloseReason::Rejected);
        w0.on_close(None, None, CloseReason::HandshakeTimeout);
        w0.on_lookup(LookupResult::Ok);
        w1.on_lookup(LookupResult::Error);
        let text = registry.render();
        assert_eq!(value(&text, "socksloop_connections_accepted_total"), "3");
        assert_eq!(value(&text, "socksloop_connections_active"), "3");
        assert_eq!(value(&text, r#"socksloop_relay_bytes_total{direction="up"}"#), "110");
        assert_eq!(value(&text, r#"socksloop_relay_bytes_total{direction="down"}"#), "250");
        assert_eq!(value(&text, r#"socksloop_requests_total{command="connect",reply="succeeded"}"#), "2");
        assert_eq!(
            value(&text, r#"socksloop_requests_total{command="connect",reply="connection_refused"}"#),
            "1"
        );
        assert_eq!(value(&text, r#"socksloop_requests_total{command="bind",reply="ttl_expired"}"#), "0");
        assert_eq!(
            value(&text, r#"socksloop_requests_total{command="unknown",reply="command_not_supported"}"#),
            "1"
        );
        assert!(!text.contains(r#"command="unknown",reply="succeeded""#), "impossible series left out");
        assert_eq!(value(&text, r#"socksloop_closed_total{reason="done"}"#), "2");
        assert_eq!(value(&text, r#"socksloop_closed_total{reason="rejected"}"#), "2");
        assert_eq!(value(&text, r#"socksloop_closed_total{reason="handshake_timeout"}"#), "1");
        assert_eq!(value(&text, r#"socksloop_dns_lookups_total{result="ok"}"#), "1");
        assert_eq!(value(&text, r#"socksloop_dns_lookups_total{result="error"}"#), "1");
        assert!(!text.contains("socksloop_dns_cache_hits_total"), "no in-loop DNS, no DNS client families");
        // One series per close reason, every one labelled.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("socksloop_closed_total{")).count(),
            CloseReason::ALL.len()
        );
    }

    #[test]
    fn latencies_are_observed_once_when_they_become_known() {
        let registry = Registry::new(1, false);
        let w = registry.worker(0);
        let fresh = Tally::new(Instant::now());
        let requested = fresh.started + Duration::from_micros(300);
        let parsed = Tally { requested: Some(requested), ..fresh };
        w.on_progress(&fresh, &parsed);
        w.on_progress(&parsed, &parsed); // nothing new
        let connected = Tally { upstream_connected: Some(requested + Duration::from_secs(20)), ..parsed };
        w.on_progress(&parsed, &connected);
        let text = registry.render();
        assert_eq!(value(&text, r#"socksloop_handshake_seconds_bucket{le="0.00025"}"#), "0");
        assert_eq!(value(&text, r#"socksloop_handshake_seconds_bucket{le="0.0005"}"#), "1");
        assert_eq!(value(&text, r#"socksloop_handshake_seconds_bucket{le="+Inf"}"#), "1");
        assert_eq!(value(&text, "socksloop_handshake_seconds_count"), "1");
        assert_eq!(value(&text, "socksloop_handshake_seconds_sum"), "0.0003");
        assert_eq!(value(&text, r#"socksloop_connect_seconds_bucket{le="10"}"#), "0");
        assert_eq!(value(&text, r#"socksloop_connect_seconds_bucket{le="+Inf"}"#), "1");
        assert_eq!(value(&text, "socksloop_connect_seconds_sum"), "20");
    }

    #[test]
    fn auth_failures_and_datagrams_count_on_change() {
        let registry = Registry::new(1, true);
        let w = registry.worker(0);
        let fresh = Tally::new(Instant::now());
        let failed = Tally { auth_failed: true, ..fresh };
        w.on_progress(&fresh, &failed);
        w.on_progress(&failed, &failed);
        let udp = Tally { datagrams_up: 3, datagrams_down: 2, ..fresh };
        w.on_progress(&fresh, &udp);
        w.publish_dns(&DnsStats { hits: 4, misses: 2, cached: 7, ..DnsStats::default() });
        let text = registry.render();
        assert_eq!(value(&text, "socksloop_auth_failures_total"), "1");
        assert_eq!(value(&text, r#"socksloop_udp_datagrams_total{direction="up"}"#), "3");
        assert_eq!(value(&text, r#"socksloop_udp_datagrams_total{direction="down"}"#), "2");
        assert_eq!(value(&text, "socksloop_dns_cache_hits_total"), "4");
        assert_eq!(value(&text, "socksloop_dns_cache_misses_total"), "2");
        assert_eq!(value(&text, "socksloop_dns_cache_entries"), "7");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = Registry::new(1, true).render();
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix).filter(|base| declared.iter().any(|d| d == base))
                    })
                    .unwrap_or(name);
                assert_eq!(declared.last().map(String::as_str), Some(family), "{line} outside its family");
            }
        }
        for required in [
            "socksloop_connections_accepted_total",
            "socksloop_connections_active",
            "socksloop_requests_total",
            "socksloop_auth_failures_total",
            "socksloop_closed_total",
            "socksloop_relay_bytes_total",
            "socksloop_handshake_seconds",
            "socksloop_connect_seconds",
            "socksloop_udp_datagrams_total",
            "socksloop_dns_lookups_total",
            "socksloop_dns_cache_hits_total",
        ] {
            assert!(declared.iter().any(|d| d == required), "{required} missing");
        }
        if cfg!(target_os = "linux") {
            for required in [
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_cpu_seconds_total",
                "process_start_time_seconds",
            ] {
                assert!(declared.iter().any(|d| d == required), "{required} missing");
            }
        }
    }
}
