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
cargo test --workspace --locked
