#!/usr/bin/env bash
# Builds the release binary as a static PIE (glibc linked in, ASLR kept) and
# prints its path. Static linking saves the dynamic loader's work at every
# `cordon run` (about 0.3 ms of a 3.5 ms start; docs/PERFORMANCE.md). Needs
# glibc's static archive (libc6-dev, part of build-essential).
#
#   bin=$(bash scripts/build-release.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) ;;
  *) echo "build-release: expected a *-linux-gnu host toolchain, got $host" >&2; exit 2 ;;
esac
# With an explicit --target, RUSTFLAGS reach only the target crates, not the
# build scripts and proc-macros (which cannot be static).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -q -p cordon-cli --target "$host" >&2
echo "$PWD/target/$host/release/cordon"
