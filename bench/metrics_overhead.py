"""What the metrics cost on the produce path: the broker with its instrumentation, and the same broker
with every metric update replaced by a no-op, under the same raw-socket produce load, alternated.

    python bench/metrics_overhead.py --rounds 3 --seconds 5 --batch-records 16 --size 1024

Small batches (16 × 1 KiB, 5 in flight) are the worst case: the per-request work is what the metrics
add to; acks=1 by default, so fsync's variance does not hide it. Prints requests/s per round and the
median ratio. On two shared cores the rounds vary by ±20 %, more than the effect, so it also prints the
instrumentation's own cost per request, timed alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import loadgen

WITHOUT_METRICS = """
import sys
from oncelog.observability import metrics
class _Off:
    def labels(self, *args): return self
    def inc(self, *args): pass
    def observe(self, *args): pass
def _init(self):
    from prometheus_client import CollectorRegistry
    self.registry = CollectorRegistry()
    self.requests = self.failures = self.latency = self.bytes_in = self.messages_in = self.bytes_out = _Off()
    self.errors = self.fenced = self.duplicates = self.fsync_seconds = self.fsync_waiters = _Off()
    self.fsync_partitions = self.fsync_failures = _Off()
    self._broker = None
    self.view = None
metrics.BrokerMetrics.__init__ = _init
metrics.BrokerMetrics.answered = lambda self, api, response: None
metrics.BrokerMetrics.flushed = lambda self, waiters, partitions, seconds, failures: None
metrics.BrokerMetrics.observe_request = lambda self, api, version, started: (lambda: None)
metrics.BrokerMetrics.appended = lambda self, topic, size, records: None
metrics.BrokerMetrics.served = lambda self, topic, size: None
from oncelog.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _broker(metrics: bool) -> object:
    with tempfile.TemporaryDirectory(prefix="oncelog-bench-") as directory:
        port = _free_port()
        serve = ["serve", "--port", str(port), "--data-dir", directory, "--log-level", "WARNING"]
        command = [sys.executable, "-m", "oncelog", *serve] if metrics else [sys.executable, "-c", WITHOUT_METRICS,
                                                                             *serve]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None and "listening" in process.stdout.readline()
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(30)


def _requests_per_second(bootstrap: str, args: argparse.Namespace) -> float:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        asyncio.run(loadgen.run(bootstrap, args))
    return float(captured.getvalue().split("requests/s")[0].split(":")[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--batch-records", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--acks", type=int, choices=[-1, 1], default=1,
                        help="1 (default) leaves out fsync, whose variance would hide the metrics' cost")
    args = parser.parse_args()
    load = argparse.Namespace(seconds=args.seconds, connections=1, in_flight=5, batch_records=args.batch_records,
                              size=args.size, acks=args.acks)
    ratios = []
    for round_number in range(1, args.rounds + 1):
        figures = {}
        for metrics in (True, False):
            with _broker(metrics) as bootstrap:
                time.sleep(0.5)
                figures[metrics] = _requests_per_second(bootstrap, load)
        ratios.append(figures[True] / figures[False])
        print(f"round {round_number}: with metrics {figures[True]:7.0f} requests/s, without {figures[False]:7.0f} "
              f"requests/s: {ratios[-1]:.3f}", flush=True)
    median = statistics.median(ratios)
    print(f"median with/without: {median:.3f} (overhead {100 * (1 - median):.1f} %)")
    per_request = _instrumentation_cost_us(args.batch_records, args.size)
    slowest = min(figures.values())
    print(f"instrumentation alone: {per_request:.2f} µs per produce request = "
          f"{100 * per_request * slowest / 1e6:.1f} % of a second's work at {slowest:.0f} requests/s")


def _instrumentation_cost_us(batch_records: int, size: int) -> float:
    """What the connection and the produce handler add per request: counters, the latency histogram and
    the walk of the response for error codes (the flusher's round metrics are printed apart)."""
    import timeit

    from oncelog.handlers import HANDLERS
    from oncelog.observability.metrics import BrokerMetrics
    from oncelog.protocol.codec import build_response
    from oncelog.protocol.framing import peek_header

    metrics = BrokerMetrics()
    frame = loadgen.encoded_produce("t", 0, batch_records, size, 1)[4:]
    response = build_response(0, 9, {"throttle_time": 0, "responses": [{"name": "t", "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 42, "log_append_time": -1, "log_start_offset": 0}]}]},
        fill=True)

    def one() -> None:
        api_key, version, _correlation = peek_header(frame)
        answered = metrics.observe_request(HANDLERS[api_key].name, version, time.perf_counter())
        metrics.appended("t", batch_records * size, batch_records)
        metrics.answered("produce", response)
        answered()

    count = 100_000
    per_request = timeit.timeit(one, number=count) / count * 1e6
    per_round = timeit.timeit(lambda: metrics.flushed(4, 1, 0.001, 0), number=count) / count * 1e6
    print(f"per flush round (one per group commit, shared by its waiting requests): {per_round:.2f} µs")
    return per_request


if __name__ == "__main__":
    main()
