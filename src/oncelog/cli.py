"""The `oncelog` command: run a broker, and manage topics on a running one.

    oncelog serve [--host H] [--port P] [--data-dir D] [--config server.properties] [--override k=v ...]
    oncelog topics list|describe|create|delete [--bootstrap H:P] ...
    oncelog users add|list|delete [--bootstrap H:P | --data-dir D] ...
    oncelog acls add|list|remove [--bootstrap H:P] ...

Errors are printed as one line saying what to do, with exit code 2 for usage and configuration errors
and 1 for a broker that cannot be reached or refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from oncelog import __version__
from oncelog.config import BrokerConfig, ConfigError, broker_config, broker_property_names, load_properties
from oncelog.report import with_output
from oncelog.security.settings import SETTINGS as SECURITY_SETTINGS

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _serve_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run a broker",
        description="Run a Kafka-compatible broker. It prints 'oncelog listening on HOST:PORT' once it "
        "accepts connections and shuts down cleanly on SIGTERM or Ctrl-C. By default it keeps its partitions "
        "in --data-dir (one broker); with --storage postgresql://... any number of brokers share one "
        "database, each with its own --broker-id.",
        epilog="Broker properties (Kafka names) for --config/--override: " + ", ".join(broker_property_names())
        + ". Security (each also as listener.name.NAME.SETTING): " + ", ".join(sorted(SECURITY_SETTINGS)),
    )
    serve.add_argument("--host", default=None,
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface). Shorthand "
                       "for --override listeners=PLAINTEXT://HOST:PORT; use advertised.listeners to tell "
                       "clients another address")
    serve.add_argument("--port", type=int, default=None, help="port to listen on; 0 picks a free one (default 9092)")
    serve.add_argument("--data-dir", type=Path, default=None,
                       help="where logs live (default ./oncelog-data); with --storage, nothing durable is kept there")
    serve.add_argument("--storage", default=None, metavar="URL",
                       help="'local' (default: files in --data-dir) or postgresql://USER@HOST/DB to share one "
                       "PostgreSQL database between brokers (the schema is created and migrated by oncelog)")
    serve.add_argument("--broker-id", type=int, default=None, metavar="N",
                       help="this broker's id (broker.id; default 1); unique among brokers sharing --storage")
    serve.add_argument("--http-port", type=int, default=None, metavar="PORT",
                       help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (http.port; 0 picks a free "
                       "port; http.host to bind elsewhere)")
    serve.add_argument("--config", type=Path, default=None, metavar="FILE", help="a server.properties file")
    serve.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="set a broker property, e.g. --override num.partitions=3 (repeatable; wins over --config)",
    )
    serve.add_argument("--log-level", default=os.environ.get("ONCELOG_LOG_LEVEL", "INFO"),
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="log verbosity (default: $ONCELOG_LOG_LEVEL or INFO); DEBUG logs every request, and "
                       "SIGUSR1 switches per-request logging on and off while it runs")
    serve.add_argument("--log-format", default=os.environ.get("ONCELOG_LOG_FORMAT", "text"), choices=["text", "json"],
                       help="text (default: $ONCELOG_LOG_FORMAT or text) or json: one JSON object per line")


def _topics_parser(subparsers: Any) -> None:
    topics = subparsers.add_parser("topics", help="list, describe, create and delete topics")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")

    with_bootstrap = _with_bootstrap
    with_output(with_bootstrap(actions.add_parser("list", help="list topics with partition counts")))
    describe = with_output(with_bootstrap(actions.add_parser("describe",
                                                             help="partitions, offsets and configs of topics")))
    describe.add_argument("names", nargs="*", metavar="TOPIC", help="topics to describe (default: all)")
    create = with_bootstrap(actions.add_parser("create", help="create a topic"))
    create.add_argument("name", metavar="TOPIC")
    create.add_argument("--partitions", type=int, default=-1, help="partition count (default: num.partitions)")
    create.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="topic config, e.g. --config retention.ms=60000 (repeatable)")
    alter = with_bootstrap(actions.add_parser(
        "alter", help="add partitions or change configs (as kafka-topics --alter, kafka-configs --alter)"))
    alter.add_argument("name", metavar="TOPIC")
    alter.add_argument("--partitions", type=int, default=None, metavar="N",
                       help="the new partition count (only grows; keyed records then hash over N)")
    alter.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                       help="set a topic config, e.g. --config retention.ms=60000 (repeatable)")
    alter.add_argument("--delete-config", action="append", default=[], metavar="KEY",
                       help="return a topic config to its default (repeatable)")
    purge = with_bootstrap(actions.add_parser(
        "delete-records", help="delete a partition's records below an offset (as kafka-delete-records)"))
    purge.add_argument("name", metavar="TOPIC")
    purge.add_argument("--partition", type=int, default=0, help="the partition (default 0)")
    purge.add_argument("--before", type=int, required=True, metavar="OFFSET",
                       help="the new first offset; -1 for the high watermark (everything)")
    delete = with_bootstrap(actions.add_parser("delete", help="delete topics and their data"))
    delete.add_argument("names", nargs="+", metavar="TOPIC")


def _with_bootstrap(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--bootstrap", "--bootstrap-server", dest="bootstrap", default=DEFAULT_BOOTSTRAP,
                        metavar="HOST:PORT", help=f"broker address (default {DEFAULT_BOOTSTRAP}; --bootstrap-server, "
                        "Kafka tools' spelling, works too)")
    parser.add_argument("--command-config", type=Path, default=None, metavar="FILE",
                        help="client properties for a secured listener, as Kafka's tools take them: "
                        "security.protocol, ssl.ca.location, sasl.mechanism, sasl.username, sasl.password")
    return parser


def _groups_parser(subparsers: Any) -> None:
    groups = subparsers.add_parser("groups", help="list and describe consumer groups, reset their offsets")
    actions = groups.add_subparsers(dest="action", required=True, metavar="ACTION")
    with_output(_with_bootstrap(actions.add_parser("list", help="every group with its state")))
    describe = with_output(_with_bootstrap(actions.add_parser(
        "describe", help="members, assignments, committed offsets and lag per partition")))
    describe.add_argument("group", metavar="GROUP")
    reset = with_output(_with_bootstrap(actions.add_parser(
        "reset-offsets", help="set a group's committed offsets for a topic (the group must be empty)")))
    reset.add_argument("group", metavar="GROUP")
    reset.add_argument("--topic", required=True)
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="the log start offset of each partition")
    target.add_argument("--to-latest", action="store_true", help="the high watermark of each partition")
    target.add_argument("--to-offset", type=int, metavar="N", help="offset N in every partition (clamped to the log)")
    reset.add_argument("--execute", action="store_true",
                       help="apply the new offsets; without it the plan is printed and nothing changes (as Kafka's "
                       "kafka-consumer-groups --reset-offsets)")


def _transactions_parser(subparsers: Any) -> None:
    transactions = subparsers.add_parser("transactions", help="list, describe, find hanging and abort transactions")
    actions = transactions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = with_output(_with_bootstrap(actions.add_parser("list",
                                                             help="transactional ids with producer id and state")))
    listing.add_argument("--state", action="append", metavar="STATE", help="only this state (repeatable)")
    describe = with_output(_with_bootstrap(actions.add_parser("describe", help="one transactional id in detail")))
    describe.add_argument("transactional_id", metavar="TRANSACTIONAL_ID")
    hanging = with_output(_with_bootstrap(actions.add_parser(
        "find-hanging", help="open transactions on partitions that their coordinator does not hold")))
    hanging.add_argument("--topic", action="append", help="only these topics (repeatable; default all)")
    hanging.add_argument("--max-transaction-timeout-ms", type=int, default=900_000, metavar="MS",
                         help="only transactions open at least this long (default 900000, Kafka's maximum)")
    abort = _with_bootstrap(actions.add_parser(
        "abort", help="write an ABORT marker for the open transaction starting at an offset of a partition"))
    abort.add_argument("--topic", required=True)
    abort.add_argument("--partition", type=int, required=True)
    abort.add_argument("--start-offset", type=int, required=True, help="first offset of the transaction")


def _demo_parser(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the order pipeline under random crashes and audit it",
        description="Producer app → orders → processor → orders-enriched → database sink, with the processor "
        "and sink SIGKILLed at random points, then an audit of the output topic and the table. The last line "
        "is 'MODE: N in, X out, Y rows, D duplicates, M missing'.")
    demo.add_argument("mode", choices=["at-most-once", "at-least-once", "exactly-once"])
    demo.add_argument("--records", type=int, default=5000, help="orders to produce (default 5000)")
    demo.add_argument("--crashes", type=int, default=5, help="random SIGKILLs of processor or sink (default 5)")
    demo.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                      help="use this cluster (default: start a broker in a temp dir)")
    demo.add_argument("--db", default=None, metavar="URL",
                      help="sqlite:///path or postgresql://... (default: SQLite in a temp dir)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the crash schedule (default: random)")


def _producers_parser(subparsers: Any) -> None:
    producers = subparsers.add_parser("producers", help="inspect idempotent and transactional producers")
    actions = producers.add_subparsers(dest="action", required=True, metavar="ACTION")
    describe = with_output(_with_bootstrap(actions.add_parser(
        "describe", help="producer ids, epochs and last sequences a topic's partitions remember")))
    describe.add_argument("topic", metavar="TOPIC")
    describe.add_argument("--partition", type=int, default=None, help="only this partition")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncelog",
        description="A Kafka-compatible streaming log with exactly-once semantics. Any Kafka client can "
        "connect to `oncelog serve`.",
    )
    parser.add_argument("--version", action="version", version=f"oncelog {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(subparsers)
    _topics_parser(subparsers)
    _groups_parser(subparsers)
    _transactions_parser(subparsers)
    _producers_parser(subparsers)
    from oncelog import console_consumer, console_producer

    console_producer.add_parser(subparsers, _with_bootstrap)
    console_consumer.add_parser(subparsers, _with_bootstrap)
    from oncelog import admin_users

    admin_users.add_parser(subparsers, _with_bootstrap)
    from oncelog import admin_acls

    admin_acls.add_parser(subparsers, _with_bootstrap)
    _demo_parser(subparsers)
    from oncelog.simulation import command as simulate_command

    simulate_command.add_parser(subparsers)
    from oncelog.chaos import command as chaos_command

    chaos_command.add_parser(subparsers)
    return parser


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {pair!r} is not KEY=VALUE")
        values[key.strip()] = value.strip()
    return values


def serve_config(args: argparse.Namespace) -> BrokerConfig:
    properties = load_properties(args.config) if args.config else {}
    properties.update(_key_values(args.override, "--override"))
    return broker_config(properties, host=args.host, port=args.port, data_dir=args.data_dir, storage=args.storage,
                         node_id=args.broker_id, http_port=args.http_port)


async def _serve(config: BrokerConfig) -> None:
    from oncelog.server.app import BrokerServer

    server = BrokerServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before the line: a SIGTERM right after it is clean too
        loop.add_signal_handler(signum, stop.set)
    from oncelog.observability.log_setup import toggle_request_logging

    loop.add_signal_handler(signal.SIGUSR1, toggle_request_logging)
    await server.start()
    for endpoint in config.listeners:
        host, port = server.broker.advertised_address(endpoint.name)
        bound = f"{endpoint.host or '0.0.0.0'}:{server.bound_ports[endpoint.name]}"
        suffix = "" if len(config.listeners) == 1 else f" ({endpoint.name}, advertised as {host}:{port})"
        print(f"oncelog listening on {bound}{suffix}", flush=True)
    if server.http_port >= 0:
        print(f"oncelog metrics on http://{config.http_host}:{server.http_port}/metrics, console on "
              f"http://{config.http_host}:{server.http_port}/", flush=True)
    await stop.wait()
    logging.getLogger("oncelog").info("shutting down")
    await server.stop()


def _run_serve(args: argparse.Namespace) -> int:
    # kio registers hypothesis strategies for its types whenever hypothesis is importable (a test
    # dependency), which costs ~150 ms of start-up; a broker never needs them.
    sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]
    from oncelog.observability.log_setup import configure

    configure(args.log_level, args.log_format)
    try:
        config = serve_config(args)
    except ConfigError as error:
        print(f"oncelog: {error}", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    from oncelog.log.manager import DataDirError, DataDirInUse
    from oncelog.server.app import ListenError

    try:
        runner(_serve(config))
    except (DataDirInUse, DataDirError, ListenError) as error:
        print(f"oncelog: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if type(error).__module__.startswith("psycopg") or type(error).__name__ in ("DuplicateBrokerId",
                                                                                    "SchemaTooNew"):
            print(f"oncelog: cannot start on {config.storage.split('@')[-1]}: {error}".rstrip(), file=sys.stderr)
            print("oncelog: check the --storage URL, that PostgreSQL runs and that the user may create tables",
                  file=sys.stderr)
            return 1
        raise
    except OSError as error:  # anything else the disk or the network refused at start
        where = f" ({error.filename})" if error.filename else ""
        print(f"oncelog: cannot start: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    if args.command == "simulate":
        from oncelog.simulation import command as simulate_command

        return simulate_command.run(args)
    if args.command == "chaos":
        from oncelog.chaos import command as chaos_command

        return chaos_command.run(args)
    if args.command == "demo":
        from oncelog.eos import demo

        return demo.run(args.mode, args.records, args.crashes, args.bootstrap, args.db, args.seed)
    from oncelog import admin
    from oncelog.client import ClientError

    try:
        if args.command == "producers":
            return admin.run_producers(args)
        if args.command in ("produce", "consume"):
            from oncelog import console_consumer, console_producer

            return console_producer.run(args) if args.command == "produce" else console_consumer.run(args)
        if args.command == "transactions":
            from oncelog import admin_transactions

            return admin_transactions.run_transactions(args)
        if args.command == "groups":
            from oncelog import admin_groups

            return admin_groups.run_groups(args)
        if args.command == "users":
            from oncelog import admin_users

            return admin_users.run_users(args)
        if args.command == "acls":
            from oncelog import admin_acls

            return admin_acls.run_acls(args)
        return admin.run_topics(args)
    except ClientError as error:
        print(f"oncelog: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"oncelog: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
