"""Kafka's listener settings: `listeners`, `advertised.listeners`, `listener.security.protocol.map`.

Theory of operation: a listener is a named endpoint the broker binds (`PLAINTEXT://127.0.0.1:9092`,
`INTERNAL://:9093`); an advertised listener is the address clients are told to use for it in Metadata,
FindCoordinator and DescribeCluster. A client is always given the advertised address of the listener
it connected through, so a broker can bind one address and advertise another (a container, a NAT).

Rules, as Kafka's `KafkaConfig` checks them:
- listener names are unique and map to a security protocol through `listener.security.protocol.map`
  (the standard names map to themselves);
- `advertised.listeners` defaults to `listeners`, may name only listeners that exist, and may not
  advertise the meta-address 0.0.0.0 (Kafka: "Use a routable IP address");
- an empty host binds every interface; so does 0.0.0.0 or ::. When such a listener is not given an
  advertised address, the machine's fully qualified host name is advertised (Kafka does this for an
  empty host) and the broker logs which name it chose;
- port 0 binds a free port, which is also what is advertised unless an advertised port is given.

Every security protocol is served: PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL (their settings:
`oncelog.security`).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

DEFAULT_PROTOCOL_MAP = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")

_ENDPOINT = re.compile(r"^([A-Za-z0-9_]+)://\[?([0-9a-zA-Z\-%._:]*)\]?:(-?[0-9]+)$")


class ListenerError(ValueError):
    """A listener setting is malformed or inconsistent; the message names it."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


def parse_endpoints(value: str, setting: str) -> tuple[Endpoint, ...]:
    """`NAME://host:port,...` as Kafka writes listeners (IPv6 hosts in brackets)."""
    endpoints = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        match = _ENDPOINT.match(item)
        if match is None:
            raise ListenerError(f"{setting}: {item!r} is not NAME://HOST:PORT")
        name, host, port = match.group(1).upper(), match.group(2), int(match.group(3))
        if not 0 <= port <= 65535:
            raise ListenerError(f"{setting}: port {port} of {name} is outside 0..65535")
        endpoints.append(Endpoint(name, host, port))
    if not endpoints:
        raise ListenerError(f"{setting} is empty")
    names = [endpoint.name for endpoint in endpoints]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ListenerError(f"{setting}: listener names must be unique, {', '.join(duplicates)} repeats")
    return tuple(endpoints)


def parse_protocol_map(value: str) -> dict[str, str]:
    protocols: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, protocol = item.partition(":")
        if not sep or protocol.upper() not in SECURITY_PROTOCOLS:
            raise ListenerError(f"listener.security.protocol.map: {item!r} is not NAME:PROTOCOL with a protocol "
                                f"of {', '.join(SECURITY_PROTOCOLS)}")
        protocols[name.strip().upper()] = protocol.upper()
    return protocols


def check_listeners(listeners: tuple[Endpoint, ...], advertised: tuple[Endpoint, ...],
                    protocol_map: dict[str, str]) -> None:
    """Kafka's consistency rules between the three settings (see the module docstring)."""
    for endpoint in listeners:
        protocol = protocol_map.get(endpoint.name)
        if protocol is None:
            raise ListenerError(f"listener {endpoint.name} has no security protocol in listener.security.protocol.map")
    ports = [endpoint.port for endpoint in listeners if endpoint.port != 0]
    if len(ports) != len(set(ports)):
        raise ListenerError("listeners: two listeners cannot bind the same port")
    names = {endpoint.name for endpoint in listeners}
    for endpoint in advertised:
        if endpoint.name not in names:
            raise ListenerError(f"advertised.listeners names {endpoint.name}, which is not in listeners")
        if endpoint.host == "0.0.0.0":
            raise ListenerError(f"advertised.listeners cannot use the nonroutable meta-address 0.0.0.0 "
                                f"({endpoint}); use a routable IP address or host name")


def advertised_address(listener: Endpoint, advertised: tuple[Endpoint, ...], bound_port: int) -> tuple[str, int]:
    """The (host, port) clients are told for `listener`, once it is bound to `bound_port`."""
    explicit = next((endpoint for endpoint in advertised if endpoint.name == listener.name), None)
    if explicit is not None:
        host = explicit.host if explicit.host not in WILDCARD_HOSTS else socket.getfqdn()
        return host, explicit.port or bound_port
    if listener.host in WILDCARD_HOSTS:
        return socket.getfqdn(), bound_port
    return listener.host, bound_port
