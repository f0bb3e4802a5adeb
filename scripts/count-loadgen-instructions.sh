#!/usr/bin/env bash
# Instructions loadgen itself executes per produced message (every thread of
# it: the producer threads, the client's sender and reader threads, the ack
# collectors), counted by callgrind: repeatable whatever else the machine
# does, unlike its CPU time on a shared 2-core machine.
#
#   scripts/count-loadgen-instructions.sh [BIN_DIR] [SIZE] [BATCH] [PRODUCERS] [MESSAGES] [ACKS]
#
# BIN_DIR holds `broker` and `loadgen` (default target/release: build them
# with `cargo build --release -p broker -p loadgen`); defaults: 100-byte
# messages, batches of 1000, 4 producers, 1,000,000 messages, acks leader.
# The broker runs natively, one shard pinned to core 0, fsync never, data in
# a temp dir; loadgen runs under callgrind on core 1 twice, for MESSAGES/5
# and for MESSAGES messages: the difference of the two totals over the
# difference of the messages is the count per message, start-up, topic
# creation and connections cancelling out. Needs valgrind (Debian: valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release}"
size="${2:-100}"
batch="${3:-1000}"
producers="${4:-4}"
n="${5:-1000000}"
acks="${6:-leader}"
command -v valgrind >/dev/null || { echo "count-loadgen-instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
out="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
taskset -c 0 "$bin/broker" serve --listen "127.0.0.1:$port" --shards 1 --fsync never --data-dir "$out/data" \
  >"$out/broker.out" 2>"$out/broker.err" &
broker=$!
trap 'kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 1 600); do grep -q '^ready' "$out/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$out/broker.out" || { echo "count-loadgen-instructions: the broker did not start" >&2; cat "$out/broker.err" >&2; exit 1; }
# Total instructions of one loadgen run of $1 messages to topic $2.
count() {
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out/cg-$2.out" --dump-instr=no \
    "$bin/loadgen" produce --bootstrap "127.0.0.1:$port" --topic "$2" --messages "$1" --size "$size" \
    --batch "$batch" --producers "$producers" --partitions 1 --acks "$acks" >>"$out/loadgen.log" 2>&1 ||
    { echo "count-loadgen-instructions: loadgen failed" >&2; cat "$out/loadgen.log" >&2; exit 1; }
  grep -m1 '^summary' "$out/cg-$2.out" | cut -d' ' -f2
}
small=$((n / 5))
a=$(count "$small" small)
b=$(count "$n" large)
echo "size=$size batch=$batch producers=$producers acks=$acks messages=$small,$n loadgen_instructions=$a,$b per_message=$(((b - a) / (n - small)))"
