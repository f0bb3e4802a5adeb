"""A Kafka consumer-group member for the chaos run (confluent-kafka).

Prints, like `broker consume --group --print-offsets`, one line per
assignment and one per record, flushed after every poll, and stores a
record's offset for the (auto) commit only after its line is written, so
that nothing is committed that was not printed:
  joined group G as member M in generation N: partitions [T/P, ...]
  GENERATION PARTITION OFFSET VALUE
SIGTERM commits and leaves the group.
"""
import argparse
import signal
import sys

from confluent_kafka import Consumer, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--session-timeout-ms", type=int, default=2000)
    a = ap.parse_args()
    out = sys.stdout
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 500,
        "session.timeout.ms": a.session_timeout_ms,
        "heartbeat.interval.ms": max(100, a.session_timeout_ms // 4),
        "max.poll.interval.ms": 20000,
        "socket.timeout.ms": 2000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })
    generation = [0]

    def assigned(consumer, partitions):
        generation[0] += 1
        names = ", ".join(f"{p.topic}/{p.partition}" for p in partitions)
        member = consumer.memberid() or "?"
        out.write(f"joined group {a.group} as member {member} in generation "
                  f"{generation[0]}: partitions [{names}]\n")
        out.flush()

    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    c.subscribe([a.topic], on_assign=assigned)
    while not stop[0]:
        msgs = c.consume(num_messages=500, timeout=0.2)
        done = []
        for m in msgs:
            if m.error():
                continue
            value = m.value().decode(errors="replace") if m.value() else ""
            out.write(f"{generation[0]} {m.partition()} {m.offset()} {value}\n")
            done.append(m)
        out.flush()
        for m in done:
            c.store_offsets(offsets=[TopicPartition(m.topic(), m.partition(), m.offset() + 1)])
    c.close()
    out.write("left the group\n")
    out.flush()


if __name__ == "__main__":
    main()
