"""Behaviours real clients depend on that their own test suites found missing (each failed before its fix)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from oncelog.errors import ErrorCode

pytestmark = pytest.mark.timeout(60)


def test_an_out_of_range_fetch_lets_librdkafka_reset_its_offset(oncelog_broker: str, topic_name: str) -> None:
    """A Fetch answering OFFSET_OUT_OF_RANGE carried `records: null`; librdkafka rejected the whole
    response ("invalid MessageSetSize -1") and never applied auto.offset.reset: the consumer was stuck."""
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    for index in range(5):
        producer.produce(topic_name, f"r{index}".encode(), partition=0)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "reset", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "log_level": 0})
    consumer.assign([TopicPartition(topic_name, 0, 1000)])  # far past the end
    values = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < 5 and time.monotonic() < deadline:
            message = consumer.poll(0.3)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    assert values == [f"r{index}".encode() for index in range(5)]


def test_list_offsets_by_timestamp_answers_the_record_not_its_batch(oncelog_broker: str, topic_name: str) -> None:
    """ListOffsets by timestamp (and MAX_TIMESTAMP, KIP-734) answered the first offset of the batch the
    record is in; Kafka decodes that batch and answers the record itself."""
    from oncelog.client import KafkaClient

    base = 1_700_000_000_000
    stamps = [base + 10 * index for index in range(10)]
    stamps[6] = base + 1000  # the largest, out of order
    producer = Producer({"bootstrap.servers": oncelog_broker, "linger.ms": 200, "compression.type": "gzip",
                         "log_level": 0})
    for index, stamp in enumerate(stamps):
        producer.produce(topic_name, f"r{index}".encode(), partition=0, timestamp=stamp)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "times", "log_level": 0})
    try:
        [found] = consumer.offsets_for_times([TopicPartition(topic_name, 0, base + 35)], timeout=10)
        assert found.offset == 4  # the first record stamped at or after base + 35
    finally:
        consumer.close()
    with KafkaClient(oncelog_broker) as client:
        def list_offset(timestamp: int) -> tuple[int, int]:
            response = client.request(2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
                {"name": topic_name, "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                                     "timestamp": timestamp}]}]})
            answer = response.topics[0].partitions[0]
            return int(answer.offset), int(answer.timestamp)

        assert list_offset(-3) == (6, base + 1000)  # MAX_TIMESTAMP: the record holding the largest timestamp
        assert list_offset(base + 61) == (6, base + 1000)  # records 7.. are older than 6: 6 is the first ≥
        assert list_offset(base) == (0, base)


def test_a_compacted_topic_refuses_records_without_a_key(oncelog_broker: str, topic_name: str) -> None:
    """Keyless records were accepted on compacted topics; Kafka refuses the batch with INVALID_RECORD."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 1, config={"cleanup.policy": "compact"})])[topic_name].result(10)
    producer = Producer({"bootstrap.servers": oncelog_broker, "compression.type": "lz4", "linger.ms": 50,
                         "log_level": 0})
    outcomes: list[Any] = []
    producer.produce(topic_name, b"keyed", key=b"k", on_delivery=lambda error, _m: outcomes.append(error))
    producer.flush(10)
    producer.produce(topic_name, b"no key", on_delivery=lambda error, _m: outcomes.append(error))
    producer.flush(10)
    assert outcomes[0] is None
    assert outcomes[1] is not None and outcomes[1].name() == "INVALID_RECORD", outcomes[1]


