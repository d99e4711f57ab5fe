"""`oncelog simulate`: run seeds of the deterministic simulation, shrink and print a failing one.

    oncelog simulate --seed 42              one seed; on failure, its shortest failing trace
    oncelog simulate --seeds 1..1000 -j 4   many seeds in parallel, with progress; failing seeds listed

Exit code 0 when every seed passed, 1 when any failed (each failing seed replays exactly with
`oncelog simulate --seed N` and the same options).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Options, Result

DEFAULT_STEPS = 4_000
"""Events run with faults on, per seed (`Options.steps`)."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="run the broker core in a seeded simulation with injected faults",
        description="Run the broker's handlers, coordinators and logs with simulated time, disk and network: "
        "idempotent and transactional producers, read_committed and read_uncommitted pollers, a consumer group "
        "whose members rebalance, commit and vanish, disk errors, "
        "torn writes, broker crashes, delayed and severed connections, all from one seed. After the faults "
        "stop, the final log is checked against what every client was told. A failing seed replays exactly.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=None, help="run this one seed (default 1)")
    which.add_argument("--seeds", default=None, metavar="A..B", help="run seeds A to B inclusive")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"events to run with faults on, per seed (default {DEFAULT_STEPS})")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="processes for --seeds (default 1)")
    parser.add_argument("--no-crashes", action="store_true", help="never kill the broker")
    parser.add_argument("--no-disk-faults", action="store_true", help="never fail a disk operation")
    parser.add_argument("--no-network-faults", action="store_true", help="never delay or sever connections")
    parser.add_argument("--shrink", type=int, default=40, metavar="RUNS",
                        help="replays spent shortening a failing seed's trace (default 40; 0: do not shrink)")
    parser.add_argument("--trace", action="store_true", help="print the whole trace, even of a passing seed")


def _options(args: argparse.Namespace) -> Options:
    from .run import Options

    return replace(Options(), steps=args.steps, crashes=not args.no_crashes, disk_faults=not args.no_disk_faults,
                   network_faults=not args.no_network_faults)


def _seed_range(text: str) -> range:
    first, sep, last = text.partition("..")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit() or int(last) < int(first):
        raise SystemExit(f"oncelog simulate: --seeds wants A..B with A ≤ B, not {text!r}")
    return range(int(first), int(last) + 1)


def trace_digest(result: Result) -> str:
    return hashlib.sha256("\n".join(result.trace).encode()).hexdigest()[:16]


def _summary(result: Result) -> str:
    stats = result.stats
    return (f"seed {result.seed}: {'OK' if result.ok else 'FAILED'} — {stats['steps']} steps, "
            f"{stats['simulated ms'] / 1000:.1f} s simulated, {stats['crashes']} crashes, "
            f"{stats['disk faults']} disk faults, {stats['sends acknowledged']} sends acknowledged "
            f"({stats['sends unknown']} unknown), {stats['transactions committed']} transactions committed, "
            f"{stats['transactions aborted']} aborted, {stats['records polled']} records polled, "
            f"{stats['group generations']} group generations, {stats['group commits acknowledged']} group "
            f"commits acknowledged; trace {trace_digest(result)}")


def _print_findings(result: Result) -> None:
    for kind, evidence in result.findings[:20]:
        print(f"  {kind}: {evidence}")
    if len(result.findings) > 20:
        print(f"  ... and {len(result.findings) - 20} more")


def run_one(seed: int, options: Options, shrink_runs: int, show_trace: bool) -> int:
    from .run import shrink, simulate

    result = simulate(seed, options)
    print(_summary(result))
    if result.ok:
        if show_trace:
            print("\n".join(result.trace))
        return 0
    _print_findings(result)
    if shrink_runs > 0:
        print(f"shrinking (up to {shrink_runs} replays)...", file=sys.stderr)
        result = shrink(result, shrink_runs, lambda text: print(f"  {text}", file=sys.stderr))
    print(f"shortest failing trace found: {result.options.steps} steps, {len(result.faults)} faults "
          f"(trace {trace_digest(result)}):")
    print("\n".join(result.trace))
    print("findings of that run:")
    _print_findings(result)
    return 1


def _run_seed(job: tuple[int, Options]) -> Result:
    from .run import simulate

    seed, options = job
    result = simulate(seed, options)
    result.trace = result.trace[-200:]  # a worker sends back what a report needs, not the whole trace
    return result


def run_many(seeds: range, options: Options, jobs: int) -> int:
    started = time.monotonic()
    failing: list[Result] = []
    totals: dict[str, int] = {}
    done = 0
    results: Iterable[Result]
    if jobs > 1:
        executor = ProcessPoolExecutor(jobs)
        results = executor.map(_run_seed, [(seed, options) for seed in seeds], chunksize=4)
    else:
        executor = None
        results = (_run_seed((seed, options)) for seed in seeds)
    try:
        for result in results:
            done += 1
            for key, value in result.stats.items():
                totals[key] = totals.get(key, 0) + value
            if not result.ok:
                failing.append(result)
                print(f"seed {result.seed} FAILED: {result.findings[0][0]}: {result.findings[0][1]}", flush=True)
            if done % 25 == 0 or done == len(seeds):
                print(f"  {done}/{len(seeds)} seeds, {len(failing)} failing, {time.monotonic() - started:.0f} s",
                      file=sys.stderr, flush=True)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    elapsed = time.monotonic() - started
    print(f"simulate: {len(seeds)} seeds ({seeds.start}..{seeds.stop - 1}) in {elapsed:.0f} s: "
          f"{totals.get('steps', 0)} steps, {totals.get('simulated ms', 0) / 1000:.0f} s simulated, "
          f"{totals.get('crashes', 0)} crashes, {totals.get('disk faults', 0)} disk faults, "
          f"{totals.get('sends acknowledged', 0)} sends acknowledged, "
          f"{totals.get('transactions committed', 0)} transactions committed, "
          f"{totals.get('transactions aborted', 0)} aborted, {totals.get('group generations', 0)} group "
          f"generations, {totals.get('group commits acknowledged', 0)} group commits acknowledged, "
          f"{totals.get('members vanished', 0)} members vanished; "
          + ("all OK" if not failing else f"{len(failing)} FAILING: " + " ".join(str(r.seed) for r in failing)))
    if failing:
        print(f"replay one with: oncelog simulate --seed {failing[0].seed}" + (
            f" --steps {options.steps}" if options.steps != DEFAULT_STEPS else ""))
    return 1 if failing else 0


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.seeds is not None:
        return run_many(_seed_range(args.seeds), options, max(1, args.jobs))
    return run_one(1 if args.seed is None else args.seed, options, args.shrink, args.trace)
