#!/usr/bin/env bash
# Time to a CONNECT reply for a name whose IPv6 address is black-holed: socksloop against
# microsocks and Dante (when installed: apt-get install microsocks dante-server), in a private
# network and mount namespace. Needs root, unshare (util-linux) and ip (iproute2).
#
#   scripts/bench-happy-eyeballs.sh [RUNS] [OUT.jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin socksloop >&2
SOCKSLOOP_BENCH_IN_NETNS=1 exec unshare --net --mount -- python3 scripts/he_bench.py \
  "${CARGO_TARGET_DIR:-target}/release/socksloop" "${1:-3}" "${2:-}"
