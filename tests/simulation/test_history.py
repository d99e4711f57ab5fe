"""The history checker names each anomaly class, shown on small histories with one planted anomaly each
(the same checker judges the simulation and `oncelog chaos`)."""

from __future__ import annotations

import pytest

from oncelog.simulation.history import FinalLog, History, StoredRecord, check


def _final(partition_records: dict[int, list[tuple[str, str]]], group_offsets: dict[str, int] | None = None
           ) -> FinalLog:
    """partition -> [(value, fate)] stored from offset 0."""
    final = FinalLog(group_offsets=group_offsets or {})
    for partition, records in partition_records.items():
        final.partitions[partition] = {
            offset: StoredRecord(offset, value, 7 if fate != "plain" else -1, fate != "plain", fate)
            for offset, (value, fate) in enumerate(records)}
        final.high_watermarks[partition] = len(records)
    return final


def _consistent() -> tuple[History, FinalLog]:
    """Two plain sends, a committed and an aborted transaction, read by two pollers to the end."""
    history = History()
    for value, offset in (("a", 0), ("b", 1)):
        send = history.send("p", 0, [value])
        send.outcome, send.offset = "ok", offset
    committed = history.begin("t.1", 7, 0)
    send = history.send("t", 0, ["c"], committed)
    send.outcome, send.offset = "ok", 2
    committed.outcome, committed.group, committed.committed_offset = "committed", "g", 1
    aborted = history.begin("t.2", 7, 0)
    send = history.send("t", 0, ["d"], aborted)
    send.outcome, send.offset = "ok", 3
    aborted.outcome, aborted.group, aborted.committed_offset = "aborted", "g", 2
    history.read_committed.add("rc")
    history.polls["rc"] = [(0, 0, "a"), (0, 1, "b"), (0, 2, "c")]
    history.polls["ru"] = [(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (0, 3, "d")]
    history.positions["rc"] = {0: 4}
    history.positions["ru"] = {0: 4}
    final = _final({0: [("a", "plain"), ("b", "plain"), ("c", "committed"), ("d", "aborted")]}, {"g": 1})
    return history, final


def _kinds(history: History, final: FinalLog) -> set[str]:
    return {kind for kind, _evidence in check(history, final)}


def test_a_consistent_history_has_no_findings() -> None:
    assert check(*_consistent()) == []


def test_lost_write() -> None:
    history, final = _consistent()
    del final.partitions[0][1]
    assert "lost write" in _kinds(history, final)


def test_lost_write_of_a_committed_transaction() -> None:
    history, final = _consistent()
    final.partitions[0][2].fate = "aborted"
    assert "lost write" in _kinds(history, final)


def test_duplicate() -> None:
    history, final = _consistent()
    final.partitions[0][4] = StoredRecord(4, "a", -1, False, "plain")
    final.high_watermarks[0] = 5
    history.positions["rc"][0] = history.positions["ru"][0] = 5
    assert "duplicate" in _kinds(history, final)


def test_aborted_read() -> None:
    history, final = _consistent()
    history.polls["rc"].append((0, 3, "d"))
    assert _kinds(history, final) == {"aborted read"}


def test_aborted_read_of_an_acknowledged_abort() -> None:
    history, final = _consistent()
    final.partitions[0][3].fate = "committed"
    assert "aborted read" in _kinds(history, final)


def test_inconsistent_offset() -> None:
    history, final = _consistent()
    history.polls["ru"][1] = (0, 1, "x")
    assert "inconsistent offset" in _kinds(history, final)


def test_non_monotonic_poll() -> None:
    history, final = _consistent()
    history.polls["ru"].append((0, 1, "b"))
    assert _kinds(history, final) == {"non-monotonic poll"}


def test_poll_skip() -> None:
    history, final = _consistent()
    del history.polls["ru"][1]
    assert _kinds(history, final) == {"poll skip"}


def test_read_committed_passing_an_aborted_record_is_no_skip() -> None:
    history, final = _consistent()
    final.partitions[0][4] = StoredRecord(4, "e", -1, False, "plain")
    final.high_watermarks[0] = 5
    send = history.send("p", 0, ["e"])
    send.outcome, send.offset = "ok", 4
    history.polls["rc"].append((0, 4, "e"))
    history.polls["ru"].append((0, 4, "e"))
    history.positions["rc"][0] = history.positions["ru"][0] = 5
    assert check(history, final) == []


def test_torn_transaction() -> None:
    history, final = _consistent()
    transaction = history.transactions[0]
    send = history.send("t", 1, ["c1"], transaction)
    send.outcome, send.offset = "ok", 0
    final.partitions[1] = {0: StoredRecord(0, "c1", 7, True, "aborted")}
    final.high_watermarks[1] = 1
    history.positions["rc"][1] = history.positions["ru"][1] = 1
    assert "torn transaction" in _kinds(history, final)


def test_hanging_transaction() -> None:
    history, final = _consistent()
    final.partitions[0][4] = StoredRecord(4, "e", 7, True, "open")
    assert "hanging transaction" in _kinds(history, final)


@pytest.mark.parametrize("committed", [2, 5])
def test_wrong_committed_offset(committed: int) -> None:
    # 2 came from the aborted transaction; 5 from none: the last committed transaction committed 1.
    history, final = _consistent()
    final.group_offsets["g"] = committed
    assert _kinds(history, final) == {"wrong committed offset"}


def test_stuck_consumer() -> None:
    history, final = _consistent()
    history.positions["rc"][0] = 2
    assert _kinds(history, final) == {"stuck consumer"}


def test_stuck_producer() -> None:
    history, final = _consistent()
    history.stuck["t"] = "EndTxn never answered"
    assert _kinds(history, final) == {"stuck producer"}


def test_a_send_answered_as_failed_must_not_be_stored() -> None:
    history, final = _consistent()
    history.sends[1].outcome = "failed"
    assert "duplicate" in _kinds(history, final)


def test_a_stored_record_nobody_sent_is_inconsistent() -> None:
    history, final = _consistent()
    final.partitions[0][1] = StoredRecord(1, "garbage", -1, False, "plain")
    assert "inconsistent offset" in _kinds(history, final)


def test_poll_skip_at_the_end_of_what_was_read() -> None:
    history, final = _consistent()
    del history.polls["ru"][-1]  # position 4 reached without being handed offset 3
    assert _kinds(history, final) == {"poll skip"}


def test_a_reader_that_never_got_a_record_must_still_reach_the_end() -> None:
    history, final = _consistent()
    history.read_committed.add("silent")
    assert _kinds(history, final) == {"stuck consumer"}


def test_torn_transaction_seen_through_an_unacknowledged_send() -> None:
    history, final = _consistent()
    transaction = history.transactions[0]
    send = history.send("t", 1, ["c1"], transaction)  # its answer was lost: outcome unknown
    send.outcome = "unknown"
    final.partitions[1] = {0: StoredRecord(0, "c1", 7, True, "aborted")}
    final.high_watermarks[1] = 1
    history.positions["rc"][1] = history.positions["ru"][1] = 1
    history.polls["ru"].append((1, 0, "c1"))
    assert _kinds(history, final) == {"torn transaction"}
