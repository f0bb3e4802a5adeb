#!/usr/bin/env bash
# Instructions the broker's shard thread executes for one produce workload,
# counted by callgrind (repeatable whatever else the machine does, unlike
# wall-clock figures on a shared 2-core machine; the count still moves by a
# few percent with how many appends share a write cycle or an fdatasync).
#
#   scripts/count-instructions.sh [BIN_DIR] [BATCH] [FSYNC] [MESSAGES] [MODE]
#
# MODE is `single` (default: a broker on its own) or `cluster` (the same
# broker as a one-node cluster, its own controller: the data path must cost
# the same). The counted window opens after the warm-up, once the cluster
# has created its topics, and its length is printed: the idle shard's event
# loop runs for as long as the window lasts, so the script also counts the
# shard thread over IDLE_S seconds (default 10) of no load just before, and
# prints the per-message figure with that idle rate taken out of the window.
# CONSUME=N then also counts N messages consumed from the start (a second
# line, `workload=fetch`).
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
mode="${5:-single}"
command -v valgrind >/dev/null || { echo "count-instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
out="$(mktemp -d)"
# KEEP_OUT=1 keeps the callgrind dumps and the logs (the folder is printed).
if [ "${KEEP_OUT:-0}" = 1 ]; then echo "count-instructions: output in $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
port=$((20000 + RANDOM % 20000))
cluster_flags=()
case "$mode" in
  single) ;;
  cluster) cluster_flags=(--node-id 1 --controllers "1@127.0.0.1:$((port + 500))") ;;
  *) echo "count-instructions: MODE is single or cluster, not $mode" >&2; exit 2 ;;
esac
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" --dump-instr=no --separate-threads=yes \
  "$bin/broker" serve --listen "127.0.0.1:$port" --shards 1 --fsync "$fsync" --data-dir "$out/data" \
  "${cluster_flags[@]}" >"$out/broker.out" 2>"$out/broker.err" &
vg=$!
# Under valgrind a one-node cluster takes a minute or more to elect itself
# and admit its broker on this 2-core machine.
for _ in $(seq 1 3000); do grep -q '^ready' "$out/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$out/broker.out" || { echo "count-instructions: the broker did not start" >&2; cat "$out/broker.err" >&2; kill "$vg"; exit 1; }
# produce N [TRIES]: N messages, tried up to TRIES times (default 1).
produce() {
  for try in $(seq 1 "${2:-1}"); do
    "$bin/loadgen" produce --bootstrap "127.0.0.1:$port" --topic t --messages "$1" --size "${SIZE:-200}" \
      --batch "$batch" --producers "${PRODUCERS:-1}" --partitions 1 >>"$out/loadgen.log" 2>&1 && return 0
    [ "$try" -lt "${2:-1}" ] && sleep 5
  done
  echo "count-instructions: loadgen failed" >&2; cat "$out/loadgen.log" >&2; kill "$vg"; exit 1
}
if [ "$mode" = cluster ]; then
  # Under valgrind the member's calls to its controller can outlast their
  # timeouts, so a create may answer "not applied here yet": try again.
  produce 1000 5
  # The offsets topic is created through the quorum after the broker is
  # admitted; wait for it so that its creation is not counted.
  for _ in $(seq 1 3000); do grep -q 'the offsets topic is created' "$out/broker.err" && break; sleep 0.1; done
else
  produce 1000
fi
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
callgrind_control -d warm "$vg" >/dev/null 2>&1
idle_started=$(now)
sleep "${IDLE_S:-10}"
callgrind_control -d idle "$vg" >/dev/null 2>&1
started=$(now)
idle=$(seconds "$idle_started" "$started")
produce "$n"
callgrind_control -d counted "$vg" >/dev/null 2>&1
window=$(seconds "$started" "$(now)")
consume="${CONSUME:-0}"
if [ "$consume" -gt 0 ]; then
  fetch_started=$(now)
  "$bin/loadgen" consume --bootstrap "127.0.0.1:$port" --topic t --messages "$consume" \
    >>"$out/loadgen.log" 2>&1 ||
    { echo "count-instructions: loadgen consume failed" >&2; cat "$out/loadgen.log" >&2; kill "$vg"; exit 1; }
  callgrind_control -d consumed "$vg" >/dev/null 2>&1
  fetch_window=$(seconds "$fetch_started" "$(now)")
fi
kill -TERM "$vg"
wait "$vg" || true
# Dumps: 1 warm-up, 2 idle, 3 counted, one file per thread. The shard
# thread is the one that ran the most in the counted part.
summary() { grep -m1 '^summary' "$1" | cut -d' ' -f2; }
thread=$(for f in "$out"/cg.out.3-*; do echo "$(summary "$f") ${f##*-}"; done | sort -n | tail -1 | cut -d' ' -f2)
shard=$(summary "$out/cg.out.3-$thread")
shard_idle=$(summary "$out/cg.out.2-$thread")
awk -v mode="$mode" -v batch="$batch" -v fsync="$fsync" -v n="$n" -v w="$window" -v i="$idle" \
  -v c="$shard" -v ci="$shard_idle" 'BEGIN {
    rate = ci / i
    printf "mode=%s batch=%s fsync=%s messages=%d window_s=%s shard_thread_instructions=%d per_message=%d", mode, batch, fsync, n, w, c, c / n
    printf " idle_per_s=%d per_message_less_idle=%d\n", rate, (c - rate * w) / n
  }'
if [ "$consume" -gt 0 ]; then
  fetched=$(summary "$out/cg.out.4-$thread")
  awk -v mode="$mode" -v n="$consume" -v w="$fetch_window" -v i="$idle" -v c="$fetched" \
    -v ci="$shard_idle" 'BEGIN {
      rate = ci / i
      printf "mode=%s workload=fetch messages=%d window_s=%s shard_thread_instructions=%d per_message=%d", mode, n, w, c, c / n
      printf " per_message_less_idle=%d\n", (c - rate * w) / n
    }'
fi
