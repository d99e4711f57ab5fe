"""Background maintenance survives its own failures: each job is isolated, logged once, retried.

Found: a few seconds of ENOSPC, or one CRC-valid batch of garbage records in a compacted topic, stopped
retention, checkpoints, compaction, transaction timeouts and offset expiry for good; abandoned
transactions then held read_committed consumers forever and the next SIGTERM exited 1.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from oncelog.client import KafkaClient
from oncelog.errors import ErrorCode
from oncelog.protocol.records import BATCH_HEADER_BYTES, CRC_POSITION, build_batch, crc_of
from oncelog.server.app import _Periodic
from oncelog.testing import BrokerProcess
from tests.helpers import create_topic


def _garbage_batch() -> bytes:
    """A batch whose header and CRC are valid but whose records cannot be decoded."""
    batch = bytearray(build_batch([(b"key", b"value" * 10)]))
    batch[BATCH_HEADER_BYTES:] = b"\xff" * (len(batch) - BATCH_HEADER_BYTES)
    struct.pack_into(">I", batch, CRC_POSITION, crc_of(batch, 0, len(batch)))
    return bytes(batch)


def _produce(client: KafkaClient, topic: str, records: bytes, transactional_id: str | None = None) -> ErrorCode:
    response = client.request(0, 7, {"transactional_id": transactional_id, "acks": -1, "timeout": 5000,
                                     "topic_data": [{"name": topic, "partition_data": [
                                         {"index": 0, "records": records}]}]})
    return ErrorCode(int(response.responses[0].partition_responses[0].error_code))


def test_an_uncleanable_partition_does_not_stop_transaction_timeouts_or_a_clean_stop(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", {
        "log.cleaner.backoff.ms": "100",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
    })
    bootstrap = broker.start()
    try:
        # The broker refuses undecodable records on a compacted topic (as Kafka's LogValidator), so the
        # garbage goes in while the topic deletes, and the topic is switched to compaction offline: a
        # disk that went bad under an accepted batch looks the same to the cleaner.
        create_topic(bootstrap, "compacted", configs={"cleanup.policy": "delete", "segment.bytes": "1024"})
        with KafkaClient(bootstrap) as client:
            assert _produce(client, "compacted", _garbage_batch()) == ErrorCode.none
        assert broker.terminate() == 0
        topics_file = tmp_path / "data" / "topics.json"
        topics = json.loads(topics_file.read_text())
        topics["compacted"]["configs"]["cleanup.policy"] = "compact"
        topics_file.write_text(json.dumps(topics))
        bootstrap = broker.start()
        create_topic(bootstrap, "data")
        with KafkaClient(bootstrap) as client:
            for index in range(30):  # roll segments so the cleaner has work
                assert _produce(client, "compacted", build_batch([(b"k%d" % index, b"v" * 60)])) == ErrorCode.none
            # An abandoned transaction: begun, written, never ended.
            init = client.request(22, 4, {"transactional_id": "abandoned", "transaction_timeout": 1000,
                                          "producer_id": -1, "producer_epoch": -1})
            producer_id, epoch = int(init.producer_id), int(init.producer_epoch)
            added = client.request(24, 3, {"v3_and_below_transactional_id": "abandoned",
                                           "v3_and_below_producer_id": producer_id,
                                           "v3_and_below_producer_epoch": epoch,
                                           "v3_and_below_topics": [{"name": "data", "partitions": [0]}]})
            assert added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
            batch = build_batch([(None, b"never committed")], producer_id=producer_id, producer_epoch=epoch,
                                base_sequence=0, transactional=True)
            assert _produce(client, "data", batch, "abandoned") == ErrorCode.none
            deadline = time.monotonic() + 20
            stable = -1
            while time.monotonic() < deadline:
                offsets = client.request(2, 7, {"replica_id": -1, "isolation_level": 1, "topics": [
                    {"name": "data", "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                                     "timestamp": -1}]}]})
                stable = int(offsets.topics[0].partitions[0].offset)
                if stable == 2:  # the record and the ABORT marker
                    break
                time.sleep(0.2)
            assert stable == 2, "the abandoned transaction still holds the last stable offset"
        assert broker.terminate() == 0
        log = broker.log_path.read_text()
        assert log.count("marked uncleanable") == 1, log[-3000:]
        assert "Traceback" not in log
    finally:
        if broker.process is not None:
            broker.process.kill()


def test_a_failing_job_is_retried_with_backoff_and_recovers() -> None:
    """ENOSPC for a while: the job fails (logged once), is retried sooner than its interval with growing
    waits, and runs on its normal interval again once it works."""
    failures = [3]

    def flaky() -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise OSError(28, "No space left on device")

    job = _Periodic("checkpoints", 60_000, flaky)
    now = 1000.0
    waits = []
    for _ in range(4):
        job.run(now)
        waits.append(job.due - now)
        now = job.due
    assert waits == [0.5, 1.0, 2.0, 60.0]
    assert job.failures == 0
