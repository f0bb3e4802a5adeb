#!/usr/bin/env python3
"""Produces records with kafka-python and prints, per record, what the broker
acknowledged:

  {"event": "ack", "index": I, "partition": P, "offset": O, "digest": D}
  {"event": "failed", "index": I, "error": "..."}       (then exit 1)
  {"event": "done", "sent": N, "acked": N, "failed": 0}

With --acks 0 the offset is -1 (the broker answers nothing). acks and
enable_idempotence are always passed explicitly: kafka-python since 2.1
defaults to an idempotent acks=all producer. The digest is
common.digest(key, value).
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

(kafka, kafka_errors) = common.need(["kafka", "kafka.errors"], "kafka-python")


def main():
    a = common.parse_produce_args(__doc__)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    deadline = common.Deadline(a.timeout + (a.duration if a.count == 0 else 0))
    state = {"acked": 0, "failed": 0}
    timeout_ms = max(1000, int(a.timeout * 1000))
    try:
        p = kafka.KafkaProducer(
            bootstrap_servers=a.bootstrap,
            acks={"0": 0, "1": 1, "all": "all"}[a.acks],
            compression_type=None if a.compression == "none" else a.compression,
            enable_idempotence=a.idempotence == "on",
            linger_ms=a.linger_ms,
            request_timeout_ms=min(timeout_ms, 30000),
            delivery_timeout_ms=timeout_ms + 1000,
            max_block_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            max_request_size=4 << 20,
        )
    except kafka_errors.KafkaError as e:
        common.fail(f"KafkaProducer({a.bootstrap}): {e!r}")

    failures = []
    sent = 0
    for index, key, value, partition in common.records(a):
        d = common.digest(key, value)

        def on_ack(md, index=index, d=d):
            state["acked"] += 1
            common.emit(
                {
                    "event": "ack",
                    "index": index,
                    "partition": md.partition,
                    "offset": md.offset if md.offset is not None and md.offset >= 0 else -1,
                    "digest": d,
                }
            )

        def on_error(e, index=index):
            state["failed"] += 1
            failures.append((index, e))
            common.emit({"event": "failed", "index": index, "error": repr(e)})

        try:
            fut = p.send(a.topic, key=key, value=value, partition=partition)
        except kafka_errors.KafkaError as e:
            common.fail(f"send of record {index}: {e!r}")
        fut.add_callback(on_ack)
        fut.add_errback(on_error)
        sent += 1
        if failures and not a.keep_going:
            common.fail(f"record {failures[0][0]} not delivered: {failures[0][1]!r}")
        if deadline.passed():
            common.fail(f"still sending at the {deadline.seconds}s deadline", 4)

    try:
        p.flush(timeout=deadline.left())
    except kafka_errors.KafkaTimeoutError:
        common.fail(
            f"{sent - state['acked'] - state['failed']} of {sent} records not acknowledged "
            f"before the {deadline.seconds}s deadline",
            4,
        )
    p.close(timeout=max(1.0, deadline.left()))
    if failures and not a.keep_going:
        common.fail(f"record {failures[0][0]} not delivered: {failures[0][1]!r}")
    common.emit({"event": "done", "sent": sent, "acked": state["acked"], "failed": state["failed"]})
    if failures:
        common.fail(f"{len(failures)} of {sent} records failed, the first: {failures[0][1]!r}")


if __name__ == "__main__":
    main()
