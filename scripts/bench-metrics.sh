#!/usr/bin/env bash
# Relay throughput with --metrics on vs off: the same binary, in the same run, interleaved
# (round 1 off→on, round 2 on→off, ...), a fresh server for each, so drift on a shared
# machine hits both alike. The server runs on CPU 0, the load tool on CPU 1.
#
#   scripts/bench-metrics.sh [OUT.jsonl]
#   env: ROUNDS (default 3), DURATION (s, default 3), RT (1: SCHED_FIFO as in bench-ab.sh; default 0)
#   then: python3 scripts/ab-summary.py OUT.jsonl off on
#
# Besides MiB/s per case, each server's CPU time (utime + stime of every thread, from
# /proc/PID/stat) over its four runs is divided by the bytes the tool verified: "proxy CPU per
# GiB relayed", which contention on a shared machine disturbs far less than throughput (a
# server given less of its core moves fewer bytes, but spends about as much per byte).
#
# With metrics on, the endpoint is scraped once after each round's runs (the relayed bytes it
# counted are printed), not during them: a scrape every 15 s or more is what Prometheus does,
# and its own cost is measured apart (SCRAPES scrapes timed with curl at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

OUT=${1:-bench-metrics.jsonl}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
RT=${RT:-0}
SCRAPES=${SCRAPES:-20}
SERVER_CPU=(taskset -c 0)
if [ "$RT" = 1 ]; then CLIENT_CPU=(chrt -f 10 taskset -c 1); else CLIENT_CPU=(taskset -c 1); fi
BIN=${CARGO_TARGET_DIR:-target}/release/socksloop
TOOL=${CARGO_TARGET_DIR:-target}/release/socksloop-bench
[ -x "$BIN" ] && [ -x "$TOOL" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
: > "$OUT"
pid=
trap 'if [ -n "$pid" ]; then stop; fi' EXIT

# cpu_ticks PID: user + system clock ticks of every thread of PID so far.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# one off|on: one round of the throughput cases against a fresh server.
one() {
  local label=$1 port mport
  port=$(free_port)
  if [ "$label" = on ]; then
    mport=$(free_port)
    start "$port" "$BIN" --listen "127.0.0.1:$port" --log-level warn --metrics "127.0.0.1:$mport"
  else
    start "$port" "$BIN" --listen "127.0.0.1:$port" --log-level warn
  fi
  local lines ticks
  lines=$(wc -l < "$OUT")
  ticks=$(cpu_ticks "$pid")
  "${CLIENT_CPU[@]}" "$TOOL" --proxy "127.0.0.1:$port" --label "$label" --json "$OUT" \
    --workload throughput --streams 1,8 --direction download,both --duration "$DURATION"
  ticks=$(( $(cpu_ticks "$pid") - ticks ))
  python3 - "$OUT" "$lines" "$ticks" "$(getconf CLK_TCK)" "$label" <<'PY'
import json, sys
out, skip, ticks, hz, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
runs = [json.loads(line) for line in open(out).readlines()[skip:]]
relayed = sum(r["up_bytes"] + r["down_bytes"] for r in runs)
ms_per_gib = ticks / hz * 1000 / (relayed / 2**30)
print(f"{label}: proxy CPU {ticks / hz:.2f} s for {relayed / 2**30:.2f} GiB: {ms_per_gib:.0f} ms/GiB", file=sys.stderr)
record = {"label": label, "case": "all four", "metric": "proxy CPU per GiB relayed", "unit": "ms/GiB", "value": ms_per_gib}
open(out, "a").write(json.dumps(record) + "\n")
PY
  if [ "$label" = on ]; then
    echo "metrics on: $(curl -s "http://127.0.0.1:$mport/metrics" | grep '^socksloop_relay_bytes_total' | tr '\n' ' ')" >&2
  fi
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  if [ $((round % 2)) = 1 ]; then one off; one on; else one on; one off; fi
done

# What one scrape costs: time SCRAPES scrapes of an idle server that has relayed.
port=$(free_port)
mport=$(free_port)
start "$port" "$BIN" --listen "127.0.0.1:$port" --log-level warn --metrics "127.0.0.1:$mport"
"${CLIENT_CPU[@]}" "$TOOL" --proxy "127.0.0.1:$port" --label warm --workload throughput --duration 1 >/dev/null
for _ in $(seq 1 "$SCRAPES"); do
  curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$mport/metrics"
done | sort -n | awk '{ t[NR] = $1 } END { printf "scrape time over %d scrapes: median %.0f µs, max %.0f µs\n", NR, t[int((NR + 1) / 2)] * 1e6, t[NR] * 1e6 }' >&2
echo "size of one scrape: $(curl -s "http://127.0.0.1:$mport/metrics" | wc -c) bytes" >&2
stop
echo "results in $OUT" >&2
