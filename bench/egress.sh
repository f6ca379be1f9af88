#!/usr/bin/env bash
# Egress benchmark (not a test: numbers depend on the machine). Compares, in
# one run and on loopback only, the ways an agent's traffic can leave:
#
#   direct      the client on the host, no proxy
#   squid       Debian's squid as a CONNECT proxy
#   tinyproxy   Debian's tinyproxy as a CONNECT proxy
#   pasta       a rootless network namespace through pasta (passt)
#   cordon      the client inside `cordon run`, through cordon's explicit proxy
#   cordon-tun  the client inside `cordon run`, transparent capture (TUN,
#               userspace TCP/IP stack, cordon's DNS); needs /dev/net/tun
#
# and measures: bulk HTTPS download (curl, SIZE bytes from nginx), requests/s
# with small responses over CONNS keep-alive connections (through a CONNECT
# tunnel for the proxies; and again as plain-HTTP requests the proxies read
# and forward one by one, `forward`), the time of a new
# connection (proxy handshake + one request, p50/p99; subtract `direct` for
# the added latency), and cordon's supervisor peak RSS with 200 open flows.
# The client for the last three is crates/net/examples/loadgen.rs, the same
# for every path.
#
#   bench/egress.sh                         # defaults: SIZE=1G CONNS=32 SECS=5 N=2000 ROUNDS=3
#   SIZE=256M ROUNDS=1 bench/egress.sh      # quicker
#
# Needs root (pasta and the servers), and: nginx squid tinyproxy passt curl
# openssl python3 GNU time (apt-get install -y nginx squid tinyproxy passt
# curl openssl time).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1G} CONNS=${CONNS:-32} SECS=${SECS:-5} N=${N:-2000} ROUNDS=${ROUNDS:-3}
for tool in nginx squid tinyproxy pasta curl openssl python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y nginx squid tinyproxy passt curl openssl time)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench: run as root (pasta and the test servers)" >&2; exit 2; }
repo=$PWD
CORDON=$(bash scripts/build-release.sh)
cargo build --release --locked -q -p cordon-net --example loadgen
LOADGEN=$repo/target/release/examples/loadgen

# The file to download is read once before the runs, so it is served from the page cache.
W=$(mktemp -d /tmp/cordon-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
chmod 755 "$W"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "bench: nothing listens on $1" >&2; exit 1; }
TLS=$(port) PLAIN=$(port) SQUID=$(port) TINY=$(port)

(cd "$W" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout key.pem -out cert.pem -subj /CN=localhost -addext subjectAltName=DNS:localhost,DNS:bulk.test 2>/dev/null)
mkdir -p "$W/www"
head -c "$SIZE" /dev/urandom > "$W/www/blob"
BYTES=$(stat -c %s "$W/www/blob")
cat "$W/www/blob" >/dev/null
cat > "$W/nginx.conf" <<EOF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:$PLAIN; location / { return 200 "ok\n"; } }
  server {
    listen 127.0.0.1:$TLS ssl; listen [::1]:$TLS ssl;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    root $W/www;
  }
}
EOF
nginx -c "$W/nginx.conf" -p "$W"
cat > "$W/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID
acl CONNECT method CONNECT
http_access allow all
cache deny all
access_log none
cache_log /dev/null
shutdown_lifetime 0 seconds
pid_filename $W/squid.pid
coredump_dir $W
EOF
squid -N -f "$W/squid.conf" >"$W/squid.out" 2>&1 & pids+=($!)
cat > "$W/tinyproxy.conf" <<EOF
Port $TINY
Listen 127.0.0.1
Timeout 60
MaxClients 400
Allow 127.0.0.1
LogLevel Critical
EOF
tinyproxy -d -c "$W/tinyproxy.conf" >/dev/null 2>&1 & pids+=($!)
wait_port "$TLS"; wait_port "$PLAIN"; wait_port "$SQUID"; wait_port "$TINY"

export XDG_STATE_HOME=$W/state XDG_CONFIG_HOME=$W/config
mkdir -p "$XDG_CONFIG_HOME/cordon/profiles"
cat > "$XDG_CONFIG_HOME/cordon/profiles/bench.toml" <<EOF
extends = "default"
[network]
mode = "proxy"
allow = ["localhost"]
resolve = { "localhost" = "127.0.0.1:$TLS" }
allow_local = ["127.0.0.1:$PLAIN"]
EOF
cat > "$XDG_CONFIG_HOME/cordon/profiles/bench-tun.toml" <<EOF
extends = "default"
[network]
mode = "transparent"
allow = ["bulk.test", "plain.test"]
resolve = { "bulk.test" = "127.0.0.1:$TLS", "plain.test" = "127.0.0.1:$PLAIN" }
EOF
mkdir -p "$W/pub" && cp "$W/cert.pem" "$W/pub/ca.crt"
in_cordon() { "$CORDON" run --no-tty -p bench --project "$repo" --allow-read "$W/pub" -- "$@"; }
in_tun() { "$CORDON" run --no-tty -p bench-tun --project "$repo" --allow-read "$W/pub" -- "$@"; }
in_pasta() { pasta --runas 0:0 --config-net -q -- "$@" 2> >(grep -v -e syslog -e uid_map -e 'user mappings' -e ping_group_range >&2); }
GW='$(ip route | awk "/default/{print \$3; exit}")'

