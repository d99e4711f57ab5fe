"""The transaction coordinator (Kafka's `TransactionCoordinator`, transactions v1), sans-IO.

Theory of operation: one object owns the metadata of every transactional id, persisted as records in
`__transaction_state` (compacted; Kafka's formats, see records.py). Each durable change is two-phase
(state.py): prepare a pending value, append it, complete it once fsynced; while a change is pending every
other request for that id gets CONCURRENT_TRANSACTIONS (retriable), never a lock.

Ending a transaction: EndTxn moves Ongoing → PrepareCommit/PrepareAbort (durable), then the markers are
appended to every partition in the transaction, including the `__consumer_offsets` partition that holds
its offsets, then CompleteCommit/CompleteAbort is written, and only then is EndTxn answered. Kafka
answers right after Prepare*; answering after the markers gives the same guarantees on one node and
spares clients (kafkajs in particular) CONCURRENT_TRANSACTIONS on their next call (docs/protocol.md, Transactions).
A restart that finds Prepare* in the log writes the markers again and completes; markers are
idempotent for a partition without an open transaction.

Fencing: InitProducerId bumps the epoch (a new producer id once the epoch is exhausted). If the previous
instance left a transaction Ongoing, it is aborted with epoch + 1 and the caller gets
CONCURRENT_TRANSACTIONS; its retry bumps again. Transactions open longer than their timeout are aborted
the same way by `abort_timed_out`, which fences the hung producer. Idle transactional ids expire after
`transactional.id.expiration.ms`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from oncelog.coordinator.group.records import partition_for
from oncelog.coordinator.runtime import Completion, CoordinatorStorage, Scheduler, resolved
from oncelog.errors import ErrorCode
from oncelog.logs import safe

from .records import parse_transaction_key, parse_transaction_value, transaction_key, transaction_value
from .state import EPOCH_EXHAUSTED, EXPIRABLE, TopicPartition, TransactionMetadata, TransactionState, TransactionValue

logger = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
RETRY_DELAY_MS = 1000

S = TransactionState
Response = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TransactionConfig:
    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    id_expiration_ms: int = 604_800_000  # transactional.id.expiration.ms
    state_topic_partitions: int = 50  # transaction.state.log.num.partitions


class MarkerWriter(Protocol):
    def write_markers(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, commit: bool,
                      partitions: frozenset[TopicPartition]) -> dict[TopicPartition, Any]:
        """Append a marker to each partition now; return a durability token per partition written to (a
        partition that no longer exists is left out; one that refused has a token that fails)."""
        ...


class TransactionCoordinator:
    def __init__(self, storage: CoordinatorStorage, markers: MarkerWriter, scheduler: Scheduler,
                 clock: Callable[[], int], allocate_producer_id: Callable[[], int], config: TransactionConfig,
                 partition_exists: Callable[[str, int], bool], coordinator_epoch: int) -> None:
        self.storage = storage
        self.markers = markers
        self.scheduler = scheduler
        self.clock = clock
        self.allocate_producer_id = allocate_producer_id
        self.config = config
        self.partition_exists = partition_exists
        self.coordinator_epoch = coordinator_epoch
        self.transactions: dict[str, TransactionMetadata] = {}
        self.ended = {"commit": 0, "abort": 0, "timeout": 0}
        """Transactions completed, and those aborted for their timeout, since the start (for metrics)."""
        self.fault_hook: Callable[[str], None] = lambda point: None
        """Called at named points of the commit protocol; fault tests make it kill the process there."""

    def partition_of(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.config.state_topic_partitions)

    # --- log -------------------------------------------------------------------------------------------

    def _persist(self, metadata: TransactionMetadata, on_durable: Callable[[bool], None]) -> None:
        value = metadata.pending
        assert value is not None
        record = None if value.state == S.DEAD else transaction_value(value)
        stored = self.storage.append(TRANSACTION_STATE_TOPIC, self.partition_of(metadata.transactional_id),
                                     [(transaction_key(metadata.transactional_id), record)])
        self.storage.when_durable(stored.token, on_durable)

    def replay(self, key: bytes, value: bytes | None) -> None:
        """Loading: the last value per transactional id wins, a tombstone removes it."""
        transactional_id = parse_transaction_key(key)
        if value is None:
            self.transactions.pop(transactional_id, None)
        else:
            self.transactions[transactional_id] = TransactionMetadata(transactional_id, parse_transaction_value(value))

    def finish_loading(self) -> None:
        """Finish what a crash interrupted: transactions in Prepare* get their markers and complete."""
        for metadata in self.transactions.values():
            if metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                logger.info("transactional_id=%s resuming %s after restart", safe(metadata.transactional_id),
                            metadata.state.display_name)
                self._write_markers_then_complete(metadata, None)

    # --- checks shared by the client requests -------------------------------------------------------

    def _check(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
               fenced_code: ErrorCode) -> tuple[TransactionMetadata | None, ErrorCode | None]:
        if not transactional_id:
            return None, ErrorCode.invalid_request
        metadata = self.transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return None, ErrorCode.invalid_producer_id_mapping
        if metadata.producer_epoch != producer_epoch:
            return None, fenced_code
        if metadata.pending is not None:
            return None, ErrorCode.concurrent_transactions
        return metadata, None

    # --- InitProducerId --------------------------------------------------------------------------------

    def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int,
                         producer_epoch: int) -> Completion[Response]:
        def error(code: ErrorCode) -> Completion[Response]:
            return resolved({"error_code": code, "producer_id": -1, "producer_epoch": -1})

        if transactional_id == "" or (producer_id == -1) != (producer_epoch == -1):
            return error(ErrorCode.invalid_request)
        if not 0 < timeout_ms <= self.config.max_timeout_ms:
            return error(ErrorCode.invalid_transaction_timeout)
        now = self.clock()
        metadata = self.transactions.get(transactional_id)
        if metadata is None:
            try:
                first_id = self.allocate_producer_id()
            except OSError:  # no producer-id block could be reserved: retriable, nothing changed
                return error(ErrorCode.coordinator_not_available)
            metadata = self.transactions[transactional_id] = TransactionMetadata(transactional_id, TransactionValue(
                first_id, -1, timeout_ms, S.EMPTY, frozenset(), now, -1))
        if metadata.pending is not None:
            return error(ErrorCode.concurrent_transactions)
        if producer_id != -1 and metadata.producer_epoch != -1 and producer_id != metadata.producer_id:
            return error(ErrorCode.producer_fenced)  # KIP-360: not this id's producer
        if metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            return error(ErrorCode.concurrent_transactions)
        if metadata.state == S.ONGOING:
            self._fence_and_abort(metadata, "a new producer instance initialised")
            return error(ErrorCode.concurrent_transactions)
        assert metadata.state in EXPIRABLE
        if producer_id != -1 and metadata.producer_epoch != -1 and producer_epoch != metadata.producer_epoch:
            if producer_epoch == metadata.last_producer_epoch:  # a retry of a bump that already happened
                return resolved({"error_code": ErrorCode.none, "producer_id": metadata.producer_id,
                                 "producer_epoch": metadata.producer_epoch})
            return error(ErrorCode.producer_fenced)
        previous_id, previous_epoch = metadata.producer_id, metadata.producer_epoch
        if previous_epoch >= EPOCH_EXHAUSTED:
            try:
                new_id, new_epoch = self.allocate_producer_id(), 0
            except OSError:
                return error(ErrorCode.coordinator_not_available)
        else:
            new_id, new_epoch = metadata.producer_id, previous_epoch + 1
        metadata.prepare(S.EMPTY, now, producer_id=new_id, producer_epoch=new_epoch, timeout_ms=timeout_ms,
                         partitions=frozenset(), start_ms=-1)
        completion: Completion[Response] = Completion()

        def durable(ok: bool) -> None:
            if not ok:
                metadata.abandon()
                completion.resolve({"error_code": ErrorCode.coordinator_not_available, "producer_id": -1,
                                    "producer_epoch": -1})
                return
            metadata.complete()
            metadata.last_producer_epoch = previous_epoch if new_id == previous_id else -1
            logger.info("transactional_id=%s producer_id=%d epoch=%d initialised", safe(transactional_id), new_id,
                        new_epoch)
            completion.resolve({"error_code": ErrorCode.none, "producer_id": new_id, "producer_epoch": new_epoch})

        self._persist(metadata, durable)
        return completion

    # --- AddPartitionsToTxn / AddOffsetsToTxn -----------------------------------------------------------

    def add_partitions(
        self, transactional_id: str, producer_id: int, producer_epoch: int, partitions: list[TopicPartition],
        fenced_code: ErrorCode,
    ) -> Completion[dict[TopicPartition, ErrorCode]]:
        def all_get(code: ErrorCode) -> Completion[dict[TopicPartition, ErrorCode]]:
            return resolved(dict.fromkeys(partitions, code))

        unknown = {tp for tp in partitions if not self.partition_exists(*tp)}
        if unknown:
            return resolved({tp: ErrorCode.unknown_topic_or_partition if tp in unknown
                             else ErrorCode.operation_not_attempted for tp in partitions})
        metadata, problem = self._check(transactional_id, producer_id, producer_epoch, fenced_code)
        if problem is not None or metadata is None:
            return all_get(problem or ErrorCode.invalid_request)
        if metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            return all_get(ErrorCode.concurrent_transactions)
        wanted = frozenset(partitions)
        if metadata.state == S.ONGOING and wanted <= metadata.current.partitions:
            return all_get(ErrorCode.none)
        now = self.clock()
        start_ms = metadata.current.start_ms if metadata.state == S.ONGOING else now
        metadata.prepare(S.ONGOING, now, partitions=metadata.current.partitions | wanted, start_ms=start_ms)
        completion: Completion[dict[TopicPartition, ErrorCode]] = Completion()

        def durable(ok: bool) -> None:
            if ok:
                metadata.complete()
            else:
                metadata.abandon()
            completion.resolve(dict.fromkeys(partitions, ErrorCode.none if ok else ErrorCode.coordinator_not_available))

        self._persist(metadata, durable)
        return completion

    # --- EndTxn ---------------------------------------------------------------------------------------------

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool,
                        fenced_code: ErrorCode) -> Completion[ErrorCode]:
        metadata, problem = self._check(transactional_id, producer_id, producer_epoch, fenced_code)
        if problem is not None or metadata is None:
            return resolved(problem or ErrorCode.invalid_request)
        state = metadata.state
        if state == S.ONGOING:
            completion: Completion[ErrorCode] = Completion()
            self._prepare_end(metadata, commit, completion)
            return completion
        answers = {
            (S.PREPARE_COMMIT, True): ErrorCode.concurrent_transactions,
            (S.PREPARE_ABORT, False): ErrorCode.concurrent_transactions,
            (S.COMPLETE_COMMIT, True): ErrorCode.none,  # a retried EndTxn whose answer was lost
            (S.COMPLETE_ABORT, False): ErrorCode.none,
        }
        return resolved(answers.get((state, commit), ErrorCode.invalid_txn_state))

    def _prepare_end(self, metadata: TransactionMetadata, commit: bool,
                     completion: Completion[ErrorCode] | None, **changes: Any) -> None:
        metadata.prepare(S.PREPARE_COMMIT if commit else S.PREPARE_ABORT, self.clock(), **changes)

        def durable(ok: bool) -> None:
            if not ok:
                metadata.abandon()
                if completion is not None:
                    completion.resolve(ErrorCode.coordinator_not_available)
                return
            metadata.complete()
            self.fault_hook("after-prepare-before-markers")
            self._write_markers_then_complete(metadata, completion)

        self._persist(metadata, durable)

    def _write_markers_then_complete(self, metadata: TransactionMetadata, completion: Completion[ErrorCode] | None,
                                     remaining: frozenset[TopicPartition] | None = None) -> None:
        """Write the markers to the partitions still `remaining` (all at first); once every one is durable,
        complete. Partitions that failed are retried after RETRY_DELAY_MS, and only they: Kafka retries
        markers until each partition takes its own, and a restart resumes from Prepare*."""
        value = metadata.current
        commit = value.state == S.PREPARE_COMMIT
        assert value.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT)
        tokens = self.markers.write_markers(value.producer_id, value.producer_epoch, self.coordinator_epoch, commit,
                                            value.partitions if remaining is None else remaining)
        waiting = [len(tokens)]
        failed: set[TopicPartition] = set()

        def finished() -> None:
            if failed:
                self.scheduler.call_later(RETRY_DELAY_MS, lambda: self._write_markers_then_complete(
                    metadata, completion, frozenset(failed)))
            else:
                self._complete(metadata, completion)

        def one(partition: TopicPartition, ok: bool) -> None:
            if not ok:
                failed.add(partition)
            waiting[0] -= 1
            if waiting[0] == 0:
                finished()

        if not tokens:
            finished()
        for partition, token in tokens.items():

            def durable(ok: bool, partition: TopicPartition = partition) -> None:
                one(partition, ok)

            self.storage.when_durable(token, durable)

    def _complete(self, metadata: TransactionMetadata, completion: Completion[ErrorCode] | None) -> None:
        commit = metadata.state == S.PREPARE_COMMIT
        metadata.prepare(S.COMPLETE_COMMIT if commit else S.COMPLETE_ABORT, self.clock(), partitions=frozenset())

        def durable(ok: bool) -> None:
            if not ok:
                metadata.abandon()
                self.scheduler.call_later(RETRY_DELAY_MS, lambda: self._complete(metadata, completion))
                return
            metadata.complete()
            self.ended["commit" if commit else "abort"] += 1
            logger.info("transactional_id=%s producer_id=%d epoch=%d %s", safe(metadata.transactional_id),
                        metadata.producer_id, metadata.producer_epoch, metadata.state.display_name)
            if completion is not None:
                completion.resolve(ErrorCode.none)

        self._persist(metadata, durable)

    def _fence_and_abort(self, metadata: TransactionMetadata, reason: str,
                         completion: Completion[ErrorCode] | None = None) -> None:
        """Abort an Ongoing transaction with epoch + 1, fencing its producer (PrepareEpochFence)."""
        logger.info("transactional_id=%s producer_id=%d aborting epoch=%d: %s", safe(metadata.transactional_id),
                    metadata.producer_id, metadata.producer_epoch, reason)
        metadata.last_producer_epoch = -1
        self._prepare_end(metadata, False, completion, producer_epoch=metadata.producer_epoch + 1)

    def abort_open(self, transactional_id: str) -> Completion[ErrorCode]:
        """An operator's abort (the web console): the Ongoing transaction is aborted and its producer
        fenced, as its timeout would; NONE once the abort is complete."""
        metadata = self.transactions.get(transactional_id)
        if metadata is None:
            return resolved(ErrorCode.transactional_id_not_found)
        if metadata.pending is not None or metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            return resolved(ErrorCode.concurrent_transactions)
        if metadata.state != S.ONGOING:
            return resolved(ErrorCode.invalid_txn_state)
        completion: Completion[ErrorCode] = Completion()
        self._fence_and_abort(metadata, "aborted by an operator", completion)
        return completion

    # --- produce-side verification (KIP-890 part 1) -------------------------------------------------------

    def verify_partition(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                         partition: TopicPartition) -> ErrorCode | None:
        """May this producer start writing transactional data to `partition`? None if yes."""
        metadata = self.transactions.get(transactional_id or "")
        if metadata is None or metadata.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if producer_epoch != metadata.producer_epoch:
            return ErrorCode.producer_fenced
        if metadata.pending is not None or metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            return ErrorCode.concurrent_transactions
        if metadata.state != S.ONGOING or partition not in metadata.current.partitions:
            return ErrorCode.transaction_abortable
        return None

    # --- timeouts and expiry ---------------------------------------------------------------------------------

    def abort_timed_out(self) -> int:
        now = self.clock()
        aborted = 0
        for metadata in list(self.transactions.values()):
            value = metadata.current
            if metadata.pending is None and value.state == S.ONGOING and value.start_ms + value.timeout_ms < now:
                self._fence_and_abort(metadata, f"open longer than its timeout of {value.timeout_ms} ms")
                aborted += 1
        self.ended["timeout"] += aborted
        return aborted

    def expire_transactional_ids(self) -> int:
        now = self.clock()
        expired = 0
        for transactional_id, metadata in list(self.transactions.items()):
            if (metadata.pending is None and metadata.state in EXPIRABLE
                    and metadata.current.last_update_ms + self.config.id_expiration_ms <= now):
                metadata.prepare(S.DEAD, now)

                def durable(ok: bool, transactional_id: str = transactional_id,
                            metadata: TransactionMetadata = metadata) -> None:
                    if ok:
                        self.transactions.pop(transactional_id, None)
                    else:
                        metadata.abandon()

                self._persist(metadata, durable)
                expired += 1
        return expired

    # --- DescribeTransactions / ListTransactions ---------------------------------------------------------

    def describe(self, transactional_id: str) -> Response:
        """DescribeTransactions fields of one id (partitions as sorted (topic, partition) pairs)."""
        missing = {"transaction_state": "", "transaction_timeout": 0, "transaction_start_time": 0,
                   "producer_id": -1, "producer_epoch": -1, "partitions": []}
        metadata = self.transactions.get(transactional_id)
        if not transactional_id:
            return {**missing, "error_code": ErrorCode.invalid_request, "transactional_id": transactional_id}
        if metadata is None:
            return {**missing, "error_code": ErrorCode.transactional_id_not_found,
                    "transactional_id": transactional_id}
        value = metadata.current
        return {"error_code": ErrorCode.none, "transactional_id": transactional_id,
                "transaction_state": value.state.display_name, "transaction_timeout": value.timeout_ms,
                "transaction_start_time": value.start_ms, "producer_id": value.producer_id,
                "producer_epoch": value.producer_epoch, "partitions": sorted(value.partitions)}

    def list(
        self, states: list[str], producer_ids: list[int], duration_ms: int = -1
    ) -> tuple[list[str], list[Response]]:
        unknown = [name for name in states if TransactionState.from_name(name) is None]
        wanted = {TransactionState.from_name(name) for name in states} - {None}
        now = self.clock()
        listed = []
        for transactional_id, metadata in sorted(self.transactions.items()):
            value = metadata.current
            if wanted and value.state not in wanted:
                continue
            if producer_ids and value.producer_id not in producer_ids:
                continue
            if duration_ms >= 0 and (value.start_ms < 0 or now - value.start_ms < duration_ms):
                continue
            listed.append({"transactional_id": transactional_id, "producer_id": value.producer_id,
                           "transaction_state": value.state.display_name})
        return unknown, listed
