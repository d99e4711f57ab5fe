"""The chaos run's consume-transform-produce stage, as its own process: `python -m oncelog.chaos.stage`.

It copies every record of the input topic to the output topic (value prefixed with "out:", same
partition) with `oncelog.eos.Processor`, offsets inside its transactions, and prints `progress N` once a
second while its loop runs. It is a process so its supervisor (`Workload`) can SIGKILL it: librdkafka
can block in `send_offsets_to_transaction` past its timeout when its group coordinator went away
(confluentinc/librdkafka#5511, #5456), and a silent stage is killed and started again, as an operator's
liveness probe would. The next instance fences the old one; exactly-once must hold regardless.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Message

from oncelog.eos.processor import Output, Processor, ProcessorConfig, ProcessorStats

QUIET: dict[str, Any] = {"log_level": 0, "logger": logging.getLogger("oncelog.chaos.librdkafka")}


def main(argv: list[str]) -> int:
    bootstrap, input_topic, output_topic, group, transactional_id, timeout_ms = argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def copy(message: Message) -> Iterator[Output]:
        yield Output(output_topic, None, b"out:" + (message.value() or b""), message.partition())

    def progress(stats: ProcessorStats, _seconds: float) -> None:
        print(f"progress {stats.records_in} {stats.commits} {stats.aborts}", flush=True)

    config = ProcessorConfig(bootstrap=bootstrap, group_id=group, input_topics=[input_topic],
                             transactional_id=transactional_id, transaction_timeout_ms=int(timeout_ms),
                             progress_interval_s=1.0, consumer_config=dict(QUIET),
                             producer_config={"request.timeout.ms": 5_000, **QUIET})
    Processor(config, copy, progress).run()  # SIGTERM ends it after the current transaction
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
