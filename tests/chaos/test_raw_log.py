"""The chaos checker reads the final log raw and decides each record by its markers, so a broker whose
read_committed view is wrong cannot talk the checker into agreeing with it."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from confluent_kafka import Producer

from oncelog.chaos.raw_log import raw_final_log
from oncelog.log.partition import PartitionLog
from oncelog.testing import embedded_broker

QUIET = {"log_level": 0}


def _transaction(bootstrap: str, transactional_id: str, values: list[str], end: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "transaction.timeout.ms": 60_000, **QUIET})
    producer.init_transactions(10)
    producer.begin_transaction()
    for value in values:
        producer.produce("t", value.encode(), partition=0)
    producer.flush(10)
    if end == "commit":
        producer.commit_transaction(10)
    elif end == "abort":
        producer.abort_transaction(10)
    return producer


@pytest.mark.timeout(60)
def test_fates_come_from_the_markers_even_when_the_last_stable_offset_lies(tmp_path: Path) -> None:
    with embedded_broker(tmp_path) as bootstrap:
        plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **QUIET})
        plain.produce("t", b"p0", partition=0)
        plain.flush(10)
        producers = [_transaction(bootstrap, "c", ["c0", "c1"], "commit"),
                     _transaction(bootstrap, "a", ["a0"], "abort"),
                     _transaction(bootstrap, "o", ["o0"], "leave open")]
        plain.produce("t", b"p1", partition=0)
        plain.flush(10)
        # The broker now says nothing is undecided: read_committed readers would be handed o0.
        with mock.patch.object(PartitionLog, "last_stable_offset", property(lambda log: log.high_watermark)):
            final, stable = raw_final_log(bootstrap, "t", 1, limit_s=20)
        assert len(producers) == 3  # "o" is still alive, its transaction open
    records = final.partitions[0]
    fates = {record.value: record.fate for record in records.values()}
    assert fates == {"p0": "plain", "c0": "committed", "c1": "committed", "a0": "aborted", "o0": "open",
                     "p1": "plain"}
    assert sorted(records) == sorted(set(records)) and len(records) == 6
    assert final.high_watermarks[0] == stable[0] == 1 + max(records)  # the last record is p1, after the markers
