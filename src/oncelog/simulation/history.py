"""What the simulated clients saw, and the check of it against the log the broker ends with.

Theory of operation: clients record every send with its outcome (ok with its offset, failed, or
unknown: no answer, so it may or may not be in the log), every transaction with how its EndTxn ended,
and every record a poller was handed. At the end the simulation reads each partition whole
(`FinalLog`: values, producer ids and the commit/abort markers that decide each transactional batch)
and `check` names what is wrong, one finding per problem, by anomaly class:

- lost write: an acknowledged record is not at its acknowledged offset (or a committed transaction's
  record is not committed);
- duplicate: one sent value stored at two offsets;
- aborted read: a read_committed poller was handed a record whose transaction aborted;
- inconsistent offset: a poller saw one value at an offset and the final log has another there;
- non-monotonic poll: a poller was handed offsets out of order;
- poll skip: a poller reading a partition from its start went past a record it should have been handed;
- torn transaction: one transaction's records committed on one partition and aborted on another;
- hanging transaction: a transaction still undecided after every timeout passed;
- wrong committed offset: a group's committed offset came from an aborted transaction, or is not the
  last committed one;
- stuck consumer: a poller could not read to the end of a partition once the faults stopped, or the
  consumer group did not commit the end of every partition;
- stuck producer: a producer could not finish its work once the faults stopped.

And for the consumer group (`group_member`):
- double assignment: two members own one partition in one generation;
- wrong committed offset, also: a commit from a generation the group had left behind was accepted
  (fencing failed), or an acknowledged commit was later read back lower (it was lost);
- poll skip, also: the group committed past records no member was handed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from oncelog.protocol.records import CONTROL_COMMIT, iter_batches, iter_records, read_marker


@dataclass
class Send:
    producer: str
    partition: int
    values: list[str]
    transaction: Transaction | None = None
    outcome: str = "pending"
    """"ok", "failed" (definitely not written) or "unknown"."""
    offset: int = -1


@dataclass
class Transaction:
    name: str
    """producer name and its transaction number: "tx1.7"."""
    producer_id: int
    producer_epoch: int
    sends: list[Send] = field(default_factory=list)
    group: str | None = None
    committed_offset: int = -1
    """The offset this transaction commits for its group (TxnOffsetCommit), if any."""
    outcome: str = "pending"
    """"committed", "aborted" (EndTxn answered) or "unknown"."""


@dataclass(frozen=True)
class Assignment:
    """A SyncGroup answer: `member` (as `member_id`) owns `partitions` in `generation`."""

    member: str
    member_id: str
    generation: int
    partitions: tuple[int, ...]
    received_ms: int


@dataclass
class GroupCommit:
    member: str
    member_id: str
    generation: int
    offsets: dict[int, int]
    """partition -> committed offset."""
    sent_ms: int
    outcome: str = "pending"
    """"ok", "failed" (an error code) or "unknown" (no answer)."""
    answered_ms: int = -1


@dataclass
class StoredRecord:
    offset: int
    value: str
    producer_id: int
    transactional: bool
    fate: str = "plain"
    """"plain", "committed", "aborted" or "open" (no marker yet)."""


@dataclass
class FinalLog:
    partitions: dict[int, dict[int, StoredRecord]] = field(default_factory=dict)
    """partition -> offset -> record (control batches left out)."""
    group_offsets: dict[str, int] = field(default_factory=dict)
    """group -> committed offset of partition 0 (-1: none)."""
    high_watermarks: dict[int, int] = field(default_factory=dict)
    consumer_group_offsets: dict[int, int] = field(default_factory=dict)
    """partition -> the consumer group's committed offset (-1: none); empty if no group ran."""


