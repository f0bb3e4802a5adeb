#!/usr/bin/env bash
# Benchmarks the partition log's append path: MB/s per fsync policy next to a
# raw glommio DmaStreamWriter on the same disk, in the same run. Builds the
# bench in release mode, prints a table and writes
# bench-results/log-append-YYYY-MM-DD.json (UTC date; a second run on the same
# day replaces it unless given its own name with --json-suffix NAME).
#
# Defaults: 1 GiB per system and run, 3 runs, 64 appends in flight, executor
# pinned to CPU 1, data under target/bench-log (on the real disk; deleted
# between systems). Any option is passed through to the bench, e.g.
#   scripts/bench-log.sh --total-mib 256 --in-flight 32 --runs 5
# and `scripts/bench-log.sh --help` lists them all.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --locked -p broker-log --bench log_append -- \
    --dir "$PWD/target/bench-log" \
    --json-dir "$PWD/bench-results" \
    "$@"
