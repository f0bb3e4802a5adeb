#!/usr/bin/env bash
# CI check: the committed generated code (broker/protocol/src/generated/) is
# exactly what scripts/gen-protocol.sh makes from schemas/protocol.fbs with
# the pinned flatc. Regenerates into a temporary directory and diffs; exits 1
# with the diff and the fix when they disagree. Changes nothing in the tree.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
committed="$root/broker/protocol/src/generated"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

"$root/scripts/gen-protocol.sh" "$scratch/generated"

if ! diff -ru "$committed" "$scratch/generated" >"$scratch/diff"; then
    # Paths relative to the repository, so the diff reads the same everywhere.
    sed -e "s|$scratch/generated|<regenerated>|g" -e "s|$root/||g" "$scratch/diff" | head -n 200
    cat >&2 <<EOF

check-protocol: FAILED. schemas/protocol.fbs and the committed generated code
in broker/protocol/src/generated/ disagree (diff above: committed vs what the
schema generates). Run

    scripts/gen-protocol.sh

and commit the schema and broker/protocol/src/generated/ together. Never edit
the generated files by hand.
EOF
    exit 1
fi
echo "check-protocol: broker/protocol/src/generated/ matches schemas/protocol.fbs" >&2
