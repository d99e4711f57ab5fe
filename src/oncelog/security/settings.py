"""Security settings under Kafka's names, with per-listener overrides (`listener.name.NAME.SETTING`).

Theory of operation: the broker's configuration keeps every security property as given. A listener
reads a setting as Kafka's `ListenerName.configPrefix` does: `listener.name.<name in lower case>.<setting>`
first, then the plain `<setting>`, then the default. `is_security_property` says which keys belong
here, so the configuration can reject everything else as a typo; `check` validates what can be checked
without reading files (the server reads certificates when it binds, see `tls.py`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from .acl import AuthorizerConfig
from .jaas import PLAIN_MODULE, SCRAM_MODULE, JaasError, parse_jaas
from .principal import KafkaPrincipal, PrincipalMapper
from .sasl import PLAIN, SUPPORTED_MECHANISMS, ListenerSasl

SSL_DEFAULTS: dict[str, str] = {
    "ssl.keystore.type": "PEM",
    "ssl.keystore.location": "",
    "ssl.keystore.password": "",
    "ssl.key.password": "",
    "ssl.keystore.key": "",
    "ssl.keystore.certificate.chain": "",
    "ssl.truststore.type": "PEM",
    "ssl.truststore.location": "",
    "ssl.truststore.password": "",
    "ssl.truststore.certificates": "",
    "ssl.client.auth": "none",
    "ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
    "ssl.protocol": "TLSv1.3",
    "ssl.cipher.suites": "",
    "ssl.principal.mapping.rules": "DEFAULT",
    "ssl.endpoint.identification.algorithm": "https",
}
"""Kafka's broker SSL settings and their defaults (`ssl.endpoint.identification.algorithm` is for
connections a broker makes, which oncelog does not: accepted and unused)."""

SASL_DEFAULTS: dict[str, str] = {
    "sasl.enabled.mechanisms": "",
    "sasl.jaas.config": "",
    "plain.sasl.jaas.config": "",
    "scram-sha-256.sasl.jaas.config": "",
    "scram-sha-512.sasl.jaas.config": "",
    "connections.max.reauth.ms": "0",
    "connection.failed.authentication.delay.ms": "100",
    "sasl.server.max.receive.size": "524288",
    "sasl.mechanism.inter.broker.protocol": "GSSAPI",
}
"""Kafka's broker SASL settings. Kafka's default mechanism list is GSSAPI (Kerberos), which oncelog does
not serve, so a SASL listener must name its mechanisms. JAAS settings are read per listener and
mechanism (`listener.name.sasl_ssl.plain.sasl.jaas.config`), else the plain `sasl.jaas.config`."""

AUTHORIZER_DEFAULTS: dict[str, str] = {
    "authorizer.class.name": "",
    "super.users": "",
    "allow.everyone.if.no.acl.found": "false",
}
AUTHORIZER_CLASSES = ("org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                      "kafka.security.authorizer.AclAuthorizer")
"""Kafka's authorizer class names: either turns on oncelog's authorizer, which follows the same rules."""

SETTINGS: dict[str, str] = {**SSL_DEFAULTS, **SASL_DEFAULTS, **AUTHORIZER_DEFAULTS}
LISTENER_PREFIX = "listener.name."
CLIENT_AUTH = ("none", "requested", "required")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


class SecurityConfigError(ValueError):
    """A security setting is invalid; the message names it."""


def _split_listener_key(key: str) -> tuple[str, str] | None:
    """`listener.name.NAME.SETTING` -> (NAME upper-cased, SETTING); None for other keys."""
    if not key.startswith(LISTENER_PREFIX):
        return None
    name, sep, setting = key[len(LISTENER_PREFIX):].partition(".")
    return (name.upper(), setting) if sep and name else None


def is_security_property(key: str) -> bool:
    split = _split_listener_key(key)
    return (split[1] if split else key) in SETTINGS


def is_sensitive(key: str) -> bool:
    """Kafka's PASSWORD-type settings: never shown (DescribeConfigs answers them with no value)."""
    name = (_split_listener_key(key) or ("", key))[1]
    return name.endswith(("password", "keystore.key", "sasl.jaas.config"))


