#!/usr/bin/env bash
# The Kafka protocol's benchmark, one run: on the same workloads, side by
# side, our broker over its native protocol (loadgen), our broker's Kafka
# listener through loadgen's Kafka target and through librdkafka's own
# benchmark client (rdkafka_performance), and Tansu (nisshi, memory://)
# through both Kafka clients. Medians of several runs; ratios to the native
# figure of the same invocation.
#
#   scripts/bench-kafka.sh [--out DIR] [--runs N] [--messages N] [--no-tansu|--only-tansu]
#
# Defaults: bench-results/kafka-DATE, 5 runs, 3,000,000 messages per run.
# Workloads: produce 100 B and 200 B records in batches of 50 (linger 5 ms,
# acks 1: answered once the append is written), then consume 200 B records
# from the earliest offset with 200 KB fetches (the topic the native
# producer wrote in the same run; against Tansu, the one loadgen's Kafka
# target wrote). Our broker: one shard, fsync never (the figure is the
# protocol's, not the disk's fdatasync). Placement: the system under test
# (our broker's one shard, or every Tansu thread) on core 0, the client
# (loadgen's threads, or every rdkafka_performance thread) on core 1: the
# two share this 2-core machine and nothing else of ours runs. The order of
# the clients rotates from run to run.
#
# It builds loadgen (release), rdkafka_performance
# (scripts/build-rdkafka-perf.sh) and Tansu (scripts/peers.sh install
# tansu) when missing. Writes one JSON per run and client (loadgen's result
# format, rdkafka_performance's figures in it too, so `loadgen compare`
# reads any two), summary.json and summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench-results/kafka-$(date -u +%Y-%m-%d)
runs=5
messages=3000000
tansu=1
ours=1
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --messages) messages=$2; shift 2 ;;
        --no-tansu) tansu=0; shift ;;
        --only-tansu) ours=0; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "bench-kafka.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

SYSTEM_CORE=0
LOAD_CORE=1
say() { echo "bench-kafka.sh: $*" >&2; }

target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p loadgen >&2
loadgen=$target/release/loadgen
perf=$(scripts/build-rdkafka-perf.sh)
nisshi=
if [ "$tansu" = 1 ]; then
    nisshi=$(bash scripts/peers.sh install tansu)