def test_write_txn_markers_is_advertised_and_list_transactions_takes_a_pattern(oncelog_broker: str) -> None:
    """Kafka's admin client refused `kafka-transactions.sh abort` ("The node does not support
    WRITE_TXN_MARKERS") because ApiVersions left it out; ListTransactions v2 (--transactional-id-pattern)
    was missing."""
    from oncelog.client import KafkaClient

    for transactional_id in ("billing-1", "billing-2", "shipping-1", "a" * 3000):
        producer = Producer({"bootstrap.servers": oncelog_broker, "transactional.id": transactional_id,
                             "log_level": 0})
        producer.init_transactions(10)
    with KafkaClient(oncelog_broker) as client:
        versions = client.request(18, 3, {"client_software_name": "t", "client_software_version": "1"})
        advertised = {int(api.api_key): (int(api.min_version), int(api.max_version)) for api in versions.api_keys}
        assert advertised[27] == (1, 1) and advertised[66] == (0, 2)

        def listed(pattern: str | None) -> tuple[int, list[str]]:
            response = client.request(66, 2, {"state_filters": [], "producer_id_filters": [], "duration_filter": -1,
                                              "transactional_id_pattern": pattern})
            return int(response.error_code), sorted(t.transactional_id for t in response.transaction_states)

        assert listed(None) == (0, ["a" * 3000, "billing-1", "billing-2", "shipping-1"])
        assert listed("billing-.*") == (0, ["billing-1", "billing-2"])
        assert listed("billing") == (0, [])  # the whole id must match, as Java's Matcher.matches()
        assert listed("(unclosed") == (128, [])  # INVALID_REGULAR_EXPRESSION
        started = time.monotonic()
        assert listed("(a|aa)+b") == (0, [])  # exponential for a backtracking engine on the long id: linear here
        assert listed("(?:a{1000}){1000}") == (128, [])  # a pattern that would need gigabytes is refused
        assert listed("a" * 2000) == (128, [])
        assert time.monotonic() - started < 2


def test_broker_configs_have_kafkas_names_values_and_sources(oncelog_broker: str) -> None:
    """DescribeConfigs of the broker showed Python names and values (`connection_requests_in_flight_max`,
    `auto.create.topics.enable=True`) and called everything STATIC_BROKER_CONFIG."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(10)
    assert all("_" not in name for name in configs), sorted(name for name in configs if "_" in name)
    assert configs["auto.create.topics.enable"].value == "true"
    assert configs["log.retention.hours"].value == "168" and configs["log.retention.ms"].value == "604800000"
    assert configs["num.partitions"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["listeners"].source == ConfigSource.STATIC_BROKER_CONFIG.value  # port 0, not the default
    assert configs["listeners"].value.startswith("PLAINTEXT://127.0.0.1:")
    assert configs["advertised.listeners"].value is None


def test_authorized_operations_are_returned_when_asked(oncelog_broker: str, topic_name: str) -> None:
    """Metadata, DescribeCluster and DescribeGroups never returned authorized operations; without an
    authorizer Kafka answers every operation that applies to the resource type."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation, AdminClient

    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    producer.produce(topic_name, b"x", partition=0)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "ops", "log_level": 0})
    consumer.commit(offsets=[TopicPartition(topic_name, 0, 1)], asynchronous=False)
    consumer.close()
    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    cluster = admin.describe_cluster(include_authorized_operations=True).result(10)
    assert set(cluster.authorized_operations) == {
        AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
        AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE}
    topics = admin.describe_topics(TopicCollection([topic_name]), include_authorized_operations=True)
    described = topics[topic_name].result(10)
    assert set(described.authorized_operations) == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
    group = admin.describe_consumer_groups(["ops"], include_authorized_operations=True)["ops"].result(10)
    assert set(group.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
                                                AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
    plain = admin.describe_cluster().result(10)
    assert plain.authorized_operations is None  # not asked: not answered


def test_every_kafka_topic_config_is_accepted_validated_and_described(oncelog_broker: str, topic_name: str) -> None:
    """CreateTopics refused standard topic configs (file.delete.delay.ms, min.cleanable.dirty.ratio,
    max.compaction.lag.ms, ...); Kafka accepts them all with its validators."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    configs = {"file.delete.delay.ms": "1000", "min.cleanable.dirty.ratio": "0.2", "max.compaction.lag.ms": "5000",
               "min.compaction.lag.ms": "10", "flush.messages": "100", "preallocate": "true",
               "segment.jitter.ms": "5", "unclean.leader.election.enable": "false",
               "message.timestamp.before.max.ms": "60000", "compression.zstd.level": "7",
               "leader.replication.throttled.replicas": "0:1"}
    admin.create_topics([NewTopic(topic_name, 1, config=configs)])[topic_name].result(10)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    described = admin.describe_configs([resource])[resource].result(10)
    for name, value in configs.items():
        assert (described[name].value, described[name].source) == (value, ConfigSource.DYNAMIC_TOPIC_CONFIG.value), name
    assert described["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert described["segment.index.bytes"].value == "10485760"
    for name, bad in (("min.cleanable.dirty.ratio", "1.5"), ("remote.storage.enable", "true"),
                      ("preallocate", "maybe"), ("max.compaction.lag.ms", "0"), ("no.such.config", "1")):
        future = admin.create_topics([NewTopic(f"{topic_name}-bad", 1, config={name: bad})])[f"{topic_name}-bad"]
        with pytest.raises(KafkaException) as refused:
            future.result(10)
        assert refused.value.args[0].name() == "INVALID_CONFIG", name

    outcomes: list[Any] = []
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    now_ms = int(time.time() * 1000)
    producer.produce(topic_name, b"now", timestamp=now_ms, on_delivery=lambda e, _m: outcomes.append(e))
    producer.flush(10)  # one batch each: a refused record fails its whole batch, as in Kafka
    producer.produce(topic_name, b"stale", timestamp=now_ms - 3_600_000, on_delivery=lambda e, _m: outcomes.append(e))
    producer.flush(10)
    assert outcomes[0] is None
    assert outcomes[1] is not None and outcomes[1].name() == "INVALID_TIMESTAMP"


def test_a_restarted_static_member_gets_its_assignment_back_without_a_rebalance(
        oncelog_broker: str, topic_name: str) -> None:
    """KIP-345: a static member that restarts (same group.instance.id, no LeaveGroup) took part in a full
    rebalance; Kafka hands it its old assignment and leaves the other members alone."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 4)])[topic_name].result(10)
    assigned: dict[str, list[list[int]]] = {"a": [], "b": []}

    def member(instance: str) -> Consumer:
        consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": f"static-{topic_name}",
                             "group.instance.id": instance, "session.timeout.ms": 30000, "log_level": 0,
                             "partition.assignment.strategy": "range"})
        consumer.subscribe([topic_name], on_assign=lambda _c, partitions: assigned[instance].append(
            sorted(p.partition for p in partitions)))
        return consumer

    first_a, b = member("a"), member("b")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (assigned["a"] and assigned["b"]
                                               and len(assigned["a"][-1]) + len(assigned["b"][-1]) == 4):
        first_a.poll(0.1)
        b.poll(0.1)
    before_a, before_b, b_assignments = assigned["a"][-1], assigned["b"][-1], len(assigned["b"])
    assert sorted(before_a + before_b) == [0, 1, 2, 3]
    first_a.close()  # a static member leaves no LeaveGroup behind: this is a restart
    second_a = member("a")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(assigned["a"]) < 2:
        second_a.poll(0.1)
        b.poll(0.1)
    for _ in range(20):  # give a (wrong) rebalance time to reach b
        b.poll(0.1)
        second_a.poll(0.05)
    try:
        assert assigned["a"][-1] == before_a
        assert len(assigned["b"]) == b_assignments, "the other member went through a rebalance"
    finally:
        second_a.close()
        b.close()


