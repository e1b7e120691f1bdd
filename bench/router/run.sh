#!/usr/bin/env bash
# Router throughput and p99 latency against the same backend reached
# directly, with wrk. See bench/router/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
BACKEND=${BACKEND:-busybox}          # busybox (httpd in a container) | hyper (keep-alive, on the host)
IMAGE=${BENCH_IMAGE:-rack-test/busybox:latest}
BACKEND_CPUS=${BACKEND_CPUS:-}       # busybox: the container's CPU limit (docker --cpus), as `resources.web.cpus` sets it
HOST=bench.localhost

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  as_root apt-get install -y -q wrk >/dev/null || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q wrk >/dev/null; }
fi

if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN                     # a prebuilt router_bench (A/B against another build)
else
  echo "building examples/router_bench (release)" >&2
  cargo build -q --release --no-default-features --example router_bench
  BIN=${CARGO_TARGET_DIR:-target}/release/examples/router_bench
fi

tmp=$(mktemp -d)
# wrk closes every connection to busybox httpd first, so its side keeps each
# address pair in TIME_WAIT for a minute and the ~28k ephemeral ports to the
# container run out after a few seconds at full speed: the direct runs would
# crawl at ~470 requests/s. Let wrk reuse them for the run (the router does
# not need it: it resets the connections it closes).
tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse)
if [[ $BACKEND == busybox && $tw_reuse != 1 ]]; then
  as_root sysctl -q -w net.ipv4.tcp_tw_reuse=1
else
  tw_reuse=""
fi

