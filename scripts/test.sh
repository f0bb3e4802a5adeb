#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test
# (unit, property, crash, fault and integration tests) of the workspace.
# Needs root for the full-disk test (it mounts a small tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."

# The generated protocol code must be what the pinned flatc makes of the schema.
scripts/check-protocol.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The Kafka-protocol tests drive the broker with real Kafka clients (pinned).
scripts/install-kafka-clients.sh
# Among them the chaos runs' short slices at fixed seeds: tests/chaos (one
# broker, 40 s) and tests/cluster_chaos (three brokers behind proxies, 20 s,
# CLUSTER_CHAOS_SEED=20261203; scripts/chaos-cluster.sh runs longer ones).
cargo test --workspace --locked
# The chaos checker's own test: a build that acknowledges appends before
# writing them (the `fault-injection` feature, never in a normal build) must
# be caught losing acknowledged records.
cargo clippy -p broker --features fault-injection --all-targets --locked -- -D warnings
cargo test -p broker --features fault-injection --locked --test chaos a_broker_that_acks_before_writing_is_caught
# The same for the cluster chaos checker: brokers of a cluster that ack before
# writing, killed and restarted, must be caught losing acknowledged records.
cargo test -p broker --features fault-injection --locked --test cluster_chaos a_cluster_that_acks_before_writing_is_caught
