"""CreatePartitions and DeleteRecords under a failing disk.

CreatePartitions: every file-system operation it makes, failed in turn, is refused with
KAFKA_STORAGE_ERROR, leaves the topic as it was (old partitions and their data, in memory and after a
restart), and a later attempt succeeds. DeleteRecords: see its test."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncelog.config import broker_config
from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import OS_FILE_SYSTEM, Fault, FaultPlan, FaultyFileSystem
from oncelog.log.manager import LogManager
from oncelog.protocol.records import build_batch, parse_header
from oncelog.topic_config import TopicConfig

pytestmark = pytest.mark.timeout(60)


def _manager(data: Path, plan: FaultPlan) -> LogManager:
    manager = LogManager(broker_config({}, data_dir=data, port=0), FaultyFileSystem(OS_FILE_SYSTEM, plan))
    manager.start(0)
    return manager


def _operations_of_one_growth(tmp_path: Path) -> list[tuple[str, str]]:
    plan = FaultPlan()
    manager = _manager(tmp_path / "probe", plan)
    manager.create_topic("t", 1, TopicConfig(), 0)
    plan.log.clear()
    manager.create_partitions("t", 3, 0)
    operations = list(plan.log)
    manager.close()
    return operations


def test_every_failed_step_leaves_the_topic_as_it_was(tmp_path: Path) -> None:
    operations = _operations_of_one_growth(tmp_path)
    kinds = sorted({operation for operation, _path in operations if operation in ("mkdir", "write", "fsync",
                                                                                 "rename", "sync_dir", "open")})
    assert kinds, operations
    last_sync_dir = ("sync_dir", sum(1 for op, _ in operations if op == "sync_dir"))
    tried = 0
    for kind in kinds:
        for nth in range(1, sum(1 for op, _ in operations if op == kind) + 1):
            data = tmp_path / f"{kind}-{nth}"
            plan = FaultPlan()
            manager = _manager(data, plan)
            manager.create_topic("t", 1, TopicConfig(), 0)
            log = manager.get("t", 0)
            assert log is not None
            batch = build_batch([(b"k", b"kept")])
            log.append(batch, parse_header(batch), 0)
            plan.add(Fault(kind, nth))
            with pytest.raises(KafkaError) as refused:
                manager.create_partitions("t", 3, 0)
            assert refused.value.code == ErrorCode.kafka_storage_error
            topic = manager.topic("t")
            assert topic is not None and len(topic.partitions) == 1, (kind, nth)
            plan.clear()
            manager.close()
            reopened = _manager(data, FaultPlan())  # what a restart finds
            found = reopened.topic("t")
            # The old partition and its record survive. Only a failed directory fsync after topics.json
            # was renamed leaves the outcome open (the new count may be on disk): then the restart
            # finds all three partitions, empty ones recreated.
            assert found is not None and len(found.partitions) in (1, 3), (kind, nth)
            assert len(found.partitions) == 1 or (kind, nth) == last_sync_dir, (kind, nth)
            assert found.partitions[0].log_end_offset == 1
            if len(found.partitions) == 1:
                reopened.create_partitions("t", 3, 0)  # the disk is back: it works
            reopened.close()
            grown = _manager(data, FaultPlan())
            assert len(grown.topic("t").partitions) == 3  # type: ignore[union-attr]
            grown.close()
            tried += 1
    assert tried >= 3


def test_delete_records_on_a_failing_disk_answers_an_error_and_loses_nothing_above(tmp_path: Path) -> None:
    """DeleteRecords writes twice: it deletes segments, then checkpoints the log start offset. Either
    failing is answered KAFKA_STORAGE_ERROR; records at or above the asked offset are never lost."""
    from oncelog.storage.local import LocalStorage

    for kind, path_part in (("unlink", ".log"), ("rename", "log-start-offset-checkpoint")):
        data = tmp_path / kind
        plan = FaultPlan()
        manager = _manager(data, plan)
        manager.create_topic("t", 1, TopicConfig({"segment.bytes": "200"}), 0)
        log = manager.get("t", 0)
        assert log is not None
        for index in range(8):
            batch = build_batch([(b"k", b"%d" % index * 40)])
            log.append(batch, parse_header(batch), 0)
        log.mark_flushed(log.log_end_offset)
        storage = LocalStorage(manager)
        plan.add(Fault(kind, 1, path_contains=path_part))
        [(code, _start)] = storage.delete_records([("t", 0, 5)]).value()
        assert code == ErrorCode.kafka_storage_error, kind
        plan.clear()
        manager.close()
        reopened = _manager(data, FaultPlan())
        survivor = reopened.get("t", 0)
        assert survivor is not None and survivor.log_start_offset <= 5 and survivor.log_end_offset == 8, kind
        reopened.close()


def test_a_config_change_the_disk_refuses_changes_nothing(tmp_path: Path) -> None:
    for kind in ("write", "fsync", "rename"):
        data = tmp_path / kind
        plan = FaultPlan()
        manager = _manager(data, plan)
        manager.create_topic("t", 1, TopicConfig({"retention.ms": "1000"}), 0)
        plan.add(Fault(kind, 1, path_contains="topics.json"))
        with pytest.raises(KafkaError) as refused:
            manager.alter_topic_config("t", TopicConfig({"retention.ms": "99"}))
        assert refused.value.code == ErrorCode.kafka_storage_error
        log = manager.get("t", 0)
        topic = manager.topic("t")
        assert topic is not None and dict(topic.config.overrides) == {"retention.ms": "1000"}, kind
        assert log is not None and log.config.retention_ms == 1000, kind
        plan.clear()
        manager.close()
        reopened = _manager(data, FaultPlan())
        assert dict(reopened.topic("t").config.overrides) == {"retention.ms": "1000"}  # type: ignore[union-attr]
        reopened.close()


def test_a_dynamic_config_change_the_disk_refuses_changes_nothing(tmp_path: Path) -> None:
    from oncelog.dynamic_config import LocalDynamicConfigs

    for kind in ("write", "fsync", "rename"):
        plan = FaultPlan()
        data = tmp_path / kind
        data.mkdir()
        store = LocalDynamicConfigs(FaultyFileSystem(OS_FILE_SYSTEM, plan), data)
        changes: list[str] = []
        store.on_change = lambda changes=changes: changes.append("changed")  # type: ignore[misc]
        assert store.replace("", {"log.retention.ms": "1000"}).value() is None
        plan.add(Fault(kind, 1, path_contains=LocalDynamicConfigs.FILE))
        refused = store.replace("", {"log.retention.ms": "5"}).value()
        assert isinstance(refused, OSError), kind
        assert store.entries() == {"": {"log.retention.ms": "1000"}} and changes == ["changed"], kind
        reloaded = LocalDynamicConfigs(OS_FILE_SYSTEM, data)
        reloaded.load()
        assert reloaded.entries() == {"": {"log.retention.ms": "1000"}}, kind