def test_create_partitions_grows_a_topic_that_clients_then_use(oncelog_broker: str, topic_name: str) -> None:
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 2)])[topic_name].result(10)
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    producer.produce(topic_name, b"old", partition=1)
    producer.flush(10)

    def grow(count: int, **options: Any) -> str | None:
        try:
            admin.create_partitions([NewPartitions(topic_name, count)], **options)[topic_name].result(10)
        except KafkaException as error:
            return str(error.args[0].name())
        return None

    assert grow(5, validate_only=True) is None
    assert len(admin.list_topics(topic_name, timeout=10).topics[topic_name].partitions) == 2  # validated only
    assert grow(5) is None
    assert len(admin.list_topics(topic_name, timeout=10).topics[topic_name].partitions) == 5
    assert grow(5) == "INVALID_PARTITIONS" and grow(3) == "INVALID_PARTITIONS"
    assert admin.create_partitions([NewPartitions("no-such-topic", 3)])["no-such-topic"].exception(10) is not None
    delivered: list[Any] = []
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})  # fresh metadata
    producer.produce(topic_name, b"new", partition=4, on_delivery=lambda e, m: delivered.append((e, m.offset())))
    producer.flush(10)
    assert delivered == [(None, 0)]
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "grown", "log_level": 0,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic_name, 1, 0), TopicPartition(topic_name, 4, 0)])
    values = set()
    deadline = time.monotonic() + 20
    while len(values) < 2 and time.monotonic() < deadline:
        message = consumer.poll(0.3)
        if message is not None and message.error() is None:
            values.add(message.value())
    consumer.close()
    assert values == {b"old", b"new"}


