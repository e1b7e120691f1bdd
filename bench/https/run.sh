#!/usr/bin/env bash
# The router's HTTPS against Debian's nginx terminating TLS in front of the
# same backend, with wrk, one certificate each. See bench/https/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
HOST=localhost              # wrk sends the URL host as SNI: a name that resolves to 127.0.0.1

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
for pkg in wrk nginx-light; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    echo "installing $pkg" >&2
    as_root apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
  fi
done

if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN
else
  echo "building examples/router_bench (release)" >&2
  cargo build -q --release --no-default-features --example router_bench
  BIN=${CARGO_TARGET_DIR:-target}/release/examples/router_bench
fi

tmp=$(mktemp -d)
cleanup() {
  for f in "$tmp"/*.pid; do [[ -e $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One ECDSA P-256 certificate for both (what ACME issues by default here).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

start() {
  local name=$1; shift
  "$BIN" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  echo $! >"$tmp/$name.pid"
  for _ in $(seq 100); do
    grep -q '^ready ' "$tmp/$name.out" 2>/dev/null && { sed -n 's/^ready //p' "$tmp/$name.out"; return; }
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$tmp/$name.err" >&2; exit 2
}

backend=$(start backend hello 127.0.0.1:0)
read -r rack_http rack_https < <(start router tls 127.0.0.1:0 127.0.0.1:0 "$HOST" "$tmp/cert.pem" "$tmp/key.pem" "$backend")

# nginx: TLS with the same certificate, keep-alive to the same backend, one
# worker per CPU (as the router has one thread per CPU).
nginx_port=$(free_port)
cat >"$tmp/nginx.conf" <<CONF
worker_processes auto;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server $backend; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port ssl http2;
    server_name $HOST;
    ssl_certificate $tmp/cert.pem;
    ssl_certificate_key $tmp/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
CONF
/usr/sbin/nginx -c "$tmp/nginx.conf" -g 'daemon on;'
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && break; sleep 0.05; done

to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }'; }

# measure NAME URL [wrk args]: "rps p99_ms errors".
measure() {
  local out="$tmp/wrk-$1.txt" url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: $HOST" "$@" "$url" >"$out"
  local rps p99 errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p99=$(awk '$1=="99%" {print $2}' "$out" | to_ms)
  errs=$(awk '/Socket errors:/ {gsub(",",""); s+=$4+$6+$8+$10} /Non-2xx/ {s+=$NF} END {print s+0}' "$out")
  echo "$rps $p99 $errs"
}

# wrk sends the URL's host as SNI (the router picks the certificate by it).
rack_url="https://$HOST:${rack_https##*:}/"
nginx_url="https://$HOST:$nginx_port/"
plain_url="http://$rack_http/"
for u in "$rack_url" "$nginx_url" "$plain_url"; do wrk -t1 -c4 -d1s -H "Host: $HOST" "$u" >/dev/null; done

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds; backend: hyper keep-alive at $backend"
printf '%-6s %-22s %12s %9s %7s\n' round case req/s p99_ms errors
results="$tmp/results"
for r in $(seq "$ROUNDS"); do
  for c in nginx-keepalive rack-keepalive nginx-handshakes rack-handshakes rack-http; do
    case $c in
      nginx-keepalive) set -- "$nginx_url" ;;
      rack-keepalive) set -- "$rack_url" ;;
      nginx-handshakes) set -- "$nginx_url" -H "Connection: close" ;;
      rack-handshakes) set -- "$rack_url" -H "Connection: close" ;;
      rack-http) set -- "$plain_url" ;;
    esac
    read -r rps p99 errs < <(measure "$c-$r" "$@")
    printf '%-6s %-22s %12s %9s %7s\n' "$r" "$c" "$rps" "$p99" "$errs"
    echo "$c $rps $p99 $errs" >>"$results"
  done
done

awk '
  { n[$1]++; rps[$1]+=$2; p99[$1]+=$3; err+=$4 }
  END {
    for (c in n) { rps[c]/=n[c]; p99[c]/=n[c] }
    printf "\nkeep-alive HTTPS: rack %.0f req/s (p99 %.3f ms), nginx %.0f req/s (p99 %.3f ms): rack/nginx %.2fx, p99 %.2fx\n", rps["rack-keepalive"], p99["rack-keepalive"], rps["nginx-keepalive"], p99["nginx-keepalive"], rps["rack-keepalive"]/rps["nginx-keepalive"], p99["rack-keepalive"]/p99["nginx-keepalive"]
    printf "new handshakes/s: rack %.0f, nginx %.0f: rack/nginx %.2fx, p99 %.2fx\n", rps["rack-handshakes"], rps["nginx-handshakes"], rps["rack-handshakes"]/rps["nginx-handshakes"], p99["rack-handshakes"]/p99["nginx-handshakes"]
    printf "cost of TLS: rack HTTPS/HTTP throughput %.2fx   errors: %d\n", rps["rack-keepalive"]/rps["rack-http"], err
    exit (err > 0)
  }' "$results"
