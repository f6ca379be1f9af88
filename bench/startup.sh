#!/usr/bin/env bash
# Startup and overhead benchmarks for cordon (not a test: numbers depend on the
# machine). Results go in docs/PERFORMANCE.md with the command that made them.
#
#   bench/startup.sh            # all benchmarks
#   RUNS=200 bench/startup.sh   # more runs
#
# Needs: hyperfine, bubblewrap, git, GNU time (apt-get install -y hyperfine
# bubblewrap git time). Builds cordon with scripts/build-release.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}
for tool in hyperfine bwrap git /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y hyperfine bubblewrap git time)" >&2; exit 2; }
done
CORDON=$(bash scripts/build-release.sh)

work=$(mktemp -d /tmp/cordon-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export XDG_STATE_HOME=$work/state XDG_CONFIG_HOME=$work/config
proj=$work/project
mkdir -p "$proj/src" && printf 'fn main() {}\n' > "$proj/src/main.rs" && printf 'x\n' > "$proj/README.md"

# bubblewrap with the closest equivalent of cordon's default profile.
BWRAP=(bwrap --unshare-all --die-with-parent --new-session
  --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin
  --symlink usr/lib /lib --symlink usr/lib64 /lib64
  --ro-bind /etc /etc --proc /proc --dev /dev --tmpfs /tmp --tmpfs "$HOME"
  --ro-bind "$proj" "$proj" --chdir "$proj")

medians() {
  python3 - "$1" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"  median {r['median']*1000:6.2f} ms  {r['command']}")
PY
}

echo "== startup: /bin/true ($RUNS runs)"
cd "$proj"
hyperfine -N --warmup 10 --runs "$RUNS" --export-markdown "$work/startup.md" --export-json "$work/startup.json" \
  -n bare '/bin/true' \
  -n bwrap "${BWRAP[*]} /bin/true" \
  -n cordon "$CORDON run --no-tty -- /bin/true"
cat "$work/startup.md"
medians "$work/startup.json"

echo "== supervisor peak RSS (cordon run -- /bin/true)"
/usr/bin/time -f 'max RSS %M KiB' "$CORDON" run --no-tty -- /bin/true 2>&1 | grep 'max RSS'

echo "== real workload: git status in a 20000-file repository, inside vs bare"
repo=$work/repo
mkdir -p "$repo"
( cd "$repo" && git init -q && for d in $(seq 1 200); do mkdir -p "d$d"; for f in $(seq 1 100); do echo "$d $f" > "d$d/f$f"; done; done \
  && git add -A && git -c user.name=b -c user.email=b@b commit -qm init )
cd "$repo"
hyperfine -N --warmup 3 --runs 30 --export-markdown "$work/git.md" \
  -n 'git status (bare)' 'git status --porcelain' \
  -n 'git status (cordon)' "$CORDON run --no-tty -- git status --porcelain"
cat "$work/git.md"

echo "== sustained workload, interleaved: 20 x git status in one process tree, bare vs inside cordon"
python3 - "$CORDON" <<'PY'
import statistics, subprocess, sys, time
cordon = sys.argv[1]
loop = "for i in $(seq 20); do git status --porcelain >/dev/null; done"
bare, boxed = [], []
for _ in range(15):
    for cmd, out in ((["sh", "-c", loop], bare), ([cordon, "run", "--no-tty", "--", "sh", "-c", loop], boxed)):
        t = time.perf_counter(); subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL); out.append(time.perf_counter() - t)
b, c = statistics.median(bare), statistics.median(boxed)
print(f"median bare {b*1000:.1f} ms, cordon {c*1000:.1f} ms, overhead {100*(c-b)/b:+.1f} %")
PY
