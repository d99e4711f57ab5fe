"""`oncelog chaos`: a Jepsen-style queue workload with real clients under injected faults.

    oncelog chaos                                   its own broker, every fault, 30 s
    oncelog chaos --bootstrap HOST:PORT             any Kafka-compatible cluster (proxy faults only)
    oncelog chaos --storage postgresql://... --brokers 3

The last line is `chaos: OK` or the count of each anomaly class; exit code 1 on any anomaly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FAULT_KINDS = ("kill", "pause", "proxy")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chaos", help="run real clients against a cluster under faults and check what they saw",
        description="Transactional and idempotent producers, read_committed and read_uncommitted pollers, a "
        "consumer group and a consume-transform-produce stage (confluent-kafka) run while the brokers are "
        "killed, paused and cut off through a proxy. Every send, poll and commit is recorded, then the final "
        "log is checked: lost writes, duplicates, aborted reads, inconsistent offsets, non-monotonic polls, "
        "poll skips, torn and hanging transactions, stuck clients.")
    parser.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                        help="an existing cluster (default: start oncelog brokers in a temp dir); only the "
                        "proxy's faults apply to it")
    parser.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds of faults (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule and workload (default 1)")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), metavar="KINDS",
                        help="comma-separated: kill, pause, proxy (default: all; 'none' for no faults)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="run the managed brokers on this PostgreSQL database (postgresql://...)")
    parser.add_argument("--brokers", type=int, default=1, help="managed brokers (more than 1 needs --storage)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the topics (default 3)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write history and findings here")


def run(args: argparse.Namespace) -> int:
    faults = tuple(kind.strip() for kind in args.faults.split(",") if kind.strip() and kind.strip() != "none")
    unknown = [kind for kind in faults if kind not in FAULT_KINDS]
    if unknown:
        print(f"oncelog chaos: unknown fault kind {unknown[0]!r}; use {', '.join(FAULT_KINDS)}", file=sys.stderr)
        return 2
    if args.brokers > 1 and args.storage is None:
        print("oncelog chaos: --brokers > 1 needs --storage postgresql://... (brokers share one database)",
              file=sys.stderr)
        return 2
    if args.bootstrap is not None and (args.storage or args.brokers != 1):
        print("oncelog chaos: --bootstrap uses an existing cluster; --storage and --brokers are for managed ones",
              file=sys.stderr)
        return 2
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("oncelog chaos: the clients it runs need confluent-kafka: pip install 'oncelog[eos]'", file=sys.stderr)
        return 2
    from .run import Chaos, ChaosOptions

    options = ChaosOptions(bootstrap=args.bootstrap, duration_s=args.duration, seed=args.seed, faults=faults,
                           storage=args.storage, brokers=args.brokers, partitions=args.partitions,
                           json_path=args.json)
    try:
        result = Chaos(options, lambda line: print(line, file=sys.stderr, flush=True)).run()
    except RuntimeError as error:
        print(f"oncelog chaos: {error}", file=sys.stderr)
        return 1
    stats = result.stats
    print(f"faults: {stats['faults'] or 'none'}")
    print(f"sends: {stats['sends acknowledged']} acknowledged, {stats['sends unknown']} unknown; transactions: "
          f"{stats['transactions committed']} committed, {stats['transactions aborted']} aborted, "
          f"{stats['transactions unknown']} unknown; {stats['records polled']} records polled, "
          f"{stats['records stored']} stored")
    if stats["stage hangs"]:
        print(f"stage: killed and restarted {stats['stage hangs']} time(s) after hanging in librdkafka "
              "(confluentinc/librdkafka#5511); exactly-once is checked across the restarts")
    for kind, evidence in result.findings[:30]:
        print(f"  {kind}: {evidence}")
    if len(result.findings) > 30:
        print(f"  ... and {len(result.findings) - 30} more" + (f" (all in {args.json})" if args.json else ""))
    print(result.summary())
    return 0 if result.ok else 1
