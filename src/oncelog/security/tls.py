"""TLS for a listener: an `ssl.SSLContext` from Kafka's PEM settings, and the client's principal.

Theory of operation: `server_context(properties, listener)` builds the context a listener's
connections are wrapped in (`ssl.keystore.location` — one PEM file with the private key and the
certificate chain — or the inline `ssl.keystore.key` and `ssl.keystore.certificate.chain`; the
optional truststore of CA certificates for client certificates; `ssl.client.auth`; TLS 1.2 and 1.3
only). Python's `ssl` loads keys and certificates from files only, so inline values are written to a
private temporary file that is removed right after loading. Every failure names the setting and the
file. `peer_principal` turns the verified client certificate's subject into the principal through
`ssl.principal.mapping.rules`.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .principal import ANONYMOUS_PRINCIPAL, USER_TYPE, KafkaPrincipal, PrincipalMapper, distinguished_name
from .settings import SecurityConfigError, setting

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class ListenerTls:
    context: ssl.SSLContext
    mapper: PrincipalMapper


@contextmanager
def _pem_file(text: str) -> Iterator[str]:
    """`text` in a file only this user can read, removed afterwards."""
    descriptor, path = tempfile.mkstemp(prefix="oncelog-pem-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text if text.endswith("\n") else text + "\n")
        yield path
    finally:
        os.unlink(path)


def server_context(properties: Mapping[str, str], listener: str) -> ListenerTls:
    def get(name: str) -> str:
        return setting(properties, listener, name).strip()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[v.strip()] for v in get("ssl.enabled.protocols").split(",") if v.strip())
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    password = get("ssl.key.password") or None
    location = get("ssl.keystore.location")
    try:
        if location:
            context.load_cert_chain(location, password=password)
        else:
            # The chain and the key may share one file: load_cert_chain reads the certificate first.
            with _pem_file(get("ssl.keystore.certificate.chain") + "\n" + get("ssl.keystore.key")) as path:
                context.load_cert_chain(path, password=password)
    except (OSError, ssl.SSLError) as error:
        where = f"ssl.keystore.location={location}" if location else "ssl.keystore.key/ssl.keystore.certificate.chain"
        raise SecurityConfigError(f"listener {listener}: cannot load the private key and certificate chain from "
                                  f"{where}: {_reason(error)} (a PEM file needs a PRIVATE KEY block and at least one "
                                  "CERTIFICATE block; an encrypted key needs ssl.key.password)") from error
    trust_location, trust_inline = get("ssl.truststore.location"), get("ssl.truststore.certificates")
    try:
        if trust_location:
            context.load_verify_locations(cafile=trust_location)
        elif trust_inline:
            context.load_verify_locations(cadata=trust_inline)
    except (OSError, ssl.SSLError) as error:
        where = f"ssl.truststore.location={trust_location}" if trust_location else "ssl.truststore.certificates"
        raise SecurityConfigError(f"listener {listener}: cannot load trusted certificates from {where}: "
                                  f"{_reason(error)}") from error
    context.verify_mode = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[get("ssl.client.auth").lower()]
    return ListenerTls(context, PrincipalMapper(get("ssl.principal.mapping.rules")))


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def peer_principal(tls: ListenerTls, ssl_object: Any) -> KafkaPrincipal:
    """The principal of a TLS peer: its certificate's mapped subject, or ANONYMOUS without one.
    Raises `NoMatchingRule` when the mapping rules cannot name it."""
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    if not certificate or not certificate.get("subject"):
        return ANONYMOUS_PRINCIPAL
    return KafkaPrincipal(USER_TYPE, tls.mapper.name(distinguished_name(certificate["subject"])))