@dataclass
class History:
    sends: list[Send] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    polls: dict[str, list[tuple[int, int, str]]] = field(default_factory=lambda: defaultdict(list))
    """poller -> every (partition, offset, value) it was handed, in order (pollers read every partition
    from its start, so order and skips are checked too)."""
    group_polls: dict[str, list[tuple[int, int, str]]] = field(default_factory=lambda: defaultdict(list))
    """group member -> what it was handed (a rebalance may rewind it: only the data is checked)."""
    read_committed: set[str] = field(default_factory=set)
    """The pollers and group members that read with isolation_level read_committed."""
    group_members: set[str] = field(default_factory=set)
    positions: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    """poller -> partition -> where it got to."""
    stuck: dict[str, str] = field(default_factory=dict)
    """client -> what it was doing when it had to be given up on, after the faults stopped."""
    assignments: list[Assignment] = field(default_factory=list)
    group_commits: list[GroupCommit] = field(default_factory=list)
    offset_fetches: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(member, when it was sent, partition, committed offset it answered)."""

    def send(self, producer: str, partition: int, values: list[str], transaction: Transaction | None = None) -> Send:
        send = Send(producer, partition, values, transaction)
        self.sends.append(send)
        if transaction is not None:
            transaction.sends.append(send)
        return send

    def begin(self, name: str, producer_id: int, producer_epoch: int) -> Transaction:
        transaction = Transaction(name, producer_id, producer_epoch)
        self.transactions.append(transaction)
        return transaction


def stored_records(records: bytes) -> dict[int, StoredRecord]:
    """offset -> record of whole record batches (control batches left out), each transactional record's
    fate decided by the next COMMIT or ABORT marker of its producer."""
    stored: dict[int, StoredRecord] = {}
    undecided: dict[int, list[StoredRecord]] = {}
    for position, header in iter_batches(records):
        if header.is_control:
            marker = read_marker(records, position)
            fate = "committed" if marker is not None and marker[0] == CONTROL_COMMIT else "aborted"
            for waiting in undecided.pop(header.producer_id, []):
                waiting.fate = fate
            continue
        for record in iter_records(records, position):
            item = StoredRecord(record.offset, (record.value or b"").decode(), header.producer_id,
                                header.is_transactional, "open" if header.is_transactional else "plain")
            stored[record.offset] = item
            if header.is_transactional:
                undecided.setdefault(header.producer_id, []).append(item)
    return stored


def check(history: History, final: FinalLog) -> list[tuple[str, str]]:
    """(anomaly class, evidence) for everything wrong; empty if the history is consistent."""
    findings: list[tuple[str, str]] = []
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for partition, records in final.partitions.items():
        for offset, record in records.items():
            where[record.value].append((partition, offset))
    for value, places in where.items():
        if len(places) > 1:
            findings.append(("duplicate", f"{value} stored at {places}"))

    sent = {value for send in history.sends for value in send.values}
    for value, places in where.items():
        if value not in sent:
            findings.append(("inconsistent offset", f"{value} stored at {places} was never sent"))
    for send in history.sends:
        if send.outcome == "failed":  # the client was told it is not stored: a retry would duplicate it
            findings += [("duplicate", f"{value} was answered as failed yet is stored at {where[value]}")
                         for value in send.values if value in where]
        if send.outcome != "ok":
            continue
        transaction = send.transaction
        for index, value in enumerate(send.values):
            expected = (send.partition, send.offset + index)
            found = final.partitions.get(send.partition, {}).get(send.offset + index)
            if found is None or found.value != value:
                findings.append(("lost write", f"{value} acknowledged at {expected}, stored at {where.get(value)}"))
            elif transaction is not None and transaction.outcome == "committed" and found.fate != "committed":
                findings.append(("lost write", f"{value} of committed {transaction.name} is {found.fate}"))
            elif transaction is not None and transaction.outcome == "aborted" and found.fate != "aborted":
                findings.append(("aborted read", f"{value} of aborted {transaction.name} is {found.fate}"))

    for transaction in history.transactions:
        # Every stored record of the transaction, acknowledged or not, decides whether it is torn.
        fates = {final.partitions[partition][offset].fate for send in transaction.sends for value in send.values
                 for partition, offset in where.get(value, [])}
        if {"committed", "aborted"} <= fates:
            findings.append(("torn transaction", f"{transaction.name}: records both committed and aborted"))
        if "open" in fates:
            findings.append(("hanging transaction", f"{transaction.name} is still open"))
    open_values = [r.value for records in final.partitions.values() for r in records.values() if r.fate == "open"]
    if open_values:
        findings.append(("hanging transaction", f"{len(open_values)} records still undecided, e.g. {open_values[0]}"))

    findings += [("stuck producer" if not name.startswith("consumer") else "stuck consumer", f"{name}: {what}")
                 for name, what in history.stuck.items()]
    findings += _check_polls(history, final)
    findings += _check_group_offsets(history, final)
    findings += _check_consumer_group(history, final)
    return findings


def _visible(final: FinalLog, read_committed: bool) -> dict[int, list[int]]:
    """partition -> sorted offsets of the records a reader of that isolation level is handed."""
    return {partition: sorted(offset for offset, record in records.items()
                              if not read_committed or record.fate in ("plain", "committed"))
            for partition, records in final.partitions.items()}


def _check_polls(history: History, final: FinalLog) -> list[tuple[str, str]]:
    findings = []
    visible = {True: _visible(final, True), False: _visible(final, False)}
    for member, reads in history.group_polls.items():
        for partition, offset, value in reads:
            findings += _check_read(history, final, member, partition, offset, value)
    for poller, reads in history.polls.items():
        offsets = visible[poller in history.read_committed]
        last: dict[int, int] = {}
        for partition, offset, value in reads:
            findings += _check_read(history, final, poller, partition, offset, value)
            previous = last.get(partition, -1)
            if offset <= previous:
                findings.append(("non-monotonic poll", f"{poller} got {partition}@{offset} after "
                                                        f"{partition}@{previous}"))
            else:
                between = offsets.get(partition, [])
                skipped = between[bisect_right(between, previous):bisect_left(between, offset)]
                if skipped:
                    findings.append(("poll skip", f"{poller} got {partition}@{offset} after {partition}@{previous}, "
                                                  f"skipping {len(skipped)} records from {partition}@{skipped[0]}"))
            last[partition] = offset
        for partition, position in history.positions.get(poller, {}).items():
            between = offsets.get(partition, [])
            furthest = max((offset for p, offset, _value in reads if p == partition), default=-1)
            skipped = between[bisect_right(between, furthest):bisect_left(between, position)]
            if skipped:
                findings.append(("poll skip", f"{poller} got to {partition}@{position} without {len(skipped)} "
                                              f"records from {partition}@{skipped[0]}"))
    # Every reader must reach the end, including one that never got a record.
    for reader in sorted((set(history.polls) | set(history.positions) | history.read_committed)
                         - history.group_members):
        for partition, end in final.high_watermarks.items():
            position = history.positions.get(reader, {}).get(partition, 0)
            if position < end:
                findings.append(("stuck consumer", f"{reader} stopped at {partition}@{position}, the log ends at "
                                                    f"{end}"))
    return findings


def _check_read(history: History, final: FinalLog, reader: str, partition: int, offset: int,
                value: str) -> list[tuple[str, str]]:
    record = final.partitions.get(partition, {}).get(offset)
    if record is None or record.value != value:
        stored = record.value if record else "nothing"
        return [("inconsistent offset", f"{reader} read {value} at {partition}@{offset}, the log has {stored}")]
    if reader in history.read_committed and record.fate not in ("plain", "committed"):
        return [("aborted read", f"{reader} (read_committed) read {value} at {partition}@{offset}, which is "
                                 f"{record.fate}")]
    return []


def _check_group_offsets(history: History, final: FinalLog) -> list[tuple[str, str]]:
    findings = []
    by_group: dict[str, list[Transaction]] = defaultdict(list)
    for transaction in history.transactions:
        if transaction.group is not None:
            by_group[transaction.group].append(transaction)
    for group, transactions in by_group.items():
        committed = final.group_offsets.get(group, -1)
        fates = {t.committed_offset: _fate(t, final) for t in transactions}
        if committed >= 0 and fates.get(committed) == "aborted":
            findings.append(("wrong committed offset", f"{group} has {committed}, from an aborted transaction"))
        decided = [t.committed_offset for t in transactions if fates[t.committed_offset] == "committed"]
        if decided and committed != decided[-1]:
            findings.append(("wrong committed offset", f"{group} has {committed}, the last committed transaction "
                                                       f"committed {decided[-1]}"))
    return findings


def _fate(transaction: Transaction, final: FinalLog) -> str:
    """How the log decided a transaction: by its stored records' markers, else by what EndTxn said."""
    for send in transaction.sends:
        if send.outcome == "ok":
            record = final.partitions.get(send.partition, {}).get(send.offset)
            if record is not None:
                return record.fate
    return transaction.outcome


