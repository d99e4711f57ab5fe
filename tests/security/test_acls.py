"""ACLs enforced end to end: real clients allowed, denied, by prefix, as super user; every authorization
error code on the APIs that return it; ACLs managed with Kafka's APIs and `oncelog acls`, durable
across a restart."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding as ConfluentAclBinding,
)
from confluent_kafka.admin import (
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
)
from confluent_kafka.admin import (
    ResourceType as ConfluentResourceType,
)

from oncelog.client import KafkaClient
from oncelog.client_security import ClientSecurity
from oncelog.errors import ErrorCode
from oncelog.protocol.records import build_batch

from .conftest import TlsBroker, _acl_broker

QUIET = {"log_level": 0}


def _as(user: str) -> dict[str, Any]:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": user,
            "sasl.password": f"{user}-secret", **QUIET}


def _admin(broker: TlsBroker, user: str = "admin") -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.address("SASL_PLAINTEXT"), **_as(user)})


def _grant(broker: TlsBroker, *bindings: tuple[ConfluentResourceType, str, str, AclOperation],
           pattern: ResourcePatternType = ResourcePatternType.LITERAL,
           permission: AclPermissionType = AclPermissionType.ALLOW) -> None:
    acls = [ConfluentAclBinding(kind, name, pattern, f"User:{user}", "*", operation, permission)
            for kind, name, user, operation in bindings]
    admin = _admin(broker)  # kept alive while its futures are waited on
    for future in admin.create_acls(acls).values():
        future.result(15)


def _topic(broker: TlsBroker, name: str) -> None:
    admin = _admin(broker)
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(15)


def _produce(broker: TlsBroker, user: str, topic: str) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": broker.address("SASL_PLAINTEXT"), **_as(user),
                         "message.timeout.ms": 5000})
    producer.produce(topic, b"x", on_delivery=lambda error, _message: errors.append(error))
    producer.flush(10)
    return errors[0] if errors else None


@pytest.mark.timeout(60)
def test_produce_and_consume_are_denied_until_granted_then_deny_wins(acl_broker: TlsBroker) -> None:
    _topic(acl_broker, "orders")
    denied = _produce(acl_broker, "alice", "orders")
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "orders", "alice", AclOperation.WRITE))
    assert _produce(acl_broker, "alice", "orders") is None
    group = f"g-{uuid.uuid4()}"
    consumer = Consumer({"bootstrap.servers": acl_broker.address("SASL_PLAINTEXT"), **_as("alice"),
                         "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe(["orders"])
    message = consumer.poll(10)
    assert message is not None and message.error() is not None
    assert message.error().code() in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    consumer.close()
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "orders", "alice", AclOperation.READ),
           (ConfluentResourceType.GROUP, group, "alice", AclOperation.READ))
    consumer = Consumer({"bootstrap.servers": acl_broker.address("SASL_PLAINTEXT"), **_as("alice"),
                         "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe(["orders"])
    message = consumer.poll(15)
    assert message is not None and message.error() is None and message.value() == b"x"
    consumer.close()
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "orders", "alice", AclOperation.WRITE),
           permission=AclPermissionType.DENY)
    denied = _produce(acl_broker, "alice", "orders")
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.mark.timeout(60)
def test_prefixed_acls_and_the_super_user(acl_broker: TlsBroker) -> None:
    for name in ("bob-1", "bobby", "other"):
        _topic(acl_broker, name)
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "bob-", "bob", AclOperation.WRITE),
           pattern=ResourcePatternType.PREFIXED)
    assert _produce(acl_broker, "bob", "bob-1") is None
    for name in ("bobby", "other"):
        error = _produce(acl_broker, "bob", name)
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _produce(acl_broker, "admin", "other") is None


@pytest.mark.timeout(60)
def test_transactions_need_the_transactional_id(acl_broker: TlsBroker) -> None:
    _topic(acl_broker, "tx")
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "tx", "alice", AclOperation.WRITE))
    config = {"bootstrap.servers": acl_broker.address("SASL_PLAINTEXT"), **_as("alice"), "transactional.id": "app"}
    with pytest.raises(KafkaException) as raised:
        Producer(config).init_transactions(10)
    assert raised.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    _grant(acl_broker, (ConfluentResourceType.TRANSACTIONAL_ID, "app", "alice", AclOperation.WRITE))
    producer = Producer(config)
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("tx", b"committed")
    producer.commit_transaction(10)


@pytest.mark.timeout(60)
def test_metadata_lists_only_what_the_principal_may_describe(acl_broker: TlsBroker) -> None:
    for name in ("visible", "hidden"):
        _topic(acl_broker, name)
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "visible", "alice", AclOperation.READ))
    topics = _admin(acl_broker, "alice").list_topics(timeout=10).topics
    assert set(topics) == {"visible"}
    named = _admin(acl_broker, "alice").list_topics("hidden", timeout=10).topics["hidden"]
    assert named.error is not None and named.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert {"visible", "hidden"} <= set(_admin(acl_broker).list_topics(timeout=10).topics)


def _alice(broker: TlsBroker) -> KafkaClient:
    return KafkaClient(broker.address("SASL_PLAINTEXT"), security=ClientSecurity(
        "SASL_PLAINTEXT", mechanism="PLAIN", username="alice", password="alice-secret"))


REFUSALS: list[tuple[str, int, int, dict[str, Any], Any, ErrorCode]] = [
    ("CreateTopics", 19, 5, {"topics": [{"name": "new", "num_partitions": 1, "replication_factor": 1,
                                         "assignments": [], "configs": []}], "timeout": 1000, "validate_only": False},
     lambda r: r.topics[0].error_code, ErrorCode.topic_authorization_failed),
    ("DeleteTopics", 20, 4, {"topic_names": ["existing"], "timeout": 1000},
     lambda r: r.responses[0].error_code, ErrorCode.topic_authorization_failed),
    ("ListOffsets", 2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": "existing", "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]},
     lambda r: r.topics[0].partitions[0].error_code, ErrorCode.topic_authorization_failed),
    ("FindCoordinator group", 10, 3, {"key": "g", "key_type": 0},
     lambda r: r.error_code, ErrorCode.group_authorization_failed),
    ("FindCoordinator transaction", 10, 3, {"key": "t", "key_type": 1},
     lambda r: r.error_code, ErrorCode.transactional_id_authorization_failed),
    ("JoinGroup", 11, 7, {"group_id": "g", "session_timeout": 10000, "rebalance_timeout": 10000, "member_id": "",
                          "group_instance_id": None, "protocol_type": "consumer",
                          "protocols": [{"name": "range", "metadata": b""}]},
     lambda r: r.error_code, ErrorCode.group_authorization_failed),
    ("OffsetFetch", 9, 7, {"group_id": "g", "topics": None, "require_stable": False},
     lambda r: r.error_code, ErrorCode.group_authorization_failed),
    ("InitProducerId idempotent", 22, 4, {"transactional_id": None, "transaction_timeout": 60000,
                                          "producer_id": -1, "producer_epoch": -1},
     lambda r: r.error_code, ErrorCode.cluster_authorization_failed),
    ("EndTxn", 26, 3, {"transactional_id": "t", "producer_id": 1, "producer_epoch": 0, "committed": True},
     lambda r: r.error_code, ErrorCode.transactional_id_authorization_failed),
    ("DescribeCluster (served to everyone, as Kafka)", 60, 0, {"include_cluster_authorized_operations": False},
     lambda r: r.error_code, ErrorCode.none),
    ("DescribeConfigs broker", 32, 4, {"resources": [{"resource_type": 4, "resource_name": "1",
                                                      "configuration_keys": None}], "include_synonyms": False,
                                       "include_documentation": False},
     lambda r: r.results[0].error_code, ErrorCode.cluster_authorization_failed),
    ("CreateAcls", 30, 3, {"creations": [{"resource_type": 2, "resource_name": "x", "resource_pattern_type": 3,
                                          "principal": "User:alice", "host": "*", "operation": 2,
                                          "permission_type": 3}]},
     lambda r: r.results[0].error_code, ErrorCode.cluster_authorization_failed),
    ("AlterUserScramCredentials", 51, 0, {"deletions": [{"name": "x", "mechanism": 1}], "upsertions": []},
     lambda r: r.results[0].error_code, ErrorCode.cluster_authorization_failed),
    ("DescribeGroups", 15, 5, {"groups": ["g"], "include_authorized_operations": False},
     lambda r: r.groups[0].error_code, ErrorCode.group_authorization_failed),
    ("DeleteGroups", 42, 2, {"groups_names": ["g"]},
     lambda r: r.results[0].error_code, ErrorCode.group_authorization_failed),
    ("Produce of a transactional batch without a transactional id", 0, 9, {
        "transactional_id": None, "acks": -1, "timeout": 1000, "topic_data": [{"name": "existing", "partition_data": [
            {"index": 0, "records": build_batch([(None, b"v")], producer_id=5, producer_epoch=0, base_sequence=0,
                                                transactional=True)}]}]},
     lambda r: r.responses[0].partition_responses[0].error_code, ErrorCode.transactional_id_authorization_failed),
]


@pytest.mark.timeout(60)
def test_each_api_refuses_with_kafkas_error_code(acl_broker: TlsBroker) -> None:
    _topic(acl_broker, "existing")
    with _alice(acl_broker) as client:
        for name, api_key, version, fields, code_of, expected in REFUSALS:
            assert ErrorCode(int(code_of(client.request(api_key, version, fields)))) == expected, name


def _oncelog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oncelog", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_oncelog_acls_and_durability_across_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    command_config = tmp_path / "admin.properties"
    command_config.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=admin\n"
                              "sasl.password=admin-secret\n")
    brokers = _acl_broker(data)
    broker = next(brokers)
    target = ["--bootstrap", broker.address("SASL_PLAINTEXT"), "--command-config", str(command_config)]
    _topic(broker, "audit")
    added = _oncelog("acls", "add", "--principal", "User:alice", "--operation", "write", "--operation", "describe",
                     "--topic", "audit", *target)
    assert added.returncode == 0 and "added 2 ACL(s)" in added.stdout, added.stderr
    assert _oncelog("acls", "add", "--principal", "User:alice", "--operation", "READ", "--topic", "aud",
                    "--prefixed", "--deny", *target).returncode == 0
    listing = _oncelog("acls", "list", "--topic", "audit", *target).stdout.splitlines()
    assert "ALLOW\tUser:alice\t*\tWRITE\tTOPIC:LITERAL:audit" in listing and len(listing) == 2
    refused = _oncelog("acls", "list", *target[:2], "--command-config", str(command_config).replace("admin", "none"))
    assert refused.returncode != 0
    assert _produce(broker, "alice", "audit") is None
    next(brokers, None)  # stop
    brokers = _acl_broker(data)
    broker = next(brokers)
    target[1] = broker.address("SASL_PLAINTEXT")
    assert _produce(broker, "alice", "audit") is None  # the ACLs came back from disk
    everything = _oncelog("acls", "list", *target).stdout.splitlines()
    assert "DENY\tUser:alice\t*\tREAD\tTOPIC:PREFIXED:aud" in everything and len(everything) == 3
    removed = _oncelog("acls", "remove", "--principal", "User:alice", "--topic", "audit", *target)
    assert removed.returncode == 0 and removed.stdout.count("removed") == 2
    error = _produce(broker, "alice", "audit")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    next(brokers, None)


@pytest.mark.timeout(30)
def test_acl_apis_without_an_authorizer_answer_security_disabled(oncelog_broker: str) -> None:
    with KafkaClient(oncelog_broker) as client:
        response = client.request(29, 3, {"resource_type_filter": 1, "resource_name_filter": None,
                                          "pattern_type_filter": 1, "principal_filter": None, "host_filter": None,
                                          "operation": 1, "permission_type": 1})
    assert ErrorCode(int(response.error_code)) == ErrorCode.security_disabled
    assert "authorizer.class.name" in response.error_message


@pytest.mark.timeout(60)
def test_authorized_operations_follow_the_acls(acl_broker: TlsBroker) -> None:
    from confluent_kafka import TopicCollection

    _topic(acl_broker, "ops")
    _grant(acl_broker, (ConfluentResourceType.TOPIC, "ops", "alice", AclOperation.READ),
           (ConfluentResourceType.TOPIC, "ops", "alice", AclOperation.DESCRIBE))
    alice, admin = _admin(acl_broker, "alice"), _admin(acl_broker)  # alive while their futures are waited on
    described = alice.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True)["ops"].result(15)
    assert set(described.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
    cluster = alice.describe_cluster(include_authorized_operations=True).result(15)
    assert set(cluster.authorized_operations or []) == set()
    # the super user may do everything that applies to the cluster
    assert len(admin.describe_cluster(include_authorized_operations=True).result(15).authorized_operations) == 7
