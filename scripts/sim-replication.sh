#!/usr/bin/env bash
# The replication simulator over many seeds (broker-replication's
# `sim_many`, an ignored test, built in release): every scenario, or one,
# each seed a full run with the checker after every simulated millisecond
# and a heal-and-converge check at the end. Prints one summary line per
# scenario (seeds, failures, acknowledged and lost records, unclean
# elections, leader epochs, faults, time) and the first failing seeds with
# their replay command.
#
#   scripts/sim-replication.sh [SEEDS] [SCENARIO] [FLAW]
#
# SEEDS: per scenario (default 1000), from FIRST_SEED (env, default 0);
# BROKERS (env, default 3): the replication factor.
# SCENARIO: all (default), leader-crash, follower-crash, leader-isolation,
# one-way, bridge, flapping, paused-broker, outage, unclean, mixed.
# FLAW (to see the checker catch one): truncate-to-hw, elect-outside-isr,
# follower-acks-before-fsync, no-maximal-isr; failures are then expected.
# CLIENT_VIEW=1 (env): check only what clients see (acknowledgements,
# reads, leaders' committed prefixes, the final log), not the replicas'
# internal invariants: with a FLAW, to see it lose committed data.
# Replay one seed with a trace:
#   SEED=n SCENARIO=name cargo test -p broker-replication --release sim_replay -- --ignored --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
export SEEDS="${1:-1000}"
export SCENARIO="${2:-all}"
if [[ -n "${3:-}" ]]; then
    export FLAW="$3"
fi
exec cargo test -p broker-replication --release --lib sim_many -- --ignored --nocapture --test-threads 1
