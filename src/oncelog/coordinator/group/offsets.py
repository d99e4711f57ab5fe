"""Committed offsets: state rebuilt only by replaying `__consumer_offsets` records.

Theory of operation (Kafka's `OffsetMetadataManager`): every change to committed offsets is a record
(OffsetCommitKey → OffsetCommitValue, or a tombstone). The coordinator appends the records, then calls
`replay` on them; `replay` is the only code that changes `OffsetStore`, and startup recovery is the same
`replay` over the whole partition. So what a restarted broker serves is exactly what the log says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import GroupKey, OffsetKey, OffsetValue, parse_key, parse_offset_value

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class OffsetStore:
    committed: dict[str, dict[TopicPartition, OffsetValue]] = field(default_factory=dict)

    def get(self, group_id: str, topic: str, partition: int) -> OffsetValue | None:
        return self.committed.get(group_id, {}).get((topic, partition))

    def of_group(self, group_id: str) -> dict[TopicPartition, OffsetValue]:
        return dict(self.committed.get(group_id, {}))

    def has_offsets(self, group_id: str) -> bool:
        return bool(self.committed.get(group_id))

    def groups(self) -> list[str]:
        return list(self.committed)

    def replay_offset(self, key: OffsetKey, value: bytes | None) -> None:
        group = self.committed.setdefault(key.group_id, {})
        if value is None:
            group.pop((key.topic, key.partition), None)
            if not group:
                del self.committed[key.group_id]
        else:
            group[(key.topic, key.partition)] = parse_offset_value(value)

    def remove_group(self, group_id: str) -> None:
        self.committed.pop(group_id, None)


def split_record(key: bytes) -> OffsetKey | GroupKey:
    return parse_key(key)
