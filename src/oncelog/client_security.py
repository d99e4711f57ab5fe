"""How `oncelog`'s own tools connect to a secured broker: `--command-config FILE`, as Kafka's tools.

The file holds client properties under the names Kafka clients use, Java's or librdkafka's:
`security.protocol`; `ssl.ca.location` or `ssl.truststore.location` (PEM); `ssl.certificate.location`
and `ssl.key.location` for a client certificate; `sasl.mechanism` (or `sasl.mechanisms`) with
`sasl.username` and `sasl.password`, or a `sasl.jaas.config` carrying `username="…" password="…"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from oncelog.security.jaas import JaasError, parse_jaas


class ClientConfigError(ValueError):
    """A client property is missing or wrong; the message says which."""


@dataclass(frozen=True)
class ClientSecurity:
    protocol: str = "PLAINTEXT"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    mechanism: str = ""
    username: str = ""
    password: str = ""

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> ClientSecurity:
        protocol = properties.get("security.protocol", "PLAINTEXT").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ClientConfigError(f"security.protocol={protocol} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, "
                                    "SASL_SSL")
        mechanism = properties.get("sasl.mechanism", properties.get("sasl.mechanisms", "")).upper()
        username, password = properties.get("sasl.username", ""), properties.get("sasl.password", "")
        if "sasl.jaas.config" in properties:
            try:
                options = parse_jaas(properties["sasl.jaas.config"]).options
            except JaasError as error:
                raise ClientConfigError(str(error)) from error
            username, password = options.get("username", username), options.get("password", password)
        security = cls(protocol, properties.get("ssl.ca.location") or properties.get("ssl.truststore.location"),
                       properties.get("ssl.certificate.location"), properties.get("ssl.key.location"),
                       mechanism, username, password)
        if security.sasl and (not mechanism or not username):
            raise ClientConfigError(f"security.protocol={protocol} needs sasl.mechanism and sasl.username/"
                                    "sasl.password (or sasl.jaas.config)")
        return security
