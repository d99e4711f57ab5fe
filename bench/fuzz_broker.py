"""A long structure-aware fuzz run against a live broker: crashes, unanswered requests, handler failures, RSS.

    python bench/fuzz_broker.py [--examples 50000] [--seed 1]

The same requests as tests/faults/test_fuzz_broker.py (valid requests of every served API and version,
intact or with lengths, counts, nulls and varints mutated, or bytes damaged), many more of them. Prints
requests per second, how requests ended (answered, closed, no response for acks=0), the broker's RSS at
start, end and peak, and any log line that means a bug. Exits 1 on a crash, a silent request or a bug.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from tests.fuzz_probe import FUZZ_BROKER_OVERRIDES, Prober, broker_problems, rss_bytes
from tests.fuzzing import TOPICS, mutate, valid_requests
from tests.helpers import create_topic

from oncelog.testing import BrokerProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000, help="requests to send (default 50000)")
    parser.add_argument("--seed", type=int, default=1, help="hypothesis seed (default 1)")
    args = parser.parse_args()
    outcomes: Counter[str] = Counter()
    peak = [0]
    with tempfile.TemporaryDirectory(prefix="oncelog-fuzz-") as temporary:
        broker = BrokerProcess(Path(temporary) / "data", FUZZ_BROKER_OVERRIDES)
        broker.start()
        create_topic(broker.bootstrap, TOPICS[0], partitions=3)
        create_topic(broker.bootstrap, TOPICS[1])
        assert broker.process is not None
        pid = broker.process.pid
        prober = Prober(broker.bootstrap)
        start_rss = prober.rss_at_start(pid)
        started = time.monotonic()

        @seed(args.seed)
        @settings(max_examples=args.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=valid_requests(), data=st.data())
        def fuzz(case: tuple[int, int, Any, bytes], data: st.DataObject) -> None:
            outcome = prober.probe(mutate(case, data))
            outcomes[outcome] += 1
            total = sum(outcomes.values())
            if total % 1000 == 0:
                peak[0] = max(peak[0], rss_bytes(pid))
                print(f"{total} requests, {total / (time.monotonic() - started):.0f}/s, "
                      f"RSS {rss_bytes(pid) >> 20} MiB, {dict(outcomes)}", flush=True)
            assert outcome != "silent", "a request got no answer and its connection stayed open"
            assert broker.process is not None and broker.process.poll() is None, "the broker died"

        failed = False
        try:
            fuzz()
        except AssertionError as error:
            print(f"FAILED: {error}")
            failed = True
        elapsed = time.monotonic() - started
        end_rss = rss_bytes(pid) if broker.process.poll() is None else 0
        alive = Prober(broker.bootstrap).probe(None) == "answered" if end_rss else False
        problems = broker_problems(broker.log_path)
        if broker.process.poll() is None:
            broker.terminate()
        total = sum(outcomes.values())
        print(f"{total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s): {dict(outcomes)}")
        print(f"broker RSS: {start_rss >> 20} MiB at start, {end_rss >> 20} MiB at end, "
              f"{max(peak[0], end_rss) >> 20} MiB peak; serving afterwards: {alive}")
        print(f"log lines that mean a bug: {len(problems)}")
        for line in problems[:20]:
            print("  " + line)
        return 1 if failed or problems or not alive else 0


if __name__ == "__main__":
    raise SystemExit(main())
