"""The history checker names each anomaly class, shown on small histories with one planted anomaly each
(the same checker judges the simulation and `oncelog chaos`)."""

from __future__ import annotations

import pytest

from oncelog.simulation.history import Assignment, FinalLog, GroupCommit, History, StoredRecord, check


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


# --- the consumer group ------------------------------------------------------------------------------

def _with_group() -> tuple[History, FinalLog]:
    """The consistent history plus a group: m1 owns partition 0 in generation 1 and commits 2; after a
    rebalance m2 owns it in generation 2, reads the 2 back, consumes to the end and commits 4."""
    history, final = _consistent()
    history.group_members |= {"m1", "m2"}
    history.read_committed |= {"m1", "m2"}
    history.assignments += [Assignment("m1", "id1", 1, (0,), 100), Assignment("m2", "id2", 2, (0,), 500)]
    history.group_commits += [GroupCommit("m1", "id1", 1, {0: 2}, 200, "ok", 210),
                              GroupCommit("m2", "id2", 2, {0: 4}, 700, "ok", 710)]
    history.offset_fetches += [("m1", 90, 0, -1), ("m2", 510, 0, 2)]
    history.group_polls["m1"] = [(0, 0, "a"), (0, 1, "b")]
    history.group_polls["m2"] = [(0, 2, "c")]
    final.consumer_group_offsets = {0: 4}
    return history, final


def test_a_consistent_group_history_has_no_findings() -> None:
    assert check(*_with_group()) == []


def test_double_assignment_between_two_members() -> None:
    history, final = _with_group()
    history.assignments.append(Assignment("m3", "id3", 2, (0,), 520))
    assert "double assignment" in _kinds(history, final)


def test_double_assignment_of_one_member_with_two_plans() -> None:
    history, final = _with_group()
    history.assignments.append(Assignment("m2", "id2", 2, (1,), 530))
    assert "double assignment" in _kinds(history, final)


def test_a_zombie_commit_that_was_accepted() -> None:
    history, final = _with_group()
    history.group_commits.append(GroupCommit("m1", "id1", 1, {0: 3}, 600, "ok", 610))
    assert "wrong committed offset" in _kinds(history, final)


def test_a_zombie_commit_that_was_refused_is_fine() -> None:
    history, final = _with_group()
    history.group_commits.append(GroupCommit("m1", "id1", 1, {0: 3}, 600, "failed"))
    assert check(history, final) == []


def test_an_acknowledged_commit_read_back_lower_was_lost() -> None:
    history, final = _with_group()
    history.offset_fetches[1] = ("m2", 510, 0, 1)
    history.group_polls["m2"].insert(0, (0, 1, "b"))
    assert "wrong committed offset" in _kinds(history, final)


def test_an_acknowledged_commit_missing_at_the_end_was_lost() -> None:
    history, final = _with_group()
    history.group_commits.append(GroupCommit("m2", "id2", 2, {0: 5}, 800, "ok", 810))
    assert "wrong committed offset" in _kinds(history, final)


def test_the_group_committing_past_a_record_nobody_was_handed_is_a_poll_skip() -> None:
    history, final = _with_group()
    history.group_polls["m1"] = [(0, 0, "a")]
    assert "poll skip" in _kinds(history, final)


def test_a_group_that_did_not_commit_the_end_is_stuck() -> None:
    history, final = _with_group()
    final.consumer_group_offsets = {0: 2}
    history.group_commits.pop()
    assert _kinds(history, final) == {"stuck consumer"}
