#!/bin/bash
# DNS benchmark (issue 14): dnsperf against rktup-dns and against dnsmasq serving the same
# records, on this machine. Needs: dnsperf, dnsmasq (Debian dnsperf, dnsmasq-base), a built
# `rktup` (for the control plane) and the release example:
#   cargo build --release -p rktup-dns --example bench_server
# Usage: crates/dns/bench/run.sh [SECONDS]   (results under $OUT, default /tmp/rktup-dns-bench)
set -euo pipefail
SECS=${1:-15}
T=${CARGO_TARGET_DIR:-target}
RKTUP=${RKTUP:-$T/debug/rktup}
SERVER=${SERVER:-$T/release/examples/bench_server}
OUT=${OUT:-/tmp/rktup-dns-bench}
N=${N:-1000} H=${H:-100} E=${E:-10}
rm -rf "$OUT" && mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port) DNS=$(free_port) MASQ=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$RKTUP" controlplane --data-dir "$OUT/cp" --secure-port "$API" >"$OUT/cp.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$OUT/cp/admin.kubeconfig" ] && kubectl --kubeconfig "$OUT/cp/admin.kubeconfig" get ns >/dev/null 2>&1 && break; sleep 0.2; done

mkfifo "$OUT/hold"
"$SERVER" "$OUT/cp/admin.kubeconfig" "127.0.0.1:$DNS" "127.0.0.1:9" --populate "$N" "$H" "$E" \
    --hosts "$OUT/hosts" <"$OUT/hold" >"$OUT/server.log" 2>&1 &
pids+=($!)
exec 9>"$OUT/hold"
for _ in $(seq 600); do grep -q '^ready' "$OUT/server.log" 2>/dev/null && break; sleep 0.2; done
grep -q '^ready' "$OUT/server.log"

dnsmasq -d -k -u root -g root -p "$MASQ" --listen-address=127.0.0.1 --bind-interfaces --no-resolv \
    --no-hosts --addn-hosts="$OUT/hosts" --local=/cluster.local/ --cache-size=10000 >"$OUT/dnsmasq.log" 2>&1 &
pids+=($!)
sleep 1

# The query mix: every ClusterIP name, every headless name (E addresses each), as many names
# that do not exist (NXDOMAIN).
{
  for i in $(seq 0 $((N-1))); do echo "svc-$i.dnsbench.svc.cluster.local A"; done
  for i in $(seq 0 $((H-1))); do echo "hl-$i.dnsbench.svc.cluster.local A"; done
  for i in $(seq 0 $((H-1))); do echo "missing-$i.dnsbench.svc.cluster.local A"; done
} | shuf --random-source=<(yes) >"$OUT/queries"

p99() { grep '^> ' "$1" | awk '{print $NF}' | sort -g | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "p50 %.3f ms, p99 %.3f ms (n=%d)", a[int(NR*0.5)]*1000, a[i]*1000, NR}'; }
qps() { grep 'Queries per second' "$1" | awk '{printf "%d", $4}'; }
lost() { grep 'Queries lost' "$1" | awk '{print $3}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "median %d (min %d, max %d)", a[int((NR+1)/2)], a[1], a[NR]}'; }
ROUNDS=${ROUNDS:-5}
declare -A all
# Throughput: the two servers alternate, ROUNDS times, so machine noise falls on both.
for r in $(seq "$ROUNDS"); do
  for target in "rktup-dns:$DNS" "dnsmasq:$MASQ"; do
    name=${target%%:*} port=${target##*:}
    dnsperf -s 127.0.0.1 -p "$port" -d "$OUT/queries" -l "$SECS" -c 4 -q 100 >"$OUT/$name.qps.$r.txt" 2>&1
    all[$name]="${all[$name]:-} $(qps "$OUT/$name.qps.$r.txt")"
    echo "round $r $name: $(qps "$OUT/$name.qps.$r.txt") q/s, lost $(lost "$OUT/$name.qps.$r.txt")"
  done
done
for target in "rktup-dns:$DNS" "dnsmasq:$MASQ"; do
  name=${target%%:*} port=${target##*:}
  # Latency without queueing: a fixed 10,000 queries/s from one client, every answer timed.
  dnsperf -s 127.0.0.1 -p "$port" -d "$OUT/queries" -l "$SECS" -c 1 -Q 10000 -v >"$OUT/$name.q10k.txt" 2>&1
  # Latency at saturation (100 outstanding per client, 4 clients).
  dnsperf -s 127.0.0.1 -p "$port" -d "$OUT/queries" -l "$SECS" -c 4 -q 100 -v >"$OUT/$name.lat.txt" 2>&1
  echo "== $name"
  echo "  throughput: $(echo ${all[$name]} | median) queries/s over $ROUNDS runs of ${SECS}s"
  grep -E 'Response codes' "$OUT/$name.qps.1.txt"
  echo "  at 10k q/s: $(p99 "$OUT/$name.q10k.txt"), lost $(lost "$OUT/$name.q10k.txt")"
  echo "  saturated: $(qps "$OUT/$name.lat.txt") q/s, $(p99 "$OUT/$name.lat.txt")"
done
