#!/usr/bin/env bash
# A chaos run of the given length (seconds, default 1800) and seed: producers
# (native, and confluent-kafka over the Kafka listener), a reader and two
# consumer groups (`broker consume --group` processes, and confluent-kafka
# members: the Kafka clients come from scripts/install-kafka-clients.sh) against
# a broker that is killed, paused and run out of disk (a tmpfs the run mounts:
# needs root), while members crash, pause and slow down and hostile clients
# attack. Prints the faults injected and the checker's counts, writes them as
# JSON (default bench-results/chaos-YYYY-MM-DD.json, or $CHAOS_SUMMARY), and
# fails on any lost, reordered or inconsistent record, printing the seed to
# reproduce it. The test suite runs a 40 s version.
#
#   scripts/chaos.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_SECS="${1:-1800}"
export CHAOS_SEED="${2:-$RANDOM$RANDOM}"
export CHAOS_REVISION="$(git describe --always --dirty 2>/dev/null || echo unknown)"
export CHAOS_SUMMARY="${CHAOS_SUMMARY:-$PWD/bench-results/chaos-$(date -u +%F).json}"
cargo test --locked --release -p broker --test chaos -- --nocapture --exact chaos
echo "summary: $CHAOS_SUMMARY"
