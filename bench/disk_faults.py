"""The full disk-fault sweep: fail every n-th file-system operation of every kind, and a disk that fills up
at every byte budget step; after each, restart and check that nothing acknowledged is lost.

    python bench/disk_faults.py [--kinds write,fsync,...] [--budget-step 500]

CI runs a spread of n per kind (tests/faults/test_disk_faults.py); this script runs all of them and
prints, per kind, how many runs passed and how long the sweep took. Any failure prints its fault and the
assertion, and the script exits 1.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.disk_harness import DiskHarness, Workload, restart_and_check, run_workload

from oncelog.fs import Fault

KINDS = ("write", "fsync", "rename", "truncate", "open", "unlink", "sync_dir", "read", "mkdir", "remove_tree")


def run_once(directory: Path, fault: Fault | None, disk_bytes: int | None) -> None:
    restart_and_check(*run_workload(directory, fault, disk_bytes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="operation kinds to fail (comma-separated)")
    parser.add_argument("--budget-step", type=int, default=500, help="bytes between disk-full budgets")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # thousands of injected faults log thousands of expected errors
    failures = 0
    with tempfile.TemporaryDirectory(prefix="oncelog-disk-faults-") as temporary:
        root = Path(temporary)
        dry = DiskHarness(root / "dry")
        dry.start()
        Workload(dry).run()
        dry.crash()
        counts = dict(dry.plan.counts)
        written = sum(1 for operation, _ in dry.plan.log if operation == "write")
        print(f"dry run: {sum(counts.values())} operations, {written} writes")
        for kind in args.kinds.split(","):
            started = time.monotonic()
            passed = 0
            for nth in range(1, counts.get(kind, 0) + 1):
                fault = Fault(kind, nth=nth, error=errno.ENOSPC if kind == "write" else errno.EIO)
                try:
                    run_once(root / f"{kind}-{nth}", fault, None)
                    passed += 1
                except Exception:
                    failures += 1
                    print(f"FAILED {kind} #{nth}:\n{traceback.format_exc()}")
            print(f"{kind:12} {passed}/{counts.get(kind, 0)} runs passed in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        budgets = range(0, 60_000, args.budget_step)
        passed = 0
        for budget in budgets:
            try:
                run_once(root / f"full-{budget}", None, budget)
                passed += 1
            except Exception:
                failures += 1
                print(f"FAILED disk full after {budget} bytes:\n{traceback.format_exc()}")
        print(f"{'disk full':12} {passed}/{len(budgets)} runs passed in {time.monotonic() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
