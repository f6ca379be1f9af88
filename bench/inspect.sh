#!/usr/bin/env bash
# TLS inspection benchmark (not a test: numbers depend on the machine).
# Compares, in one run and on loopback only:
#
#   direct       the client on the host, straight to nginx
#   tunnel       the client inside `cordon run`, through cordon's explicit
#                proxy, TLS end to end (the host is allowed, not inspected)
#   inspected    the same, the host inspected: cordon terminates TLS with
#                the session CA and opens its own to nginx
#   mitmproxy    the client on the host through mitmdump (PyPI), the
#                TLS-intercepting peer, verifying nginx the same way and
#                streaming bodies over 1 MB (as cordon streams every body)
#
# and measures: a bulk HTTPS download (curl, SIZE bytes, over HTTP/1.1 and
# HTTP/2), requests/s with small responses over CONNS keep-alive
# HTTP/1.1 connections (crates/net/examples/loadgen.rs with --tls, the same
# client for every path), and the time of a new connection until a small
# response is read (loadgen connect with --tls: proxy handshake, TLS,
# one request; the client loads its trust once, as an SDK does). The issue's
# targets: inspected bulk >= 500 MB/s, inspected requests/s >= 60 % of the
# tunnel's, first byte within 10 ms of direct.
#
#   bench/inspect.sh                          # SIZE=1G CONNS=32 SECS=5 ROUNDS=3 N=500
#   SIZE=256M ROUNDS=1 bench/inspect.sh       # quicker
#   ONLY=ttfb bench/inspect.sh                # the new-connection times alone
#   ONLY=rps ROUNDS=10 bench/inspect.sh       # small requests alone: tunnel and
#                                             # inspected alternate, each round's
#                                             # ratio printed (this VM's speed
#                                             # drifts between rounds)
#   ONLY=rps BASE=/tmp/cordon-old bench/inspect.sh
#                                             # also inspected through another
#                                             # build, in the same rounds (A/B)
#   ONLY=bulk ROUNDS=5 [BASE=...] bench/inspect.sh
#                                             # inspected bulk downloads alone
#
# Needs nginx, curl, openssl, python3; installs mitmproxy with pip when
# mitmdump is missing (BENCH_NO_MITM=1 skips the peer).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1G} CONNS=${CONNS:-32} SECS=${SECS:-5} ROUNDS=${ROUNDS:-3} N=${N:-500} ONLY=${ONLY:-}
for tool in nginx curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y nginx curl openssl python3)" >&2; exit 2; }
done
MITM=${BENCH_NO_MITM:+}
if [ -z "${BENCH_NO_MITM:-}" ]; then
  if ! command -v mitmdump >/dev/null; then
    echo "bench: installing mitmproxy (pip) for the comparison" >&2
    python3 -m pip install -q mitmproxy >&2
  fi
  MITM=$(command -v mitmdump)
fi
repo=$PWD
CORDON=$(bash scripts/build-release.sh)
cargo build --release --locked -q -p cordon-net --example loadgen
LOADGEN=$repo/target/release/examples/loadgen

W=$(mktemp -d /tmp/cordon-inspect-bench.XXXXXX)
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
wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "bench: nothing listens on $1" >&2; exit 1; }
TLS=$(port) MPORT=$(port)

# A CA and a leaf for localhost (webpki refuses a CA certificate as a leaf).
mkdir -p "$W/pub" "$W/www"
(cd "$W" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout ca.key -out pub/ca.crt -subj "/CN=bench CA" 2>/dev/null \
  && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem \
    -out srv.csr -subj /CN=localhost 2>/dev/null \
  && printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf \
  && openssl x509 -req -in srv.csr -CA pub/ca.crt -CAkey ca.key -CAcreateserial -out cert.pem \
    -days 1 -extfile ext.cnf 2>/dev/null)
