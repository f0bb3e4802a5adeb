#!/usr/bin/env python3
"""A member of a consumer group (the classic protocol, range assignment) with
kafka-python: subscribes to --topic in --group and prints

  {"event": "assigned", "partitions": [P, ...]}   (the whole new assignment)
  {"event": "revoked", "partitions": [P, ...]}
  {"event": "record", "partition": P, "offset": O, "digest": D}
  {"event": "committed", "offsets": {"P": NEXT, ...}}
  {"event": "commit_failed", "error": "..."}      (a rebalance fenced it: goes on)
  {"event": "closed", "count": N}

committing synchronously after every poll that returned records.
"""

import logging
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

(kafka, kafka_errors, kafka_structs, kafka_range) = common.need(
    ["kafka", "kafka.errors", "kafka.structs", "kafka.coordinator.assignors.range"],
    "kafka-python",
)


class Listener(kafka.ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        common.emit({"event": "revoked", "partitions": sorted(tp.partition for tp in revoked)})

    def on_partitions_assigned(self, assigned):
        common.emit({"event": "assigned", "partitions": sorted(tp.partition for tp in assigned)})


def main():
    a = common.parse_group_args(__doc__)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    deadline = common.Deadline(a.timeout)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    timeout_ms = max(1000, int(a.timeout * 1000))
    try:
        c = kafka.KafkaConsumer(
            bootstrap_servers=a.bootstrap,
            group_id=a.group,
            partition_assignment_strategy=[kafka_range.RangePartitionAssignor],
            session_timeout_ms=a.session_timeout_ms,
            heartbeat_interval_ms=a.heartbeat_interval_ms,
            max_poll_interval_ms=a.max_poll_interval_ms,
            enable_auto_commit=False,
            auto_offset_reset=a.offset_reset,
            check_crcs=True,
            fetch_max_wait_ms=100,
            request_timeout_ms=min(timeout_ms, 30000),
            bootstrap_timeout_ms=timeout_ms,
        )
    except kafka_errors.KafkaError as e:
        common.fail(f"KafkaConsumer({a.bootstrap}): {e!r}")
    c.subscribe([a.topic], listener=Listener())
    count = 0

    def commit(offsets, must):
        """Commits `offsets` ({partition: next offset}); `must`: retry until
        the deadline."""
        tp_offsets = {
            kafka_structs.TopicPartition(a.topic, p): kafka_structs.OffsetAndMetadata(o, "", -1)
            for p, o in offsets.items()
        }
        while True:
            try:
                c.commit(tp_offsets)
            except (kafka_errors.KafkaError, AssertionError) as e:
                common.emit({"event": "commit_failed", "error": repr(e)})
                if not must or deadline.passed():
                    if must:
                        common.fail(f"commit: {e!r}", 4)
                    return
                c.poll(timeout_ms=200, max_records=1, update_offsets=False)
                continue
            common.emit({"event": "committed", "offsets": {str(p): o for p, o in offsets.items()}})
            return

    while not stop["now"] and not deadline.passed():
        try:
            batches = c.poll(timeout_ms=200, max_records=500)
        except kafka_errors.KafkaError as e:
            common.fail(f"poll: {e!r}")
        consumed = {}
        for tp in sorted(batches, key=lambda tp: tp.partition):
            for r in batches[tp]:
                if a.stop_after is not None and count >= a.stop_after:
                    break
                count += 1
                consumed[r.partition] = r.offset + 1
                common.emit(common.record_line(r.partition, r.offset, r.key, r.value, True))
        if consumed:
            commit(consumed, must=a.stop_after is not None and count >= a.stop_after)
        if a.stop_after is not None and count >= a.stop_after:
            break

    if a.stop_after is not None and count < a.stop_after and not stop["now"]:
        c.close(autocommit=False)
        common.fail(f"read {count} of {a.stop_after} records before the {deadline.seconds}s deadline", 4)
    c.close(autocommit=False)
    common.emit({"event": "closed", "count": count})


if __name__ == "__main__":
    main()
