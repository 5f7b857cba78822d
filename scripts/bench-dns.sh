#!/usr/bin/env bash
# Connection rate by name: the in-loop DNS client with a warm cache against the system
# resolver (getaddrinfo on the resolver threads), same run, interleaved; an IP literal as the
# reference. The in-loop client asks a dnsmasq started here on loopback for `bench.test`
# (127.0.0.1, TTL 300 s; authoritative for `test`, so the AAAA answer, NODATA, carries an SOA
# and is cached too: RFC 2308 forbids caching one without); the system resolver reads
# `localhost` from /etc/hosts (no query
# leaves the machine either way). Server on CPU 0, load on CPU 1.
#
#   scripts/bench-dns.sh [OUT.jsonl]        env: ROUNDS (3), DURATION (3), CONCURRENCY (1,64)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
OUT=${1:-bench-dns.jsonl}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
CONCURRENCY=${CONCURRENCY:-1,64}
RT=${RT:-1}
SERVER_CPU=(taskset -c 0)
if [ "$RT" = 1 ]; then CLIENT_CPU=(chrt -f 10 taskset -c 1); else CLIENT_CPU=(taskset -c 1); fi
cargo build --release --bin socksloop --bin socksloop-bench >&2
BIN=${CARGO_TARGET_DIR:-target}/release
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
dir=$(mktemp -d)
dns_port=$(free_port)
"$DNSMASQ" --keep-in-foreground --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --port="$dns_port" --pid-file= --user=root --local-ttl=300 --host-record=bench.test,127.0.0.1 \
  --auth-server=ns.test,127.0.0.1 --auth-zone=test --auth-soa=1,hostmaster.test,1200,120,1209600 --auth-ttl=300 \
  >/dev/null 2>&1 &
dns_pid=$!
pid=
trap 'if [ -n "$pid" ]; then stop; fi; kill "$dns_pid" 2>/dev/null; rm -rf "$dir"' EXIT
: > "$OUT"
one() { # LABEL NAME-OR-EMPTY SOCKSLOOP-FLAGS...
  local label=$1 name=$2 port
  shift 2
  port=$(free_port)
  start "$port" "$BIN/socksloop" --listen "127.0.0.1:$port" --log-level warn "$@"
  local by=()
  if [ -n "$name" ]; then by=(--target-name "$name"); fi
  "${CLIENT_CPU[@]}" "$BIN/socksloop-bench" --proxy "127.0.0.1:$port" "${by[@]}" --label "$label" \
    --workload connrate --concurrency "$CONCURRENCY" --duration "$DURATION" --json "$OUT"
  stop
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  one "ip-literal" ""
  one "system-resolver" localhost
  one "in-loop-dns" bench.test --nameserver "127.0.0.1:$dns_port"
  one "in-loop-hosts" localhost --nameserver "127.0.0.1:$dns_port"
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
from collections import defaultdict
v = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    v[(r["case"], r["label"])].append(r["value"])
print("| case | IP literal | system resolver (localhost) | in-loop, warm cache (bench.test) | in-loop, hosts file (localhost) |")
print("| --- | ---: | ---: | ---: | ---: |")
for case in sorted({c for c, _ in v}):
    cells = []
    for label in ["ip-literal", "system-resolver", "in-loop-dns", "in-loop-hosts"]:
        runs = v.get((case, label), [])
        cells.append(f"{statistics.median(runs):.0f} ({', '.join(f'{x:.0f}' for x in runs)})" if runs else "-")
    print(f"| {case} conn/s | " + " | ".join(cells) + " |")
PY
