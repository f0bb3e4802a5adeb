#!/usr/bin/env python3
"""A member of a consumer group (the classic protocol, range assignment) with
confluent-kafka (librdkafka): subscribes to --topic in --group and prints

  {"event": "assigned", "partitions": [P, ...]}   (the whole new assignment)
  {"event": "revoked", "partitions": [P, ...]}
  {"event": "record", "partition": P, "offset": O, "digest": D}
  {"event": "committed", "offsets": {"P": NEXT, ...}}
  {"event": "commit_failed", "error": "..."}      (a rebalance fenced it: goes on)
  {"event": "closed", "count": N}

committing synchronously after every poll that returned records.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

(ck,) = common.need(["confluent_kafka"], "confluent-kafka")


def main():
    a = common.parse_group_args(__doc__)
    deadline = common.Deadline(a.timeout)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def on_error(err):
        # Only logged: the poll loop's deadline bounds what a down broker costs.
        common.log(f"client error: {err}")

    c = ck.Consumer(
        {
            "bootstrap.servers": a.bootstrap,
            "group.id": a.group,
            "group.protocol": "classic",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": a.session_timeout_ms,
            "heartbeat.interval.ms": a.heartbeat_interval_ms,
            "max.poll.interval.ms": a.max_poll_interval_ms,
            "enable.auto.commit": False,
            # Only what was printed is stored, so only that is committed.
            "enable.auto.offset.store": False,
            "auto.offset.reset": a.offset_reset,
            "check.crcs": True,
            "fetch.wait.max.ms": 100,
            "error_cb": on_error,
        }
    )

    def on_assign(consumer, partitions):
        common.emit({"event": "assigned", "partitions": sorted(tp.partition for tp in partitions)})

    def on_revoke(consumer, partitions):
        common.emit({"event": "revoked", "partitions": sorted(tp.partition for tp in partitions)})

    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    count = 0

    def commit(must):
        """Commits what was consumed; `must`: retry until the deadline."""
        while True:
            try:
                done = c.commit(asynchronous=False)
            except ck.KafkaException as e:
                if e.args[0].code() == ck.KafkaError._NO_OFFSET:
                    return
                common.emit({"event": "commit_failed", "error": str(e)})
                if not must:
                    return
                if deadline.passed():
                    common.fail(f"commit: {e}", 4)
                c.poll(0.2)
                continue
            offsets = {str(tp.partition): tp.offset for tp in done or [] if tp.error is None}
            errors = [f"{tp.partition}: {tp.error}" for tp in done or [] if tp.error is not None]
            if errors:
                common.emit({"event": "commit_failed", "error": "; ".join(errors)})
                if must:
                    common.fail(f"commit: {errors}")
            common.emit({"event": "committed", "offsets": offsets})
            return

    while not stop["now"] and not deadline.passed():
        msgs = c.consume(num_messages=500, timeout=0.2)
        got = False
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    continue
                common.fail(f"consume: {m.error()}")
            got = True
            count += 1
            common.emit(common.record_line(m.partition(), m.offset(), m.key(), m.value(), True))
            try:
                c.store_offsets(message=m)
            except ck.KafkaException as e:
                # The partition was revoked meanwhile: its new owner reads it.
                common.log(f"store offset {m.partition()}/{m.offset()}: {e}")
            if a.stop_after is not None and count >= a.stop_after:
                break
        if got:
            commit(must=a.stop_after is not None and count >= a.stop_after)
        if a.stop_after is not None and count >= a.stop_after:
            break

    if a.stop_after is not None and count < a.stop_after and not stop["now"]:
        c.close()
        common.fail(f"read {count} of {a.stop_after} records before the {deadline.seconds}s deadline", 4)
    c.close()
    common.emit({"event": "closed", "count": count})


if __name__ == "__main__":
    main()