def setting(properties: Mapping[str, str], listener: str, name: str) -> str:
    """The value of `name` for `listener`: its listener override, else the broker-wide value, else the default."""
    for key, value in properties.items():
        split = _split_listener_key(key)
        if split == (listener.upper(), name):
            return value
    return properties.get(name, SETTINGS[name])


def check(properties: Mapping[str, str], listeners: Mapping[str, str]) -> None:
    """Validate the settings each listener (name -> security protocol) will use."""
    for key in properties:
        split = _split_listener_key(key)
        if split is not None and split[0] not in listeners:
            raise SecurityConfigError(f"{key} names listener {split[0]}, which is not in listeners")
    for listener, protocol in listeners.items():
        if protocol in ("SSL", "SASL_SSL"):
            _check_tls(properties, listener)
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            listener_sasl(properties, listener)
    for name in ("connections.max.reauth.ms", "connection.failed.authentication.delay.ms",
                 "sasl.server.max.receive.size"):
        _non_negative(properties, name)
    authorizer_config(properties)


def authorizer_config(properties: Mapping[str, str]) -> AuthorizerConfig:
    class_name = properties.get("authorizer.class.name", "").strip()
    if class_name and class_name not in AUTHORIZER_CLASSES:
        raise SecurityConfigError(f"authorizer.class.name={class_name} is not available; use "
                                  f"{AUTHORIZER_CLASSES[0]} (Kafka's ACL authorizer) or leave it empty")
    super_users = set()
    for text in properties.get("super.users", "").split(";"):
        if text.strip():
            try:
                super_users.add(str(KafkaPrincipal.parse(text.strip())))
            except ValueError as error:
                raise SecurityConfigError(f"super.users: {error} (separate principals with ';')") from error
    allow = properties.get("allow.everyone.if.no.acl.found", "false").strip().lower()
    if allow not in ("true", "false"):
        raise SecurityConfigError("allow.everyone.if.no.acl.found must be true or false")
    return AuthorizerConfig(bool(class_name), frozenset(super_users), allow == "true")

def _non_negative(properties: Mapping[str, str], name: str, listener: str = "") -> int:
    raw = setting(properties, listener, name) if listener else properties.get(name, SETTINGS[name])
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SecurityConfigError(f"{name} must be a whole number ≥ 0, not {raw!r}")
    return value


def listener_sasl(properties: Mapping[str, str], listener: str) -> ListenerSasl:
    """What a SASL listener accepts: its mechanisms, PLAIN's users, re-authentication and brakes."""
    mechanisms = tuple(m.strip().upper() for m in setting(properties, listener, "sasl.enabled.mechanisms").split(",")
                       if m.strip())
    if not mechanisms:
        raise SecurityConfigError(f"listener {listener} uses SASL but sasl.enabled.mechanisms is not set: name "
                                  f"{', '.join(SUPPORTED_MECHANISMS)} (Kafka's default GSSAPI is not supported)")
    unsupported = [m for m in mechanisms if m not in SUPPORTED_MECHANISMS]
    if unsupported:
        raise SecurityConfigError(f"listener {listener}: sasl.enabled.mechanisms names {', '.join(unsupported)}; "
                                  f"oncelog serves {', '.join(SUPPORTED_MECHANISMS)}")
    plain_users: dict[str, str] = {}
    for mechanism in mechanisms:
        name = f"{mechanism.lower()}.sasl.jaas.config"
        expected = PLAIN_MODULE if mechanism == PLAIN else SCRAM_MODULE
        text = setting(properties, listener, name)
        if not text:  # the plain sasl.jaas.config serves the mechanism whose login module it names
            shared = setting(properties, listener, "sasl.jaas.config")
            text = shared if shared.strip().startswith(expected) else ""
            name = "sasl.jaas.config"
        if not text:
            if mechanism == PLAIN:
                raise SecurityConfigError(
                    f"listener {listener} enables PLAIN but has no users: set listener.name.{listener.lower()}."
                    f"plain.sasl.jaas.config={PLAIN_MODULE} required user_alice=\"alice-secret\";")
            continue
        try:
            jaas = parse_jaas(text, name)
        except JaasError as error:
            raise SecurityConfigError(f"listener {listener}: {error}") from error
        if jaas.module != expected:
            raise SecurityConfigError(f"listener {listener}: {name} names {jaas.module}; {mechanism} needs "
                                      f"{expected}")
        if mechanism == PLAIN:
            plain_users = jaas.users()
            if not plain_users:
                raise SecurityConfigError(f"listener {listener}: {name} defines no user_<name>=\"<password>\" "
                                          "entries, so nobody could log in with PLAIN")
    def number(name: str) -> int:
        return _non_negative(properties, name, listener)

    return ListenerSasl(mechanisms, plain_users, reauth_ms=number("connections.max.reauth.ms"),
                        failed_delay_ms=number("connection.failed.authentication.delay.ms"),
                        max_receive_size=number("sasl.server.max.receive.size"))


