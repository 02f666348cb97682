#!/bin/sh
# Admission webhook round-trip overhead (issue 17): ConfigMap creates through kube-rs against an
# in-process control plane with no webhook, an unmatched one, one validating and one mutating
# webhook (HTTPS by URL to a server in the test); p50/p99 per request for each. Release build.
#
#     ROUNDS=500 crates/controlplane/bench/webhook.sh
#
# The overhead of a webhook is its p50/p99 minus the "unmatched" row's.
set -e
cd "$(dirname "$0")/../../.."
ROUNDS="${ROUNDS:-500}" cargo test --release -p rktup-controlplane --test webhooks \
    -- --ignored --nocapture --exact bench_webhook_overhead 2>&1 | grep '^webhook-bench'
