#!/usr/bin/env bash
# `systemd-analyze verify` on the shipped unit files (contrib/systemd/), failing on any
# warning about them as well as on a non-zero exit (unknown keys and bad values are only
# warnings). verify checks that ExecStart's binary exists, so a copy of the units in a temp
# dir names the given binary instead of /usr/local/bin/socksloop. CI runs it; so does the
# integration test `systemd::unit_files_pass_systemd_analyze_verify`.
#
#   scripts/verify-systemd-units.sh PATH-TO-SOCKSLOOP
set -euo pipefail
bin=$(realpath "$1")
units=$(dirname "$0")/../contrib/systemd
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

cp "$units/socksloop.socket" "$units/socksloop.service" "$dir/"
sed -i "s|^ExecStart=/usr/local/bin/socksloop |ExecStart=$bin |" "$dir/socksloop.service"
grep -q "^ExecStart=$bin " "$dir/socksloop.service" || { echo "no ExecStart=/usr/local/bin/socksloop line to rewrite" >&2; exit 1; }

status=0
systemd-analyze verify --man=no "$dir/socksloop.socket" "$dir/socksloop.service" 2>"$dir/stderr" || status=$?
cat "$dir/stderr" >&2
if [ "$status" -ne 0 ] || grep -q socksloop "$dir/stderr"; then
  echo "systemd-analyze verify: the unit files have problems (exit $status)" >&2
  exit 1
fi
echo "systemd-analyze verify: socksloop.socket and socksloop.service OK"
