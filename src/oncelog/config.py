"""Broker and topic configuration under Kafka's own property names.

Theory of operation: `BrokerConfig` is frozen and built once from (in increasing precedence) defaults,
a `server.properties` file and `--override key=value` pairs. Unknown broker properties are rejected with
a message naming the property, so a typo never silently does nothing. Topic-level configs (`retention.ms`,
`message.timestamp.type`, ...) default to their broker-level twins (`log.retention.ms`, ...) exactly as in
Kafka's `LogConfig`; a topic stores only its overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from oncelog.listeners import (
    DEFAULT_PROTOCOL_MAP,
    Endpoint,
    ListenerError,
    check_listeners,
    parse_endpoints,
    parse_protocol_map,
)
from oncelog.security import settings as security_settings
from oncelog.topic_config import (  # re-exported: topic configs live in their own module
    _parse_bool,
    _parse_cleanup_policy,
    _parse_timestamp_type,
)

DAY_MS = 24 * 3600 * 1000


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message says which and why."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything the broker reads at start. Field names are Kafka's property names with `_` for `.`."""

    listeners: tuple[Endpoint, ...] = (Endpoint("PLAINTEXT", "127.0.0.1", 9092),)
    advertised_listeners: tuple[Endpoint, ...] = ()
    """Empty: advertise each listener as it is bound (listeners.py)."""
    listener_security_protocol_map: str = DEFAULT_PROTOCOL_MAP
    security: tuple[tuple[str, str], ...] = ()
    """The security properties as given (`ssl.*`, `listener.name.NAME.ssl.*`, ...), read through
    `oncelog.security.settings`."""
    data_dir: Path = Path("oncelog-data")
    node_id: int = 1
    num_partitions: int = 1
    auto_create_topics_enable: bool = True
    default_replication_factor: int = 1
    message_max_bytes: int = 1048588
    socket_request_max_bytes: int = 100 * 1024 * 1024
    log_segment_bytes: int = 1024 * 1024 * 1024
    log_roll_ms: int = 7 * DAY_MS
    log_retention_ms: int = 7 * DAY_MS
    log_retention_bytes: int = -1
    log_retention_check_interval_ms: int = 300_000
    log_index_interval_bytes: int = 4096
    log_message_timestamp_type: str = "CreateTime"
    log_cleanup_policy: str = "delete"
    log_cleaner_backoff_ms: int = 15_000
    log_cleaner_delete_retention_ms: int = DAY_MS
    log_flush_interval_ms: int = 1000
    log_flush_offset_checkpoint_interval_ms: int = 60_000
    producer_id_expiration_ms: int = DAY_MS
    producer_id_expiration_check_interval_ms: int = 600_000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_initial_rebalance_delay_ms: int = 3000
    offsets_topic_num_partitions: int = 50
    offsets_topic_segment_bytes: int = 100 * 1024 * 1024
    offsets_retention_ms: int = 7 * DAY_MS
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 7 * DAY_MS
    transaction_state_log_num_partitions: int = 50
    transaction_state_log_segment_bytes: int = 100 * 1024 * 1024
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    transaction_remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    fetch_max_wait_ms_max: int = 30_000
    fetch_max_bytes: int = 55 * 1024 * 1024
    connection_requests_in_flight_max: int = 64
    connections_max_idle_ms: int = 600_000
    max_broker_partitions: int = 20_000
    storage: str = "local"
    """Where partitions live: "local" (files in data_dir) or a postgresql:// URL shared by many brokers."""
    broker_heartbeat_interval_ms: int = 2000
    broker_session_timeout_ms: int = 9000
    http_port: int = -1
    """The HTTP listener (`/metrics`): -1 off, 0 a free port."""
    http_host: str = "127.0.0.1"
    http_console_read_only: bool = False
    """The web console shows everything but refuses its actions (aborting a transaction)."""

    @property
    def security_properties(self) -> dict[str, str]:
        return dict(self.security)

    def listener_protocols(self) -> dict[str, str]:
        """listener name -> its security protocol."""
        protocols = parse_protocol_map(self.listener_security_protocol_map)
        return {endpoint.name: protocols[endpoint.name] for endpoint in self.listeners}

    @property
    def shared_storage(self) -> bool:
        """True when brokers share a database (PostgreSQL) instead of owning a data directory."""
        return self.storage != "local"

    @property
    def host(self) -> str:
        """The first listener's bind address."""
        return self.listeners[0].host

    @property
    def port(self) -> int:
        return self.listeners[0].port

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


