#!/usr/bin/env bash
# Exec-audit benchmark (not a test: numbers depend on the machine). Every
# exec inside a cordon sandbox is a seccomp user notification the
# supervisor answers; this measures what that costs:
#
#  * (hyperfine) a loop of N executions of /bin/true outside, under the
#    floor (below) and in a sandbox, and the same loop with 0 iterations
#    (the fixed cost of starting a shell, or a sandbox): the per-exec
#    difference is the round trip plus the sandbox's own per-exec costs
#    (seccomp filters, Landlock);
#  * `make -j2` and `make -j1` of a small C project (60 files: every
#    compile runs gcc, cc1 and as) outside, under the mechanism's floor
#    (crates/sandbox/examples/notif_floor.rs: the same exec filter, each
#    notification answered at once, no sandbox, no record), and in cordon
#    (rw mode: every object file written is also a file record, watched
#    with inotify; and overlay mode), in interleaved rounds
#    (bench/interleave.py), compared round by round;
#  * (hyperfine) the start of a session on a project of 5000 directories,
#    read-only and read-write (rw mode puts an inotify watch on every directory
#    before the agent starts).
#
#   bench/audit.sh                       # N=1000 RUNS=10 ROUNDS=20
#   N=300 RUNS=3 ROUNDS=5 bench/audit.sh # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000} RUNS=${RUNS:-10} ROUNDS=${ROUNDS:-20}
for tool in hyperfine gcc make; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install hyperfine gcc make)" >&2; exit 2; }
done
CORDON=$(bash scripts/build-release.sh)
cargo build --release --locked -q -p cordon-sandbox --example notif_floor >&2
FLOOR=$PWD/target/release/examples/notif_floor
BENCH=$PWD/bench
W=$(mktemp -d /tmp/cordon-audit-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/home" "$W/state" "$W/config" "$W/proj"
export HOME="$W/home" XDG_STATE_HOME="$W/state" XDG_CONFIG_HOME="$W/config"
for i in $(seq 1 60); do
  printf '#include <stdio.h>\nint f%d(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * %d; return s; }\n' "$i" "$i" > "$W/proj/f$i.c"
done
{
  printf 'OBJS = %s\n' "$(for i in $(seq 1 60); do printf 'f%d.o ' "$i"; done)"
  printf 'all: $(OBJS)\n\n%%.o: %%.c\n\tgcc -O1 -c $< -o $@\n\nclean:\n\trm -f *.o\n'
} > "$W/proj/Makefile"
mkdir -p "$W/tree"
for a in $(seq 1 50); do for b in $(seq 1 100); do mkdir -p "$W/tree/d$a/e$b"; done; done
cd "$W/proj"
LOOP="i=0; while [ \$i -lt $N ]; do /bin/true; i=\$((i+1)); done"
NONE="i=0; while [ \$i -lt 0 ]; do /bin/true; i=\$((i+1)); done"
hyperfine --shell none --warmup 2 --runs "$RUNS" --export-markdown "$W/times.md" --export-json "$W/times.json" \
  -n "outside: sh, 0 execs" "sh -c '$NONE'" \
  -n "outside: sh, $N execs" "sh -c '$LOOP'" \
  -n "floor: sh, 0 execs" "$FLOOR sh -c '$NONE'" \
  -n "floor: sh, $N execs" "$FLOOR sh -c '$LOOP'" \
  -n "cordon: sh, 0 execs" "$CORDON run --no-tty -- sh -c '$NONE'" \
  -n "cordon: sh, $N execs" "$CORDON run --no-tty -- sh -c '$LOOP'" \
  -n "cordon: true, 5000-dir project, ro" "$CORDON run --no-tty --project $W/tree --mode ro -- true" \
  -n "cordon: true, 5000-dir project, rw (watched)" "$CORDON run --no-tty --project $W/tree --mode rw -- true" \
  2>&1 | grep -v "^ *$"
cat "$W/times.md"
python3 - "$W/times.json" "$N" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
n = int(sys.argv[2])
m = lambda k: r[k]["median"]
o0, o1 = m("outside: sh, 0 execs"), m(f"outside: sh, {n} execs")
c0, c1 = m("cordon: sh, 0 execs"), m(f"cordon: sh, {n} execs")
per_out = (o1 - o0) / n * 1e3
per_in = (c1 - c0) / n * 1e3
f0, f1 = m("floor: sh, 0 execs"), m(f"floor: sh, {n} execs")
per_floor = (f1 - f0) / n * 1e3
print(f"per exec (median): outside {per_out:.3f} ms, floor {per_floor:.3f} ms, in cordon {per_in:.3f} ms, added {per_in - per_out:.3f} ms ({per_in - per_floor:+.3f} ms over the floor)")
ro, rw = m("cordon: true, 5000-dir project, ro"), m("cordon: true, 5000-dir project, rw (watched)")
print(f"5000-dir project: start ro {ro * 1e3:.1f} ms, rw with watches {rw * 1e3:.1f} ms ({(rw - ro) * 1e3:+.1f} ms)")
PY
for j in 2 1; do
  echo
  echo "make -j$j of 60 C files (sandbox start included):"
  python3 "$BENCH/interleave.py" "$ROUNDS" "$W/proj" \
    "outside=make -s -j$j -B" \
    "floor (notif_floor)=$FLOOR make -s -j$j -B" \
    "cordon, rw=$CORDON run --no-tty --mode rw -- make -s -j$j -B" \
    "cordon, overlay=$CORDON run --no-tty --mode overlay -- make -s -j$j -B"
done
