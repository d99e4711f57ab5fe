"""Structure-aware fuzzing of a live broker over TCP: every request is answered or its connection closed,
the broker never crashes, no handler fails, and its memory stays bounded.

Valid requests of every served API key and version (kio's type strategies), intact or with their lengths
and counts mutated or their bytes damaged (tests/fuzzing.py), go to a broker subprocess one at a time,
each followed on the same connection by an ApiVersions request: responses come back in order, so the
ApiVersions answer proves the fuzzed request was answered (or needed none, acks=0), and a closed
connection is the other allowed outcome. bench/fuzz_broker.py runs the same for longer and reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oncelog.testing import BrokerProcess
from tests.fuzz_probe import FUZZ_BROKER_OVERRIDES, Prober, broker_problems, rss_bytes
from tests.fuzzing import TOPICS, mutate, valid_requests
from tests.helpers import create_topic

EXAMPLES = 1500
RSS_GROWTH_MAX = 256 * 1024 * 1024


@pytest.fixture(scope="module")
def fuzzed_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, Prober, Counter[str]]]:
    broker = BrokerProcess(tmp_path_factory.mktemp("fuzz") / "data", FUZZ_BROKER_OVERRIDES)
    broker.start()
    create_topic(broker.bootstrap, TOPICS[0], partitions=3)
    create_topic(broker.bootstrap, TOPICS[1])
    prober = Prober(broker.bootstrap)
    try:
        yield broker, prober, Counter()
    finally:
        prober.close()
        if broker.process is not None:
            broker.terminate()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=valid_requests(), data=st.data())
def test_every_fuzzed_request_is_answered_or_closes_its_connection(
        fuzzed_broker: tuple[BrokerProcess, Prober, Counter[str]], case: tuple[int, int, object, bytes],
        data: st.DataObject) -> None:
    broker, prober, outcomes = fuzzed_broker
    frame = mutate(case, data)
    outcome = prober.probe(frame)
    outcomes[outcome] += 1
    assert outcome in ("answered", "closed", "no response"), outcome
    assert broker.process is not None and broker.process.poll() is None, "the broker died"


def test_after_fuzzing_the_broker_serves_with_bounded_memory_and_no_handler_failures(
        fuzzed_broker: tuple[BrokerProcess, Prober, Counter[str]]) -> None:
    broker, prober, outcomes = fuzzed_broker
    print(f"outcomes: {dict(outcomes)}")
    assert sum(outcomes.values()) >= EXAMPLES // 2, outcomes
    assert outcomes["answered"] and outcomes["closed"], outcomes
    assert broker.process is not None
    growth = rss_bytes(broker.process.pid) - prober.rss_at_start(broker.process.pid)
    assert growth < RSS_GROWTH_MAX, f"RSS grew by {growth >> 20} MiB"
    assert Prober(broker.bootstrap).probe(None) == "answered"
    problems = broker_problems(Path(broker.log_path))
    assert not problems, "\n".join(problems[:10])
