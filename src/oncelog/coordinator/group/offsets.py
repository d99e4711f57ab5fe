"""Committed offsets: state rebuilt only by replaying `__consumer_offsets` records.

Theory of operation (Kafka's `OffsetMetadataManager`): every change to committed offsets is a record
(OffsetCommitKey → OffsetCommitValue, or a tombstone). The coordinator appends the records, then calls
`replay` on them; `replay` is the only code that changes `OffsetStore`, and startup recovery is the same
`replay` over the whole partition. So what a restarted broker serves is exactly what the log says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .records import GroupKey, OffsetKey, OffsetValue, parse_key, parse_offset_value

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class OffsetStore:
    committed: dict[str, dict[TopicPartition, OffsetValue]] = field(default_factory=dict)
    record_offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)
    """Where in `__consumer_offsets` each committed offset was written (decides mixed commits)."""
    pending: dict[int, dict[str, dict[TopicPartition, tuple[OffsetValue, int]]]] = field(default_factory=dict)
    """Transactional offsets not yet committed: producer id → group → partition → (value, record offset)."""

    def get(self, group_id: str, topic: str, partition: int) -> OffsetValue | None:
        return self.committed.get(group_id, {}).get((topic, partition))

    def of_group(self, group_id: str) -> dict[TopicPartition, OffsetValue]:
        return dict(self.committed.get(group_id, {}))

    def has_offsets(self, group_id: str) -> bool:
        return bool(self.committed.get(group_id))

    def groups(self) -> list[str]:
        return list(self.committed)

    def replay_offset(self, key: OffsetKey, value: bytes | None, record_offset: int) -> None:
        tp = (key.topic, key.partition)
        if value is None:
            group = self.committed.get(key.group_id, {})
            group.pop(tp, None)
            self.record_offsets.pop((key.group_id, tp), None)
            if not group:
                self.committed.pop(key.group_id, None)
        else:
            self._set(key.group_id, tp, parse_offset_value(value), record_offset)

    def _set(self, group_id: str, tp: TopicPartition, value: OffsetValue, record_offset: int) -> None:
        self.committed.setdefault(group_id, {})[tp] = value
        self.record_offsets[(group_id, tp)] = record_offset

    # --- transactional offsets (Kafka's `pendingTransactionalOffsets`) ---------------------------------

    def replay_transactional(self, producer_id: int, key: OffsetKey, value: bytes | None, record_offset: int) -> None:
        groups = self.pending.setdefault(producer_id, {})
        pending = groups.setdefault(key.group_id, {})
        if value is None:
            pending.pop((key.topic, key.partition), None)
        else:
            pending[(key.topic, key.partition)] = (parse_offset_value(value), record_offset)

    def complete_transaction(self, producer_id: int, commit: bool, groups: list[str]) -> None:
        """The marker for `producer_id` landed on the partition of `groups`: materialise its pending
        offsets there (COMMIT) or drop them (ABORT). A pending offset replaces the committed one only if
        it was written later (`replayEndTransactionMarker` keeps the most recent of mixed commits)."""
        by_group = self.pending.get(producer_id, {})
        for group_id in groups:
            pending = by_group.pop(group_id, {})
            if not commit:
                continue
            for tp, (value, record_offset) in pending.items():
                if record_offset > self.record_offsets.get((group_id, tp), -1):
                    self._set(group_id, tp, value, record_offset)
        if not by_group:
            self.pending.pop(producer_id, None)

    def forget(self, unloaded: Callable[[str], bool]) -> None:
        """Drop everything of the groups `unloaded` says (their partition moved to another coordinator)."""
        for group_id in [g for g in self.committed if unloaded(g)]:
            del self.committed[group_id]
        for key in [k for k in self.record_offsets if unloaded(k[0])]:
            del self.record_offsets[key]
        for producer_id, by_group in list(self.pending.items()):
            for group_id in [g for g in by_group if unloaded(g)]:
                del by_group[group_id]
            if not by_group:
                del self.pending[producer_id]

    def pending_groups(self, producer_id: int) -> list[str]:
        return list(self.pending.get(producer_id, {}))

    def has_pending(self, group_id: str, tp: TopicPartition) -> bool:
        return any(tp in groups.get(group_id, {}) for groups in self.pending.values())

    def has_pending_group(self, group_id: str) -> bool:
        return any(groups.get(group_id) for groups in self.pending.values())

    def remove_group(self, group_id: str) -> None:
        for tp in self.committed.pop(group_id, {}):
            self.record_offsets.pop((group_id, tp), None)


def split_record(key: bytes) -> OffsetKey | GroupKey:
    return parse_key(key)
