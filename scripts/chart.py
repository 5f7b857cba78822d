#!/usr/bin/env python3
"""Chart socksloop-bench JSON lines: servers side by side.

    python3 scripts/chart.py RESULTS.jsonl [docs/bench-chart.svg]

Six panels: throughput and connection rate as bars in percent of `direct` (the loopback
limit, measured with no proxy); the server's CPU seconds per GiB relayed (throughput cases,
with --pid); the RTT p99 of an interactive ping-pong beside bulk downloads (latency under
load); handshake p99 latency; user-space memory per idle relay; the idle process's RSS (VmRSS
before the memory workload opened its relays).
A case recorded several times for one server (e.g. memory, one fresh server per run) is
reduced to its median record. Also prints the medians as a Markdown table on stdout.
Needs matplotlib (`pip install matplotlib`).
"""

import json
import sys
from collections import OrderedDict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def records(path):
    """Every JSON record in the file, in order (blank lines skipped)."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load(path):
    """{(workload, case): {label: median record}}, cases and labels in first-seen order."""
    cases = OrderedDict()
    labels = []
    for r in records(path):
        cases.setdefault((r["workload"], r["case"]), OrderedDict()).setdefault(r["label"], []).append(r)
        if r["label"] not in labels:
            labels.append(r["label"])
    for runs in cases.values():
        for label, kept in runs.items():
            measured = sorted((r for r in kept if r["value"] is not None), key=lambda r: r["value"])
            # The lower median: a real record, like the tool's own median of runs.
            runs[label] = measured[(len(measured) - 1) // 2] if measured else kept[-1]
    return cases, labels


def idle_rss_mib(path):
    """{label: median VmRSS in MiB of a freshly started, idle server}, from memory records."""
    seen = OrderedDict()
    for r in records(path):
        if r["workload"] == "memory" and r.get("rss_before_kib") is not None:
            seen.setdefault(r["label"], []).append(r["rss_before_kib"] / 1024.0)
    return {label: sorted(v)[(len(v) - 1) // 2] for label, v in seen.items()}


def markdown(cases, labels, idle=None):
    """Medians as a table: one row per case, one column per server."""
    rows = ["| workload | case | " + " | ".join(labels) + " |",
            "|---|---|" + "---:|" * len(labels)]
    for (workload, case), runs in cases.items():
        cells = []
        for label in labels:
            r = runs.get(label)
            if r is None or r["value"] is None:
                cells.append("n/a")
                continue
            digits = 2 if r["value"] < 10 else 1 if r["value"] < 100 else 0
            cell = f"{r['value']:.{digits}f} {r['unit']}"
            if workload == "connrate":
                cell += f" (p50 {r['handshake_p50_us']:.0f} / p99 {r['handshake_p99_us']:.0f} µs)"
            if workload == "latency":
                cell = f"p50 {r['ping_rtt_p50_us'] / 1000:.2f} / p99 {r['ping_rtt_p99_us'] / 1000:.2f} ms"
            if workload == "throughput" and r.get("cpu_s_per_gib") is not None:
                cell += f" ({r['cpu_s_per_gib']:.2f} s/GiB)"
            cells.append(cell)
        rows.append(f"| {workload} | {case} | " + " | ".join(cells) + " |")
    if idle:
        cells = [f"{idle[label]:.2f} MiB" if label in idle else "n/a" for label in labels]
        rows.append("| memory | idle process (VmRSS) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def grouped_bars(ax, groups, labels, values, fmt):
    """Bars for each group (x) and label (colour); `values[g][l]` may be None (not drawn)."""
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        xs, ys = [], []
        for g, group in enumerate(groups):
            v = values[g].get(label)
            if v is not None:
                xs.append(g + (i - (len(labels) - 1) / 2) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, label=label)
        for bar, y in zip(bars, ys):
            ax.annotate(fmt(y), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/bench-chart.svg"
    cases, labels = load(sys.argv[1])
    idle = idle_rss_mib(sys.argv[1])

    rate_cases = [k for k in cases if k[0] in ("throughput", "connrate")]
    lat_cases = [k for k in cases if k[0] == "connrate"]
    tp_cases = [k for k in cases if k[0] == "throughput"]
    load_cases = [k for k in cases if k[0] == "latency"]
    mem_cases = [k for k in cases if k[0] == "memory"]

    fig, axes = plt.subplots(1, 6, figsize=(28, 5.5), gridspec_kw={"width_ratios": [3, 1.6, 1, 1.5, 1, 1]})

    ax = axes[0]
    groups, values = [], []
    for key in rate_cases:
        runs = cases[key]
        unit = next(iter(runs.values()))["unit"]
        direct = runs.get("direct", {}).get("value")
        groups.append(f"{key[0]}\n{key[1]}\n(direct = {direct:.0f} {unit})" if direct else
                      f"{key[0]}\n{key[1]}")
        values.append({l: (100.0 * r["value"] / direct if direct and r["value"] is not None else None)
                       for l, r in runs.items()})
    grouped_bars(ax, groups, labels, values, lambda v: f"{v:.0f}%")
    ax.set_ylabel("% of direct loopback (higher is better)")
    ax.set_title("Throughput and connection rate")

    ax = axes[1]
    groups = [k[1] for k in tp_cases]
    values = [{l: r.get("cpu_s_per_gib") for l, r in cases[k].items()} for k in tp_cases]
    grouped_bars(ax, groups, labels, values, lambda v: f"{v:.2f}")
    ax.set_ylabel("server CPU s per GiB relayed (lower is better)")
    ax.set_title("CPU per byte")

    ax = axes[2]
    groups = [k[1] for k in load_cases]
    values = [{l: (r.get("ping_rtt_p99_us") or 0) / 1000 or None for l, r in cases[k].items()} for k in load_cases]
    grouped_bars(ax, groups, labels, values, lambda v: f"{v:.1f}")
    ax.set_yscale("log")
    ax.set_ylabel("ping RTT p99, ms (lower is better)")
    ax.set_title("Latency under load")

    ax = axes[3]
    groups = [k[1] for k in lat_cases]
    values = [{l: r.get("handshake_p99_us") for l, r in cases[k].items()} for k in lat_cases]
    grouped_bars(ax, groups, labels, values, lambda v: f"{v:.0f}")
    ax.set_yscale("log")
    ax.set_ylabel("µs (lower is better)")
    ax.set_title("Handshake latency p99")

    ax = axes[4]
    groups = [k[1] for k in mem_cases]
    values = [{l: r["value"] for l, r in cases[k].items()} for k in mem_cases]
    grouped_bars(ax, groups, labels, values, lambda v: f"{v:.2f}" if v < 10 else f"{v:.1f}")
    ax.set_ylabel("KiB per idle relay, VmRSS (lower is better)")
    ax.set_title("Memory per relay")

    ax = axes[5]
    grouped_bars(ax, ["idle process"], labels, [idle], lambda v: f"{v:.2f}")
    ax.set_ylabel("MiB VmRSS, no client yet (lower is better)")
    ax.set_title("Idle RSS")

    fig.suptitle("socksloop-bench: each server pinned to one core, load on the other")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # leave the bottom strip to the legend
    fig.savefig(out)
    print(markdown(cases, labels, idle))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
