"""What the Kafka client scripts of this directory share: the records they
produce, the digest of a record, JSON-line output, failing loudly, deadlines.

Every script prints one JSON object per line on stdout (and flushes it at
once, so a test that kills the process mid-run sees every complete line),
writes diagnostics to stderr, and exits non-zero with a one-line reason on
any failure. Exit codes: 1 a client or broker error, 2 bad arguments (argparse),
3 a client library missing, 4 a deadline passed.
"""

import argparse
import hashlib
import json
import random
import sys
import threading
import time

INSTALL_HINT = "run scripts/install-kafka-clients.sh"


def need(module_names, package):
    """Imports `module_names` (a list), or exits 3 naming the package."""
    modules = []
    for name in module_names:
        try:
            modules.append(__import__(name, fromlist=["_"]))
        except ImportError as e:
            fail(
                f"{package} is not installed for {sys.executable} ({e}): {INSTALL_HINT}",
                code=3,
            )
    return modules


_out = threading.Lock()


def emit(obj):
    """One JSON line on stdout, flushed (clients call back from their threads)."""
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def log(msg):
    sys.stderr.write(f"{msg}\n")
    sys.stderr.flush()


def fail(msg, code=1):
    log(f"error: {msg}")
    sys.stdout.flush()
    sys.exit(code)


def digest(key, value):
    """sha256 over the record's key and value, null and empty kept apart:
    each is 0x00 when null, else 0x01, its length (u32 big-endian), its bytes."""
    h = hashlib.sha256()
    for part in (key, value):
        if part is None:
            h.update(b"\x00")
        else:
            h.update(b"\x01" + len(part).to_bytes(4, "big") + bytes(part))
    return h.hexdigest()


def hex_or_null(b):
    return None if b is None else bytes(b).hex()


class Deadline:
    """A point in time `seconds` from now."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.at - time.monotonic())

    def passed(self):
        return time.monotonic() >= self.at


def add_common_args(p):
    p.add_argument("--bootstrap", required=True, help="HOST:PORT of the Kafka listener")
    p.add_argument("--topic", required=True)
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="give up (exit 4) after this many seconds [default: 30]",
    )


def add_produce_args(p):
    add_common_args(p)
    p.add_argument("--acks", choices=["0", "1", "all"], default="all")
    p.add_argument(
        "--compression",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        default="none",
    )
    p.add_argument(
        "--idempotence",
        choices=["on", "off"],
        default="off",
        help="the idempotent producer (needs --acks all) [default: off]",
    )
    p.add_argument(
        "--input",
        help="JSON-lines file of records to send, each {\"key\": HEX|null, "
        "\"value\": HEX|null, \"partition\": N (optional)}; else --count "
        "records are generated from --seed",
    )
    p.add_argument(
        "--count",
        type=int,
        default=100,
        help="records to generate without --input; 0: until --duration "
        "passes or the process is killed [default: 100]",
    )
    p.add_argument("--value-size", type=int, default=100, help="bytes per generated value")
    p.add_argument("--keys", action="store_true", help="give generated records keys")
    p.add_argument(
        "--text",
        action="store_true",
        help="generated values are printable text (hex digits), not random bytes",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="with --count 0: produce for this many seconds [default: 10]",
    )
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="report failed records and go on (exit 1 at the end if any failed)",
    )


def parse_produce_args(description):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_produce_args(p)
    a = p.parse_args()
    if a.idempotence == "on" and a.acks != "all":
        p.error("--idempotence on needs --acks all")
    return a


def records(a):
    """The records to send: (index, key, value, partition or None), lazily."""
    if a.input:
        with open(a.input) as f:
            for i, line in enumerate(f):
                r = json.loads(line)
                key = None if r.get("key") is None else bytes.fromhex(r["key"])
                value = None if r.get("value") is None else bytes.fromhex(r["value"])
                yield i, key, value, r.get("partition")
        return
    rng = random.Random(a.seed)
    stop = Deadline(a.duration) if a.count == 0 else None
    i = 0
    while (a.count == 0 and not stop.passed()) or i < a.count:
        key = f"key-{a.seed}-{i}".encode() if a.keys else None
        value = f"{a.seed}:{i}:".encode()
        if len(value) < a.value_size:
            pad = a.value_size - len(value)
            value += rng.randbytes((pad + 1) // 2).hex().encode()[:pad] if a.text else rng.randbytes(pad)
        yield i, key, value, None
        i += 1


def add_consume_args(p):
    add_common_args(p)
    p.add_argument(
        "--count",
        type=int,
        help="stop once this many records were read (exit 4 if the deadline comes first)",
    )
    p.add_argument(
        "--to-end",
        action="store_true",
        help="stop once every partition is read up to the high watermark it "
        "had at the start",
    )
    p.add_argument(
        "--digest-only",
        action="store_true",
        help="print each record's digest, not its key and value",
    )


def parse_consume_args(description):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_consume_args(p)
    a = p.parse_args()
    if (a.count is None) == (not a.to_end):
        p.error("give exactly one of --count N and --to-end")
    return a


def record_line(partition, offset, key, value, digest_only):
    out = {"event": "record", "partition": partition, "offset": offset}
    if not digest_only:
        out["key"] = hex_or_null(key)
        out["value"] = hex_or_null(value)
    out["digest"] = digest(key, value)
    return out


def add_group_args(p):
    add_common_args(p)
    p.add_argument("--group", required=True)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--heartbeat-interval-ms", type=int, default=500)
    p.add_argument(
        "--max-poll-interval-ms",
        type=int,
        default=20000,
        help="also the rebalance timeout the member sends with JoinGroup: how "
        "long a rebalance waits for members to rejoin [default: 20000]",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        help="commit, leave the group and exit 0 once this many records were "
        "read; without it the member runs until --timeout passes (then exit 0)",
    )
    p.add_argument(
        "--offset-reset",
        choices=["earliest", "latest"],
        default="earliest",
        help="where a partition with no committed offset starts",
    )


def parse_group_args(description):
    p = argparse.ArgumentParser(
        description=description + "SIGTERM leaves the group and exits 0.\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_group_args(p)
    return p.parse_args()
