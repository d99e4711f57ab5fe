"""What a hostile or careless client could break before, with real clients: internal topics, names,
limits, bad configs and lookups by topic id. Each test failed before its fix."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from oncelog.client import KafkaClient
from oncelog.config import broker_config
from oncelog.errors import ErrorCode
from oncelog.log.manager import LogManager
from oncelog.testing import BrokerProcess, embedded_broker
from oncelog.topic_config import TopicConfig
from tests.helpers import create_topic, create_topic_result

_create = create_topic_result


def _delete(bootstrap: str, name: str) -> ErrorCode:
    with KafkaClient(bootstrap) as client:
        response = client.request(20, 4, {"topic_names": [name], "timeout": 10_000})
    return ErrorCode(int(response.responses[0].error_code))


def _transactions_work(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:6]}",
                         "transaction.timeout.ms": 10_000})
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, value=b"in-a-transaction", partition=0)
    producer.commit_transaction(15)


def _group_commits_work(bootstrap: str, topic: str) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=15)
    consumer.close()
    assert committed[0].offset == 1


@pytest.mark.parametrize("internal", ["__consumer_offsets", "__transaction_state"])
def test_clients_cannot_create_delete_or_write_internal_topics(oncelog_broker: str, internal: str) -> None:
    """Found: a client creating __consumer_offsets (1 partition) first broke groups and transactions for
    good. Kafka reserves its internal topics: creation refused, deletion refused, writes refused."""
    created = _create(oncelog_broker, internal)
    assert ErrorCode(int(created.error_code)) == ErrorCode.invalid_request, created
    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    future = admin.create_topics([NewTopic(internal, 1, 1)])[internal]
    with pytest.raises(KafkaException, match="prohibited"):
        future.result(15)
    create_topic(oncelog_broker, "data")
    _transactions_work(oncelog_broker, "data")  # the broker creates both internal topics itself
    _group_commits_work(oncelog_broker, "data")
    assert _delete(oncelog_broker, internal) == ErrorCode.invalid_topic_exception
    with KafkaClient(oncelog_broker) as client:
        from oncelog.protocol.records import build_batch

        response = client.request(0, 7, {"transactional_id": None, "acks": -1, "timeout": 5000, "topic_data": [
            {"name": internal, "partition_data": [{"index": 0, "records": build_batch([(b"k", b"v")])}]}]})
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.invalid_topic_exception


def test_coordinators_use_the_partition_count_the_internal_topic_has(tmp_path: Path) -> None:
    """A data directory where __consumer_offsets and __transaction_state were created with 1 partition
    (by a client, before that was refused) keeps working: coordinators place keys by the real count."""
    data = tmp_path / "data"
    manager = LogManager(broker_config({}, data_dir=data))
    manager.start(0)
    for name in ("__consumer_offsets", "__transaction_state"):
        manager.create_topic(name, 1, TopicConfig({"cleanup.policy": "compact"}), 0)
    manager.close()
    with BrokerProcess(data) as broker:
        create_topic(broker.bootstrap, "data")
        _transactions_work(broker.bootstrap, "data")
        _group_commits_work(broker.bootstrap, "data")
        broker.terminate()
        bootstrap = broker.start()  # and across a restart
        _group_commits_work(bootstrap, "data")
        _transactions_work(bootstrap, "data")


def test_user_topics_named_with_two_underscores_are_ordinary(oncelog_broker: str) -> None:
    """Found: any `__x` topic was treated as internal and refused writes. Kafka reserves only its own."""
    create_topic(oncelog_broker, "__audit")
    producer = Producer({"bootstrap.servers": oncelog_broker})
    producer.produce("__audit", value=b"hello", partition=0)
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "x", "enable.auto.commit": False})
    consumer.assign([TopicPartition("__audit", 0, 0)])
    message = None
    deadline = time.monotonic() + 20
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(0.5)
    consumer.close()
    assert message is not None and message.value() == b"hello"
    assert _delete(oncelog_broker, "__audit") == ErrorCode.none


def test_every_legal_name_up_to_249_characters_can_be_created_and_deleted(oncelog_broker: str) -> None:
    """Found: deleting a topic whose name was over ~215 characters failed (the deletion directory name
    passed 255 bytes). Kafka cuts the topic part of that name."""
    for length in (200, 215, 216, 240, 249):
        name = ("n" * length)
        assert ErrorCode(int(_create(oncelog_broker, name, partitions=2).error_code)) == ErrorCode.none
        assert _delete(oncelog_broker, name) == ErrorCode.none
        assert ErrorCode(int(_create(oncelog_broker, name).error_code)) == ErrorCode.none  # and again


def test_topic_names_that_collide_are_refused(oncelog_broker: str) -> None:
    """Kafka's rule: '.' and '_' collide (metric names), so `a.b` and `a_b` may not both exist."""
    assert ErrorCode(int(_create(oncelog_broker, "a.b").error_code)) == ErrorCode.none
    clash = _create(oncelog_broker, "a_b")
    assert ErrorCode(int(clash.error_code)) == ErrorCode.invalid_topic_exception
    assert "collides" in clash.error_message
    assert ErrorCode(int(_create(oncelog_broker, "a.b.c").error_code)) == ErrorCode.none


def test_partitions_past_max_broker_partitions_are_refused_with_a_clear_error() -> None:
    with embedded_broker(max_broker_partitions="10") as bootstrap:
        assert ErrorCode(int(_create(bootstrap, "eight", partitions=8).error_code)) == ErrorCode.none
        refused = _create(bootstrap, "three", partitions=3)
        assert ErrorCode(int(refused.error_code)) == ErrorCode.policy_violation
        assert "max.broker.partitions=10" in refused.error_message
        assert ErrorCode(int(_create(bootstrap, "two", partitions=2).error_code)) == ErrorCode.none