fi
mkdir -p "$out"
work=$(mktemp -d /tmp/bench-kafka.XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The Python half: rdkafka_performance's output into a result file
# (`py result ...`), and the summary of a directory of them (`py summary`).
py() {
    python3 - "$@" <<'PY'
import glob, json, os, platform, re, statistics, subprocess, sys, time

def machine():
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    return {"cores": os.cpu_count(), "cpu_model": cpu, "memory_bytes": mem,
            "kernel": platform.release()}

def revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"

def last_row(text):
    """The column names and the last row of rdkafka_performance's -u table."""
    header, row = None, None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "elapsed" in cells:
            header = cells
        elif header and len(cells) == len(header) and cells[0].isdigit():
            row = dict(zip(header, cells))
    if row is None:
        sys.exit("bench-kafka.sh: no result table in rdkafka_performance's output:\n" + text[-2000:])
    return row

def result(log, path, system, scenario, size, cpu0, cpu1, command, score, lcore):
    text = open(log).read()
    row = last_row(text)
    producer = "dr" in row
    msgs = int(row["dr"] if producer else row["msgs"])
    # tx_err counts produce() calls refused while the client's queue was
    # full (backpressure: rdkafka_performance retries them), not failures.
    errors = int(row.get("dr_err", 0)) + int(row.get("rx_err", 0))
    if errors:
        sys.exit(f"bench-kafka.sh: rdkafka_performance reported {errors} failed messages")
    secs = int(row["elapsed"]) / 1000.0
    size = int(size)
    res = {
        "schema_version": 1, "system": system, "scenario": scenario,
        "parameters": {"client": "rdkafka_performance", "protocol": "kafka",
                       "command": command, "size": size,
                       "backpressure_retries": int(row.get("tx_err", 0)),
                       "note": "rdkafka_performance's own elapsed time and count (last row of -u)"},
        "messages": msgs, "bytes": msgs * size, "duration_s": secs,
        "msgs_per_s": msgs / secs, "mb_per_s": msgs * size / secs / 1e6,
        "latency": None, "broker_cpu_s": float(cpu1) - float(cpu0),
        "pinning": f"{system} pinned to core {score}; rdkafka_performance pinned to core {lcore}; "
                   f"{os.cpu_count()} cores in all",
        "git_revision": revision(), "machine": machine(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"{system} {scenario} rdkafka_performance: {res['msgs_per_s']:.0f} msgs/s", file=sys.stderr)

NAME = re.compile(r"^(broker|broker-kafka|tansu)-(loadgen|rdkafka)-(produce|consume)-(\d+)-run(\d+)\.json$")
ROWS = [("broker", "loadgen", "our broker, native protocol", "loadgen"),
        ("broker-kafka", "loadgen", "our broker, Kafka listener", "loadgen --protocol kafka"),
        ("broker-kafka", "rdkafka", "our broker, Kafka listener", "rdkafka_performance"),
        ("tansu", "loadgen", "Tansu (nisshi 0.8.1, memory://)", "loadgen --protocol kafka"),
        ("tansu", "rdkafka", "Tansu (nisshi 0.8.1, memory://)", "rdkafka_performance")]
COLS = [("produce", "100"), ("produce", "200"), ("consume", "200")]

def summary(d, runs, messages):
    got = {}
    cpu = {}
    files = {}
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        system, client, work, size, run = m.groups()
        r = json.load(open(path))
        key = (system, client, work, size)
        got.setdefault(key, []).append(r["msgs_per_s"])
        if r.get("broker_cpu_s") is not None and r["messages"]:
            cpu.setdefault(key, []).append(r["broker_cpu_s"] / r["messages"] * 1e9)
        files.setdefault(key, []).append(r)
    med = {k: statistics.median(v) for k, v in got.items()}
    first = next(iter(files.values()))[0] if files else None
    out = {"runs": int(runs), "messages": int(messages), "medians_msgs_per_s": {},
           "min_max_msgs_per_s": {}, "ratios_to_native": {}}
    lines = []
    if first:
        mch = first["machine"]
        lines.append(f"Machine: {mch['cores']} cores ({mch['cpu_model']}), "
                     f"{mch['memory_bytes'] / 2**30:.1f} GiB, kernel {mch['kernel']}; "
                     f"revision {first['git_revision']}.\n")
    lines.append(f"Median msgs/s of {runs} runs of {messages} messages (min-max in brackets); "
                 "x = ratio to our native protocol's median in the same invocation.\n")
    lines.append("| system | client | produce 100 B, batch 50 | produce 200 B, batch 50 | consume 200 B |")
    lines.append("|---|---|---:|---:|---:|")
    for system, client, sname, cname in ROWS:
        cells = []
        for work, size in COLS:
            k = (system, client, work, size)
            if k not in med:
                cells.append("not run")
                continue
            native = med.get(("broker", "loadgen", work, size))
            lo, hi = min(got[k]), max(got[k])
            ratio = med[k] / native if native else None
            label = f"{system}/{client}/{work}-{size}"
            out["medians_msgs_per_s"][label] = round(med[k])
            out["min_max_msgs_per_s"][label] = [round(lo), round(hi)]
            if ratio is not None:
                out["ratios_to_native"][label] = round(ratio, 3)
            cell = f"{med[k]:,.0f} [{lo / 1e3:,.0f}k-{hi / 1e3:,.0f}k]"
            if ratio is not None and system != "broker":
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        lines.append(f"| {sname} | {cname} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("The server's CPU time per message (ns, median of the runs; user + system of the "
                 "broker or Tansu process over the run, from /proc):\n")
    lines.append("| system | client | produce 100 B | produce 200 B | consume 200 B |")
    lines.append("|---|---|---:|---:|---:|")
    out["server_cpu_ns_per_msg"] = {}
    for system, client, sname, cname in ROWS:
        cells = []
        for work, size in COLS:
            k = (system, client, work, size)
            if k not in cpu:
                cells.append("-")
                continue
            v = statistics.median(cpu[k])
            out["server_cpu_ns_per_msg"][f"{system}/{client}/{work}-{size}"] = round(v)
            cells.append(f"{v:,.0f}")
        lines.append(f"| {sname} | {cname} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(d, "summary.md"), "w").write(text)
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")

if sys.argv[1] == "result":
    result(*sys.argv[2:])
else:
    summary(*sys.argv[2:])
PY
}

# CPU seconds (user + system) of a process so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    local port=$1 i
    for i in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    say "nothing listens on port $port after 60 s"; return 1
}

start_ours() {
    rm -rf "$work/data"
    taskset -c "$SYSTEM_CORE" "$loadgen" broker serve --listen 127.0.0.1:0 --shards 1 \
        --fsync never --data-dir "$work/data" > "$work/ready" 2> "$work/broker.log" &
    server_pid=$!
    local i
    for i in $(seq 1 600); do
        if grep -q '^ready ' "$work/ready" 2>/dev/null; then break; fi
        sleep 0.1
    done
    native=$(sed -n 's/^ready .*listen=\([^ ]*\).*/\1/p' "$work/ready")
    kafka=$(sed -n 's/^ready .* kafka=\([^ ]*\).*/\1/p' "$work/ready")
    [ -n "$native" ] && [ -n "$kafka" ] || { say "no ready line with a Kafka listener"; cat "$work/broker.log" >&2; exit 1; }
    say "our broker: native $native, Kafka $kafka (pid $server_pid, core $SYSTEM_CORE)"
}

start_tansu() {
    local port
    port=$(free_port)
    mkdir -p "$work/tansu"
    taskset -c "$SYSTEM_CORE" bash scripts/peers.sh start tansu "$work/tansu" "$port" paper \
        > "$work/tansu.log" 2>&1 &
    server_pid=$!
    wait_port "$port"
    kafka=127.0.0.1:$port
    say "tansu: $kafka (pid $server_pid, core $SYSTEM_CORE)"
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# loadgen, pinned by itself (its threads on every core but 0).
lg_produce() { # system protocol addr topic size file
    "$loadgen" produce --protocol "$2" --system "$1" --bootstrap "$3" --topic "$4" \
        --messages "$messages" --size "$5" --batch 50 --linger-ms 5 --max-in-flight 256 \
        --acks leader --scenario "produce-$5B-batch50" --broker-pid "$server_pid" \
        --out "$6" > /dev/null
}

lg_consume() { # system protocol addr topic file
    "$loadgen" consume --protocol "$2" --system "$1" --bootstrap "$3" --topic "$4" \
        --messages "$messages" --fetch-bytes 204800 --scenario consume-200B \
        --broker-pid "$server_pid" --out "$5" > /dev/null
}

# rdkafka_performance, pinned to the load core; its figures into a result
# file of loadgen's format.
rk_run() { # system scenario size file args...
    local system=$1 scenario=$2 size=$3 file=$4
    shift 4
    local cpu0 cpu1 log=$work/rk.log
    cpu0=$(cpu_s "$server_pid")
    taskset -c "$LOAD_CORE" "$perf" "$@" -u -q > "$log" 2>&1 || { cat "$log" >&2; return 1; }
    cpu1=$(cpu_s "$server_pid")
    py result "$log" "$file" "$system" "$scenario" "$size" "$cpu0" "$cpu1" "$*" \
        "$SYSTEM_CORE" "$LOAD_CORE"
}

rk_produce() { # system addr topic size file
    rk_run "$1" "produce-$4B-batch50" "$4" "$5" -P -t "$3" -p 0 -b "$2" -s "$4" -c "$messages" \
        -a 1 -X linger.ms=5 -X batch.num.messages=50
}

rk_consume() { # system addr topic file
    rk_run "$1" consume-200B 200 "$4" -C -t "$3" -p 0 -b "$2" -o beginning -c "$messages" \
        -X fetch.message.max.bytes=204800
}

# rdkafka_performance's topic on Tansu, created first with Tansu's CLI.
create_topic_tansu() {
    "$nisshi" topic create "$1" --broker "tcp://$kafka" --partitions 1 > /dev/null 2>&1 ||
        "$nisshi" topic create "$1" > /dev/null
}

clients=(native kafka rdkafka)
rotated() { # run -> the clients, rotated
    local r=$1 n=${#clients[@]} i
    for i in $(seq 0 $((n - 1))); do echo "${clients[$(((i + r) % n))]}"; done
}

if [ "$ours" = 1 ]; then
say "our broker: $runs runs of $messages messages"
start_ours
for r in $(seq 1 "$runs"); do
    for size in 100 200; do
        for c in $(rotated "$r"); do
            t=$c-$size-r$r
            f=$out
            case $c in
                native) lg_produce broker native "$native" "$t" "$size" "$f/broker-loadgen-produce-$size-run$r.json" ;;
                kafka) lg_produce broker-kafka kafka "$kafka" "$t" "$size" "$f/broker-kafka-loadgen-produce-$size-run$r.json" ;;
                rdkafka) rk_produce broker-kafka "$kafka" "$t" "$size" "$f/broker-kafka-rdkafka-produce-$size-run$r.json" ;;
            esac
            say "run $r: produce $size B, $c done"
        done
    done
    for c in $(rotated "$r"); do
        t=native-200-r$r
        case $c in
            native) lg_consume broker native "$native" "$t" "$out/broker-loadgen-consume-200-run$r.json" ;;
            kafka) lg_consume broker-kafka kafka "$kafka" "$t" "$out/broker-kafka-loadgen-consume-200-run$r.json" ;;
            rdkafka) rk_consume broker-kafka "$kafka" "$t" "$out/broker-kafka-rdkafka-consume-200-run$r.json" ;;
        esac
        say "run $r: consume, $c done"
    done
    for c in native kafka rdkafka; do
        for size in 100 200; do
            "$loadgen" broker topic delete "$c-$size-r$r" --bootstrap "$native" > /dev/null 2>&1 || true
        done
    done
