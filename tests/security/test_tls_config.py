"""TLS settings: validation with messages that say what to fix, the PEM forms of KIP-651, principal
mapping rules as Kafka's SslPrincipalMapper applies them. No sockets except one socketpair."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from oncelog.config import ConfigError, broker_config
from oncelog.security.principal import KafkaPrincipal, NoMatchingRule, PrincipalMapper, distinguished_name
from oncelog.security.settings import SecurityConfigError
from oncelog.security.tls import peer_principal, server_context

from .conftest import Pki

SSL_LISTENER = {"listeners": "SSL://127.0.0.1:0"}


def _config_error(properties: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        broker_config(properties)
    return str(raised.value)


def test_a_tls_listener_needs_a_certificate() -> None:
    assert "ssl.keystore.location" in _config_error(SSL_LISTENER)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"ssl.keystore.type": "JKS"}, "ssl.keystore.type=JKS is not supported"),
    ({"ssl.keystore.password": "secret"}, "does not apply to PEM stores"),
    ({"ssl.keystore.key": "k", "ssl.keystore.certificate.chain": "c"}, "not both"),
    ({"ssl.client.auth": "required"}, "needs a truststore"),
    ({"ssl.client.auth": "sometimes"}, "ssl.client.auth must be one of"),
    ({"ssl.enabled.protocols": "TLSv1.1"}, "older versions are insecure"),
    ({"ssl.principal.mapping.rules": "RULE:no-slashes"}, "neither DEFAULT nor RULE"),
    ({"listener.name.other.ssl.client.auth": "none"}, "names listener OTHER, which is not in listeners"),
])
def test_bad_tls_settings_are_named(extra: dict[str, str], expected: str) -> None:
    assert expected in _config_error({**SSL_LISTENER, "ssl.keystore.location": "/k.pem", **extra})


def test_an_unknown_ssl_property_is_still_a_typo() -> None:
    assert "unknown broker property 'ssl.keystore.locaton'" in _config_error({"ssl.keystore.locaton": "x"})


def test_a_listener_override_wins_over_the_broker_wide_value(pki: Pki) -> None:
    config = broker_config({"listeners": "A://127.0.0.1:0,B://127.0.0.1:0",
                            "listener.security.protocol.map": "A:SSL,B:SSL", "ssl.keystore.location": "/missing.pem",
                            "listener.name.a.ssl.keystore.location": str(pki.server_pem)})
    assert server_context(config.security_properties, "A").context.verify_mode == ssl.CERT_NONE
    with pytest.raises(SecurityConfigError, match=r"listener B: cannot load .* ssl.keystore.location=/missing.pem"):
        server_context(config.security_properties, "B")


def test_inline_pem_key_and_chain(pki: Pki) -> None:
    text = pki.server_pem.read_text()
    key = text[:text.index("-----BEGIN CERTIFICATE-----")]
    chain = text[len(key):]
    tls = server_context({"ssl.keystore.key": key, "ssl.keystore.certificate.chain": chain,
                          "ssl.truststore.certificates": pki.ca_file.read_text(),
                          "ssl.client.auth": "requested"}, "SSL")
    assert tls.context.verify_mode == ssl.CERT_OPTIONAL
    with pytest.raises(SecurityConfigError, match="PRIVATE KEY"):
        server_context({"ssl.keystore.key": "garbage", "ssl.keystore.certificate.chain": chain}, "SSL")


def test_tls_older_than_1_2_is_never_offered(pki: Pki) -> None:
    context = server_context({"ssl.keystore.location": str(pki.server_pem)}, "SSL").context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2 and context.maximum_version == ssl.TLSVersion.TLSv1_3


# --- principals ---------------------------------------------------------------------------------------

def test_mapping_rules_as_kafka_documents_them() -> None:
    mapper = PrincipalMapper("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$2/L, DEFAULT")
    assert mapper.name("CN=duke,OU=ServiceUsers,O=Org,C=US") == "duke"
    assert mapper.name("CN=Duke,OU=JavaSoft,O=Sun") == "duke@javasoft"
    assert mapper.name("CN=duke,O=Other") == "CN=duke,O=Other"
    assert PrincipalMapper("RULE:^cn=(.*)$/$1/U").name("cn=duke") == "DUKE"
    with pytest.raises(NoMatchingRule):
        PrincipalMapper("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/").name("CN=duke,OU=Other")


def test_distinguished_names_are_written_as_rfc_2253() -> None:
    subject = ((("countryName", "US"),), (("organizationName", "Acme"),), (("commonName", "Smith, John"),))
    assert distinguished_name(subject) == "CN=Smith\\, John,O=Acme,C=US"
    assert distinguished_name(((("commonName", " lead"), ("userId", "7")),)) == "CN=\\ lead+UID=7"


def test_a_verified_client_certificate_names_the_principal(pki: Pki, tmp_path: Path) -> None:
    tls = server_context({"ssl.keystore.location": str(pki.server_pem), "ssl.truststore.location": str(pki.ca_file),
                          "ssl.client.auth": "required",
                          "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),OU=eng,.*$/$1/,DEFAULT"}, "SSL")
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    server_end, client_end = socket.socketpair()
    results: dict[str, object] = {}

    def serve() -> None:
        with tls.context.wrap_socket(server_end, server_side=True) as wrapped:
            results["principal"] = peer_principal(tls, wrapped)

    thread = threading.Thread(target=serve)
    thread.start()
    with client.wrap_socket(client_end, server_hostname="localhost"):
        thread.join(10)
    assert results["principal"] == KafkaPrincipal("User", "alice")
    assert str(results["principal"]) == "User:alice"


@pytest.mark.parametrize(("host", "protocol", "client_auth", "warned"), [
    ("127.0.0.1", "PLAINTEXT", "none", False),
    ("::1", "PLAINTEXT", "none", False),
    ("", "PLAINTEXT", "none", True),
    ("0.0.0.0", "SSL", "requested", True),
    ("10.1.2.3", "SSL", "required", False),
    ("broker.example.com", "PLAINTEXT", "none", True),
])
def test_a_listener_open_to_other_machines_without_authentication_is_warned_about(
        host: str, protocol: str, client_auth: str, warned: bool) -> None:
    from oncelog.security.settings import unauthenticated_exposure

    warning = unauthenticated_exposure(host, protocol, {"ssl.client.auth": client_auth}, "L")
    assert (warning is not None) == warned
    assert warning is None or "without authentication" in warning
