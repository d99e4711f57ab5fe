"""The `oncelog` command as a user runs it: serve, startup time, clean SIGTERM, topics subcommands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from oncelog.client import KafkaClient
from oncelog.errors import ErrorCode
from oncelog.testing import BrokerProcess


def oncelog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oncelog", *args], capture_output=True, text=True, timeout=60)


def test_serve_starts_fast_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "oncelog", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.monotonic() - started
    assert line.startswith("oncelog listening on 127.0.0.1:"), line
    port = int(line.rsplit(":", 1)[1])
    assert port > 0
    print(f"time to listening line including interpreter start: {elapsed:.3f}s")
    with KafkaClient(f"127.0.0.1:{port}") as client:
        assert client.request(18, 3, {"client_software_name": "t", "client_software_version": "1"}).error_code == 0
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert (tmp_path / "d" / ".oncelog_cleanshutdown").exists()


def test_topics_commands(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d") as broker:
        bootstrap = broker.bootstrap
        created = oncelog("topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000",
                          "--bootstrap", bootstrap)
        assert created.returncode == 0, created.stderr
        assert "created topic orders with 3 partition(s)" in created.stdout
        listed = oncelog("topics", "list", "--bootstrap", bootstrap)
        assert listed.returncode == 0 and "orders" in listed.stdout and "TOPIC" in listed.stdout
        described = oncelog("topics", "describe", "orders", "--bootstrap", bootstrap)
        assert described.returncode == 0, described.stderr
        assert "retention.ms=60000" in described.stdout and "HIGH WATERMARK" in described.stdout
        again = oncelog("topics", "create", "orders", "--bootstrap", bootstrap)
        assert again.returncode == 1 and "TOPIC_ALREADY_EXISTS" in again.stderr
        grown = oncelog("topics", "alter", "orders", "--partitions", "5", "--bootstrap", bootstrap)
        assert grown.returncode == 0 and "topic orders now has 5 partitions" in grown.stdout, grown.stderr
        shrink = oncelog("topics", "alter", "orders", "--partitions", "2", "--bootstrap", bootstrap)
        assert shrink.returncode == 1 and "INVALID_PARTITIONS" in shrink.stderr
        missing = oncelog("topics", "alter", "nosuch", "--partitions", "2", "--bootstrap", bootstrap)
        assert missing.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr
        assert "partitions: 5" in oncelog("topics", "describe", "orders", "--bootstrap", bootstrap).stdout
        configured = oncelog("topics", "alter", "orders", "--delete-config", "retention.ms", "--config",
                             "segment.ms=90000", "--bootstrap", bootstrap)
        assert configured.returncode == 0 and "configs changed" in configured.stdout, configured.stderr
        described = oncelog("topics", "describe", "orders", "--bootstrap", bootstrap).stdout
        assert "segment.ms=90000" in described and "retention.ms" not in described
        bad = oncelog("topics", "alter", "orders", "--config", "segment.ms=0", "--bootstrap", bootstrap)
        assert bad.returncode == 1 and "INVALID_CONFIG" in bad.stderr
        twice = oncelog("topics", "alter", "orders", "--config", "segment.ms=1000", "--delete-config", "segment.ms",
                        "--bootstrap", bootstrap)
        assert twice.returncode == 1 and "INVALID_REQUEST" in twice.stderr
        purged = oncelog("topics", "delete-records", "orders", "--before", "-1", "--bootstrap", bootstrap)
        assert purged.returncode == 0 and "orders-0 now starts at offset 0" in purged.stdout, purged.stderr
        too_far = oncelog("topics", "delete-records", "orders", "--before", "5", "--bootstrap", bootstrap)
        assert too_far.returncode == 1 and "OFFSET_OUT_OF_RANGE" in too_far.stderr
        deleted = oncelog("topics", "delete", "orders", "--bootstrap", bootstrap)
        assert deleted.returncode == 0 and "deleted topic orders" in deleted.stdout
        assert "orders" not in oncelog("topics", "list", "--bootstrap", bootstrap).stdout


def test_unreachable_broker_and_bad_config_say_what_to_do(tmp_path: Path) -> None:
    unreachable = oncelog("topics", "list", "--bootstrap", "127.0.0.1:1")
    assert unreachable.returncode == 1 and "cannot connect" in unreachable.stderr
    bad = oncelog("serve", "--port", "0", "--data-dir", str(tmp_path), "--override", "no.such.property=1")
    assert bad.returncode == 2 and "unknown broker property 'no.such.property'" in bad.stderr


def test_auto_create_disabled_gives_unknown_topic(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d", {"auto.create.topics.enable": "false"}) as broker, \
            KafkaClient(broker.bootstrap) as client:
        response = client.request(3, 9, {"topics": [{"name": "missing"}], "allow_auto_topic_creation": True,
                                         "include_cluster_authorized_operations": False,
                                         "include_topic_authorized_operations": False})
        assert response.topics[0].error_code == ErrorCode.unknown_topic_or_partition


def test_second_broker_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d"):
        second = oncelog("serve", "--port", "0", "--data-dir", str(tmp_path / "d"))
        assert second.returncode == 1 and "in use by another oncelog process" in second.stderr


def test_help_reads_well() -> None:
    result = oncelog("--help")
    assert result.returncode == 0 and "serve" in result.stdout and "topics" in result.stdout
    serve_help = oncelog("serve", "--help")
    assert "--override" in serve_help.stdout and "log.retention.ms" in serve_help.stdout
    assert os.linesep in serve_help.stdout


def test_groups_and_producers_commands(tmp_path: Path) -> None:
    """`groups list/describe/reset-offsets` and `producers describe` against a real group and producer."""
    from confluent_kafka import Consumer, Producer

    with BrokerProcess(tmp_path / "d", {"group.initial.rebalance.delay.ms": "0"}) as broker:
        bootstrap = broker.bootstrap
        assert oncelog("topics", "create", "events", "--partitions", "2", "--bootstrap", bootstrap).returncode == 0
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for i in range(40):
            producer.produce("events", value=str(i).encode(), partition=i % 2)
        assert producer.flush(15) == 0
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "billing", "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe(["events"])
        consumed = 0
        deadline = time.monotonic() + 30
        while consumed < 40 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                consumed += 1
        assert consumed == 40
        consumer.commit(asynchronous=False)

        listed = oncelog("groups", "list", "--bootstrap", bootstrap)
        assert listed.returncode == 0 and "billing" in listed.stdout and "Stable" in listed.stdout
        described = oncelog("groups", "describe", "billing", "--bootstrap", bootstrap)
        assert described.returncode == 0, described.stderr
        assert "events:0,1" in described.stdout and "LAG" in described.stdout
        refused = oncelog("groups", "reset-offsets", "billing", "--topic", "events", "--to-earliest",
                          "--bootstrap", bootstrap)
        assert refused.returncode == 1 and "empty group" in refused.stderr
        consumer.close()
        plan = oncelog("groups", "reset-offsets", "billing", "--topic", "events", "--to-offset", "3",
                       "--bootstrap-server", bootstrap)
        assert plan.returncode == 0 and "nothing changed: add --execute" in plan.stdout, plan.stderr
        unchanged = oncelog("groups", "describe", "billing", "--bootstrap", bootstrap).stdout
        assert [line.split()[2] for line in unchanged.splitlines() if line.startswith("events")] != ["3", "3"]
        reset = oncelog("groups", "reset-offsets", "billing", "--topic", "events", "--to-offset", "3",
                        "--bootstrap", bootstrap, "--execute")
        assert reset.returncode == 0 and "nothing changed" not in reset.stdout, reset.stderr
        after = oncelog("groups", "describe", "billing", "--bootstrap", bootstrap).stdout
        assert [line.split()[2] for line in after.splitlines() if line.startswith("events")] == ["3", "3"]

        producers = oncelog("producers", "describe", "events", "--bootstrap", bootstrap)
        assert producers.returncode == 0, producers.stderr
        rows = [line.split() for line in producers.stdout.splitlines()[2:]]
        assert {row[0] for row in rows} == {"0", "1"} and {row[3] for row in rows} == {"19"}


def test_transactions_commands(tmp_path: Path) -> None:
    """`transactions list/describe/find-hanging/abort` on a real open transaction."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    with BrokerProcess(tmp_path / "d") as broker:
        bootstrap = broker.bootstrap
        assert oncelog("topics", "create", "ledger", "--bootstrap", bootstrap).returncode == 0
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ledger-writer"})
        producer.init_transactions(15)
        producer.begin_transaction()
        producer.produce("ledger", value=b"pending", partition=0)
        assert producer.flush(15) == 0

        listed = oncelog("transactions", "list", "--state", "Ongoing", "--bootstrap", bootstrap)
        assert listed.returncode == 0 and "ledger-writer" in listed.stdout and "Ongoing" in listed.stdout
        bad_state = oncelog("transactions", "list", "--state", "Sleeping", "--bootstrap", bootstrap)
        assert bad_state.returncode == 1 and "unknown state" in bad_state.stderr
        described = oncelog("transactions", "describe", "ledger-writer", "--bootstrap", bootstrap)
        assert described.returncode == 0 and "ledger-0" in described.stdout
        hanging = oncelog("transactions", "find-hanging", "--max-transaction-timeout-ms", "0",
                          "--bootstrap", bootstrap)
        assert hanging.returncode == 0 and "no hanging transactions" in hanging.stdout, hanging.stdout

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit", "enable.auto.commit": False,
                             "isolation.level": "read_committed"})
        assert consumer.get_watermark_offsets(TopicPartition("ledger", 0), timeout=10) == (0, 0)
        aborted = oncelog("transactions", "abort", "--topic", "ledger", "--partition", "0", "--start-offset", "0",
                          "--bootstrap", bootstrap)
        assert aborted.returncode == 0, aborted.stderr
        assert consumer.get_watermark_offsets(TopicPartition("ledger", 0), timeout=10) == (0, 2), \
            "the ABORT marker moves the last stable offset past the transaction"
        consumer.close()
        missing = oncelog("transactions", "abort", "--topic", "ledger", "--partition", "0", "--start-offset", "0",
                          "--bootstrap", bootstrap)
        assert missing.returncode == 1 and "no open transaction" in missing.stderr


