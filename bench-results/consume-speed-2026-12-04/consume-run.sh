#!/usr/bin/env bash
# consume-run.sh BIN DATA OUT.json [loadgen consume args...]
# Starts BIN/broker on DATA (restart: nothing in the tail cache), taskset core 0,
# consumes with BIN/loadgen on core 1, stops the broker.
set -euo pipefail
bin=$1; data=$2; out=$3; shift 3
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
setsid nohup taskset -c 0 "$bin/broker" serve --listen 127.0.0.1:$port --shards 1 --fsync never --data-dir "$data" >"$log" 2>"$log.err" &
sleep 0.2
pid=$(pgrep -f -n "listen 127.0.0.1:$port" )
for _ in $(seq 1 200); do grep -q '^ready' "$log" && break; sleep 0.05; done
"$bin/loadgen" --loadgen-cores 1 consume --bootstrap 127.0.0.1:$port --broker-pid "$pid" --out "$out" "$@" >/dev/null 2>"$out.err" || { echo FAIL; cat "$out.err"; }
kill -TERM "$pid"; for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
python3 -c "import json,sys; r=json.load(open('$out')); print('$out', round(r['msgs_per_s']/1e6,3), 'M/s', 'broker_ns', r.get('broker_cpu_ns_per_msg'), 'lg_ns', r.get('loadgen_cpu_ns_per_msg'))"
