"""On PostgreSQL every broker shares the ACLs and SCRAM users: one made or removed through one broker is
in force on the others (a NOTIFY reloads them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from oncelog.config import broker_config
from oncelog.testing import EmbeddedBroker

from .conftest import ACL_JAAS

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two_brokers(database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    brokers = []
    try:
        for node in (1, 2):
            config = broker_config({
                "listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
                "sasl.jaas.config": ACL_JAAS, "super.users": "User:admin",
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "storage": database_url, "broker.id": str(node), "group.initial.rebalance.delay.ms": "0",
            }, data_dir=tmp_path / f"b{node}")
            broker = EmbeddedBroker(config)
            broker.start()
            brokers.append(broker)
        yield [f"127.0.0.1:{b.server.bound_ports['SASL_PLAINTEXT']}" for b in brokers]
    finally:
        for broker in brokers:
            broker.stop()


def _as(user: str, password: str, mechanism: str = "PLAIN") -> dict[str, Any]:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": password, "log_level": 0}


def _produce(address: str, config: dict[str, Any], topic: str) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": address, "message.timeout.ms": 5000, **config})
    producer.produce(topic, b"x", on_delivery=lambda error, _message: errors.append(error))
    producer.flush(10)
    return errors[0] if errors else None


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_acls_and_users_made_on_one_broker_hold_on_the_other(two_brokers: list[str]) -> None:
    first, second = two_brokers
    admin = AdminClient({"bootstrap.servers": first, **_as("admin", "admin-secret")})
    admin.create_topics([NewTopic("shared", 1, 1)])["shared"].result(15)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    admin.alter_user_scram_credentials([UserScramCredentialUpsertion("erin", info, b"erin-secret")])["erin"].result(15)
    erin = _as("erin", "erin-secret", "SCRAM-SHA-512")
    denied = _produce(second, erin, "shared")  # authenticated on the other broker, not yet allowed
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    binding = AclBinding(ResourceType.TOPIC, "shared", ResourcePatternType.LITERAL, "User:erin", "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    admin.create_acls([binding])[binding].result(15)
    assert _eventually(lambda: _produce(second, erin, "shared") is None)
    other_admin = AdminClient({"bootstrap.servers": second, **_as("admin", "admin-secret")})
    acl_filter = AclBindingFilter(ResourceType.TOPIC, "shared", ResourcePatternType.LITERAL, "User:erin", "*",
                            AclOperation.ANY, AclPermissionType.ANY)
    assert len(other_admin.delete_acls([acl_filter])[acl_filter].result(15)) == 1
    assert _eventually(lambda: (e := _produce(first, erin, "shared")) is not None
                       and e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED)
