#!/usr/bin/env bash
# Reproduces the committed benchmark results: the Kafka paper's experiments
# against our broker, RabbitMQ and ActiveMQ (installed from Debian's packages
# by scripts/peers.sh when missing; needs root for that), three runs each,
# medians in summary.md, chart.svg beside it.
#
#   scripts/bench.sh [OUT_DIR] [extra loadgen paper options...]
#
# Defaults: the paper's 10 million messages against our broker, 200,000
# against each peer. The broker runs pinned to core 0, loadgen to core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results/paper-$(date -u +%Y-%m-%d)}
shift || true
cargo build --release --locked -p loadgen
exec target/release/loadgen paper --out-dir "$out" "$@"
