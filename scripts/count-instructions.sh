#!/usr/bin/env bash
# Instructions the broker's shard thread executes for one produce workload,
# counted by callgrind (repeatable whatever else the machine does, unlike
# wall-clock figures on a shared 2-core machine; the count still moves by a
# few percent with how many appends share a write cycle or an fdatasync).
#
#   scripts/count-instructions.sh [BIN_DIR] [BATCH] [FSYNC] [MESSAGES]
#
# BIN_DIR holds `broker` and `loadgen` (default target/release: build them
# with `cargo build --release -p broker -p loadgen`). One shard, 200-byte
# messages, one producer (SIZE=bytes and PRODUCERS=n in the environment
# change them); 1,000 messages warm the broker up (topic creation, first
# segment) before the counted ones. Needs valgrind (Debian: valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release}"
batch="${2:-1}"
fsync="${3:-never}"
n="${4:-100000}"
command -v valgrind >/dev/null || { echo "count-instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
port=$((20000 + RANDOM % 20000))
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" --dump-instr=no --separate-threads=yes \
  "$bin/broker" serve --listen "127.0.0.1:$port" --shards 1 --fsync "$fsync" --data-dir "$out/data" \
  >"$out/broker.out" 2>"$out/broker.err" &
vg=$!
for _ in $(seq 1 600); do grep -q '^ready' "$out/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$out/broker.out" || { echo "count-instructions: the broker did not start" >&2; cat "$out/broker.err" >&2; kill "$vg"; exit 1; }
produce() {
  "$bin/loadgen" produce --bootstrap "127.0.0.1:$port" --topic t --messages "$1" --size "${SIZE:-200}" \
    --batch "$batch" --producers "${PRODUCERS:-1}" --partitions 1 >>"$out/loadgen.log" 2>&1 ||
    { echo "count-instructions: loadgen failed" >&2; cat "$out/loadgen.log" >&2; kill "$vg"; exit 1; }
}
produce 1000
callgrind_control -d warm "$vg" >/dev/null 2>&1
produce "$n"
callgrind_control -d counted "$vg" >/dev/null 2>&1
kill -TERM "$vg"
wait "$vg" || true
# The shard thread is the one that ran the most in the counted part.
shard=$(for f in "$out"/cg.out.2-*; do grep -m1 '^summary' "$f" | cut -d' ' -f2; done | sort -n | tail -1)
echo "batch=$batch fsync=$fsync messages=$n shard_thread_instructions=$shard per_message=$((shard / n))"
