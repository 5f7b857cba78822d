#!/bin/sh
# Per-user rate limits, measured with the load tool through the real binary and a config file:
# alice has rate-limit = "20M" (20 MiB/s each way), bob has none; two workers.
#
#   1. alice alone: 1, 4 and 16 streams, download and upload, 10 s each (accuracy, and the
#      slowest and fastest stream: fairness);
#   2. bob alone, then bob beside 16 of alice's downloads, alternating ROUNDS times (5 s each):
#      an unlimited user's throughput and CPU per GiB beside a limited one.
#
# Both for --relay copy and --relay splice. Results go to stderr as tables and to JSONL.
#
#   cargo build --release --workspace
#   scripts/bench-rate-limit.sh [JSONL]        (ROUNDS=3 by default)
set -eu

OUT=${1:-/tmp/bench-rate-limit.jsonl}
ROUNDS=${ROUNDS:-3}
BIN=${BIN:-target/release/socksloop}
BENCH=${BENCH:-target/release/socksloop-bench}
DIR=$(mktemp -d)
trap 'kill "$PROXY" 2>/dev/null || true; rm -rf "$DIR"' EXIT

cat > "$DIR/rate.toml" <<'EOF'
listen = ["127.0.0.1:0"]
workers = 2

[[users]]
name = "alice"
password = "alice-pw"
rate-limit = "20M"

[[users]]
name = "bob"
password = "bob-pw"
EOF

for relay in copy splice; do
    "$BIN" --config "$DIR/rate.toml" --log-level info --relay "$relay" 2> "$DIR/proxy.err" &
    PROXY=$!
    ADDR=
    for _ in $(seq 50); do
        ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$DIR/proxy.err" | head -n 1)
        [ -n "$ADDR" ] && break
        sleep 0.1
    done
    [ -n "$ADDR" ] || { echo "the proxy did not start" >&2; cat "$DIR/proxy.err" >&2; exit 1; }
    alice="--proxy $ADDR --user alice --password alice-pw"
    bob="--proxy $ADDR --user bob --password bob-pw"

    # shellcheck disable=SC2086
    "$BENCH" $alice --label "alice 20M ($relay)" --streams 1,4,16 --direction download,upload \
        --duration 10 --json "$OUT"
    for _ in $(seq "$ROUNDS"); do
        # shellcheck disable=SC2086
        "$BENCH" $bob --label "bob alone ($relay)" --duration 5 --pid "$PROXY" --json "$OUT"
        # shellcheck disable=SC2086
        "$BENCH" $alice --label "alice 20M x16 beside bob ($relay)" --streams 16 --duration 8 \
            --json "$OUT" > /dev/null 2>&1 &
        BESIDE=$!
        sleep 1.5
        # shellcheck disable=SC2086
        "$BENCH" $bob --label "bob beside alice x16 ($relay)" --duration 5 --pid "$PROXY" --json "$OUT"
        wait "$BESIDE"
    done
    kill "$PROXY"
    wait "$PROXY" 2>/dev/null || true
done
echo "records in $OUT" >&2
