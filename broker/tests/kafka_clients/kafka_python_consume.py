#!/usr/bin/env python3
"""Reads a topic from the beginning with kafka-python, every partition
assigned by hand (no group: nothing is committed), and prints every record:

  {"event": "record", "partition": P, "offset": O, "key": HEX|null,
   "value": HEX|null, "digest": D}
  {"event": "done", "count": N}

until --count records were read or, with --to-end, every partition was read
up to the high watermark it had at the start; exit 4 if the deadline comes
first (the records read so far are printed).
"""

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

(kafka, kafka_errors, kafka_structs) = common.need(
    ["kafka", "kafka.errors", "kafka.structs"], "kafka-python"
)


def main():
    a = common.parse_consume_args(__doc__)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    deadline = common.Deadline(a.timeout)
    timeout_ms = max(1000, int(a.timeout * 1000))
    try:
        c = kafka.KafkaConsumer(
            bootstrap_servers=a.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            check_crcs=True,
            fetch_max_wait_ms=100,
            request_timeout_ms=min(timeout_ms, 30000),
            bootstrap_timeout_ms=timeout_ms,
        )
    except kafka_errors.KafkaError as e:
        common.fail(f"KafkaConsumer({a.bootstrap}): {e!r}")

    partitions = None
    while not partitions:
        try:
            partitions = c.partitions_for_topic(a.topic)
        except kafka_errors.KafkaError as e:
            common.fail(f"metadata of {a.topic}: {e!r}")
        if not partitions:
            if deadline.passed():
                common.fail(f"no metadata for {a.topic} before the {deadline.seconds}s deadline", 4)
            time.sleep(0.1)
    tps = [kafka_structs.TopicPartition(a.topic, p) for p in sorted(partitions)]

    ends = {}
    if a.to_end:
        try:
            for tp, high in c.end_offsets(tps).items():
                if high > 0:
                    ends[tp.partition] = high
        except kafka_errors.KafkaError as e:
            common.fail(f"high watermarks of {a.topic}: {e!r}")
        tps = [tp for tp in tps if tp.partition in ends]

    c.assign(tps)
    if tps:
        c.seek_to_beginning(*tps)
    count = 0
    positions = {}

    def finished():
        if a.to_end:
            return all(positions.get(p, 0) >= end for p, end in ends.items())
        return count >= a.count

    while not finished():
        if deadline.passed():
            want = f"{a.count} records" if not a.to_end else f"the ends {ends}, at {positions}"
            common.fail(f"read {count} records, not {want}, before the {deadline.seconds}s deadline", 4)
        try:
            batches = c.poll(timeout_ms=int(min(500, max(10, deadline.left() * 1000))), max_records=1000)
        except kafka_errors.KafkaError as e:
            common.fail(f"poll: {e!r}")
        for tp in sorted(batches, key=lambda tp: tp.partition):
            for r in batches[tp]:
                count += 1
                positions[r.partition] = r.offset + 1
                common.emit(common.record_line(r.partition, r.offset, r.key, r.value, a.digest_only))
    c.close()
    common.emit({"event": "done", "count": count})


if __name__ == "__main__":
    main()
