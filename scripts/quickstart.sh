#!/usr/bin/env bash
# Builds cordon and runs the main job: `cordon doctor`, then a sandboxed shell
# (or the command given) with this repository as a read-only project.
#
#   bash scripts/quickstart.sh              # build, doctor, sandboxed bash
#   bash scripts/quickstart.sh -- ls -la    # any command instead of bash
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
for pair in cc:build-essential git:git python3:python3 setpriv:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "quickstart: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "quickstart: Rust is not installed; install it with rustup (https://rustup.rs), then rerun" >&2
  exit 2
fi
cordon=$(bash scripts/build-release.sh)
"$cordon" doctor
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || set -- bash
exec "$cordon" run -- "$@"
