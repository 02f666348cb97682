#!/usr/bin/env bash
# Ten (N) one-node local clusters up and down, as root, with the binary given (a release build:
# `cargo build --release --offline --bin rktup`):
#
#   providers/local/bench/many_clusters.sh /var/cache/rktup-target/main/release/rktup [N] [ROUNDS]
#
# Each round times, whole commands: N `local up`s started at once until every one returned
# (each waits for its node Ready and its cluster DNS), then N `local down`s at once; and the same
# N clusters one after another. Prints one line per measure. State and kubeconfig go to a
# temporary directory; every cluster is taken down even when a step fails.
set -euo pipefail
bin=${1:?usage: many_clusters.sh RKTUP_BINARY [N] [ROUNDS]}
n=${2:-10}
rounds=${3:-3}
dir=$(mktemp -d)
export RKTUP_STATE_DIR=$dir/state KUBECONFIG=$dir/kubeconfig
unset API_PORT
names=()
cleanup() {
  for c in "${names[@]}"; do "$bin" local down --name "$c" >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

run_all() { # ACTION: every cluster at once; fails if one fails
  local pids=() c
  for c in "${names[@]}"; do
    "$bin" local "$1" --name "$c" >"$dir/$c.$1.log" 2>&1 &
    pids+=($!)
  done
  local rc=0 p
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  if [ "$rc" -ne 0 ]; then tail -n 5 "$dir"/*."$1".log >&2; return 1; fi
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for r in $(seq 1 "$rounds"); do
  names=()
  for i in $(seq 1 "$n"); do names+=("mc$$x${r}n$i"); done
  t0=$(now); run_all up; t1=$(now); run_all down; t2=$(now)
  parallel="$n at once: up $(secs "$t0" "$t1") s, down $(secs "$t1" "$t2") s"
  t0=$(now)
  for c in "${names[@]}"; do "$bin" local up --name "$c" >"$dir/$c.seq-up.log" 2>&1; done
  t1=$(now)
  for c in "${names[@]}"; do "$bin" local down --name "$c" >"$dir/$c.seq-down.log" 2>&1; done
  t2=$(now)
  names=()
  echo "round $r: $parallel; one after another: up $(secs "$t0" "$t1") s, down $(secs "$t1" "$t2") s"
done
