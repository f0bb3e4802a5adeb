#!/usr/bin/env python3
"""Produces records with confluent-kafka (librdkafka) and prints, per record,
what the broker acknowledged:

  {"event": "ack", "index": I, "partition": P, "offset": O, "digest": D}
  {"event": "failed", "index": I, "error": "..."}       (then exit 1)
  {"event": "done", "sent": N, "acked": N, "failed": 0}

With --acks 0 the offset is -1 (the broker answers nothing). The digest is
common.digest(key, value).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

(ck,) = common.need(["confluent_kafka"], "confluent-kafka")


def main():
    a = common.parse_produce_args(__doc__)
    deadline = common.Deadline(a.timeout + (a.duration if a.count == 0 else 0))
    # Callbacks only record: raising out of librdkafka's callbacks is not
    # clean, so the main loop checks these after each poll.
    state = {"acked": 0, "failed": 0, "first_failure": None, "fatal": None}

    def on_error(err):
        # librdkafka's global errors (a broker down, all brokers down): the
        # per-record delivery reports say what they cost.
        common.log(f"client error: {err}")
        if err.fatal():
            state["fatal"] = str(err)

    def check():
        if state["fatal"]:
            common.fail(f"fatal client error: {state['fatal']}")
        if state["first_failure"] and not a.keep_going:
            common.fail(state["first_failure"])

    conf = {
        "bootstrap.servers": a.bootstrap,
        "acks": a.acks,
        "compression.type": a.compression,
        "enable.idempotence": a.idempotence == "on",
        "linger.ms": a.linger_ms,
        "message.timeout.ms": max(1000, int(a.timeout * 1000)),
        "error_cb": on_error,
    }
    p = ck.Producer(conf)

    def serve(call, *args):
        """p.poll: confluent-kafka raises a fatal error (an idempotent
        producer the broker cannot serve, say) from it."""
        try:
            return call(*args)
        except ck.KafkaException as e:
            err = e.args[0]
            common.fail(f"{'fatal ' if err.fatal() else ''}client error: {err}")

    sent = 0
    for index, key, value, partition in common.records(a):
        d = common.digest(key, value)

        def report(err, msg, index=index, d=d):
            if err is not None:
                state["failed"] += 1
                common.emit({"event": "failed", "index": index, "error": str(err)})
                if state["first_failure"] is None:
                    state["first_failure"] = f"record {index} not delivered: {err}"
                return
            state["acked"] += 1
            offset = msg.offset()
            common.emit(
                {
                    "event": "ack",
                    "index": index,
                    "partition": msg.partition(),
                    "offset": offset if offset is not None and offset >= 0 else -1,
                    "digest": d,
                }
            )

        kwargs = {"key": key, "value": value, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                p.produce(a.topic, **kwargs)
                break
            except BufferError:
                serve(p.poll, 0.05)
                check()
            except ck.KafkaException as e:
                common.fail(f"produce of record {index}: {e}")
            if deadline.passed():
                common.fail(f"the producer's queue stayed full until the {deadline.seconds}s deadline", 4)
        sent += 1
        serve(p.poll, 0)
        check()

    # Not flush(): after a fatal error it raises SystemError and the error
    # is lost, where poll() raises it.
    while len(p) > 0 and not deadline.passed():
        serve(p.poll, 0.1)
        check()
    left = len(p)
    if left:
        common.fail(f"{left} of {sent} records not acknowledged before the {deadline.seconds}s deadline", 4)
    common.emit({"event": "done", "sent": sent, "acked": state["acked"], "failed": state["failed"]})
    if state["failed"]:
        common.fail(f"{state['failed']} of {sent} records failed")


if __name__ == "__main__":
    main()
