#!/usr/bin/env bash
# Runs every cargo-fuzz target of the broker for a fixed number of runs, so CI
# (and anyone) can fuzz deterministically-bounded amounts of work.
#
#   FUZZ_RUNS=200000        runs per target (libFuzzer -runs)
#   FUZZ_SEED=<n>           libFuzzer seed; random if unset (printed as "Seed:")
#   FUZZ_SANITIZER=address  cargo-fuzz sanitizer (address, none, ...)
#   FUZZ_TARGETS="a b"      subset of targets; all of them if unset
#
# The targets (`cargo fuzz list`): batch_decode (record batches),
# frame_decode (native frames), kafka_decode (Kafka requests: header and
# every api's body decoder). kafka_decode's seed corpus is real requests of
# every api and version served, written by
# `cargo run --example kafka_corpus` (in broker/fuzz): rerun it when an api
# or a version is added to broker_server::kafka::APIS.
#
# Only the stable toolchain is installed: RUSTC_BOOTSTRAP=1 lets it accept the
# nightly-only flags cargo-fuzz passes. New inputs go to a scratch corpus, so
# the committed seed corpus (broker/fuzz/corpus/<target>/) only changes by
# hand; crashes land in broker/fuzz/artifacts/<target>/.
set -euo pipefail

runs="${FUZZ_RUNS:-200000}"
sanitizer="${FUZZ_SANITIZER:-address}"
fuzz_dir="$(cd "$(dirname "$0")/.." && pwd)/broker/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd "$fuzz_dir"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

seed_args=()
if [[ -n "${FUZZ_SEED:-}" ]]; then
    seed_args=("-seed=$FUZZ_SEED")
fi

for target in $targets; do
    echo "==> fuzzing $target for $runs runs (sanitizer: $sanitizer)"
    mkdir -p "$scratch/$target" "corpus/$target"
    cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
        -runs="$runs" "${seed_args[@]}"
done
echo "==> all fuzz targets ran $runs runs without a crash"
