#!/usr/bin/env bash
# A chaos run of the given length (seconds, default 600) and seed: producers
# and a consumer against a broker that is killed, paused and run out of disk
# (a tmpfs the run mounts: needs root). Prints the faults injected and the
# checker's counts; fails on any lost, reordered or inconsistent record and
# prints the seed to reproduce it. The test suite runs a 40 s version.
#
#   scripts/chaos.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_SECS="${1:-600}"
export CHAOS_SEED="${2:-$RANDOM$RANDOM}"
exec cargo test --release -p broker --test chaos -- --nocapture
