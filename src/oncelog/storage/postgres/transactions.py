"""The transaction coordinator on PostgreSQL: every transition is one database transaction.

Theory of operation: the state of each transactional id is a row in `txn` (Kafka's names for states),
the partitions of its ongoing transaction are rows in `txn_partition`. Because the database serialises
changes with row locks, any broker may serve any transactional id correctly; FindCoordinator only
spreads the ids (rendezvous hash). The verbs have the in-memory coordinator's names and answers, and
return Completions:

- InitProducerId locks the `txn` row (creating it with a new producer id), and if a transaction is
  Ongoing aborts it *in the same database transaction* (ABORT markers, pending offsets dropped, epoch
  bumped to fence the old producer) before bumping the epoch for the caller. Kafka answers
  CONCURRENT_TRANSACTIONS there and lets the client retry; one transaction makes that unnecessary.
- AddPartitionsToTxn / AddOffsetsToTxn check producer id and epoch under the row lock and add rows;
  the first one moves Empty/Complete* to Ongoing and starts the timeout clock.
- EndTxn locks the `txn` row, then the partitions in sorted order, writes every marker (the one on
  the `__consumer_offsets` partition commits or drops the transaction's offsets), records aborted
  ranges, releases the last stable offsets and sets CompleteCommit/CompleteAbort: all or nothing
  (Prepare* is never visible, so no marker can be half-written).
  A retried EndTxn on a completed transaction gets its answer again.
- Timeouts: any broker's reaper takes hung transactions with `FOR UPDATE SKIP LOCKED` (so brokers never
  wait on each other) and aborts each with an epoch bump, as Kafka does.

A database error answers COORDINATOR_NOT_AVAILABLE (retriable): nothing is decided that the client is
told was not, and a transaction whose commit outcome is unknown is found in its final state by the
client's retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg

from oncelog.awaiting import completed
from oncelog.coordinator.runtime import Completion
from oncelog.coordinator.transaction.state import EPOCH_EXHAUSTED, TransactionState
from oncelog.errors import ErrorCode
from oncelog.logs import safe
from oncelog.storage.api import Marker, PartitionKey

from .writer import GroupCommitWriter

logger = logging.getLogger(__name__)

Response = dict[str, Any]
Connection = psycopg.AsyncConnection[Any]
TopicPartition = tuple[str, int]

EMPTY = "Empty"
ONGOING = "Ongoing"
COMPLETE_COMMIT = "CompleteCommit"
COMPLETE_ABORT = "CompleteAbort"
EXPIRABLE = (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT)
REAP_BATCH = 100
AFTER_COMMIT_WAIT_S = 5.0


class PostgresTransactions:
    def __init__(self, url: str, writer: GroupCommitWriter, topic_exists: Callable[[str, int], bool],
                 allocate_producer_id: Callable[[], int], clock: Callable[[], int], max_timeout_ms: int,
                 id_expiration_ms: int) -> None:
        self._url = url
        self._writer = writer
        self._topic_exists = topic_exists
        self._allocate = allocate_producer_id
        self._clock = clock
        self.max_timeout_ms = max_timeout_ms
        self.id_expiration_ms = id_expiration_ms
        self._pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ended = {"commit": 0, "abort": 0, "timeout": 0}
        """Transactions this broker completed, and aborted for their timeout (for metrics). Counted when the
        decision is written: a database commit that then fails (the client retries) may count one twice."""
        self.after_commit: Callable[[set[PartitionKey]], Completion[None]] | None = None
        """Awaited (at most AFTER_COMMIT_WAIT_S) after a transaction that wrote markers commits, before it is
        answered: the broker's group coordinator applies markers on partitions it owns."""

    async def open(self, connections: int = 2) -> None:
        for _ in range(connections):
            self._pool.put_nowait(await psycopg.AsyncConnection.connect(self._url, autocommit=True))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._pool.empty():
            await self._pool.get_nowait().close()

    # --- running a database transaction -----------------------------------------------------------------

    def _run(self, work: Callable[[psycopg.AsyncConnection[Any], set[PartitionKey]], Coroutine[Any, Any, Any]],
             on_error: Any) -> Completion[Any]:
        """Run `work` in one database transaction on a pooled connection; resolve with its result, or
        with `on_error` if the database failed (the transaction then changed nothing or is unknown)."""
        completion: Completion[Any] = Completion()

        async def run() -> None:
            connection = await self._pool.get()
            changed: set[PartitionKey] = set()
            try:
                if connection.closed or connection.broken:
                    connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with connection.transaction():
                    result = await work(connection, changed)
            except psycopg.Error as error:
                logger.warning("a transaction coordinator write failed: %s", error)
                completion.resolve(on_error)
                return
            except Exception:  # a bug: answer retriable rather than never
                logger.exception("a transaction coordinator write failed")
                completion.resolve(on_error)
                return
            finally:
                self._pool.put_nowait(connection)
            self._writer.notify(changed)
            if changed and self.after_commit is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(completed(self.after_commit(changed)), AFTER_COMMIT_WAIT_S)
            completion.resolve(result)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return completion

    async def _row(self, connection: psycopg.AsyncConnection[Any], transactional_id: str) -> dict[str, Any] | None:
        cursor = await connection.execute(
            "SELECT producer_id, producer_epoch, last_producer_epoch, timeout_ms, state, start_ms FROM txn"
            " WHERE transactional_id = %s FOR UPDATE", (transactional_id,))
        row = await cursor.fetchone()
        if row is None:
            return None
        return dict(zip(("producer_id", "producer_epoch", "last_producer_epoch", "timeout_ms", "state", "start_ms"),
                        row, strict=True))

    async def _end(self, connection: psycopg.AsyncConnection[Any], transactional_id: str, row: dict[str, Any],
                   commit: bool, producer_epoch: int, changed: set[PartitionKey]) -> None:
        """Finish the Ongoing transaction of the locked row: markers with `producer_epoch` on every
        partition (the `__consumer_offsets` one too: its marker commits or drops the transaction's
        offsets, as in Kafka), txn_partition cleared, Complete* set."""
        cursor = await connection.execute("SELECT topic, partition FROM txn_partition WHERE transactional_id = %s",
                                          (transactional_id,))
        partitions = sorted((str(topic), int(partition)) for topic, partition in await cursor.fetchall())
        markers = [Marker(topic, partition, row["producer_id"], producer_epoch, 0, commit)
                   for topic, partition in partitions if self._topic_exists(topic, partition)]
        if markers:
            codes, marked = await self._writer.markers_in(connection, markers, self._clock())
            changed |= marked
            for marker, code in zip(markers, codes, strict=True):
                if code != ErrorCode.none:  # a newer epoch wrote there already: it superseded this one
                    logger.info("transactional_id=%s marker on %s-%d skipped: %s", safe(transactional_id),
                                marker.topic, marker.partition, code.name)
        await connection.execute("DELETE FROM txn_partition WHERE transactional_id = %s", (transactional_id,))
        await connection.execute(
            "UPDATE txn SET state = %s, producer_epoch = %s, last_update_ms = %s WHERE transactional_id = %s",
            (COMPLETE_COMMIT if commit else COMPLETE_ABORT, producer_epoch, self._clock(), transactional_id))
        row.update(state=COMPLETE_COMMIT if commit else COMPLETE_ABORT, producer_epoch=producer_epoch)
        self.ended["commit" if commit else "abort"] += 1

    # --- InitProducerId ---------------------------------------------------------------------------------

    def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int,
                         producer_epoch: int) -> Completion[Response]:
        def error(code: ErrorCode) -> Response:
            return {"error_code": code, "producer_id": -1, "producer_epoch": -1}

        if transactional_id == "" or (producer_id == -1) != (producer_epoch == -1):
            return _resolved(error(ErrorCode.invalid_request))
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return _resolved(error(ErrorCode.invalid_transaction_timeout))

        async def work(connection: Connection, changed: set[PartitionKey]) -> Response:
            now = self._clock()
            row = await self._row(connection, transactional_id)
            if row is None:
                new_id = self._allocate()
                await connection.execute(
                    "INSERT INTO txn (transactional_id, producer_id, producer_epoch, timeout_ms, state, last_update_ms)"
                    " VALUES (%s, %s, -1, %s, %s, %s)", (transactional_id, new_id, timeout_ms, EMPTY, now))
                row = {"producer_id": new_id, "producer_epoch": -1, "last_producer_epoch": -1,
                       "timeout_ms": timeout_ms, "state": EMPTY, "start_ms": -1}
            if producer_id != -1 and row["producer_epoch"] != -1 and producer_id != row["producer_id"]:
                return error(ErrorCode.producer_fenced)  # KIP-360: not this id's producer
            if row["state"] == ONGOING:  # fence the previous instance: abort its transaction with epoch + 1
                logger.info("transactional_id=%s producer_id=%d aborting epoch=%d: a new producer instance "
                            "initialised", safe(transactional_id), row["producer_id"], row["producer_epoch"])
                await self._end(connection, transactional_id, row, False, row["producer_epoch"] + 1, changed)
                row["last_producer_epoch"] = -1
            elif producer_id != -1 and row["producer_epoch"] != -1 and producer_epoch != row["producer_epoch"]:
                if producer_epoch == row["last_producer_epoch"]:  # a retry of a bump that already happened
                    return {"error_code": ErrorCode.none, "producer_id": row["producer_id"],
                            "producer_epoch": row["producer_epoch"]}
                return error(ErrorCode.producer_fenced)
            previous_id, previous_epoch = row["producer_id"], row["producer_epoch"]
            if previous_epoch >= EPOCH_EXHAUSTED:
                new_id, new_epoch = self._allocate(), 0
            else:
                new_id, new_epoch = previous_id, previous_epoch + 1
            await connection.execute(
                "UPDATE txn SET producer_id = %s, producer_epoch = %s, last_producer_epoch = %s, timeout_ms = %s,"
                " state = %s, start_ms = -1, last_update_ms = %s WHERE transactional_id = %s",
                (new_id, new_epoch, previous_epoch if new_id == previous_id else -1, timeout_ms, EMPTY, now,
                 transactional_id))
            logger.info("transactional_id=%s producer_id=%d epoch=%d initialised", safe(transactional_id), new_id,
                        new_epoch)
            return {"error_code": ErrorCode.none, "producer_id": new_id, "producer_epoch": new_epoch}

        return self._run(work, error(ErrorCode.coordinator_not_available))

    # --- AddPartitionsToTxn / AddOffsetsToTxn -----------------------------------------------------------

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: list[TopicPartition], fenced_code: ErrorCode) -> Completion[dict[TopicPartition,
                                                                                                     ErrorCode]]:
        unknown = {tp for tp in partitions if not self._topic_exists(*tp)}
        if unknown:
            return _resolved({tp: ErrorCode.unknown_topic_or_partition if tp in unknown
                              else ErrorCode.operation_not_attempted for tp in partitions})
        if not transactional_id:
            return _resolved(dict.fromkeys(partitions, ErrorCode.invalid_request))

        async def work(connection: Connection, changed: set[PartitionKey]) -> dict[TopicPartition, ErrorCode]:
            row = await self._row(connection, transactional_id)
            problem = _check(row, producer_id, producer_epoch, fenced_code)
            if problem is not None or row is None:
                return dict.fromkeys(partitions, problem or ErrorCode.invalid_request)
            now = self._clock()
            if row["state"] != ONGOING:
                await connection.execute(
                    "UPDATE txn SET state = %s, start_ms = %s, last_update_ms = %s WHERE transactional_id = %s",
                    (ONGOING, now, now, transactional_id))
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO txn_partition (transactional_id, topic, partition) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(transactional_id, topic, partition) for topic, partition in partitions])
            return dict.fromkeys(partitions, ErrorCode.none)

        return self._run(work, dict.fromkeys(partitions, ErrorCode.coordinator_not_available))

    # --- EndTxn -----------------------------------------------------------------------------------------

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool,
                        fenced_code: ErrorCode) -> Completion[ErrorCode]:
        if not transactional_id:
            return _resolved(ErrorCode.invalid_request)

        async def work(connection: Connection, changed: set[PartitionKey]) -> ErrorCode:
            row = await self._row(connection, transactional_id)
            problem = _check(row, producer_id, producer_epoch, fenced_code)
            if problem is not None or row is None:
                return problem or ErrorCode.invalid_request
            state = row["state"]
            if state == ONGOING:
                await self._end(connection, transactional_id, row, commit, producer_epoch, changed)
                logger.info("transactional_id=%s producer_id=%d epoch=%d %s", safe(transactional_id), producer_id,
                            producer_epoch, row["state"])
                return ErrorCode.none
            if (state, commit) in ((COMPLETE_COMMIT, True), (COMPLETE_ABORT, False)):
                return ErrorCode.none  # a retried EndTxn whose answer was lost
            return ErrorCode.invalid_txn_state

        return self._run(work, ErrorCode.coordinator_not_available)

    def verify_partition(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                         partition: TopicPartition) -> Completion[ErrorCode | None]:
        """May this producer write to `partition` in its ongoing transaction (TxnOffsetCommit)? None if
        yes. (Produce verifies in the append's own transaction, `writer._verify`.)"""

        async def work(connection: Connection, changed: set[PartitionKey]) -> ErrorCode | None:
            cursor = await connection.execute(
                "SELECT t.producer_id, t.producer_epoch, t.state, EXISTS (SELECT 1 FROM txn_partition p"
                " WHERE p.transactional_id = t.transactional_id AND p.topic = %s AND p.partition = %s)"
                " FROM txn t WHERE t.transactional_id = %s", (partition[0], partition[1], transactional_id or ""))
            row = await cursor.fetchone()
            if row is None or row[0] != producer_id:
                return ErrorCode.invalid_producer_id_mapping
            if row[1] != producer_epoch:
                return ErrorCode.producer_fenced
            if row[2] != ONGOING or not row[3]:
                return ErrorCode.transaction_abortable
            return None

        return self._run(work, ErrorCode.concurrent_transactions)

    # --- timeouts and expiry -----------------------------------------------------------------------------

    def abort_timed_out(self) -> Completion[int]:
        """Abort (with an epoch bump, fencing the producer) every transaction open longer than its
        timeout that no other broker is aborting right now (SKIP LOCKED)."""

        async def work(connection: Connection, changed: set[PartitionKey]) -> int:
            cursor = await connection.execute(
                "SELECT transactional_id FROM txn WHERE state = %s AND start_ms + timeout_ms < %s"
                " ORDER BY transactional_id LIMIT %s FOR UPDATE SKIP LOCKED", (ONGOING, self._clock(), REAP_BATCH))
            hung = [str(transactional_id) for (transactional_id,) in await cursor.fetchall()]
            for transactional_id in hung:
                row = await self._row(connection, transactional_id)
                assert row is not None
                await self._fence_and_abort(connection, transactional_id, row,
                                            f"open longer than its timeout of {row['timeout_ms']} ms", changed)
            return len(hung)

        completion: Completion[int] = self._run(work, 0)
        completion.on_done(lambda aborted: self.ended.__setitem__("timeout", self.ended["timeout"] + aborted))
        return completion

    def abort_open(self, transactional_id: str) -> Completion[ErrorCode]:
        """An operator's abort (the web console): the Ongoing transaction is aborted with epoch + 1,
        fencing its producer, as its timeout would."""

        async def work(connection: Connection, changed: set[PartitionKey]) -> ErrorCode:
            row = await self._row(connection, transactional_id)
            if row is None:
                return ErrorCode.transactional_id_not_found
            if row["state"] != ONGOING:
                return ErrorCode.invalid_txn_state
            await self._fence_and_abort(connection, transactional_id, row, "aborted by an operator", changed)
            return ErrorCode.none

        return self._run(work, ErrorCode.coordinator_not_available)

    async def _fence_and_abort(self, connection: psycopg.AsyncConnection[Any], transactional_id: str,
                               row: dict[str, Any], reason: str, changed: set[PartitionKey]) -> None:
        """Abort the locked Ongoing transaction with epoch + 1, fencing its producer."""
        logger.info("transactional_id=%s producer_id=%d aborting epoch=%d: %s", safe(transactional_id),
                    row["producer_id"], row["producer_epoch"], reason)
        await self._end(connection, transactional_id, row, False, row["producer_epoch"] + 1, changed)
        await connection.execute("UPDATE txn SET last_producer_epoch = -1 WHERE transactional_id = %s",
                                 (transactional_id,))

    def expire_transactional_ids(self) -> Completion[int]:
        async def work(connection: Connection, changed: set[PartitionKey]) -> int:
            cursor = await connection.execute(
                "DELETE FROM txn WHERE state = ANY(%s) AND last_update_ms + %s <= %s",
                (list(EXPIRABLE), self.id_expiration_ms, self._clock()))
            return cursor.rowcount

        return self._run(work, 0)

    # --- DescribeTransactions / ListTransactions ---------------------------------------------------------

    def describe(self, transactional_id: str) -> Completion[Response]:
        missing = {"transaction_state": "", "transaction_timeout": 0, "transaction_start_time": 0,
                   "producer_id": -1, "producer_epoch": -1, "partitions": [], "transactional_id": transactional_id}
        if not transactional_id:
            return _resolved({**missing, "error_code": ErrorCode.invalid_request})

        async def work(connection: Connection, changed: set[PartitionKey]) -> Response:
            cursor = await connection.execute(
                "SELECT producer_id, producer_epoch, timeout_ms, state, start_ms FROM txn WHERE transactional_id = %s",
                (transactional_id,))
            row = await cursor.fetchone()
            if row is None:
                return {**missing, "error_code": ErrorCode.transactional_id_not_found}
            cursor = await connection.execute(
                "SELECT topic, partition FROM txn_partition WHERE transactional_id = %s ORDER BY topic, partition",
                (transactional_id,))
            partitions = [(str(topic), int(partition)) for topic, partition in await cursor.fetchall()]
            producer_id, producer_epoch, timeout_ms, state, start_ms = row
            return {"error_code": ErrorCode.none, "transactional_id": transactional_id, "transaction_state": state,
                    "transaction_timeout": timeout_ms, "transaction_start_time": start_ms,
                    "producer_id": producer_id, "producer_epoch": producer_epoch, "partitions": partitions}

        return self._run(work, {**missing, "error_code": ErrorCode.coordinator_not_available})

    def list(self, states: list[str], producer_ids: list[int],
             duration_ms: int = -1) -> Completion[tuple[list[str], list[Response]]]:
        unknown = [name for name in states if TransactionState.from_name(name) is None]
        wanted = [state.display_name for name in states if (state := TransactionState.from_name(name)) is not None]

        async def work(connection: Connection, changed: set[PartitionKey]) -> tuple[list[str], list[Response]]:
            cursor = await connection.execute(
                "SELECT transactional_id, producer_id, state, start_ms FROM txn ORDER BY transactional_id")
            now = self._clock()
            listed = []
            for transactional_id, producer_id, state, start_ms in await cursor.fetchall():
                if (states and state not in wanted) or (producer_ids and producer_id not in producer_ids):
                    continue
                if duration_ms >= 0 and (start_ms < 0 or now - start_ms < duration_ms):
                    continue
                listed.append({"transactional_id": transactional_id, "producer_id": producer_id,
                               "transaction_state": state})
            return unknown, listed

        return self._run(work, (unknown, []))


def _check(row: dict[str, Any] | None, producer_id: int, producer_epoch: int,
           fenced_code: ErrorCode) -> ErrorCode | None:
    if row is None or row["producer_id"] != producer_id:
        return ErrorCode.invalid_producer_id_mapping
    if row["producer_epoch"] != producer_epoch:
        return fenced_code
    return None


def _resolved(value: Any) -> Completion[Any]:
    completion: Completion[Any] = Completion()
    completion.resolve(value)
    return completion
