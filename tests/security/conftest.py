"""Throwaway certificate authorities and brokers with TLS listeners."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from oncelog.config import broker_config
from oncelog.testing import EmbeddedBroker


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path
    server_pem: Path
    """The broker's PEM keystore: private key and certificate chain in one file (KIP-651)."""
    client_cert: Path
    client_key: Path
    """A client certificate with the subject CN=alice,OU=eng,O=Acme, signed by `ca`."""


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server_pem = directory / "broker.pem"
    server_pem.write_bytes(server.private_key_pem.bytes() + b"".join(blob.bytes() for blob in server.cert_chain_pems))
    client = ca.issue_cert("alice@example.com", common_name="alice", organization_name="Acme",
                           organization_unit_name="eng")
    client_cert, client_key = directory / "alice.crt", directory / "alice.key"
    client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(client_key))
    return Pki(ca, ca_file, server_pem, client_cert, client_key)


@dataclass
class TlsBroker:
    broker: EmbeddedBroker

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.broker.server.bound_ports[listener]}"


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TlsBroker]:
    """PLAINTEXT and SSL listeners (and MTLS, which requires a client certificate); extra broker
    properties from `@pytest.mark.broker_properties({...})`."""
    marker = request.node.get_closest_marker("broker_properties")
    properties = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,MTLS://127.0.0.1:0",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server_pem),
        "listener.name.mtls.ssl.client.auth": "required",
        "listener.name.mtls.ssl.truststore.type": "PEM",
        "listener.name.mtls.ssl.truststore.location": str(pki.ca_file),
        "group.initial.rebalance.delay.ms": "0",
        **(marker.args[0] if marker else {}),
    }
    yield from _running(properties, tmp_path / "data")


PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'user_admin="admin-secret" user_carol="carol-secret";')


@pytest.fixture
def sasl_broker(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TlsBroker]:
    """PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners, PLAIN (admin, carol) and SCRAM mechanisms; the
    SCRAM user alice/alice-secret (SCRAM-SHA-512) exists. Extra properties from `broker_properties`."""
    from oncelog.fs import OS_FILE_SYSTEM
    from oncelog.security.credentials import CredentialStore
    from oncelog.security.scram import make_credential

    data = tmp_path / "data"
    data.mkdir()
    CredentialStore(OS_FILE_SYSTEM, data).apply([("alice", make_credential("SCRAM-SHA-512", "alice-secret"))], [])
    marker = request.node.get_closest_marker("broker_properties")
    properties = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
        "ssl.keystore.location": str(pki.server_pem),
        "group.initial.rebalance.delay.ms": "0",
        **(marker.args[0] if marker else {}),
    }
    yield from _running(properties, data)


ACL_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret";')


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """A SASL_PLAINTEXT listener (PLAIN: admin, alice, bob) with the authorizer on; admin is a super user."""
    yield from _acl_broker(tmp_path / "data")


def _acl_broker(data: Path) -> Iterator[TlsBroker]:
    properties = {
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.jaas.config": ACL_JAAS,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }
    yield from _running(properties, data)


def _running(properties: dict[str, str], data: Path) -> Iterator[TlsBroker]:
    broker = EmbeddedBroker(broker_config(properties, data_dir=data))
    broker.start()
    try:
        yield TlsBroker(broker)
    finally:
        broker.stop()