cid=""
cleanup() {
  [[ -n $tw_reuse ]] && as_root sysctl -q -w "net.ipv4.tcp_tw_reuse=$tw_reuse" || true
  for f in "$tmp"/*.pid; do [[ -e $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
  [[ -n $cid ]] && docker rm -f "$cid" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME ARGS...: runs the example in the background, echoes its address.
start() {
  local name=$1; shift
  # (called in $(...): a subshell, so the pid goes to a file for cleanup)
  "$BIN" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  echo $! >"$tmp/$name.pid"
  for _ in $(seq 100); do
    if grep -q '^ready ' "$tmp/$name.out" 2>/dev/null; then
      sed -n 's/^ready //p' "$tmp/$name.out"
      return
    fi
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$tmp/$name.err" >&2; exit 2
}

case $BACKEND in
  busybox)
    if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
      # The same image scripts/test builds: static busybox on scratch.
      bb=$(command -v busybox || true)
      [[ -n $bb ]] && file -L "$bb" 2>/dev/null | grep -q static || { echo "need $IMAGE or a static busybox (Debian: busybox-static)" >&2; exit 2; }
      mkdir -p "$tmp/img" && cp "$bb" "$tmp/img/busybox"
      printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$tmp/img/Dockerfile"
      docker build -q -t "$IMAGE" "$tmp/img" >/dev/null
    fi
    limit=()
    [[ -n $BACKEND_CPUS ]] && limit=(--cpus "$BACKEND_CPUS")
    cid=$(docker run -d --rm "${limit[@]}" "$IMAGE" /bin/sh -c \
      'mkdir -p /www && echo "hello from busybox httpd" >/www/index.html && exec httpd -f -p 8000 -h /www')
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")
    target=$ip:8000
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/$ip/8000") 2>/dev/null && break; sleep 0.05; done
    ;;
  hyper)
    target=$(start backend hello 127.0.0.1:0)
    ;;
  *) echo "BACKEND must be busybox or hyper" >&2; exit 2 ;;
esac
router=$(start router proxy 127.0.0.1:0 "$HOST" "$target")

# wrk's latency figures → milliseconds.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }'; }

# CPU time (user+system, clock ticks) the router process has used so far.
router_ticks() { awk '{print $14+$15}' "/proc/$(cat "$tmp/router.pid")/stat"; }

# CPU time (microseconds) the backend has used so far: the container's
# cgroup (v1 or v2) or the hyper process; empty when it cannot be read.
backend_us() {
  case $BACKEND in
    busybox)
      local f
      for f in "/sys/fs/cgroup/cpuacct/docker/$cid/cpuacct.usage" "/sys/fs/cgroup/cpu,cpuacct/docker/$cid/cpuacct.usage"; do
        [[ -r $f ]] && { echo $(($(cat "$f") / 1000)); return; }
      done
      for f in "/sys/fs/cgroup/system.slice/docker-$cid.scope/cpu.stat" "/sys/fs/cgroup/docker/$cid/cpu.stat"; do
        [[ -r $f ]] && { awk '$1=="usage_usec" {print $2}' "$f"; return; }
      done ;;
    hyper) awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15) * 1e6 / hz}' "/proc/$(cat "$tmp/backend.pid")/stat" ;;
  esac
}

# CPU time (microseconds) of this shell's finished children (wrk), from
# `times` run in this shell: in a $(...) subshell it would count nothing.
children_us() { awk 'NR==2 { for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } printf "%.0f", s * 1e6 }' "$tmp/times"; }

# measure NAME URL: one wrk run; prints "rps p50_ms p99_ms errors" and the
# CPU per request (microseconds) of the router, wrk and the backend.
measure() {
  local out="$tmp/wrk-$1.txt" t0 t1 b0 b1 w0 w1
  times >"$tmp/times"
  t0=$(router_ticks); b0=$(backend_us); w0=$(children_us)
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: $HOST" "http://$2/" >"$out"
  times >"$tmp/times"
  t1=$(router_ticks); b1=$(backend_us); w1=$(children_us)
  local rps p50 p99 errs reqs cpu wcpu bcpu
  reqs=$(awk '/requests in/ {print $1}' "$out")
  cpu=$(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (n > 0) ? d / hz * 1e6 / n : 0 }')
  wcpu=$(awk -v d=$((w1 - w0)) -v n="$reqs" 'BEGIN { printf "%.1f", (n > 0) ? d / n : 0 }')
  bcpu=-
  [[ -n $b0 && -n $b1 ]] && bcpu=$(awk -v d="$b0" -v e="$b1" -v n="$reqs" 'BEGIN { printf "%.1f", (n > 0) ? (e - d) / n : 0 }')
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' "$out" | to_ms)
  errs=$(awk '/Socket errors:/ {gsub(",",""); s+=$4+$6+$8+$10} /Non-2xx/ {s+=$NF} END {print s+0}' "$out")
  echo "$rps $p50 $p99 $errs $cpu $wcpu $bcpu"
}

wrk -t1 -c4 -d1s -H "Host: $HOST" "http://$router/" >/dev/null  # warm up both paths
wrk -t1 -c4 -d1s "http://$target/" >/dev/null

echo "backend: $BACKEND ($target${BACKEND_CPUS:+, --cpus $BACKEND_CPUS})   router: $router   wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds"
echo "CPU per request in microseconds: router, wrk, backend (${BACKEND})"
printf '%-7s %-6s %12s %9s %9s %7s %8s %8s %8s\n' round path req/s p50_ms p99_ms errors router wrk backend
results="$tmp/results"
for r in $(seq "$ROUNDS"); do
  for path in direct router; do
    url=$target; [[ $path == router ]] && url=$router
    read -r rps p50 p99 errs cpu wcpu bcpu < <(measure "$path-$r" "$url")
    [[ $path == direct ]] && cpu=-
    printf '%-7s %-6s %12s %9s %9s %7s %8s %8s %8s\n' "$r" "$path" "$rps" "$p50" "$p99" "$errs" "$cpu" "$wcpu" "$bcpu"
    echo "$path $rps $p50 $p99 $errs ${cpu/-/0} $wcpu ${bcpu/-/0}" >>"$results"
  done
done

awk '
  { n[$1]++; rps[$1]+=$2; p50[$1]+=$3; p99[$1]+=$4; err[$1]+=$5; cpu[$1]+=$6; wcpu[$1]+=$7; bcpu[$1]+=$8 }
  END {
    for (p in n) { rps[p]/=n[p]; p50[p]/=n[p]; p99[p]/=n[p]; cpu[p]/=n[p]; wcpu[p]/=n[p]; bcpu[p]/=n[p] }
    printf "\nmean    direct: %.0f req/s, p50 %.3f ms, p99 %.3f ms; CPU us/request: wrk %.1f, backend %.1f\n", rps["direct"], p50["direct"], p99["direct"], wcpu["direct"], bcpu["direct"]
    printf "mean    router: %.0f req/s, p50 %.3f ms, p99 %.3f ms; CPU us/request: router %.1f, wrk %.1f, backend %.1f\n", rps["router"], p50["router"], p99["router"], cpu["router"], wcpu["router"], bcpu["router"]
    printf "ratio router/direct: throughput %.2fx, p99 latency %.2fx   errors: %d\n", rps["router"]/rps["direct"], p99["router"]/p99["direct"], err["direct"]+err["router"]
    exit (err["direct"]+err["router"] > 0)
  }' "$results"
