"""Reads every record of a Kafka topic with confluent-kafka (librdkafka 2.x
bundled in the wheel), independently of the client under test, and prints
them as one JSON array: partition, offset, timestamp, key, value and
headers, bytes as hex (null stays null).

    python3 read_topic.py BOOTSTRAP TOPIC TIMEOUT_SECONDS

Exits 2 with a message on stderr when the topic is unknown or a partition
does not reach its end in time.
"""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition


def hexed(data):
    return None if data is None else data.hex()


def main():
    bootstrap, topic, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    deadline = time.monotonic() + timeout
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # Required by the Python client; never joined, never committed.
            "group.id": "sluice-testbed-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # tansu never answers a fetch with a zero max wait.
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=max(deadline - time.monotonic(), 0.1))
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            print(f"topic {topic!r} not found: {found.error if found else 'absent'}", file=sys.stderr)
            return 2
        partitions = sorted(found.partitions)
        consumer.assign(
            [TopicPartition(topic, p, -2) for p in partitions]  # -2: OFFSET_BEGINNING
        )
        pending = set(partitions)
        records = []
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"partitions {sorted(pending)} of {topic!r} did not reach their end in {timeout}s", file=sys.stderr)
                return 2
            message = consumer.poll(min(remaining, 0.5))
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                print(f"reading {topic!r}: {error}", file=sys.stderr)
                return 2
            _, timestamp = message.timestamp()
            records.append(
                {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "timestamp_ms": timestamp,
                    "key": hexed(message.key()),
                    "value": hexed(message.value()),
                    "headers": [[name, hexed(value)] for name, value in (message.headers() or [])],
                }
            )
        records.sort(key=lambda r: (r["partition"], r["offset"]))
        json.dump(records, sys.stdout)
        return 0
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
