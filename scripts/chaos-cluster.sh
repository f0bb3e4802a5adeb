#!/usr/bin/env bash
# A cluster chaos run of the given length (seconds, default 300) and seed:
# three brokers, all controllers, the links between the controllers behind
# netfault proxies; producer threads (every acknowledgement recorded) and
# topic creates and deletes while brokers are SIGKILLed and restarted,
# SIGSTOPped past their session timeout, and controllers isolated or cut
# one way by the proxies (broker/tests/cluster_chaos/). At the end every
# acknowledged record must be at its offset, every acknowledged topic on
# every broker (deleted ones gone, none twice), and the metadata the same on
# every broker and controller. Writes the summary as JSON (default
# bench-results/chaos-cluster-YYYY-MM-DD.json, or $CLUSTER_CHAOS_SUMMARY) and
# fails on any violation, printing the seed to reproduce it. The test suite
# runs a 20 s version (cargo test runs it at its default length and seed).
#
#   scripts/chaos-cluster.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CLUSTER_CHAOS_SECONDS="${1:-300}"
export CLUSTER_CHAOS_SEED="${2:-$RANDOM$RANDOM}"
export CLUSTER_CHAOS_REVISION="$(git describe --always --dirty 2>/dev/null || echo unknown)"
export CLUSTER_CHAOS_SUMMARY="${CLUSTER_CHAOS_SUMMARY:-$PWD/bench-results/chaos-cluster-$(date -u +%F).json}"
cargo test --locked --release -p broker --test cluster_chaos -- --nocapture --exact cluster_chaos
echo "summary: $CLUSTER_CHAOS_SUMMARY"
