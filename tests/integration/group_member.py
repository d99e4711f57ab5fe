"""A consumer-group member in its own process, for tests that SIGKILL a member (no LeaveGroup, no commit).

    python group_member.py BOOTSTRAP TOPIC GROUP_ID SESSION_TIMEOUT_MS [GROUP_INSTANCE_ID]

It subscribes with confluent-kafka and prints one line per rebalance event, flushed at once, so the
parent can follow the group from the outside: `assigned 0,1,2` (sorted partitions, empty if none) and
`revoked 0,1,2`. It consumes and discards records and never commits. It runs until it is killed, or
until its parent closes its stdin (then it closes the consumer cleanly and exits 0).
"""

from __future__ import annotations

import sys
import threading

from confluent_kafka import Consumer, TopicPartition


def _say(event: str, partitions: list[TopicPartition]) -> None:
    print(event, ",".join(str(p) for p in sorted(tp.partition for tp in partitions)), flush=True)


def main(argv: list[str]) -> int:
    bootstrap, topic, group_id, session_timeout_ms = argv[:4]
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap, "group.id": group_id, "client.id": "group-member-subprocess",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "session.timeout.ms": int(session_timeout_ms), "heartbeat.interval.ms": 300,
    }
    if len(argv) > 4:
        config["group.instance.id"] = argv[4]
    consumer = Consumer(config)
    consumer.subscribe([topic], on_assign=lambda _c, tps: _say("assigned", tps),
                       on_revoke=lambda _c, tps: _say("revoked", tps))
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while not stdin_closed.is_set():
        consumer.poll(0.1)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
