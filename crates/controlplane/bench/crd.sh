#!/bin/sh
# Custom resources against ConfigMaps (issue 17): create throughput (kube-rs, 16 in flight, batches
# of 500 alternating between the kinds) and watch latency (create → ADDED event, p50/p99 of ROUNDS
# (default 5,000) per kind, the kinds alternating) with N (default 10,000) objects of each kind
# stored in one control plane.
# Release build.
#
#     N=10000 crates/controlplane/bench/crd.sh
set -e
cd "$(dirname "$0")/../../.."
N="${N:-10000}" cargo test --release -p rktup-controlplane --test crds \
    -- --ignored --nocapture --exact bench_custom_resources_vs_configmaps 2>&1 | grep '^crd-bench'
