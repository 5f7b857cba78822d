#!/usr/bin/env bash
# The comparison behind docs/benchmarks.md: direct loopback, socksloop (the default build
# and the static deployment build, scripts/build-static.sh), the threaded baseline and, when
# installed, microsocks, Dante and hev-socks5-server, each measured by socksloop-bench.
#
# microsocks and Dante come from Debian (apt-get install microsocks dante-server) and are
# found on PATH. hev-socks5-server is not packaged: build it yourself and name the binary in
# HEV=/path/to/hev-socks5-server. Dante runs a process per client, so the memory workload
# (which reads one PID's VmRSS) is skipped for it: it would see only the parent.
#
# The server under test is pinned to CPU 0, the load tool and its target child to CPU 1,
# so every server gets one core and the client side the same other core. With RT=1 (the
# default) both also run SCHED_FIFO (chrt -f 10), so that other work on a shared machine
# cannot preempt them: without it, a single event-loop thread competing with CPU-bound
# processes gets one fair share while a thread-per-connection server gets one per thread
# (docs/benchmarks.md shows both). Each server is started fresh, waited for (bounded),
# measured, and stopped with its process group (scripts/lib.sh). Memory gets a fresh server
# for every run, because memory a server freed after one run hides the cost in the next.
#
# With CPU=1 (the default) the throughput, latency and connrate runs get --pid of the server,
# so their records carry its CPU time (cpu_s_per_gib, cpu_us_per_conn, cpu_share). With
# LATENCY=1 (the default) every server and direct also run the latency workload: a 64-byte
# ping-pong at PING_RATE per second beside BULK download streams (RTT p50/p99/max, bulk MiB/s).
#
# ROUNDS (default 3) repeats the whole suite, each server measured once per round, the order
# of the servers rotating from round to round: the servers are interleaved, so drift on a
# shared machine hits all of them alike; medians are taken over the rounds (chart.py).
#
#   scripts/bench-compare.sh [OUT.jsonl]
#   env: DURATION (s, default 3), ROUNDS (default 3), RUNS (per round, default 1), RT (1),
#        HEV (path), STATIC (1: also the static build), COPY (1: also socksloop --relay copy),
#        BIG (relays held in one extra memory run per server, default 9000; 0 skips it),
#        CPU (1: server CPU per GiB / per connection; 0: no --pid), LATENCY (1; 0 skips it),
#        BULK (download streams beside the ping-pong, default 8), PING_RATE (pings/s, default 100)
#   python3 scripts/chart.py OUT.jsonl docs/bench-chart.svg
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