URL="https://localhost:$TLS/blob"
bulk() { # path -> bytes/s
  local fmt='%{speed_download}'
  case $1 in
    direct)    curl -s -o /dev/null -w "$fmt" --cacert "$W/pub/ca.crt" "$URL" ;;
    squid)     curl -s -o /dev/null -w "$fmt" --cacert "$W/pub/ca.crt" -x "http://127.0.0.1:$SQUID" "$URL" ;;
    tinyproxy) curl -s -o /dev/null -w "$fmt" --cacert "$W/pub/ca.crt" -x "http://127.0.0.1:$TINY" "$URL" ;;
    pasta)     in_pasta sh -c "curl -s -o /dev/null -w '$fmt' --cacert $W/pub/ca.crt --resolve localhost:$TLS:$GW $URL" ;;
    cordon)    in_cordon env -u NO_PROXY -u no_proxy curl -s -o /dev/null -w "$fmt" --cacert "$W/pub/ca.crt" "$URL" ;;
    cordon-tun) in_tun curl -s -o /dev/null -w "$fmt" --cacert "$W/pub/ca.crt" "https://bulk.test:$TLS/blob" ;;
  esac
}
load() { # mode path extra... -> loadgen output
  local mode=$1 path=$2; shift 2
  case $path in
    direct)    "$LOADGEN" "$mode" "127.0.0.1:$PLAIN" "$@" ;;
    squid)     "$LOADGEN" "$mode" "127.0.0.1:$PLAIN" --proxy "127.0.0.1:$SQUID" "$@" ;;
    tinyproxy) "$LOADGEN" "$mode" "127.0.0.1:$PLAIN" --proxy "127.0.0.1:$TINY" "$@" ;;
    pasta)     in_pasta sh -c "$LOADGEN $mode $GW:$PLAIN $*" ;;
    cordon)    in_cordon "$LOADGEN" "$mode" "127.0.0.1:$PLAIN" --proxy 127.0.0.1:3128 "$@" ;;
    cordon-tun) in_tun "$LOADGEN" "$mode" "plain.test:80" "$@" ;;
  esac
}
forward() { # path -> req/s of plain-HTTP requests forwarded by the proxy (keep-alive)
  case $1 in
    squid)     "$LOADGEN" rps "127.0.0.1:$PLAIN" --proxy "127.0.0.1:$SQUID" --forward --conns "$CONNS" --secs "$SECS" ;;
    tinyproxy) "$LOADGEN" rps "127.0.0.1:$PLAIN" --proxy "127.0.0.1:$TINY" --forward --conns "$CONNS" --secs "$SECS" ;;
    cordon)    in_cordon "$LOADGEN" rps "127.0.0.1:$PLAIN" --proxy 127.0.0.1:3128 --forward --conns "$CONNS" --secs "$SECS" ;;
    # Captured plain HTTP is read request by request already: the rps figure.
    *)         echo nan ;;
  esac
}
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v))' "$@"; }

PATHS=(direct squid tinyproxy pasta cordon)
if (exec 3<>/dev/net/tun) 2>/dev/null; then PATHS+=(cordon-tun); else echo "bench: /dev/net/tun unusable, skipping cordon-tun" >&2; fi
declare -A B R F L50 L99
for round in $(seq "$ROUNDS"); do
  for p in "${PATHS[@]}"; do
    if v=$(bulk "$p"); then B[$p]+=" $v"; else echo "bench: $p: the download failed (curl exit $?)" >&2; B[$p]+=" 0"; fi
    R[$p]+=" $(load rps "$p" --conns "$CONNS" --secs "$SECS")"
    F[$p]+=" $(forward "$p")"
    read -r a b < <(load connect "$p" --n "$N")
    L50[$p]+=" $a"; L99[$p]+=" $b"
  done
done

echo "egress benchmark: $ROUNDS round(s), interleaved; bulk = $BYTES bytes over HTTPS (curl, nginx),"
echo "rps = $CONNS keep-alive connections for ${SECS}s, new connection = proxy handshake + 1 request ($N in a row)"
printf '| path | bulk MiB/s | req/s (keep-alive) | req/s forwarded (keep-alive) | new connection p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|\n'
for p in "${PATHS[@]}"; do
  # shellcheck disable=SC2086
  printf '| %s | %.0f | %.0f | %.0f | %.3f | %.3f |\n' "$p" \
    "$(python3 -c "print($(median ${B[$p]})/1048576)")" "$(median ${R[$p]})" \
    "$(median ${F[$p]})" "$(median ${L50[$p]})" "$(median ${L99[$p]})"
done

rss=$( { /usr/bin/time -f '%M' "$CORDON" run --no-tty -p bench --project "$repo" -- \
  "$LOADGEN" rps "127.0.0.1:$PLAIN" --proxy 127.0.0.1:3128 --conns 200 --secs 3 >/dev/null; } 2>&1 | tail -1)
echo "cordon supervisor peak RSS with 200 open flows, explicit proxy: $((rss / 1024)) MiB ($rss KiB)"
if [[ " ${PATHS[*]} " == *" cordon-tun "* ]]; then
  rss=$( { /usr/bin/time -f '%M' "$CORDON" run --no-tty -p bench-tun --project "$repo" -- \
    "$LOADGEN" rps "plain.test:80" --conns 200 --secs 3 >/dev/null; } 2>&1 | tail -1)
  echo "cordon supervisor peak RSS with 200 open flows, transparent: $((rss / 1024)) MiB ($rss KiB)"
fi
