#!/usr/bin/env bash
# Before/after comparison of two socksloop binaries in the same run, interleaved: every round
# measures both (alternating which goes first), so drift on a shared machine hits both alike.
# Workloads are those of bench-compare.sh: one stream download, 8 streams both ways,
# connection rate at c=1 and c=64, and memory per idle relay at BIG relays (a fresh server each).
#
#   scripts/bench-ab.sh BEFORE_BIN AFTER_BIN [OUT.jsonl]
#   env: ROUNDS (default 3), DURATION (s, default 3), BIG (default 9000), RT (1: SCHED_FIFO)
#   then: python3 scripts/ab-summary.py OUT.jsonl
#
# To build a previous commit's binary beside the current tree:
#   git worktree add /tmp/before REV && (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --bin socksloop)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

BEFORE=$1
AFTER=$2
OUT=${3:-bench-ab.jsonl}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
BIG=${BIG:-9000}
RT=${RT:-1}
SERVER_CPU=(taskset -c 0)
if [ "$RT" = 1 ]; then CLIENT_CPU=(chrt -f 10 taskset -c 1); else CLIENT_CPU=(taskset -c 1); fi
cargo build --release --bin socksloop-bench >&2
TOOL=${CARGO_TARGET_DIR:-target}/release/socksloop-bench
: > "$OUT"
pid=
trap 'if [ -n "$pid" ]; then stop; fi' EXIT

tool() {
  local label=$1
  shift
  "${CLIENT_CPU[@]}" "$TOOL" --label "$label" --duration "$DURATION" --json "$OUT" "$@"
}

# one LABEL BIN: one round of every workload for one binary.
one() {
  local label=$1 bin=$2 port
  port=$(free_port)
  start "$port" "$bin" --listen "127.0.0.1:$port" --log-level warn
  tool "$label" --proxy "127.0.0.1:$port" --runs 1 --workload throughput --streams 1 --direction download
  tool "$label" --proxy "127.0.0.1:$port" --runs 1 --workload throughput --streams 8 --direction both
  tool "$label" --proxy "127.0.0.1:$port" --runs 1 --workload connrate --concurrency 1,64
  stop
  port=$(free_port)
  start "$port" "$bin" --listen "127.0.0.1:$port" --log-level warn
  tool "$label" --proxy "127.0.0.1:$port" --workload memory --connections "$BIG" --pid "$pid"
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  if [ $((round % 2)) = 1 ]; then
    one before "$BEFORE"
    one after "$AFTER"
  else
    one after "$AFTER"
    one before "$BEFORE"
  fi
done
echo "results in $OUT" >&2
