"""A Kafka-protocol producer for the chaos run (confluent-kafka, librdkafka).

Writes values "{writer}-{seq}" for seq = start, start+1, ... round robin over
the partitions, acks=all with idempotence on, in windows of 20 followed by a
flush, until killed or stdin closes. Prints one line per event, flushed:
  send VALUE            before the value is handed to the client
  ack PARTITION OFFSET VALUE   once the broker acknowledged it
  fail VALUE ERROR      when the client gave up on it
"""
import argparse
import select
import sys
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--writer", required=True)
    ap.add_argument("--start", type=int, default=1)
    a = ap.parse_args()
    out = sys.stdout
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": 4000,
        "socket.timeout.ms": 2000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
    })

    def delivered(err, msg):
        value = msg.value().decode()
        if err is not None:
            out.write(f"fail {value} {err.name()}\n")
        else:
            out.write(f"ack {msg.partition()} {msg.offset()} {value}\n")

    seq = a.start
    while True:
        # stdin closed: the run is over.
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
            break
        for _ in range(20):
            value = f"{a.writer}-{seq}"
            out.write(f"send {value}\n")
            p.produce(a.topic, value.encode(), partition=seq % a.partitions,
                      on_delivery=delivered)
            seq += 1
        p.flush(10)
        out.flush()
        # At most ~1,000 records a second: the run's disk (a tmpfs) is sized
        # for the native producers' rate plus this.
        time.sleep(0.02)
    p.flush(10)
    out.flush()


if __name__ == "__main__":
    main()