def _check_tls(properties: Mapping[str, str], listener: str) -> None:
    def get(name: str) -> str:
        return setting(properties, listener, name).strip()

    for name in ("ssl.keystore.type", "ssl.truststore.type"):
        if get(name).upper() != "PEM":
            raise SecurityConfigError(
                f"listener {listener}: {name}={get(name)} is not supported; oncelog reads PEM (KIP-651). Convert "
                "a keystore with `keytool -importkeystore -deststoretype PKCS12` and `openssl pkcs12 -nodes` to a "
                "PEM file holding the private key and the certificate chain")
    for name in ("ssl.keystore.password", "ssl.truststore.password"):
        if get(name):
            raise SecurityConfigError(f"listener {listener}: {name} does not apply to PEM stores (Kafka rejects it "
                                      "too); an encrypted private key's password is ssl.key.password")
    location, key, chain = get("ssl.keystore.location"), get("ssl.keystore.key"), get("ssl.keystore.certificate.chain")
    if location and (key or chain):
        raise SecurityConfigError(f"listener {listener}: give ssl.keystore.location or ssl.keystore.key with "
                                  "ssl.keystore.certificate.chain, not both")
    if not location and not (key and chain):
        raise SecurityConfigError(f"listener {listener} uses TLS but has no certificate: set ssl.keystore.location "
                                  "to a PEM file with the private key and certificate chain (or ssl.keystore.key "
                                  "and ssl.keystore.certificate.chain)")
    if get("ssl.truststore.location") and get("ssl.truststore.certificates"):
        raise SecurityConfigError(f"listener {listener}: give ssl.truststore.location or "
                                  "ssl.truststore.certificates, not both")
    client_auth = get("ssl.client.auth").lower()
    if client_auth not in CLIENT_AUTH:
        raise SecurityConfigError(f"listener {listener}: ssl.client.auth must be one of {', '.join(CLIENT_AUTH)}")
    if client_auth != "none" and not (get("ssl.truststore.location") or get("ssl.truststore.certificates")):
        raise SecurityConfigError(f"listener {listener}: ssl.client.auth={client_auth} needs a truststore to check "
                                  "client certificates against (ssl.truststore.location)")
    versions = [version.strip() for version in get("ssl.enabled.protocols").split(",") if version.strip()]
    unknown = [version for version in versions if version not in TLS_VERSIONS]
    if not versions or unknown:
        raise SecurityConfigError(f"listener {listener}: ssl.enabled.protocols may list {', '.join(TLS_VERSIONS)} "
                                  f"(older versions are insecure), not {', '.join(unknown) or 'nothing'}")
    try:
        PrincipalMapper(get("ssl.principal.mapping.rules"))
    except ValueError as error:
        raise SecurityConfigError(f"listener {listener}: {error}") from error
    if get("ssl.cipher.suites"):
        raise SecurityConfigError(f"listener {listener}: ssl.cipher.suites is not supported; oncelog uses "
                                  "OpenSSL's default secure ciphers for the enabled protocols")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or the wildcard: reachable from elsewhere


def unauthenticated_exposure(host: str, protocol: str, properties: Mapping[str, str], listener: str) -> str | None:
    """A warning when a listener reachable from other machines lets anyone in, else None."""
    if is_loopback(host):
        return None
    certificates = setting(properties, listener, "ssl.client.auth").lower() == "required"
    if protocol == "PLAINTEXT" or (protocol == "SSL" and not certificates):  # SASL_* always authenticate
        return (f"listener {listener} binds {host or '*'} without authentication: anyone who can reach it can read, "
                "write and delete every topic. Require TLS client certificates (ssl.client.auth=required) or bind "
                "127.0.0.1")
    return None