def _check_consumer_group(history: History, final: FinalLog) -> list[tuple[str, str]]:
    findings = []
    plans: dict[int, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for assignment in history.assignments:
        plan = plans[assignment.generation]
        earlier = plan.setdefault(assignment.member_id, assignment.partitions)
        if earlier != assignment.partitions:
            findings.append(("double assignment", f"generation {assignment.generation}: {assignment.member} was "
                                                  f"assigned {list(earlier)}, then {list(assignment.partitions)}"))
    for generation, plan in sorted(plans.items()):
        owners: dict[int, list[str]] = defaultdict(list)
        for member_id, partitions in plan.items():
            for partition in partitions:
                owners[partition].append(member_id)
        findings += [("double assignment", f"generation {generation}: partition {partition} assigned to {ids}")
                     for partition, ids in sorted(owners.items()) if len(ids) > 1]

    acknowledged = [commit for commit in history.group_commits if commit.outcome == "ok"]
    for commit in acknowledged:
        # A generation once synced is stored durably: the coordinator never goes back below it.
        formed = max((a.generation for a in history.assignments if a.received_ms <= commit.sent_ms), default=-1)
        if commit.generation < formed:
            findings.append(("wrong committed offset", f"{commit.member} committed {commit.offsets} with generation "
                                                       f"{commit.generation} at {commit.sent_ms} ms, after generation "
                                                       f"{formed} formed: the zombie was not fenced"))
    # Each owner commits from where the last one's commits left it, so acknowledged commits of a
    # partition only grow: a later read of a lower offset lost one.
    for member, sent_ms, partition, offset in history.offset_fetches:
        before = max((c.offsets.get(partition, 0) for c in acknowledged if 0 <= c.answered_ms <= sent_ms), default=0)
        if max(offset, 0) < before:
            findings.append(("wrong committed offset", f"{member} read {partition}@{offset} as committed at "
                                                       f"{sent_ms} ms, after a commit of {partition}@{before} was "
                                                       "acknowledged"))
    visible = _visible(final, True)
    handed = {(partition, offset) for reads in history.group_polls.values() for partition, offset, _value in reads}
    for partition, committed in sorted(final.consumer_group_offsets.items()):
        highest = max((c.offsets.get(partition, 0) for c in acknowledged), default=0)
        if max(committed, 0) < highest:
            findings.append(("wrong committed offset", f"the group ends committed at {partition}@{committed}, a commit "
                                                       f"of {partition}@{highest} was acknowledged"))
        missed = [offset for offset in visible.get(partition, []) if offset < committed
                  and (partition, offset) not in handed]
        if missed:
            findings.append(("poll skip", f"the group committed {partition}@{committed}, no member was handed "
                                          f"{len(missed)} records from {partition}@{missed[0]}"))
        end = final.high_watermarks.get(partition, 0)
        if max(committed, 0) < end:
            findings.append(("stuck consumer", f"the group committed {partition}@{committed}, the log ends at {end}"))
    return findings
