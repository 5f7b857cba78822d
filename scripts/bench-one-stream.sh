#!/usr/bin/env bash
# One stream, direct and through socksloop, interleaved: ROUNDS pairs of 3 s runs, each proxy
# run against a freshly started server, so slow drifts of a shared machine hit both sides of a
# pair alike. Prints each pair's ratio and their median. Same pinning as bench-compare.sh.
#
#   scripts/bench-one-stream.sh [OUT.jsonl]   env: ROUNDS (default 5), DURATION (s, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

OUT=${1:-one-stream.jsonl}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
BIN=${CARGO_TARGET_DIR:-target}/release
SERVER_CPU=(taskset -c 0)
RT=1
cargo build --release --bin socksloop --bin socksloop-bench >&2
: > "$OUT"
pid=
trap 'if [ -n "$pid" ]; then stop; fi' EXIT

run() {
  chrt -f 10 taskset -c 1 "$BIN/socksloop-bench" "$@" --duration "$DURATION" --json "$OUT" \
    --workload throughput --streams 1 --direction download >/dev/null
}

for _ in $(seq 1 "$ROUNDS"); do
  run --direct --label direct
  port=$(free_port)
  start "$port" "$BIN/socksloop" --listen "127.0.0.1:$port" --log-level warn
  run --proxy "127.0.0.1:$port" --label socksloop
  stop
done

python3 - "$OUT" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
direct = [r["value"] for r in records if r["label"] == "direct"]
proxy = [r["value"] for r in records if r["label"] == "socksloop"]
ratios = sorted(p / d for d, p in zip(direct, proxy))
for d, p in zip(direct, proxy):
    print(f"direct {d:7.0f} MiB/s   socksloop {p:7.0f} MiB/s   {p / d:.2f}x")
print(f"median ratio {ratios[len(ratios) // 2]:.2f}x over {len(ratios)} pairs")
PY