OUT=${1:-bench-results.jsonl}
DURATION=${DURATION:-3}
RUNS=${RUNS:-1}
ROUNDS=${ROUNDS:-3}
COPY=${COPY:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release
RT=${RT:-1}
SERVER_CPU=(taskset -c 0)
if [ "$RT" = 1 ]; then
  CLIENT_CPU=(chrt -f 10 taskset -c 1)
else
  CLIENT_CPU=(taskset -c 1)
fi

cargo build --release --bin socksloop --bin socksloop-bench --bin threaded_baseline >&2
STATIC=${STATIC:-1}
if [ "$STATIC" = 1 ]; then
  STATIC_BIN=$(scripts/build-static.sh | tail -n 1)
fi
HEV=${HEV:-}
BIG=${BIG:-9000}
CPU=${CPU:-1}
LATENCY=${LATENCY:-1}
BULK=${BULK:-8}
PING_RATE=${PING_RATE:-100}
: > "$OUT"
CONF_DIR=$(mktemp -d)
pid=
# Also on an early exit (a server that never listens, a failed tool run): stop what runs.
trap 'if [ -n "$pid" ]; then stop; fi; rm -rf "$CONF_DIR"' EXIT

# Config files for the servers that take one, written for the port they will listen on.
prepare_dante() {
  cat > "$CONF_DIR/dante-$1.conf" <<CONF
logoutput: /dev/null
internal: 127.0.0.1 port = $1
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
CONF
}
prepare_hev() {
  cat > "$CONF_DIR/hev-$1.yml" <<CONF
main:
  workers: 1
  port: $1
  listen-address: '127.0.0.1'
misc:
  log-level: warn
  limit-nofile: $(ulimit -Hn)
CONF
}


# tool LABEL ROUTE-FLAGS ARGS...: one socksloop-bench invocation, appending to $OUT.
tool() {
  local label=$1 route=$2
  shift 2
  "${CLIENT_CPU[@]}" "$BIN/socksloop-bench" $route --label "$label" --duration "$DURATION" --json "$OUT" "$@"
}

# prepare LABEL PORT: write LABEL's config file for PORT, if it needs one.
prepare() {
  if declare -F "prepare_$1" >/dev/null; then "prepare_$1" "$2"; fi
}

# serve LABEL COMMAND-WITH-{port}...: the suite for one server.
serve() {
  local label=$1
  shift
  local port
  port=$(free_port)
  prepare "$label" "$port"
  start "$port" "${@//\{port\}/$port}"
  local cpu=()
  if [ "$CPU" = 1 ]; then cpu=(--pid "$pid"); fi
  tool "$label" "--proxy 127.0.0.1:$port" --runs "$RUNS" --workload throughput --streams 1 --direction download \
    ${cpu[@]+"${cpu[@]}"}
  tool "$label" "--proxy 127.0.0.1:$port" --runs "$RUNS" --workload throughput --streams 1 --direction both \
    ${cpu[@]+"${cpu[@]}"}
  tool "$label" "--proxy 127.0.0.1:$port" --runs "$RUNS" --workload throughput --streams 8 --direction both \
    ${cpu[@]+"${cpu[@]}"}
  if [ "$LATENCY" = 1 ]; then
    tool "$label" "--proxy 127.0.0.1:$port" --runs "$RUNS" --workload latency --bulk "$BULK" \
      --ping-rate "$PING_RATE" ${cpu[@]+"${cpu[@]}"}
  fi
  tool "$label" "--proxy 127.0.0.1:$port" --runs "$RUNS" --workload connrate --concurrency 1,64 \
    ${cpu[@]+"${cpu[@]}"}
  stop
  if [ "$label" = dante ]; then return; fi
  for _ in $(seq 1 "$RUNS"); do
    port=$(free_port)
    prepare "$label" "$port"
    start "$port" "${@//\{port\}/$port}"
    tool "$label" "--proxy 127.0.0.1:$port" --workload memory --connections 1000 --pid "$pid"
    stop
  done
  if [ "$BIG" -gt 0 ]; then
    port=$(free_port)
    prepare "$label" "$port"
    start "$port" "${@//\{port\}/$port}"
    # A server may run out of descriptors or threads here; that is a result, not a script error.
    tool "$label" "--proxy 127.0.0.1:$port" --workload memory --connections "$BIG" --pid "$pid" ||
      echo "$label: could not hold $BIG relays (see the message above)" >&2
    stop
  fi
}

direct() {
  tool direct --direct --runs "$RUNS" --workload throughput --streams 1 --direction download
  tool direct --direct --runs "$RUNS" --workload throughput --streams 1 --direction both
  tool direct --direct --runs "$RUNS" --workload throughput --streams 8 --direction both
  if [ "$LATENCY" = 1 ]; then
    tool direct --direct --runs "$RUNS" --workload latency --bulk "$BULK" --ping-rate "$PING_RATE"
  fi
  tool direct --direct --runs "$RUNS" --workload connrate --concurrency 1,64
}

# Every contender, by name; each knows how to serve itself (or says why it is skipped).
contender() {
  case $1 in
    direct) direct ;;
    socksloop) serve socksloop "$BIN/socksloop" --listen "127.0.0.1:{port}" --log-level warn ;;
    socksloop-copy) serve socksloop-copy "$BIN/socksloop" --listen "127.0.0.1:{port}" --log-level warn --relay copy ;;
    socksloop-static) serve socksloop-static "$STATIC_BIN" --listen "127.0.0.1:{port}" --log-level warn ;;
    threaded) serve threaded "$BIN/threaded_baseline" "127.0.0.1:{port}" ;;
    microsocks) serve microsocks microsocks -i 127.0.0.1 -p "{port}" ;;
    hev) serve hev "$HEV" "$CONF_DIR/hev-{port}.yml" ;;
    dante) serve dante danted -f "$CONF_DIR/dante-{port}.conf" ;;
  esac
}

contenders=(direct socksloop)
if [ "$COPY" = 1 ]; then contenders+=(socksloop-copy); fi
if [ "$STATIC" = 1 ]; then contenders+=(socksloop-static); fi
contenders+=(threaded)
if command -v microsocks >/dev/null; then
  contenders+=(microsocks)
else
  echo "microsocks not installed (apt-get install microsocks): skipped" >&2
fi
if [ -n "$HEV" ]; then
  contenders+=(hev)
else
  echo "HEV not set (path to a hev-socks5-server binary): skipped" >&2
fi
if command -v danted >/dev/null; then
  contenders+=(dante)
else
  echo "danted not installed (apt-get install dante-server): skipped" >&2
fi

# Connection-rate runs leave tens of thousands of client sockets in TIME_WAIT for a minute; on
# 127.0.0.1 they can hold every ephemeral port, and the next listener or connect fails
# (EADDRINUSE, EADDRNOTAVAIL). Before each contender, wait (at most 70 s) until fewer than
# 10 000 remain.
settle_ports() {
  for _ in $(seq 1 70); do
    if [ "$(ss -tan state time-wait | wc -l)" -lt 10000 ]; then return 0; fi
    sleep 1
  done
}

n=${#contenders[@]}
# FIRST_ROUND continues an interrupted series with the rotation it would have had.
FIRST_ROUND=${FIRST_ROUND:-1}
for round in $(seq "$FIRST_ROUND" "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for k in $(seq 0 $((n - 1))); do
    settle_ports
    contender "${contenders[$(((k + round - 1) % n))]}"
  done
done

echo "results in $OUT" >&2