def test_cli_errors_say_what_is_wrong_and_exit_non_zero(tmp_path: Path) -> None:
    """Found: `transactions describe` crashed on an Empty or unknown id, `topics describe nosuch` exited 0,
    and a silent peer ended in a raw TimeoutError."""
    import socket

    from confluent_kafka import Producer

    with BrokerProcess(tmp_path / "d") as broker:
        bootstrap = broker.bootstrap
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "empty-one"})
        producer.init_transactions(15)  # an Empty transactional id: no transaction, start time -1
        empty = oncelog("transactions", "describe", "empty-one", "--bootstrap", bootstrap)
        assert empty.returncode == 0, empty.stderr
        assert "Empty" in empty.stdout and "empty-one" in empty.stdout
        unknown = oncelog("transactions", "describe", "nobody", "--bootstrap", bootstrap)
        assert unknown.returncode == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        oncelog("topics", "create", "present", "--bootstrap", bootstrap)
        missing = oncelog("topics", "describe", "present", "nosuch", "--bootstrap", bootstrap)
        assert missing.returncode == 1 and "topic nosuch: UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr
        assert "Topic: present" in missing.stdout
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        started = time.monotonic()
        result = oncelog("topics", "list", "--bootstrap", f"127.0.0.1:{silent.getsockname()[1]}")
    finally:
        silent.close()
    assert result.returncode == 1 and "no answer from" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_list_and_describe_commands_speak_json_for_scripts(tmp_path: Path) -> None:
    import json

    from confluent_kafka import Consumer, Producer, TopicPartition

    with BrokerProcess(tmp_path / "d", {"group.initial.rebalance.delay.ms": "0"}) as broker:
        bootstrap = broker.bootstrap

        def as_json(*args: str) -> Any:
            result = oncelog(*args, "--bootstrap-server", bootstrap, "--output", "json")
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        assert {topic["topic"] for topic in as_json("topics", "list") if not topic["internal"]} == set()
        assert oncelog("topics", "create", "audit", "--partitions", "2", "--bootstrap", bootstrap).returncode == 0
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "auditor", "log_level": 0})
        producer.init_transactions(15)
        producer.begin_transaction()
        for index in range(5):
            producer.produce("audit", str(index).encode(), partition=0)
        producer.commit_transaction(15)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "readers", "log_level": 0})
        consumer.commit(offsets=[TopicPartition("audit", 0, 2)], asynchronous=False)
        consumer.close()

        assert [t for t in as_json("topics", "list") if not t["internal"]] == [
            {"topic": "audit", "partitions": 2, "internal": False}]
        [topic] = as_json("topics", "describe", "audit")
        assert topic["topic"] == "audit" and topic["partitions"] == 2
        assert topic["partitions_detail"][0] == {"partition": 0, "log_start": 0, "high_watermark": 6, "records": 6}
        assert as_json("groups", "list") == [{"group": "readers", "state": "Empty", "protocol_type": ""}]
        group = as_json("groups", "describe", "readers")
        assert group["state"] == "Empty" and group["member_list"] == []
        assert group["offsets"] == [{"topic": "audit", "partition": 0, "current_offset": 2, "log_end_offset": 6,
                                     "lag": 4, "owner": None}]
        assert as_json("transactions", "list") == [{"transactional_id": "auditor", "producer_id": 0,
                                                    "state": "CompleteCommit"}]
        [described] = as_json("transactions", "describe", "auditor")
        assert described["state"] == "CompleteCommit" and described["partitions"] is None
        [active] = as_json("producers", "describe", "audit")
        assert active["partition"] == 0 and active["last_sequence"] == 4 and active["current_txn_start_offset"] is None
        plan = as_json("groups", "reset-offsets", "readers", "--topic", "audit", "--to-earliest")
        assert plan == [{"topic": "audit", "partition": 0, "new_offset": 0}, {"topic": "audit", "partition": 1,
                                                                              "new_offset": 0}]
        missing = oncelog("groups", "describe", "nobody", "--bootstrap", bootstrap, "--output", "json")
        assert missing.returncode == 1 and "group nobody does not exist" in missing.stderr and missing.stdout == ""


