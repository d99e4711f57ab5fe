"""One `oncelog chaos` run: brokers (or an external cluster), the proxy, the workload, the faults, the check.

Theory of operation: without `--bootstrap` the run starts its own brokers (`ManagedBrokers`); clients
always reach the brokers through the `ChaosProxy`. For `duration` seconds a seeded schedule injects the
enabled faults: SIGKILL and restart of a managed broker, SIGSTOP/SIGCONT pauses, and the proxy's
severed connections, added latency and blackholes. Then the faults stop, the brokers are healed, the
producers finish, open transactions are given their timeout, and the final log is read raw from the
start with oncelog's own codec (`raw_log`): each transactional record is committed, aborted or still
open by the markers that follow it, not by what the broker under test answers read_committed readers.
Consumers and the stage are then let reach the end, and `history.check` plus the stage's
exactly-once check (each committed input copied once, nothing else copied) name the anomalies.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from oncelog.simulation.history import FinalLog, check

from .cluster import ManagedBrokers
from .proxy import ChaosProxy
from .raw_log import raw_final_log
from .workload import QUIET, TRANSACTION_TIMEOUT_MS, Names, Workload

FAULTS = ("kill", "pause", "proxy")
SETTLE_LIMIT_S = 90.0


@dataclass
class ChaosOptions:
    bootstrap: str | None = None
    duration_s: float = 30.0
    seed: int = 1
    faults: tuple[str, ...] = FAULTS
    storage: str | None = None
    brokers: int = 1
    partitions: int = 3
    json_path: Path | None = None


@dataclass
class ChaosResult:
    findings: list[tuple[str, str]]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.ok:
            return "chaos: OK"
        counts = Counter(kind for kind, _evidence in self.findings)
        return "chaos: " + ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))


def _stage_findings(output: FinalLog, final: FinalLog, reached: dict[int, int] | None = None
                    ) -> list[tuple[str, str]]:
    """The stage's exactly-once check of its `output` topic against its input `final`; `reached`: the
    stage's committed offsets per input partition if it did not reach the end (inputs beyond them are
    not yet due, that is a stuck stage, not a lost write)."""
    copied = Counter(record.value.removeprefix("out:") for records in output.partitions.values()
                     for record in records.values() if record.fate in ("plain", "committed"))
    fates = {record.value: record.fate for records in final.partitions.values() for record in records.values()}
    findings = []
    for value, count in copied.items():
        if count > 1:
            findings.append(("duplicate", f"the stage copied {value} {count} times"))
        if fates.get(value) not in ("plain", "committed"):
            findings.append(("aborted read", f"the stage copied {value}, which is {fates.get(value, 'not stored')}"))
    missing = [record.value for partition, records in final.partitions.items() for record in records.values()
               if record.fate in ("plain", "committed") and record.value not in copied
               and (reached is None or record.offset < reached.get(partition, 0))]
    if missing:
        findings.append(("lost write", f"{len(missing)} committed input records never came out of the stage, "
                                       f"e.g. {missing[0]}"))
    return findings


def _stage_position(bootstrap: str, names: Names, partitions: int) -> dict[int, int]:
    """The stage group's committed offsets (empty if the coordinator cannot say now)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": names.stage_group, "enable.auto.commit": False,
                         **QUIET})
    try:
        committed = consumer.committed([TopicPartition(names.input, p) for p in range(partitions)], timeout=10)
    except Exception:  # the group coordinator is busy: not known now
        return {}
    finally:
        consumer.close()
    return {int(tp.partition): int(tp.offset) for tp in committed}


