#!/usr/bin/env bash
# produce-run.sh BIN OUT.json [loadgen produce args...]: fresh data dir, broker taskset core 0, loadgen core 1.
set -euo pipefail
bin=$1; out=$2; shift 2
port=$((20000 + RANDOM % 20000)); data=$(mktemp -d /tmp/cs/pdata.XXXX); log=$data.log
setsid nohup taskset -c 0 "$bin/broker" serve --listen 127.0.0.1:$port --shards 1 --fsync never --data-dir "$data" >"$log" 2>"$log.err" &
sleep 0.3; pid=$(pgrep -f -n "listen 127.0.0.1:$port")
for _ in $(seq 1 200); do grep -q '^ready' "$log" && break; sleep 0.05; done
"$bin/loadgen" --loadgen-cores 1 produce --bootstrap 127.0.0.1:$port --broker-pid "$pid" --out "$out" --topic t "$@" >/dev/null 2>"$out.err" || { echo FAIL; cat "$out.err"; }
kill -TERM "$pid"; for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
rm -rf "$data"
python3 -c "import json,sys; r=json.load(open('$out')); print('$out', round(r['msgs_per_s']/1e6,3), 'M/s', 'broker_ns', r.get('broker_cpu_ns_per_msg'), 'lg_ns', r.get('loadgen_cpu_ns_per_msg'), 'broker_cpu_s', r.get('broker_cpu_s'), 'dur', r.get('duration_s'))"