# property name -> (field name, parser)
_INT: Callable[[str], Any] = int
_BROKER_PROPERTIES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "listeners": ("listeners", lambda v: parse_endpoints(v, "listeners")),
    "advertised.listeners": ("advertised_listeners", lambda v: parse_endpoints(v, "advertised.listeners")),
    "listener.security.protocol.map": ("listener_security_protocol_map", str),
    "storage": ("storage", str),
    "http.port": ("http_port", _INT),
    "http.host": ("http_host", str),
    "http.console.read.only": ("http_console_read_only", _parse_bool),
    "broker.heartbeat.interval.ms": ("broker_heartbeat_interval_ms", _INT),
    "broker.session.timeout.ms": ("broker_session_timeout_ms", _INT),
    "log.dir": ("data_dir", Path),
    "log.dirs": ("data_dir", Path),
    "node.id": ("node_id", _INT),
    "broker.id": ("node_id", _INT),
    "num.partitions": ("num_partitions", _INT),
    "auto.create.topics.enable": ("auto_create_topics_enable", _parse_bool),
    "default.replication.factor": ("default_replication_factor", _INT),
    "message.max.bytes": ("message_max_bytes", _INT),
    "socket.request.max.bytes": ("socket_request_max_bytes", _INT),
    "log.segment.bytes": ("log_segment_bytes", _INT),
    "log.roll.ms": ("log_roll_ms", _INT),
    "log.roll.hours": ("log_roll_ms", lambda v: int(v) * 3600 * 1000),
    "log.retention.ms": ("log_retention_ms", _INT),
    "log.retention.minutes": ("log_retention_ms", lambda v: int(v) * 60 * 1000),
    "log.retention.hours": ("log_retention_ms", lambda v: int(v) * 3600 * 1000),
    "log.retention.bytes": ("log_retention_bytes", _INT),
    "log.retention.check.interval.ms": ("log_retention_check_interval_ms", _INT),
    "log.index.interval.bytes": ("log_index_interval_bytes", _INT),
    "log.message.timestamp.type": ("log_message_timestamp_type", _parse_timestamp_type),
    "log.cleanup.policy": ("log_cleanup_policy", _parse_cleanup_policy),
    "log.cleaner.backoff.ms": ("log_cleaner_backoff_ms", _INT),
    "log.cleaner.delete.retention.ms": ("log_cleaner_delete_retention_ms", _INT),
    "log.flush.interval.ms": ("log_flush_interval_ms", _INT),
    "log.flush.offset.checkpoint.interval.ms": ("log_flush_offset_checkpoint_interval_ms", _INT),
    "producer.id.expiration.ms": ("producer_id_expiration_ms", _INT),
    "group.min.session.timeout.ms": ("group_min_session_timeout_ms", _INT),
    "group.max.session.timeout.ms": ("group_max_session_timeout_ms", _INT),
    "group.initial.rebalance.delay.ms": ("group_initial_rebalance_delay_ms", _INT),
    "offsets.topic.num.partitions": ("offsets_topic_num_partitions", _INT),
    "offsets.topic.segment.bytes": ("offsets_topic_segment_bytes", _INT),
    "transaction.state.log.segment.bytes": ("transaction_state_log_segment_bytes", _INT),
    "offsets.retention.minutes": ("offsets_retention_ms", lambda v: int(v) * 60 * 1000),
    "offsets.retention.check.interval.ms": ("offsets_retention_check_interval_ms", _INT),
    "offset.metadata.max.bytes": ("offset_metadata_max_bytes", _INT),
    "transaction.max.timeout.ms": ("transaction_max_timeout_ms", _INT),
    "transactional.id.expiration.ms": ("transactional_id_expiration_ms", _INT),
    "transaction.state.log.num.partitions": ("transaction_state_log_num_partitions", _INT),
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": (
        "transaction_abort_timed_out_transaction_cleanup_interval_ms", _INT),
    "transaction.remove.expired.transaction.cleanup.interval.ms": (
        "transaction_remove_expired_transaction_cleanup_interval_ms", _INT),
    "producer.id.expiration.check.interval.ms": ("producer_id_expiration_check_interval_ms", _INT),
    "fetch.max.bytes": ("fetch_max_bytes", _INT),
    "connections.max.idle.ms": ("connections_max_idle_ms", _INT),
    "max.broker.partitions": ("max_broker_partitions", _INT),
}