def test_thousands_of_partitions_within_a_small_file_descriptor_limit(tmp_path: Path) -> None:
    """Found: ~6,660 partitions exhausted file descriptors and the broker could not restart. Files are
    opened lazily and the least recently used are closed, so 1,500 partitions fit under a limit of 256
    descriptors, are written and read, and survive a restart."""
    broker = BrokerProcess(tmp_path / "data", open_files_limit=256)
    bootstrap = broker.start()
    try:
        for index in range(3):
            assert ErrorCode(int(_create(bootstrap, f"wide{index}", partitions=500).error_code)) == ErrorCode.none
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        for partition in range(0, 500, 7):
            for index in range(3):
                producer.produce(f"wide{index}", value=f"{index}-{partition}".encode(), partition=partition)
        assert producer.flush(60) == 0
        broker.terminate()
        bootstrap = broker.start()
        with KafkaClient(bootstrap) as client:
            response = client.request(2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
                {"name": f"wide{index}", "partitions": [{"partition_index": p, "current_leader_epoch": -1,
                                                         "timestamp": -1} for p in range(500)]}
                for index in range(3)]})
        ends = [int(p.offset) for topic in response.topics for p in topic.partitions]
        assert len(ends) == 1500 and sum(ends) == 3 * len(range(0, 500, 7))
    finally:
        if broker.process is not None:
            broker.terminate()


@pytest.mark.parametrize(("config", "value"), [
    ("segment.bytes", "0"), ("segment.bytes", "-5"), ("segment.ms", "0"), ("retention.ms", "-7"),
    ("index.interval.bytes", "-1"), ("max.message.bytes", "-1"), ("retention.ms", "abc"),
    ("min.insync.replicas", "0"), ("cleanup.policy", "shred"), ("delete.retention.ms", "-1"),
])
def test_invalid_topic_configs_get_invalid_config(oncelog_broker: str, config: str, value: str) -> None:
    """Found: out-of-range configs reached an assertion and a traceback; Kafka answers INVALID_CONFIG."""
    result = _create(oncelog_broker, f"c-{uuid.uuid4().hex[:8]}", configs={config: value})
    assert ErrorCode(int(result.error_code)) == ErrorCode.invalid_config, result
    assert config in result.error_message


def test_metadata_by_topic_id(oncelog_broker: str, topic_name: str) -> None:
    """Metadata v12 looks topics up by id (Kafka 3.1+); an unknown id gets UNKNOWN_TOPIC_ID; v10 and v11
    cannot carry ids (Kafka answers INVALID_REQUEST). Found: a traceback and a closed connection."""
    create_topic(oncelog_broker, topic_name)
    with KafkaClient(oncelog_broker) as client:
        by_name = client.request(3, 12, {"topics": [{"name": topic_name, "topic_id": None}],
                                         "allow_auto_topic_creation": False,
                                         "include_topic_authorized_operations": False})
        topic_id = by_name.topics[0].topic_id
        by_id = client.request(3, 12, {"topics": [{"name": None, "topic_id": topic_id},
                                                  {"name": None, "topic_id": uuid.uuid4()}],
                                       "allow_auto_topic_creation": False,
                                       "include_topic_authorized_operations": False})
        assert [(t.name, t.error_code) for t in by_id.topics] == [(topic_name, ErrorCode.none),
                                                                  (None, ErrorCode.unknown_topic_id)]
        assert len(by_id.topics[0].partitions) == 1
        old = client.request(3, 10, {"topics": [{"name": None, "topic_id": topic_id}],
                                     "allow_auto_topic_creation": False,
                                     "include_cluster_authorized_operations": False,
                                     "include_topic_authorized_operations": False})
        assert old.topics[0].error_code == ErrorCode.invalid_request


def test_ids_cannot_forge_log_lines(oncelog_broker: str, caplog: pytest.LogCaptureFixture) -> None:
    """Found: a newline in a transactional.id or group.id wrote a second, forged log line. Every client
    string is escaped before it reaches the log."""
    forged = "x\n2026-01-01 00:00:00,000 ERROR oncelog: forged"
    caplog.set_level(logging.INFO, logger="oncelog")
    with KafkaClient(oncelog_broker) as client:
        initialised = client.request(22, 4, {"transactional_id": forged, "transaction_timeout": 10_000,
                                             "producer_id": -1, "producer_epoch": -1})
        assert initialised.error_code == ErrorCode.none
        joined = client.request(11, 7, {"group_id": forged, "session_timeout": 10_000, "rebalance_timeout": 10_000,
                                        "member_id": "", "group_instance_id": None, "protocol_type": "consumer",
                                        "protocols": [{"name": "range", "metadata": b""}], "reason": None})
        assert joined.error_code == ErrorCode.member_id_required
        client.request(11, 7, {"group_id": forged, "session_timeout": 10_000, "rebalance_timeout": 10_000,
                               "member_id": joined.member_id, "group_instance_id": None, "protocol_type": "consumer",
                               "protocols": [{"name": "range\nERROR forged", "metadata": b""}], "reason": None})
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("oncelog")]
    mentioning = [line for line in lines if "forged" in line]
    assert mentioning, "the ids were expected in the log"
    assert all("\n" not in line for line in mentioning), mentioning
