"""Transaction states and the metadata of one transactional id (Kafka's `TransactionState`,
`TransactionMetadata`).

| state | valid previous states | meaning |
|---|---|---|
| Empty | Empty, CompleteCommit, CompleteAbort | initialised, no open transaction |
| Ongoing | Ongoing, Empty, CompleteCommit, CompleteAbort | partitions added |
| PrepareCommit | Ongoing | commit decided and durable; markers being written |
| PrepareAbort | Ongoing, PrepareEpochFence | abort decided and durable |
| CompleteCommit | PrepareCommit | every COMMIT marker written |
| CompleteAbort | PrepareAbort | every ABORT marker written |
| Dead | Empty, CompleteCommit, CompleteAbort | transactional id expired (tombstone) |
| PrepareEpochFence | Ongoing | in memory only: epoch bumped to fence, turned into PrepareAbort |

Every durable change is two-phase: `prepare(target)` records the wanted state as `pending` (any other
request meanwhile gets CONCURRENT_TRANSACTIONS), the record is appended, and `complete()` applies it only
once the record is durable; `abandon()` drops it if the write failed. An impossible transition is a bug
(assert); a client request that does not fit the state gets an error code, never an assert.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class TransactionState(enum.Enum):
    EMPTY = (0, "Empty")
    ONGOING = (1, "Ongoing")
    PREPARE_COMMIT = (2, "PrepareCommit")
    PREPARE_ABORT = (3, "PrepareAbort")
    COMPLETE_COMMIT = (4, "CompleteCommit")
    COMPLETE_ABORT = (5, "CompleteAbort")
    DEAD = (6, "Dead")
    PREPARE_EPOCH_FENCE = (7, "PrepareEpochFence")

    @property
    def id(self) -> int:
        return self.value[0]

    @property
    def display_name(self) -> str:
        return self.value[1]

    @classmethod
    def from_id(cls, state_id: int) -> TransactionState:
        for state in cls:
            if state.id == state_id:
                return state
        raise ValueError(f"unknown transaction state id {state_id}")

    @classmethod
    def from_name(cls, name: str) -> TransactionState | None:
        for state in cls:
            if state.display_name.lower() == name.lower():
                return state
        return None


S = TransactionState
VALID_PREVIOUS: dict[TransactionState, frozenset[TransactionState]] = {
    S.EMPTY: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.ONGOING: frozenset({S.ONGOING, S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_COMMIT: frozenset({S.ONGOING}),
    S.PREPARE_ABORT: frozenset({S.ONGOING, S.PREPARE_EPOCH_FENCE}),
    S.COMPLETE_COMMIT: frozenset({S.PREPARE_COMMIT}),
    S.COMPLETE_ABORT: frozenset({S.PREPARE_ABORT}),
    S.DEAD: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_EPOCH_FENCE: frozenset({S.ONGOING}),
}

EXPIRABLE = frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT})
PRODUCER_EPOCH_MAX = 32767
EPOCH_EXHAUSTED = PRODUCER_EPOCH_MAX - 1
"""Kafka rotates to a new producer id from here on, so a fence can always use epoch + 1."""

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TransactionValue:
    """What the `__transaction_state` record holds (TransactionLogValue v0)."""

    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TransactionState
    partitions: frozenset[TopicPartition]
    last_update_ms: int
    start_ms: int


@dataclass(slots=True)
class TransactionMetadata:
    transactional_id: str
    current: TransactionValue
    pending: TransactionValue | None = None
    last_producer_epoch: int = -1
    """The epoch before the last bump: a KIP-360 retry quoting it gets the current epoch back. Not
    persisted (Kafka's choice too)."""
    fence_failed: bool = field(default=False)

    @property
    def state(self) -> TransactionState:
        return self.current.state

    @property
    def producer_id(self) -> int:
        return self.current.producer_id

    @property
    def producer_epoch(self) -> int:
        return self.current.producer_epoch

    def prepare(self, target: TransactionState, now_ms: int, **changes: object) -> TransactionValue:
        assert self.pending is None, f"{self.transactional_id}: transition while one is pending"
        assert self.state in VALID_PREVIOUS[target] or target == self.state == S.ONGOING, (
            f"{self.transactional_id}: {self.state} → {target}"
        )
        self.pending = replace(self.current, state=target, last_update_ms=now_ms, **changes)  # type: ignore[arg-type]
        return self.pending

    def complete(self) -> None:
        assert self.pending is not None
        self.current, self.pending = self.pending, None

    def abandon(self) -> None:
        self.pending = None
