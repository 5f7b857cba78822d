#!/usr/bin/env bash
# What a 1,000-user config file costs, in the same run, interleaved: the same binary without
# authentication ("noauth") and with a config file of 1,000 argon2id users with their own
# settings ("users1000"; the load tool logs in as one of them on every connection, so after
# the first login each one is answered from the verified-login cache). Workloads of
# bench-ab.sh: one stream download, 8 streams both ways, connection rate at c=1 and c=64.
#
#   scripts/bench-users.sh [BIN] [OUT.jsonl]
#   env: ROUNDS (default 3), DURATION (s, default 3), USERS (default 1000), RT (1: SCHED_FIFO)
#   then: python3 scripts/ab-summary.py OUT.jsonl noauth users1000
#
# Logins per second (cold: a hash verified per login; remembered: the cache) are measured by
# scripts/login-rate.py. Loopback only; every server started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

BIN=${1:-target/release/socksloop}
OUT=${2:-bench-users.jsonl}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
USERS=${USERS:-1000}
RT=${RT:-1}
SERVER_CPU=(taskset -c 0)
if [ "$RT" = 1 ]; then CLIENT_CPU=(chrt -f 10 taskset -c 1); else CLIENT_CPU=(taskset -c 1); fi
cargo build --release --bin socksloop-bench >&2
TOOL=${CARGO_TARGET_DIR:-target}/release/socksloop-bench
DIR=$(mktemp -d)
CONF=$DIR/users.toml
: > "$OUT"
pid=
trap 'if [ -n "$pid" ]; then stop; fi; rm -rf "$DIR"' EXIT

# One hash for every user (hashing 1,000 passwords would take 20 s and change nothing the
# server does: each user's PHC string is looked up by name). Users get settings of their own
# (a rate limit on all but the measured one, caps, expiry, egress rules) so the file is what a
# reseller would write.
HASH=$(printf 'bench-password\n' | "$BIN" hash-password)
{
  echo "max-connections-per-client = 100000"
  for i in $(seq 1 "$USERS"); do
    printf '\n[[users]]\nname = "user%04d"\npassword-hash = "%s"\n' "$i" "$HASH"
    printf 'max-connections = 100000\nexpires = "2099-01-01T00:00:00Z"\ndeny-dest = ["198.51.100.0/24"]\n'
    if [ "$i" != 500 ]; then printf 'rate-limit = "20M"\n'; fi
  done
} > "$CONF"
echo "config: $(grep -c '^\[\[users\]\]' "$CONF") users, $(wc -c < "$CONF") bytes" >&2

tool() {
  local label=$1
  shift
  "${CLIENT_CPU[@]}" "$TOOL" --label "$label" --duration "$DURATION" --json "$OUT" "$@"
}

# one LABEL: one round of every workload, with or without the users.
one() {
  local label=$1 port login=()
  port=$(free_port)
  if [ "$label" = users1000 ]; then
    start "$port" "$BIN" --config "$CONF" --listen "127.0.0.1:$port" --log-level warn
    login=(--user user0500 --password bench-password)
  else
    start "$port" "$BIN" --listen "127.0.0.1:$port" --log-level warn
  fi
  tool "$label" --proxy "127.0.0.1:$port" "${login[@]}" --runs 1 --workload throughput --streams 1 --direction download --pid "$pid"
  tool "$label" --proxy "127.0.0.1:$port" "${login[@]}" --runs 1 --workload throughput --streams 8 --direction both --pid "$pid"
  tool "$label" --proxy "127.0.0.1:$port" "${login[@]}" --runs 1 --workload connrate --concurrency 1,64 --pid "$pid"
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  if [ $((round % 2)) = 1 ]; then
    one noauth
    one users1000
  else
    one users1000
    one noauth
  fi
done
echo "results in $OUT; summary: python3 scripts/ab-summary.py $OUT noauth users1000" >&2