head -c "$SIZE" /dev/urandom > "$W/www/blob"
BYTES=$(stat -c %s "$W/www/blob")
cat "$W/www/blob" >/dev/null
printf 'ok\n' > "$W/www/small"
cat > "$W/nginx.conf" <<EOF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$TLS ssl http2;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    root $W/www;
  }
}
EOF
nginx -c "$W/nginx.conf" -p "$W"
if [ -n "$MITM" ]; then
  "$MITM" --listen-host 127.0.0.1 --listen-port "$MPORT" --set confdir="$W/mitm" \
    --set ssl_verify_upstream_trusted_ca="$W/pub/ca.crt" --set stream_large_bodies=1m \
    -q >"$W/mitm.log" 2>&1 & pids+=($!)
  wait_port "$MPORT"
fi
wait_port "$TLS"

export XDG_STATE_HOME=$W/state XDG_CONFIG_HOME=$W/config
mkdir -p "$XDG_CONFIG_HOME/cordon/profiles"
for name in tunnel inspected; do
  {
    printf 'extends = "default"\n[network]\nmode = "proxy"\nallow = ["localhost"]\n'
    printf 'resolve = { "localhost" = "127.0.0.1:%s" }\n' "$TLS"
    if [ "$name" = inspected ]; then
      printf 'inspect = ["localhost"]\nupstream_ca = ["%s/pub/ca.crt"]\n' "$W"
    fi
  } > "$XDG_CONFIG_HOME/cordon/profiles/$name.toml"
done
in_cordon() { # profile command...
  local p=$1; shift
  "${BIN:-$CORDON}" run --no-tty -p "$p" --project "$repo" --allow-read "$W/pub" -- env -u NO_PROXY -u no_proxy "$@"
}
URL="https://localhost:$TLS/blob"
bulk() { # path http-flag -> bytes/s
  local fmt='%{speed_download}'
  case $1 in
    direct)    curl -s -o /dev/null -w "$fmt" "$2" --cacert "$W/pub/ca.crt" "$URL" ;;
    tunnel)    in_cordon tunnel curl -s -o /dev/null -w "$fmt" "$2" --cacert "$W/pub/ca.crt" "$URL" ;;
    # Inside an inspected session the session CA is trusted through the
    # bundle cordon binds in: no --cacert.
    inspected) in_cordon inspected curl -s -o /dev/null -w "$fmt" "$2" "$URL" ;;
    mitmproxy) curl -s -o /dev/null -w "$fmt" "$2" -x "http://127.0.0.1:$MPORT" \
                 --cacert "$W/mitm/mitmproxy-ca-cert.pem" "$URL" ;;
  esac
}
loadgen() { # path loadgen-args... -> loadgen run on that path, trusting what it needs
  local p=$1; shift
  case $p in
    direct)    "$LOADGEN" "$@" --tls "$W/pub/ca.crt" ;;
    tunnel)    in_cordon tunnel "$LOADGEN" "$@" --proxy 127.0.0.1:3128 --tls "$W/pub/ca.crt" ;;
    inspected) in_cordon inspected sh -c "exec $LOADGEN $* --proxy 127.0.0.1:3128 --tls \"\$SSL_CERT_FILE\"" ;;
    mitmproxy) "$LOADGEN" "$@" --proxy "127.0.0.1:$MPORT" --tls "$W/mitm/mitmproxy-ca-cert.pem" ;;
  esac
}
rps() { # path -> requests/s
  loadgen "$1" rps "localhost:$TLS" --path /small --conns "$CONNS" --secs "$SECS"
}
ttfb() { # path -> "p50 p99" ms of a new connection (proxy handshake, TLS, one small request)
  loadgen "$1" connect "localhost:$TLS" --path /small --n "$N"
}
if [ "$ONLY" = rps ]; then
  echo "Small requests (loadgen rps, HTTP/1.1 over TLS, $CONNS connections, ${SECS}s), tunnel and inspected alternating:"
  echo
  if [ -n "${BASE:-}" ]; then
    echo "| round | tunnel | inspected | inspected vs tunnel | inspected ($BASE) | vs tunnel |"
    echo "|---|---:|---:|---:|---:|---:|"
  else
    echo "| round | tunnel | inspected | inspected vs tunnel |"
    echo "|---|---:|---:|---:|"
  fi
  for r in $(seq "$ROUNDS"); do
    t=$(rps tunnel 2>/dev/null || echo 0) i=$(rps inspected 2>/dev/null || echo 0)
    if [ -n "${BASE:-}" ]; then
      b=$(BIN=$BASE rps inspected 2>/dev/null || echo 0)
      awk -v r="$r" -v t="$t" -v i="$i" -v b="$b" \
        'BEGIN { printf "| %d | %.0f | %.0f | %.0f %% | %.0f | %.0f %% |\n", r, t, i, 100 * i / t, b, 100 * b / t }'
    else
      awk -v r="$r" -v t="$t" -v i="$i" 'BEGIN { printf "| %d | %.0f | %.0f | %.0f %% |\n", r, t, i, 100 * i / t }'
    fi
  done
  exit 0
