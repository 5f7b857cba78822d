#!/usr/bin/env bash
# Smoke test for a built socksloop binary: start it, fetch a file through it with curl
# (socks5h, so the proxy resolves "localhost"), compare the bytes, stop it by its PID.
# CI runs it on the static build, which `cargo test` does not exercise.
#
#   scripts/smoke.sh PATH-TO-SOCKSLOOP
set -euo pipefail
bin=$1
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

head -c 3000000 /dev/urandom > "$dir/blob"
web=$(free_port)
(cd "$dir" && exec python3 -m http.server "$web" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
proxy=$(free_port)
"$bin" --listen "127.0.0.1:$proxy" --log-level warn &
pids+=($!)
wait_for_port "$web"
wait_for_port "$proxy"

curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$proxy" "http://localhost:$web/blob" -o "$dir/fetched"
cmp "$dir/blob" "$dir/fetched"
echo "smoke: $bin relayed $(stat -c %s "$dir/fetched") bytes intact"