def test_json_logs_and_per_request_logging_toggled_by_sigusr1(tmp_path: Path) -> None:
    import json
    import queue
    import threading

    process = subprocess.Popen(
        [sys.executable, "-m", "oncelog", "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
         "--log-format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    stderr = process.stderr
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    try:
        port = int(process.stdout.readline().rsplit(":", 1)[1])

        def ask(client_id: str) -> None:
            with KafkaClient(f"127.0.0.1:{port}", client_id=client_id) as client:
                client.request(18, 3, {"client_software_name": "t", "client_software_version": "1"})

        def logged_until(marker: str) -> list[dict[str, Any]]:
            seen = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    entry = json.loads(lines.get(timeout=0.5))  # every line is one JSON object
                except queue.Empty:
                    continue
                seen.append(entry)
                if marker in entry["message"]:
                    return seen
            raise AssertionError(f"no log line with {marker!r}; saw {seen}")

        ask("before-toggle")
        process.send_signal(signal.SIGUSR1)
        assert logged_until("per-request logging on")[-1]["level"] == "WARNING"
        ask("while-on")
        entry = logged_until("client_id=while-on")[-1]
        assert entry["logger"] == "oncelog.server.connection" and "api_versions v3" in entry["message"]
        assert entry["ts"].endswith("+00:00")
        process.send_signal(signal.SIGUSR1)
        logged_until("per-request logging off")
        ask("after-off")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        rest = logged_until("shutting down")
        assert not any("after-off" in e["message"] for e in rest)
    finally:
        if process.poll() is None:
            process.kill()