fi
if [ "$ONLY" = bulk ]; then
  echo "Bulk download of $BYTES bytes through inspection (curl), MB/s, rounds alternating:"
  echo
  echo "| round | HTTP/1.1 | HTTP/2 |${BASE:+ HTTP/1.1 ($BASE) | HTTP/2 ($BASE) |}"
  echo "|---|---:|---:|${BASE:+---:|---:|}"
  for r in $(seq "$ROUNDS"); do
    row="| $r |"
    for bin in "$CORDON" ${BASE:-}; do
      for h in --http1.1 --http2; do
        v=$(BIN=$bin bulk inspected "$h" 2>/dev/null || echo 0)
        row="$row $(awk -v v="$v" 'BEGIN { printf "%.0f", v / 1e6 }') |"
      done
    done
    echo "$row"
  done
  exit 0
fi
paths=(direct tunnel inspected)
[ -n "$MITM" ] && paths+=(mitmproxy)
echo
echo "A small response on a new connection (loadgen connect: proxy handshake, TLS, one request), $N in a row:"
echo
echo "| path | p50 ms | p99 ms | p50 vs direct |"
echo "|---|---:|---:|---:|"
declare -A first
for p in "${paths[@]}"; do first[$p]=$(ttfb "$p" 2>/dev/null); done
for p in "${paths[@]}"; do
  set -- ${first[$p]}; set -- "$1" "$2" ${first[direct]}
  awk -v p="$p" -v a="$1" -v b="$2" -v d="$3" \
    'BEGIN { printf "| %s | %.2f | %.2f | %+.2f |\n", p, a, b, a - d }'
done
[ "$ONLY" = ttfb ] && exit 0
declare -A best
for r in $(seq "$ROUNDS"); do
  for p in "${paths[@]}"; do
    for h in --http1.1 --http2; do
      v=$(bulk "$p" "$h" 2>/dev/null || echo 0)
      k="bulk $p $h"
      awk -v a="$v" -v b="${best[$k]:-0}" 'BEGIN { exit !(a > b) }' && best[$k]=$v
    done
    v=$(rps "$p" 2>/dev/null || echo 0)
    k="rps $p"
    awk -v a="$v" -v b="${best[$k]:-0}" 'BEGIN { exit !(a > b) }' && best[$k]=$v
  done
  echo "round $r done" >&2
done
echo
echo "Bulk download of $BYTES bytes (curl), best of $ROUNDS, MB/s:"
echo
echo "| path | HTTP/1.1 | HTTP/2 |"
echo "|---|---:|---:|"
for p in "${paths[@]}"; do
  awk -v p="$p" -v a="${best["bulk $p --http1.1"]}" -v b="${best["bulk $p --http2"]}" \
    'BEGIN { printf "| %s | %.0f | %.0f |\n", p, a / 1e6, b / 1e6 }'
done
echo
echo "Small requests (loadgen rps, HTTP/1.1 over TLS, $CONNS connections, ${SECS}s), best of $ROUNDS:"
echo
echo "| path | requests/s | vs tunnel |"
echo "|---|---:|---:|"
for p in "${paths[@]}"; do
  awk -v p="$p" -v a="${best["rps $p"]}" -v t="${best["rps tunnel"]}" \
    'BEGIN { printf "| %s | %.0f | %.0f %% |\n", p, a, 100 * a / t }'
done
