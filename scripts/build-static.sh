#!/bin/sh
# Build socksloop as one statically linked executable (glibc, static-pie) for deployment.
#
# Why: a dynamically linked process carries every page of libc.so, ld.so and libgcc_s that
# the kernel maps around the ones it touches (fault-around), about 1.6 MiB of its idle RSS.
# Linked statically, only the libc code socksloop calls is in the binary: idle RSS drops from
# about 2.3 MiB to about 1.4 MiB (docs/benchmarks.md has the measurement). The price: a libc
# fix needs a rebuild, and NSS modules other than the built-in "files" and "dns" (mdns,
# systemd-resolved's "resolve") are loaded with dlopen and need the same glibc version at run
# time; with `hosts: files dns` in /etc/nsswitch.conf nothing is loaded.
#
#   scripts/build-static.sh [extra cargo build flags]    prints the binary's path at the end
set -eu
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu*) ;;
  *-linux-musl*)
    echo "build-static: $host links statically already; use cargo build --release" >&2
    exit 2 ;;
  *)
    echo "build-static: static linking is set up for Linux/glibc only; this host is $host" >&2
    exit 2 ;;
esac

# Naming the target explicitly is what confines the flag to socksloop and its dependencies:
# build scripts and proc-macros are built for the host without it, and must be, because
# rustc loads proc-macros as shared libraries.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --bin socksloop --target "$host" "$@"
echo "${CARGO_TARGET_DIR:-target}/$host/release/socksloop"
