//! `socksloop-bench`: a load generator for any SOCKS5 server (or none, with `--direct`).
//!
//! Layout: [`args`] reads the flags; [`child`] runs the target ([`target`], speaking
//! [`wire`]'s header protocol with [`pattern`] bytes) in a child process; the workloads
//! ([`throughput`], [`connrate`], [`latency`], [`memory`]) each measure one run of one case,
//! [`cpu`] reads the server's CPU time over a window; this file repeats runs, picks medians
//! and hands [`report`] the records. `--help` says the rest.
//! `target`, `wire` and `pattern` live in this package's library, shared with the benches.
//!
//! [`target`]: socksloop_bench::target
//! [`wire`]: socksloop_bench::wire
//! [`pattern`]: socksloop_bench::pattern

mod args;
mod child;
mod connrate;
mod cpu;
mod latency;
mod memory;
mod report;
mod throughput;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use args::{Command, Format, Limit, Options, Workload};
use child::TargetProcess;
use report::{Record, Value};
use socksloop_bench::wire::Route;

/// One run of one case, as a workload reports it.
pub struct Run {
    /// The headline metric (MiB/s, conn/s, KiB/conn); NaN when it cannot be measured.
    pub value: f64,
    pub details: String,
    /// The server's CPU cost, for the table (empty without `--pid`).
    pub cpu: String,
    pub fields: Vec<(&'static str, Value)>,
}

/// A case to measure, before it runs.
struct Case {
    workload: Workload,
    name: String,
    metric: &'static str,
    unit: &'static str,
    kind: CaseKind,
}

enum CaseKind {
    Throughput(throughput::Case),
    Connrate(usize),
    Latency,
    Memory(usize),
}

fn main() -> ExitCode {
    let options = match args::parse(std::env::args_os().skip(1).collect()) {
        Ok(Command::Help) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::ServeTarget(bind)) => return child::serve(bind),
        Ok(Command::Run(options)) => options,
        Err(e) => {
            eprintln!("socksloop-bench: error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socksloop-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    // Thousands of relays need thousands of descriptors; the target child inherits this.
    if let Err(e) = socksloop::limits::raise_nofile_limit() {
        eprintln!("socksloop-bench: warning: cannot raise the open-file limit: {e}");
    }
    let bind: SocketAddr = match options.route {
        Route::Proxy(proxy) | Route::ProxyByName(proxy, _) | Route::ProxyAs(proxy, ..) if proxy.is_ipv6() => {
            "[::1]:0".parse().expect("valid address")
        }
        _ => "127.0.0.1:0".parse().expect("valid address"),
    };
    let mut target = TargetProcess::spawn(bind).map_err(|e| format!("cannot start the target: {e}"))?;
    progress(&format!("target listening on {} (pid {})", target.addr(), target.pid()));

    let cases = cases(options);
    let mut records = Vec::with_capacity(cases.len());
    for (n, case) in cases.iter().enumerate() {
        let mut runs = Vec::with_capacity(options.runs);
        for r in 0..options.runs {
            progress(&format!(
                "[{}/{}] {} {} {}: run {}/{}",
                n + 1,
                cases.len(),
                options.label,
                workload_name(case.workload),
                case.name,
                r + 1,
                options.runs
            ));
            let started = Instant::now();
            let run = measure(options, &mut target, case)?;
            let value = if run.value.is_finite() { report::human(run.value) } else { "n/a".into() };
            progress(&format!(
                "    {value} {} in {:.1} s; {}",
                case.unit,
                started.elapsed().as_secs_f64(),
                run.details
            ));
            runs.push(run);
        }
        let record = to_record(options, case, runs);
        if let Some(path) = &options.json {
            report::append_json(path, std::slice::from_ref(&record))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        if options.format == Format::Json {
            println!("{}", record.to_json());
        }
        records.push(record);
    }
    if options.format == Format::Table {
        report::print_table(&records);
    }
    Ok(())
}

/// Every combination the flags ask for, in workload order.
fn cases(o: &Options) -> Vec<Case> {
    let mut cases = Vec::new();
    for &workload in &o.workloads {
        match workload {
            Workload::Throughput => {
                for &direction in &o.directions {
                    for &streams in &o.streams {
                        let limit = match o.limit {
                            Limit::Time(_) => String::new(),
                            Limit::Bytes(n) => format!(", {} MiB each", n >> 20),
                        };
                        cases.push(Case {
                            workload,
                            name: format!("{} x{streams}{limit}", direction.name()),
                            metric: "throughput",
                            unit: "MiB/s",
                            kind: CaseKind::Throughput(throughput::Case {
                                streams,
                                direction,
                                limit: o.limit,
                            }),
                        });
                    }
                }
            }
            Workload::Connrate => {
                for &c in &o.concurrency {
                    let count = o.count.map_or_else(String::new, |n| format!(", {n} connections"));
                    cases.push(Case {
                        workload,
                        name: format!("c={c}{count}"),
                        metric: "connection_rate",
                        unit: "conn/s",
                        kind: CaseKind::Connrate(c),
                    });
                }
            }
            Workload::Latency => cases.push(Case {
                workload,
                name: format!("ping + {} bulk download", o.bulk),
                metric: "ping_rtt_p99",
                unit: "µs",
                kind: CaseKind::Latency,
            }),
            Workload::Memory => {
                for &k in &o.connections {
                    cases.push(Case {
                        workload,
                        name: format!("{k} relays"),
                        metric: "rss_per_connection",
                        unit: "KiB/conn",
                        kind: CaseKind::Memory(k),
                    });
                }
            }
        }
    }
    cases
}

fn measure(o: &Options, target: &mut TargetProcess, case: &Case) -> Result<Run, String> {
    let what = || format!("{} {}", workload_name(case.workload), case.name);
    let result = match &case.kind {
        CaseKind::Throughput(c) => throughput::measure(o.route, target, c, o.pid, o.timeout),
        CaseKind::Connrate(c) => {
            let stop = o.count.map_or(connrate::Stop::After(o.duration), connrate::Stop::Count);
            connrate::measure(o.route, target.addr(), *c, stop, o.pid, o.timeout)
        }
        CaseKind::Latency => {
            let case = latency::Case { bulk: o.bulk, ping_rate: o.ping_rate, duration: o.duration };
            latency::measure(o.route, target, &case, o.pid, o.timeout)
        }
        CaseKind::Memory(k) => memory::measure(o.route, target.addr(), *k, o.pid, o.timeout),
    };
    result.map_err(|e| format!("{}: {e}", what()))
}

fn to_record(o: &Options, case: &Case, runs: Vec<Run>) -> Record {
    let values: Vec<f64> = runs.iter().map(|r| r.value).collect();
    let median = runs.into_iter().nth(report::median_index(&values)).expect("at least one run");
    Record {
        label: o.label.clone(),
        route: args::route_name(o.route),
        workload: workload_name(case.workload),
        case: case.name.clone(),
        metric: case.metric,
        unit: case.unit,
        value: Some(median.value).filter(|v| v.is_finite()),
        runs: values,
        details: median.details,
        cpu: median.cpu,
        fields: median.fields,
    }
}

fn workload_name(w: Workload) -> &'static str {
    match w {
        Workload::Throughput => "throughput",
        Workload::Connrate => "connrate",
        Workload::Latency => "latency",
        Workload::Memory => "memory",
    }
}

fn progress(line: &str) {
    eprintln!("socksloop-bench: {line}");
}
