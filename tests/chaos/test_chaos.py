"""`oncelog chaos` end to end: real clients, real broker processes, real faults, and a clean verdict.

Short runs here (CI); long ones are `oncelog chaos --duration 600` (README). The checker's anomaly
classes are proven on planted histories in tests/simulation/test_history.py and below for the stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from oncelog.chaos.proxy import ChaosProxy
from oncelog.chaos.run import _stage_findings
from oncelog.simulation.history import FinalLog, StoredRecord
from oncelog.testing import embedded_broker


def _chaos(*args: str, timeout: int = 240) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "oncelog", "chaos", *args], capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.timeout(300)
def test_chaos_against_the_embedded_broker_finds_nothing(tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    code, stdout, stderr = _chaos("--duration", "20", "--seed", "3", "--json", str(history))
    assert stdout.strip().splitlines()[-1] == "chaos: OK", stdout + stderr[-3000:]
    assert code == 0
    document = json.loads(history.read_text())
    faults = document["stats"]["faults"]
    assert sum(faults.values()) >= 3, faults  # the run really was hurt
    assert document["stats"]["transactions committed"] > 10 and document["stats"]["sends acknowledged"] > 100
    assert document["stats"]["stage starts"] >= 1 and document["stats"]["records polled"] > 100
    assert document["findings"] == []
    assert {"sends", "transactions", "polls", "events"} <= set(document)


@pytest.mark.timeout(300)
def test_chaos_against_a_postgresql_cluster_finds_nothing(database_url: str) -> None:
    code, stdout, stderr = _chaos("--duration", "20", "--seed", "5", "--storage", database_url, "--brokers", "3")
    assert stdout.strip().splitlines()[-1] == "chaos: OK", stdout + stderr[-3000:]
    assert code == 0


def test_chaos_refuses_what_it_cannot_do() -> None:
    code, _stdout, stderr = _chaos("--faults", "kill,flood")
    assert code == 2 and "unknown fault kind 'flood'" in stderr
    code, _stdout, stderr = _chaos("--brokers", "3")
    assert code == 2 and "--storage" in stderr


@pytest.mark.timeout(120)
def test_the_proxy_carries_clients_to_every_broker_and_its_faults_reach_them(tmp_path: Path) -> None:
    with embedded_broker(tmp_path / "data") as bootstrap:
        proxy = ChaosProxy(bootstrap)
        through = proxy.start()
        try:
            producer = Producer({"bootstrap.servers": through, "enable.idempotence": True})
            delivered: list[int] = []
            for index in range(20):
                producer.produce("proxied", value=str(index).encode(),
                                 on_delivery=lambda error, message: delivered.append(message.offset()))
                if index == 10:
                    producer.flush(30)
                    proxy.sever()  # the client reconnects (through the proxy again) and carries on
            assert producer.flush(30) == 0
            assert sorted(delivered) == list(range(20))
            metadata = producer.list_topics(timeout=10)
            assert {(b.host, b.port) for b in metadata.brokers.values()} <= {
                ("127.0.0.1", int(through.rsplit(":", 1)[1]))} | {("127.0.0.1", port) for port in proxy._ports.values()}
            assert proxy.counts["connections"] >= 2 and proxy.counts["severed"] == 1
            consumer = Consumer({"bootstrap.servers": through, "group.id": "g", "enable.partition.eof": True})
            consumer.assign([TopicPartition("proxied", 0, 0)])
            values = []
            while True:
                message = consumer.poll(10)
                assert message is not None
                if message.error():
                    break
                values.append(int(message.value()))
            consumer.close()
            assert values == list(range(20))
        finally:
            proxy.stop()


def _final(values: dict[str, str]) -> FinalLog:
    return FinalLog(partitions={0: {offset: StoredRecord(offset, value, -1, fate != "plain", fate)
                                    for offset, (value, fate) in enumerate(values.items())}})


def test_the_stage_check_sees_duplicates_aborted_copies_and_missing_ones() -> None:
    final = _final({"a": "plain", "b": "committed", "c": "aborted", "d": "plain"})
    output = _final({"out:a": "committed", "out:b": "committed", "out:b ": "committed", "out:c": "committed",
                     "out:d": "aborted"})
    output.partitions[0][2].value = "out:b"  # the same copy twice (the dict above needs distinct keys)
    findings = _stage_findings(output, final)
    assert ("duplicate", "the stage copied b 2 times") in findings
    assert ("aborted read", "the stage copied c, which is aborted") in findings
    assert any(kind == "lost write" and "d" in evidence for kind, evidence in findings)
    assert _stage_findings(_final({"out:a": "committed", "out:b": "committed", "out:d": "committed"}), final) == []