class Chaos:
    def __init__(self, options: ChaosOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.random = random.Random(options.seed)
        self.work_dir = Path(tempfile.mkdtemp(prefix="oncelog-chaos-"))
        self.cluster: ManagedBrokers | None = None
        self.proxy: ChaosProxy | None = None
        self.faults: Counter[str] = Counter()
        self.names = Names(f"{options.seed}-{random.Random().getrandbits(32):08x}")

    def run(self) -> ChaosResult:
        options = self.options
        try:
            upstream = options.bootstrap
            if upstream is None:
                self.cluster = ManagedBrokers(self.work_dir, options.brokers, options.storage)
                upstream = self.cluster.start()
                self.say(f"chaos: {options.brokers} broker(s) started in {self.work_dir}")
            self.proxy = ChaosProxy(upstream)
            bootstrap = self.proxy.start()
            self._create_topics(upstream)
            workload = Workload(bootstrap, self.names, options.partitions, options.seed)
            workload.start()
            self._inject(workload)
            return self._settle_and_check(workload, upstream)
        finally:
            if self.proxy is not None:
                self.proxy.stop()
            if self.cluster is not None:
                self.cluster.stop()

    def _create_topics(self, bootstrap: str) -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
        topics = (self.names.input, self.names.output)
        futures = admin.create_topics([NewTopic(topic, self.options.partitions, 1) for topic in topics])
        for topic, future in futures.items():
            try:
                future.result(30)
            except Exception as error:
                raise RuntimeError(f"cannot create topic {topic}: {error}") from error
        self.say(f"chaos: topics {', '.join(topics)}")

    def _inject(self, workload: Workload) -> None:
        options = self.options
        kinds = [kind for kind in options.faults if kind == "proxy" or self.cluster is not None]
        started = time.monotonic()
        next_report = started + 5
        while (now := time.monotonic()) < started + options.duration_s:
            time.sleep(min(self.random.uniform(0.5, 3.0), max(0.0, started + options.duration_s - now)))
            if kinds and time.monotonic() < started + options.duration_s:
                self._one_fault(self.random.choice(kinds))
            if time.monotonic() >= next_report:
                next_report += 5
                self.say(f"chaos: {time.monotonic() - started:.0f}/{options.duration_s:.0f} s, "
                         f"{sum(self.faults.values())} faults, {self._counts(workload)}")

    def _one_fault(self, kind: str) -> None:
        rng = self.random
        if kind == "proxy":
            assert self.proxy is not None
            what = rng.choice(("sever", "delay", "blackhole"))
            if what == "sever":
                self.proxy.sever()
            elif what == "delay":
                self.proxy.delay(rng.randint(20, 800), rng.uniform(0.5, 3.0))
            else:
                self.proxy.blackhole(rng.uniform(0.5, 4.0))
            self.faults[f"proxy {what}"] += 1
            return
        assert self.cluster is not None
        index = rng.randrange(len(self.cluster.brokers))
        if kind == "kill":
            self.cluster.kill(index)
            time.sleep(rng.uniform(0.2, 2.0))
            self.cluster.restart(index)
        else:
            self.cluster.pause(index)
            time.sleep(rng.uniform(0.5, 4.0))
            self.cluster.resume(index)
        self.faults[kind] += 1

    def _counts(self, workload: Workload) -> str:
        history = workload.recorder.history
        with workload.recorder.lock:
            acknowledged = sum(send.outcome == "ok" for send in history.sends)
            committed = sum(t.outcome == "committed" for t in history.transactions)
            polled = sum(len(polls) for polls in history.polls.values())
        return f"{acknowledged} sends acknowledged, {committed} transactions committed, {polled} records polled"

    def _settle_and_check(self, workload: Workload, upstream: str) -> ChaosResult:
        options = self.options
        self.say("chaos: faults stop; settling")
        if self.cluster is not None:
            self.cluster.heal()
        workload.stop_producing(SETTLE_LIMIT_S)
        # Transactions left open (a producer that gave up) end by their timeout.
        deadline = time.monotonic() + TRANSACTION_TIMEOUT_MS / 1000 + (5 if self.cluster else 60)
        while True:
            final, stable = raw_final_log(upstream, self.names.input, options.partitions)
            if stable == final.high_watermarks or time.monotonic() > deadline:
                break
            time.sleep(2)
        ends = {reader: dict(final.high_watermarks) for reader in ("poller-rc", "poller-ru", "consumer-rc")}
        # The stage commits the offset after the last record it copied: a marker after it is never its.
        due = {partition: 1 + max((offset for offset, record in records.items()
                                    if record.fate in ("plain", "committed")), default=-1)
               for partition, records in final.partitions.items()}
        limit = time.monotonic() + SETTLE_LIMIT_S
        while True:
            reached = _stage_position(upstream, self.names, options.partitions)
            done = all(reached.get(p, 0) >= end for p, end in due.items())
            if done or time.monotonic() > limit:
                break
            time.sleep(1)
        workload.finish(ends, max(5.0, limit - time.monotonic()))
        history = workload.recorder.history
        if not done:
            history.stuck["consumer stage"] = (f"its committed offsets {reached} did not reach {due} within "
                                               f"{SETTLE_LIMIT_S:.0f} s")
        output, _stable = raw_final_log(upstream, self.names.output, options.partitions)
        findings = check(history, final) + _stage_findings(output, final, None if done else reached)
        findings = list(dict.fromkeys(findings))
        if self.proxy is not None and self.proxy.counts["not rewritten"]:
            findings.append(("proxy bypass", f"{self.proxy.counts['not rewritten']} broker-address responses could "
                                             "not be rewritten: clients may have gone around the faults"))
        stats: dict[str, Any] = {
            "faults": dict(self.faults),
            "proxy": dict(self.proxy.counts) if self.proxy else {},
            "sends acknowledged": sum(send.outcome == "ok" for send in history.sends),
            "sends unknown": sum(send.outcome == "unknown" for send in history.sends),
            "transactions committed": sum(t.outcome == "committed" for t in history.transactions),
            "transactions aborted": sum(t.outcome == "aborted" for t in history.transactions),
            "transactions unknown": sum(t.outcome == "unknown" for t in history.transactions),
            "records polled": sum(len(polls) for polls in history.polls.values()),
            "records stored": sum(len(records) for records in final.partitions.values()),
            "stage starts": workload.stage_starts,
            "stage hangs": workload.stage_hangs,
        }
        result = ChaosResult(findings, stats)
        if options.json_path is not None:
            self._write_json(options.json_path, workload, result)
        return result

    def _write_json(self, path: Path, workload: Workload, result: ChaosResult) -> None:
        history = workload.recorder.history
        document = {
            "options": {"bootstrap": self.options.bootstrap, "duration_s": self.options.duration_s,
                        "seed": self.options.seed, "faults": list(self.options.faults),
                        "brokers": self.options.brokers, "partitions": self.options.partitions},
            "stats": result.stats,
            "findings": [{"class": kind, "evidence": evidence} for kind, evidence in result.findings],
            "sends": [{"producer": s.producer, "partition": s.partition, "value": s.values[0],
                       "outcome": s.outcome, "offset": s.offset,
                       "transaction": s.transaction.name if s.transaction else None} for s in history.sends],
            "transactions": [{"name": t.name, "outcome": t.outcome} for t in history.transactions],
            "polls": {reader: reads for reader, reads in {**history.polls, **history.group_polls}.items()},
            "events": workload.recorder.events,
        }
        path.write_text(json.dumps(document, indent=1))
