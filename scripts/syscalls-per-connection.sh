#!/usr/bin/env bash
# Syscalls a SOCKS5 server makes per short connection (connect, greeting, CONNECT, 64-byte
# echo through the relay, close), counted by strace (Debian: apt-get install strace).
#
#   scripts/syscalls-per-connection.sh PROXY_BIN [ARGS...]
#     ARGS default to socksloop's: --listen 127.0.0.1:{port} --log-level warn
#     ({port} is replaced by a free port), e.g.
#   scripts/syscalls-per-connection.sh target/release/socksloop
#   scripts/syscalls-per-connection.sh microsocks -i 127.0.0.1 -p {port}
#   env: N (connections, default 500), CONCURRENCY (clients, default 1),
#        KEEP (a directory to keep strace's summaries and the tool's JSON record in)
#
# Two runs, each against a freshly started server under `strace -f -c` (every thread and
# every child process it forks; the load tool is not traced), server on CPU 0, load tool on
# CPU 1:
#   1. `socksloop-bench --workload connrate --count N`: exactly N connection attempts;
#   2. no connections: the server idles for as long as run 1 took.
# Both include start-up, the script's readiness check (one TCP connect) and shut-down
# (SIGTERM to the server's PID), and any timer wake-ups while it runs; the difference
# (run 1 − run 2) / completed connections is what one connection costs. Run 1 / N is printed
# too, as an upper bound. Under strace every syscall is slower, so the rate is meaningless
# here; only the counts are.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if [ $# -lt 1 ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
PROXY=$1
shift
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then ARGS=(--listen '127.0.0.1:{port}' --log-level warn); fi
N=${N:-500}
CONCURRENCY=${CONCURRENCY:-1}
BIN=${CARGO_TARGET_DIR:-target}/release
command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 1; }
cargo build --release --bin socksloop-bench >&2

WORK=${KEEP:-$(mktemp -d)}
mkdir -p "$WORK"
tracer=
proxy=
cleanup() {
  if [ -n "$tracer" ]; then stop_traced; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# start_traced NAME: the server under strace, its summary going to $WORK/NAME.strace; sets
# $port, $tracer (strace's PID) and $proxy (the server's PID: strace's child).
start_traced() {
  port=$(free_port)
  # setsid: strace, the server and anything it forks form a process group of their own.
  setsid taskset -c 0 strace -f -c -o "$WORK/$1.strace" "$PROXY" "${ARGS[@]//\{port\}/$port}" \
    >/dev/null 2>&1 &
  tracer=$!
  wait_for_port "$port"
  proxy=$(cut -d' ' -f1 "/proc/$tracer/task/$tracer/children")
  if [ -z "$proxy" ]; then
    echo "cannot find the server's PID (strace's child)" >&2
    exit 1
  fi
}

# stop_traced: SIGTERM to the server's PID; strace writes its summary once the server and
# its children are gone. If they are not gone within 5 s, the process group gets SIGTERM
# (strace then detaches and still writes the summary), then SIGKILL.
stop_traced() {
  kill -TERM "$proxy" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$tracer" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$tracer" 2>/dev/null; then
    echo "the server did not exit within 5 s of SIGTERM; stopping its process group" >&2
    kill -TERM -- "-$tracer" 2>/dev/null || true
    sleep 3
    kill -KILL -- "-$tracer" 2>/dev/null || true
  fi
  wait "$tracer" 2>/dev/null || true
  tracer=
  proxy=
}

start_traced load
began=$(date +%s.%N)
taskset -c 1 "$BIN/socksloop-bench" --proxy "127.0.0.1:$port" --label traced --workload connrate \
  --concurrency "$CONCURRENCY" --count "$N" --timeout 30 --format json > "$WORK/load.json"
took=$(python3 -c "print(f'{max(0.0, $(date +%s.%N) - $began):.2f}')")
stop_traced

start_traced idle
sleep "$took"
stop_traced

read -r ok errors < <(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(r["connections"], r["errors"])' "$WORK/load.json")
if [ "$ok" -eq 0 ]; then
  echo "no connection succeeded" >&2
  exit 1
fi
if [ "$errors" -gt 0 ]; then
  echo "warning: $errors of $N connections failed; dividing by the $ok that completed" >&2
fi

echo "server: $PROXY ${ARGS[*]//\{port\}/PORT}"
echo "connections: $ok completed of $N (concurrency $CONCURRENCY); idle run: ${took} s"
# strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall (errors may be blank).
awk -v n="$ok" '
  function row() { return ($1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total") }
  FNR == 1 { file++ }
  file == 1 && row() { load[$NF] = $4; lerr[$NF] = (NF == 6 ? $5 : 0); names[$NF] = 1 }
  file == 2 && row() { idle[$NF] = $4; ierr[$NF] = (NF == 6 ? $5 : 0); names[$NF] = 1 }
  END {
    printf "%-20s %10s %10s %12s %12s\n", "syscall", "load run", "idle run", "per conn", "errors/conn"
    for (s in names) {
      d = load[s] - idle[s]; tl += load[s]; ti += idle[s]
      if (d != 0) printf "%-20s %10d %10d %12.2f %12.2f\n", s, load[s], idle[s], d / n, (lerr[s] - ierr[s]) / n | "sort -k4,4nr"
    }
    close("sort -k4,4nr")
    printf "%-20s %10d %10d %12.2f\n", "total", tl, ti, (tl - ti) / n
    printf "\nsyscalls per connection: %.1f (load run alone: %.1f)\n", (tl - ti) / n, tl / n
  }' "$WORK/load.strace" "$WORK/idle.strace"
if [ -n "${KEEP:-}" ]; then echo "strace summaries and the JSON record in $KEEP" >&2; fi
