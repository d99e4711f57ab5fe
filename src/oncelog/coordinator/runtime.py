"""What coordinators need from the outside world, as small interfaces (sans-IO).

Coordinators never await. They get time from a clock, timers from a `Scheduler`, and write their records
through `CoordinatorStorage`, which appends to an internal topic partition and calls back once the bytes
are durable. A request that must wait for something (a rebalance, a durable write) gets a `Completion`:
a plain one-shot promise the coordinator resolves later and the server layer awaits. Unit tests drive all
of it with `ManualScheduler` and an in-memory storage, no event loop and no sleeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Completion(Generic[T]):
    """A one-shot result a coordinator delivers later (a JoinGroup answered when the rebalance ends)."""

    __slots__ = ("_callbacks", "_done", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._callbacks: list[Callable[[T], None]] = []

    @property
    def done(self) -> bool:
        return self._done

    def value(self) -> T:
        assert self._done, "value of an unresolved completion"
        return self._value  # type: ignore[return-value]

    def resolve(self, value: T) -> None:
        if self._done:
            return  # first answer wins (a member fenced while waiting already got its error)
        self._done = True
        self._value = value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(value)

    def on_done(self, callback: Callable[[T], None]) -> None:
        if self._done:
            callback(self._value)  # type: ignore[arg-type]
        else:
            self._callbacks.append(callback)


def resolved(value: T) -> Completion[T]:
    completion: Completion[T] = Completion()
    completion.resolve(value)
    return completion


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle: ...


@dataclass(slots=True)
class StoredBatch:
    token: Any
    """What `when_durable` takes."""
    base_offset: int
    """Offset of the first record: record i is at base_offset + i. A storage that learns it only when the
    write commits (PostgreSQL) sets it before any `when_durable` callback runs; coordinators read it
    only from there."""


class CoordinatorStorage(Protocol):
    """Appends coordinator records to an internal topic partition."""

    def append(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]], *,
               producer_id: int = -1, producer_epoch: int = -1, transactional: bool = False) -> StoredBatch:
        """Append one batch now (records keep their order and take consecutive offsets)."""
        ...

    def when_durable(self, token: Any, callback: Callable[[bool], None]) -> None:
        """Call `callback(True)` once the append is fsynced, `callback(False)` if that failed."""
        ...


@dataclass(order=True)
class _Timer:
    due_ms: int
    sequence: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A scheduler over a fake clock, for tests: `advance(ms)` runs the timers that fall due, in order."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms
        self._timers: list[_Timer] = []
        self._sequence = itertools.count()

    def clock(self) -> int:
        return self.now_ms

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now_ms + max(0, delay_ms), next(self._sequence), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def advance(self, delta_ms: int) -> None:
        target = self.now_ms + delta_ms
        while self._timers and self._timers[0].due_ms <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now_ms = timer.due_ms
            timer.callback()
        self.now_ms = target


def resolved_or(value: T | Completion[T]) -> Completion[T]:
    """`value` as a Completion (itself if it is one)."""
    return value if isinstance(value, Completion) else resolved(value)


def gather(completions: list[Completion[T]]) -> Completion[list[T]]:
    """One completion resolved with every value, in order, once all of `completions` are resolved."""
    combined: Completion[list[T]] = Completion()
    values: list[T | None] = [None] * len(completions)
    remaining = len(completions)

    def one(index: int, value: T) -> None:
        nonlocal remaining
        values[index] = value
        remaining -= 1
        if remaining == 0:
            combined.resolve(values)  # type: ignore[arg-type]

    if not completions:
        combined.resolve([])
    for index, completion in enumerate(completions):
        completion.on_done(lambda value, index=index: one(index, value))  # type: ignore[misc]
    return combined