def _earliest(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks", "log_level": 0})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0])
    finally:
        consumer.close()


def _delete_before(admin: Any, topic: str, offset: int) -> tuple[str | None, int]:
    [future] = admin.delete_records([TopicPartition(topic, 0, offset)]).values()
    try:
        result = future.result(10)
    except KafkaException as error:
        return str(error.args[0].name()), -1
    return None, int(result.low_watermark)


def test_delete_records_moves_the_log_start_offset(oncelog_broker: str, topic_name: str) -> None:
    """Kafka Streams purges its repartition topics with DeleteRecords; without it they grew forever."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 1, config={"segment.bytes": "300"})])[topic_name].result(10)
    producer = Producer({"bootstrap.servers": oncelog_broker, "linger.ms": 0, "log_level": 0})
    for index in range(10):
        producer.produce(topic_name, f"record-{index}".encode() * 5, partition=0)
        producer.flush(10)  # one batch each: several segments
    assert _delete_before(admin, topic_name, 6) == (None, 6)
    assert _earliest(oncelog_broker, topic_name) == 6
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "after-delete", "log_level": 0,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic_name, 0, 0)])  # below the log start: reset to the earliest
    offsets = []
    deadline = time.monotonic() + 20
    while len(offsets) < 4 and time.monotonic() < deadline:
        message = consumer.poll(0.3)
        if message is not None and message.error() is None:
            offsets.append(message.offset())
    consumer.close()
    assert offsets == [6, 7, 8, 9]
    assert _delete_before(admin, topic_name, 3) == (None, 6)  # never backwards
    assert _delete_before(admin, topic_name, 11)[0] == "OFFSET_OUT_OF_RANGE"
    assert _delete_before(admin, topic_name, -1) == (None, 10)  # -1: the high watermark
    assert _earliest(oncelog_broker, topic_name) == 10
    compacted = f"{topic_name}-compacted"
    admin.create_topics([NewTopic(compacted, 1, config={"cleanup.policy": "compact"})])[compacted].result(10)
    assert _delete_before(admin, compacted, 0)[0] == "POLICY_VIOLATION"  # Kafka's Partition.deleteRecordsOnLeader
    assert _delete_before(admin, "__consumer_offsets", 0)[0] == "TOPIC_EXCEPTION"  # librdkafka's name for it


def test_deleted_records_and_altered_configs_survive_a_sigkill(tmp_path: Any) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    from oncelog.testing import BrokerProcess

    broker = BrokerProcess(tmp_path / "d")
    bootstrap = broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("purged", 1, config={"segment.bytes": "300"})])["purged"].result(10)
        producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        for index in range(10):
            producer.produce("purged", f"record-{index}".encode() * 5, partition=0)
            producer.flush(10)
        assert _delete_before(admin, "purged", 7) == (None, 7)
        altered = ConfigResource(ConfigResource.Type.TOPIC, "purged", incremental_configs=[
            ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([altered])[altered].result(10)
        dynamic = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
            ConfigEntry("log.retention.bytes", "1000000000", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([dynamic])[dynamic].result(10)
        segments_before = len(list((tmp_path / "d" / "purged-0").glob("*.log")))
        broker.kill()  # SIGKILL right after the answers: no clean shutdown, no periodic checkpoint
        bootstrap = broker.start()
        assert _earliest(bootstrap, "purged") == 7
        resource = ConfigResource(ConfigResource.Type.TOPIC, "purged")
        after = AdminClient({"bootstrap.servers": bootstrap})
        described = after.describe_configs([resource])[resource].result(10)
        assert described["retention.ms"].value == "86400000"
        assert described["retention.bytes"].value == "1000000000"  # the dynamic broker default, kept
        assert segments_before < 10  # whole segments below the new start were deleted
    finally:
        broker.terminate()


def test_topic_configs_can_be_altered_incrementally_or_whole(oncelog_broker: str, topic_name: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
    )

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 1, config={"retention.ms": "3600000"})])[topic_name].result(10)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name)

    def described() -> dict[str, str]:
        entries = admin.describe_configs([resource])[resource].result(10)
        return {name: entry.value for name, entry in entries.items() if not entry.is_default}

    def incremental(*entries: ConfigEntry, validate_only: bool = False) -> str | None:
        target = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=list(entries))
        try:
            admin.incremental_alter_configs([target], validate_only=validate_only)[target].result(10)
        except KafkaException as error:
            return str(error.args[0].name())
        return None

    assert incremental(ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)) is None
    assert described() == {"retention.ms": "3600000", "max.message.bytes": "2000"}
    outcomes: list[Any] = []
    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0, "message.max.bytes": 1_000_000})
    producer.produce(topic_name, b"x" * 5000, partition=0, on_delivery=lambda e, _m: outcomes.append(e))
    producer.flush(10)
    assert outcomes[0] is not None and outcomes[0].name() == "MSG_SIZE_TOO_LARGE"  # the new limit applies at once
    assert incremental(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
                       ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)) is None
    assert described() == {"max.message.bytes": "2000", "cleanup.policy": "compact,delete"}
    assert incremental(ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND)) == \
        "INVALID_CONFIG"  # APPEND is for lists
    assert incremental(ConfigEntry("min.cleanable.dirty.ratio", "7",
                                   incremental_operation=AlterConfigOpType.SET)) == "INVALID_CONFIG"
    assert incremental(ConfigEntry("segment.ms", "1000", incremental_operation=AlterConfigOpType.SET),
                       validate_only=True) is None
    assert "segment.ms" not in described()
    from oncelog.client import KafkaClient

    with KafkaClient(oncelog_broker) as client:  # a null value is refused whole, as Kafka's ConfigAdminManager
        response = client.request(33, 2, {"validate_only": False, "resources": [{
            "resource_type": 2, "resource_name": topic_name,
            "configs": [{"name": "segment.ms", "value": "1000"}, {"name": "retention.ms", "value": None}]}]})
        assert response.responses[0].error_code == ErrorCode.invalid_request
    assert "segment.ms" not in described()
    whole = ConfigResource(ConfigResource.Type.TOPIC, topic_name, set_config={"segment.ms": "60000"})
    admin.alter_configs([whole])[whole].result(10)  # the legacy API replaces every override
    assert described() == {"segment.ms": "60000"}
    missing = ConfigResource(ConfigResource.Type.TOPIC, "no-such-topic", set_config={"segment.ms": "60000"})
    with pytest.raises(KafkaException):
        admin.alter_configs([missing])[missing].result(10)


def test_describe_log_dirs_reports_partition_sizes(oncelog_broker: str, topic_name: str) -> None:
    from kafka.admin import KafkaAdminClient

    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    for _index in range(20):
        producer.produce(topic_name, b"x" * 1000, partition=0)
    producer.flush(10)
    admin = KafkaAdminClient(bootstrap_servers=oncelog_broker)
    try:
        response = admin.describe_log_dirs()
    finally:
        admin.close()
    [broker] = response
    [log_dir] = broker["log_dirs"]
    assert log_dir["error_code"] == 0 and log_dir["log_dir"]
    sizes = {t["name"]: {p["partition_index"]: p["partition_size"] for p in t["partitions"]} for t in log_dir["topics"]}
    assert 20_000 <= sizes[topic_name][0] < 40_000


def test_single_replica_answers_to_leader_election_reassignment_and_group_types(
        oncelog_broker: str, topic_name: str) -> None:
    from confluent_kafka import ConsumerGroupType, ElectionType
    from confluent_kafka.admin import AdminClient, NewTopic

    from oncelog.client import KafkaClient

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 2)])[topic_name].result(10)
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "typed", "log_level": 0})
    consumer.commit(offsets=[TopicPartition(topic_name, 0, 0)], asynchronous=False)
    consumer.close()
    elected = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic_name, 0)]).result(10)
    assert [error.code() if error else None for error in elected.values()] == [KafkaError.ELECTION_NOT_NEEDED]
    classic = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(10)
    assert [(g.group_id, g.type) for g in classic.valid] == [("typed", ConsumerGroupType.CLASSIC)]
    assert admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(10).valid == []
    with KafkaClient(oncelog_broker) as client:
        def reassign(replicas: list[int] | None) -> int:
            response = client.request(45, 0, {"timeout": 10000, "topics": [{"name": topic_name, "partitions": [
                {"partition_index": 1, "replicas": replicas}]}]})
            return int(response.responses[0].partitions[0].error_code)

        node = admin.describe_cluster().result(10).nodes[0].id
        assert reassign([node]) == 0
        assert reassign([node, node + 1]) == int(ErrorCode.invalid_replica_assignment)
        assert reassign(None) == int(ErrorCode.no_reassignment_in_progress)
        listed = client.request(46, 0, {"timeout": 10000, "topics": None})
        assert int(listed.error_code) == 0 and list(listed.topics) == []


@pytest.mark.parametrize("codec", ["gzip", "zstd", "uncompressed"])
def test_a_topic_compression_type_recompresses_what_producers_send(oncelog_broker: str, topic_name: str,
                                                                   codec: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from oncelog.client import KafkaClient
    from oncelog.protocol.compression import CODECS
    from oncelog.protocol.records import build_batch, iter_batches
    from tests.faults.test_idempotence_faults import init_producer_id, produce_raw

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    admin.create_topics([NewTopic(topic_name, 1, config={"compression.type": codec})])[topic_name].result(10)
    producer = Producer({"bootstrap.servers": oncelog_broker, "compression.type": "lz4", "linger.ms": 20,
                         "log_level": 0})
    for index in range(20):
        producer.produce(topic_name, f"value-{index}".encode() * 10, key=b"k", partition=0)
    producer.flush(10)
    with KafkaClient(oncelog_broker) as client:
        producer_id = init_producer_id(client)
        batch = build_batch([(None, b"once" * 50)], producer_id=producer_id, producer_epoch=0, base_sequence=0)
        first = produce_raw(client, topic_name, batch)
        assert produce_raw(client, topic_name, batch) == first  # a retry is still recognised
        response = client.request(1, 11, {
            "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
            "topics": [{"topic": topic_name, "partitions": [{"partition": 0, "current_leader_epoch": -1,
                                                             "fetch_offset": 0, "log_start_offset": -1,
                                                             "partition_max_bytes": 1 << 20}]}]})
        stored = bytes(response.responses[0].partitions[0].records)
    wanted = 0 if codec == "uncompressed" else CODECS[codec]
    assert {header.compression for _position, header in iter_batches(stored)} == {wanted}
    consumer = Consumer({"bootstrap.servers": oncelog_broker, "group.id": "recompressed", "log_level": 0,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    values = []
    deadline = time.monotonic() + 20
    while len(values) < 21 and time.monotonic() < deadline:
        message = consumer.poll(0.3)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    assert values == [f"value-{index}".encode() * 10 for index in range(20)] + [b"once" * 50]


def test_dynamic_broker_configs_change_the_defaults_topics_inherit(oncelog_broker: str, topic_name: str) -> None:
    """AlterConfigs on a broker resource was refused; Kafka lets the log defaults change on a running
    cluster, per broker or for all (the cluster default), and topics without overrides follow."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource

    from oncelog.client import KafkaClient

    admin = AdminClient({"bootstrap.servers": oncelog_broker})
    node = str(admin.describe_cluster().result(10).nodes[0].id)

    def alter(entity: str, name: str, value: str | None, operation: AlterConfigOpType) -> str | None:
        if entity == "":  # the cluster default: librdkafka's ConfigResource cannot name it, the raw API can
            with KafkaClient(oncelog_broker) as client:
                response = client.request(44, 1, {"validate_only": False, "resources": [{
                    "resource_type": 4, "resource_name": "", "configs": [
                        {"name": name, "config_operation": operation.value, "value": value}]}]})
            code = response.responses[0].error_code
            return None if int(code) == 0 else code.name.upper()
        target = ConfigResource(ConfigResource.Type.BROKER, entity, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=operation)])
        try:
            admin.incremental_alter_configs([target])[target].result(10)
        except KafkaException as error:
            return str(error.args[0].name())
        return None

    def topic_config(name: str) -> Any:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
        return admin.describe_configs([resource])[resource].result(10)[name]

    producer = Producer({"bootstrap.servers": oncelog_broker, "log_level": 0})
    producer.produce(topic_name, b"x", partition=0)
    producer.flush(10)
    assert alter("", "log.retention.ms", "7200000", AlterConfigOpType.SET) is None  # every broker's default
    assert topic_config("retention.ms").value == "7200000"
    assert alter(node, "message.max.bytes", "5000", AlterConfigOpType.SET) is None  # this broker's
    outcomes: list[Any] = []
    producer.produce(topic_name, b"y" * 20_000, partition=0, on_delivery=lambda e, _m: outcomes.append(e))
    producer.flush(10)
    assert outcomes[0] is not None and outcomes[0].name() == "MSG_SIZE_TOO_LARGE"
    broker = ConfigResource(ConfigResource.Type.BROKER, node)
    described = admin.describe_configs([broker])[broker].result(10)
    assert described["message.max.bytes"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert described["log.retention.ms"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert described["num.partitions"].is_read_only
    with KafkaClient(oncelog_broker) as client:
        cluster = client.request(32, 4, {"resources": [{"resource_type": 4, "resource_name": "",
                                                        "configuration_keys": None}], "include_synonyms": False,
                                         "include_documentation": False})
    assert {c.name: c.value for c in cluster.results[0].configs} == {"log.retention.ms": "7200000"}
    assert alter(node, "num.partitions", "3", AlterConfigOpType.SET) == "INVALID_CONFIG"  # not dynamic
    assert alter(node, "log.segment.bytes", "5", AlterConfigOpType.SET) == "INVALID_CONFIG"  # below 14
    assert alter(node, "log.cleanup.policy", "compact", AlterConfigOpType.APPEND) is None
    assert topic_config("cleanup.policy").value == "compact,delete"
    assert alter(node, "message.max.bytes", None, AlterConfigOpType.DELETE) is None
    assert alter("", "log.retention.ms", None, AlterConfigOpType.DELETE) is None
    assert topic_config("retention.ms").value == "604800000"  # back to the static default


def test_a_recreated_topic_keeps_its_records_after_a_sigkill(tmp_path: Any) -> None:
    """Found: deleting a topic left its checkpoint entries; a topic re-created under the same name and
    killed before the next periodic checkpoint restarted at the old log start offset, its records gone."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from oncelog.testing import BrokerProcess

    broker = BrokerProcess(tmp_path / "d")
    bootstrap = broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("reborn", 1)])["reborn"].result(10)
        producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        for _index in range(20):
            producer.produce("reborn", b"old", partition=0)
        producer.flush(10)
        assert _delete_before(admin, "reborn", 15) == (None, 15)
        admin.delete_topics(["reborn"])["reborn"].result(10)
        deadline = time.monotonic() + 10
        while "reborn" in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
            time.sleep(0.1)
        admin.create_topics([NewTopic("reborn", 1)])["reborn"].result(10)
        producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "acks": "all"})
        for _index in range(5):
            producer.produce("reborn", b"new", partition=0)
        assert producer.flush(10) == 0
        broker.kill()
        bootstrap = broker.start()
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reborn", "log_level": 0})
        try:
            assert consumer.get_watermark_offsets(TopicPartition("reborn", 0), timeout=10) == (0, 5)
        finally:
            consumer.close()
    finally:
        broker.terminate()


def test_group_configs_are_described_altered_and_validated(oncelog_broker: str) -> None:
    """Kafka 4's group configs (resource type GROUP) were unknown: described with their defaults, set per
    group with Kafka's ranges, kept durably."""
    from oncelog.client import KafkaClient

    with KafkaClient(oncelog_broker) as client:
        def describe() -> dict[str, tuple[str, int]]:
            response = client.request(32, 4, {"resources": [{"resource_type": 32, "resource_name": "payments",
                                                             "configuration_keys": None}],
                                              "include_synonyms": False, "include_documentation": False})
            [result] = response.results
            assert result.error_code == ErrorCode.none
            return {c.name: (c.value, int(c.config_source)) for c in result.configs}

        def alter(name: str, value: str | None, operation: int = 0) -> ErrorCode:
            response = client.request(44, 1, {"validate_only": False, "resources": [{
                "resource_type": 32, "resource_name": "payments",
                "configs": [{"name": name, "config_operation": operation, "value": value}]}]})
            return ErrorCode(int(response.responses[0].error_code))

        assert describe()["consumer.session.timeout.ms"] == ("45000", 5)  # the default
        assert alter("consumer.session.timeout.ms", "50000") == ErrorCode.none
        assert describe()["consumer.session.timeout.ms"] == ("50000", 8)  # GROUP_CONFIG
        assert alter("consumer.session.timeout.ms", "1000") == ErrorCode.invalid_config  # below 45000
        assert alter("share.isolation.level", "read_committed") == ErrorCode.none
        assert alter("no.such.config", "1") == ErrorCode.invalid_config
        assert alter("consumer.session.timeout.ms", None, operation=1) == ErrorCode.none
        assert describe()["consumer.session.timeout.ms"] == ("45000", 5)
        assert describe()["share.isolation.level"] == ("read_committed", 8)
