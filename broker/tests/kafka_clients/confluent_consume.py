#!/usr/bin/env python3
"""Reads a topic from the beginning with confluent-kafka (librdkafka), every
partition assigned by hand (no group: nothing is committed), and prints every
record:

  {"event": "record", "partition": P, "offset": O, "key": HEX|null,
   "value": HEX|null, "digest": D}
  {"event": "done", "count": N}

until --count records were read or, with --to-end, every partition was read
up to the high watermark it had at the start; exit 4 if the deadline comes
first (the records read so far are printed).
"""

import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

(ck,) = common.need(["confluent_kafka"], "confluent-kafka")


def main():
    a = common.parse_consume_args(__doc__)
    deadline = common.Deadline(a.timeout)

    def on_error(err):
        # Only logged: the poll loop's deadline bounds what a down broker costs.
        common.log(f"client error: {err}")

    c = ck.Consumer(
        {
            "bootstrap.servers": a.bootstrap,
            # librdkafka insists on a group id even for assign(); it is never
            # used to commit.
            "group.id": f"unused-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "check.crcs": True,
            "fetch.wait.max.ms": 100,
            "error_cb": on_error,
        }
    )
    try:
        md = c.list_topics(a.topic, timeout=max(0.1, deadline.left()))
    except ck.KafkaException as e:
        common.fail(f"metadata of {a.topic}: {e}")
    t = md.topics.get(a.topic)
    if t is None or t.error is not None:
        common.fail(f"metadata of {a.topic}: {None if t is None else t.error}")
    partitions = sorted(t.partitions)
    if not partitions:
        common.fail(f"metadata of {a.topic}: no partitions")

    ends = {}
    if a.to_end:
        for p in partitions:
            try:
                _, high = c.get_watermark_offsets(
                    ck.TopicPartition(a.topic, p), timeout=max(0.1, deadline.left())
                )
            except ck.KafkaException as e:
                common.fail(f"high watermark of {a.topic}/{p}: {e}")
            if high > 0:
                ends[p] = high
        partitions = sorted(ends)

    c.assign([ck.TopicPartition(a.topic, p, ck.OFFSET_BEGINNING) for p in partitions])
    count = 0
    positions = {}

    def finished():
        if a.to_end:
            return all(positions.get(p, 0) >= end for p, end in ends.items())
        return count >= a.count

    while not finished():
        if deadline.passed():
            c.close()
            want = f"{a.count} records" if not a.to_end else f"the ends {ends}, at {positions}"
            common.fail(f"read {count} records, not {want}, before the {deadline.seconds}s deadline", 4)
        msgs = c.consume(num_messages=1000, timeout=min(0.5, max(0.01, deadline.left())))
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    continue
                common.fail(f"consume: {m.error()}")
            count += 1
            positions[m.partition()] = m.offset() + 1
            common.emit(common.record_line(m.partition(), m.offset(), m.key(), m.value(), a.digest_only))
    c.close()
    common.emit({"event": "done", "count": count})


if __name__ == "__main__":
    main()