done
stop_server
fi

if [ "$tansu" = 1 ]; then
    clients=(kafka rdkafka)
    say "tansu: $runs runs of $messages messages (restarted, so emptied, before each run)"
    for r in $(seq 1 "$runs"); do
        start_tansu
        for size in 100 200; do
            for c in $(rotated "$r"); do
                t=$c-$size-r$r
                case $c in
                    kafka) lg_produce tansu kafka "$kafka" "$t" "$size" "$out/tansu-loadgen-produce-$size-run$r.json" ;;
                    rdkafka) create_topic_tansu "$t"; rk_produce tansu "$kafka" "$t" "$size" "$out/tansu-rdkafka-produce-$size-run$r.json" ;;
                esac
                say "run $r: tansu produce $size B, $c done"
            done
        done
        for c in $(rotated "$r"); do
            t=kafka-200-r$r
            case $c in
                kafka) lg_consume tansu kafka "$kafka" "$t" "$out/tansu-loadgen-consume-200-run$r.json" ;;
                rdkafka) rk_consume tansu "$kafka" "$t" "$out/tansu-rdkafka-consume-200-run$r.json" ;;
            esac
            say "run $r: tansu consume, $c done"
        done
        stop_server
    done
fi

py summary "$out" "$runs" "$messages"
cat "$out/summary.md"