# Kafka broker properties we accept and ignore because they have no meaning on one node.
_IGNORED_PROPERTIES = frozenset(
    {
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "process.roles",
        "controller.quorum.voters",
        "inter.broker.listener.name",
        "controller.listener.names",
        "num.network.threads",
        "num.io.threads",
        "num.recovery.threads.per.data.dir",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "zookeeper.connect",
    }
)


def _validate(config: BrokerConfig) -> None:
    checks = [
        (config.num_partitions >= 1, "num.partitions must be at least 1"),
        (config.message_max_bytes >= 128, "message.max.bytes must be at least 128"),
        (config.log_segment_bytes >= 1024, "log.segment.bytes must be at least 1024"),
        (config.log_segment_bytes >= config.message_max_bytes, "log.segment.bytes must be ≥ message.max.bytes"),
        (config.log_index_interval_bytes >= 0, "log.index.interval.bytes must not be negative"),
        (config.log_flush_interval_ms >= 1, "log.flush.interval.ms must be at least 1"),
        (config.producer_id_expiration_ms >= 1, "producer.id.expiration.ms must be at least 1"),
        (config.offsets_topic_num_partitions >= 1, "offsets.topic.num.partitions must be at least 1"),
        (config.transaction_state_log_num_partitions >= 1, "transaction.state.log.num.partitions must be ≥ 1"),
        (config.transaction_max_timeout_ms >= 1, "transaction.max.timeout.ms must be at least 1"),
        (0 < config.group_min_session_timeout_ms <= config.group_max_session_timeout_ms,
         "group.min.session.timeout.ms must be positive and ≤ group.max.session.timeout.ms"),
        (config.group_initial_rebalance_delay_ms >= 0, "group.initial.rebalance.delay.ms must not be negative"),
        (config.producer_id_expiration_check_interval_ms >= 1, "producer.id.expiration.check.interval.ms must be ≥ 1"),
        (config.socket_request_max_bytes >= config.message_max_bytes, "socket.request.max.bytes too small"),
        (config.fetch_max_bytes >= 1024, "fetch.max.bytes must be at least 1024"),
        (config.connections_max_idle_ms >= 1, "connections.max.idle.ms must be at least 1"),
        (config.max_broker_partitions >= 1, "max.broker.partitions must be at least 1"),
        (config.storage == "local" or config.storage.startswith(("postgresql://", "postgres://")),
         "storage must be 'local' or a postgresql:// URL"),
        (-1 <= config.http_port <= 65535, "http.port must be -1 (off), 0 (a free port) or a port number"),
        (0 < config.broker_heartbeat_interval_ms < config.broker_session_timeout_ms,
         "broker.heartbeat.interval.ms must be positive and below broker.session.timeout.ms"),
        (config.offsets_topic_segment_bytes >= config.message_max_bytes,
         "offsets.topic.segment.bytes must be ≥ message.max.bytes"),
        (config.transaction_state_log_segment_bytes >= config.message_max_bytes,
         "transaction.state.log.segment.bytes must be ≥ message.max.bytes"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    try:
        check_listeners(config.listeners, config.advertised_listeners,
                        parse_protocol_map(config.listener_security_protocol_map))
        security_settings.check(config.security_properties, config.listener_protocols())
    except (ListenerError, security_settings.SecurityConfigError) as error:
        raise ConfigError(str(error)) from error


def load_properties(path: Path) -> dict[str, str]:
    """Read a Java-style .properties file (`key=value`, `#` comments)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    properties: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected key=value, got {line!r}")
        properties[key.strip()] = value.strip()
    return properties


def redacted_url(url: str) -> str:
    """A storage URL fit to show a client: no password in the user part, and no query parameter that
    carries a secret (password, sslpassword, passfile, sslkey...) — only its name."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable)"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    secret = ("password", "passfile", "sslkey", "sslcert", "sslrootcert", "sslcrl", "key")
    query = urlencode([(name, "***" if any(word in name.lower() for word in secret) else value)
                       for name, value in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_broker_property(key: str, raw: str) -> tuple[str, Any]:
    """(BrokerConfig field, parsed value) of one broker property; ConfigError if unknown or invalid."""
    if key not in _BROKER_PROPERTIES:
        raise ConfigError(f"unknown broker property {key!r}")
    name, parse = _BROKER_PROPERTIES[key]
    try:
        return name, parse(raw)
    except ValueError as error:
        raise ConfigError(f"invalid value {raw!r} for {key}: {error}") from error


def broker_config(properties: Mapping[str, str], **explicit: Any) -> BrokerConfig:
    """Build a BrokerConfig from Kafka properties, then explicit keyword fields (CLI flags) on top.
    `host` and `port` are shorthand for one PLAINTEXT listener and cannot be combined with `listeners`."""
    values: dict[str, Any] = {}
    host, port = explicit.pop("host", None), explicit.pop("port", None)
    if host is not None or port is not None:
        if "listeners" in properties:
            raise ConfigError("--host/--port and the listeners property both say where to listen; use one of them")
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is outside 0..65535")
        values["listeners"] = (Endpoint("PLAINTEXT", "127.0.0.1" if host is None else host,
                                        9092 if port is None else port),)
    security: list[tuple[str, str]] = []
    for key, raw in properties.items():
        if key in _IGNORED_PROPERTIES:
            continue
        if security_settings.is_security_property(key):
            security.append((key, raw))
            continue
        if key not in _BROKER_PROPERTIES:
            raise ConfigError(f"unknown broker property {key!r}; see `oncelog serve --help` for the list")
        name, parse = _BROKER_PROPERTIES[key]
        try:
            values[name] = parse(raw)
        except ValueError as error:
            raise ConfigError(f"invalid value {raw!r} for {key}: {error}") from error
    names = {f.name for f in fields(BrokerConfig)}
    for name, value in explicit.items():
        assert name in names, name
        if value is not None:
            values[name] = value
    if security:
        values["security"] = tuple(security)
    config = BrokerConfig(**values)
    _validate(config)
    return config


def broker_property_names() -> list[str]:
    return sorted(_BROKER_PROPERTIES)


def broker_property_of(field_name: str) -> str:
    """Kafka's name of a BrokerConfig field (the spelling without a unit: log.retention.ms, not .hours)."""
    if field_name == "data_dir":
        return "log.dirs"
    return next((name for name in _BROKER_PROPERTIES if name.replace(".", "_") == field_name), field_name)


_UNITS_MS = {".hours": 3600 * 1000, ".minutes": 60 * 1000}


def _kafka_syntax(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or None
    return str(value)


def broker_property_values(config: BrokerConfig) -> list[tuple[str, str | None, bool]]:
    """(Kafka's property name, its value in Kafka's syntax, whether it is the default) for every broker
    property, as DescribeConfigs reports them: `log.retention.hours` in hours (null when the
    milliseconds are not whole hours), `auto.create.topics.enable=true`, listeners as `NAME://host:port`."""
    defaults = BrokerConfig()
    values = []
    for name, (field_name, _parse) in sorted(_BROKER_PROPERTIES.items()):
        value, default = getattr(config, field_name), getattr(defaults, field_name)
        unit = next((ms for suffix, ms in _UNITS_MS.items() if name.endswith(suffix)), None)
        if unit is not None:
            value = value // unit if value % unit == 0 else None
            default = default // unit if default % unit == 0 else None
        values.append((name, _kafka_syntax(value), value == default))
    return values
