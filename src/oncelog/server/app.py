"""The running broker: listener, connections, flusher and periodic maintenance on one event loop.

Theory of operation: `BrokerServer.start()` loads the logs (recovery happens here), binds the listener
and starts the flusher and the maintenance task (retention every `log.retention.check.interval.ms`,
checkpoints every `log.flush.offset.checkpoint.interval.ms`, producer expiry every
`producer.id.expiration.check.interval.ms`, compaction of `cleanup.policy=compact` topics every
`log.cleaner.backoff.ms`). `stop()` is the clean shutdown Kafka does:
stop accepting, let in-flight requests finish (bounded), fsync everything, write checkpoints and the
clean-shutdown marker. Everything runs on the loop that called `start()`; nothing here takes locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from oncelog.broker import Broker, wall_clock_ms
from oncelog.config import BrokerConfig
from oncelog.listeners import advertised_address
from oncelog.log.partition import PartitionLog
from oncelog.logs import RateLimited
from oncelog.observability.console import Console
from oncelog.observability.http import HttpListener
from oncelog.security.sasl import ListenerSasl
from oncelog.security.settings import SecurityConfigError, is_loopback, listener_sasl, unauthenticated_exposure
from oncelog.security.tls import ListenerTls, server_context

from .connection import Connection
from .flusher import Flusher
from .shared import OpenShared, open_shared
from .waiters import DataWaiters

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0
GROUP_LOAD_AT_START_S = 10.0
"""On PostgreSQL, how long a starting broker waits for the group partitions it wins to load."""


class ListenError(RuntimeError):
    """A listener cannot be bound; the message names it and says what to do."""


class _LoopScheduler:
    """The coordinators' `Scheduler` on the event loop; once `stopped` (shutdown), timers do nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.stopped = False

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(delay_ms / 1000, self._run, callback)

    def _run(self, callback: Callable[[], None]) -> None:
        if not self.stopped:
            callback()


JOB_RETRY_S_MIN = 0.5


class _Periodic:
    """One maintenance job. A failing run is logged (once per job per five minutes) and retried with
    exponential backoff from JOB_RETRY_S_MIN up to its interval; it never stops the other jobs."""

    def __init__(self, name: str, interval_ms: int, run: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_ms / 1000
        self._run = run
        self.due = 0.0
        self.failures = 0

    def schedule(self, now: float) -> None:
        self.due = now + self.interval_s

    def run(self, now: float) -> None:
        try:
            self._run()
        except Exception:
            self.failures += 1
            retry_s = min(self.interval_s, JOB_RETRY_S_MIN * 2 ** (self.failures - 1))
            self.due = now + retry_s
            if _job_errors.allow(self.name) is not None:
                logger.exception("maintenance job %s failed (%d in a row); retrying in %.1f s", self.name,
                                 self.failures, retry_s)
            return
        if self.failures:
            logger.info("maintenance job %s works again after %d failures", self.name, self.failures)
        self.failures = 0
        self.schedule(now)


_job_errors = RateLimited(300.0)


class BrokerServer:
    def __init__(self, config: BrokerConfig, broker: Broker | None = None) -> None:
        self.config = config
        self._given_broker = broker
        self.broker: Broker
        """On shared storage the broker is made by `start`, once the database is open."""
        if broker is not None:
            self.broker = broker
        elif not config.shared_storage:
            self.broker = Broker(config)
        self._shared: OpenShared | None = None
        self.flusher = Flusher(config.log_flush_interval_ms)
        self.waiters = DataWaiters()
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._flusher_task: asyncio.Task[None]
        self._connections: set[Connection] = set()
        self._durability_waits = 0
        self._durability_idle = asyncio.Event()
        self._scheduler: _LoopScheduler
        self.port = config.port
        """The first listener's bound port (the one `oncelog serve` prints)."""
        self.bound_ports: dict[str, int] = {}
        self._tls: dict[str, ListenerTls] = {}
        self.http: HttpListener | None = None
        self.http_port = -1
        """The HTTP listener's bound port (-1: off)."""
        self._sasl: dict[str, ListenerSasl] = {}

    async def start(self) -> None:
        try:  # certificates first: a listener that cannot serve TLS stops the start before anything else
            self._tls = {name: server_context(self.config.security_properties, name)
                         for name, protocol in self.config.listener_protocols().items()
                         if protocol in ("SSL", "SASL_SSL")}
            self._sasl = {name: listener_sasl(self.config.security_properties, name)
                          for name, protocol in self.config.listener_protocols().items()
                          if protocol in ("SASL_PLAINTEXT", "SASL_SSL")}
        except SecurityConfigError as error:
            raise ListenError(str(error)) from error
        if self.config.shared_storage and self._given_broker is None:
            self._shared = await open_shared(self.config, wall_clock_ms)
            self.broker = Broker(self.config, shared=self._shared.backend)
        broker = self.broker
        self._scheduler = _LoopScheduler(asyncio.get_running_loop())
        broker.storage.on_change = self._log_changed
        broker.start(self._scheduler, self._durability)
        if broker.shared is None:
            self.flusher.on_flushed = broker.local.log_changed
            self.flusher.metrics = broker.metrics
        self._refresh_tracked_logs()
        loop = asyncio.get_running_loop()
        for index, endpoint in enumerate(self.config.listeners):
            try:
                server = await loop.create_server(lambda name=endpoint.name: self._new_connection(name),
                                                  endpoint.host or None, endpoint.port, reuse_address=True,
                                                  backlog=512)
            except OSError as error:
                for started in self._servers:
                    started.close()
                broker.close()
                if self._shared is not None:
                    await self._shared.close()
                raise ListenError(f"cannot listen on {endpoint}: {error.strerror or error}. Pick another port "
                                  "(0 chooses a free one) or stop what holds this one") from error
            self._servers.append(server)
            bound_port = server.sockets[0].getsockname()[1] if server.sockets else endpoint.port
            self.bound_ports[endpoint.name] = bound_port
            if index == 0:
                self.port = bound_port
            broker.advertised[endpoint.name] = advertised_address(endpoint, self.config.advertised_listeners,
                                                                  bound_port)
            logger.info("listener %s bound to %s:%d, advertised as %s:%d", endpoint.name, endpoint.host or "*",
                        bound_port, *broker.advertised[endpoint.name])
            exposure = unauthenticated_exposure(endpoint.host, self.config.listener_protocols()[endpoint.name],
                                                self.config.security_properties, endpoint.name)
            if exposure is not None:
                logger.warning("%s", exposure)
        if self.config.http_port >= 0:
            broker.metrics.watch(broker, lambda: len(self._connections))
            self.http = HttpListener(Console(broker, broker.metrics).respond)
            try:
                self.http_port = await self.http.start(self.config.http_host, self.config.http_port)
            except OSError as error:
                for started in self._servers:
                    started.close()
                raise ListenError(f"cannot serve HTTP on {self.config.http_host}:{self.config.http_port}: "
                                  f"{error.strerror or error}; pick another --http-port") from error
            logger.info("metrics on http://%s:%d/metrics, console on http://%s:%d/", self.config.http_host,
                        self.http_port, self.config.http_host, self.http_port)
            if not self.config.http_console_read_only and not is_loopback(self.config.http_host):
                logger.warning("the web console on %s:%d lets anyone who reaches it abort transactions: put it "
                               "behind an authenticating proxy or set http.console.read.only=true",
                               self.config.http_host, self.http_port)
        if self._shared is not None:
            try:
                await self._shared.registry.open(dict(broker.advertised))
                await self._shared.group_partitions.load_owned(GROUP_LOAD_AT_START_S)
            except BaseException:
                for started in self._servers:
                    started.close()
                await self._shared.close()
                raise
        # The flusher is never cancelled (a cancel racing its wake-up timeout could be swallowed); it
        # stops through `Flusher.stop`, after the last coordinator write of a clean shutdown.
        self._flusher_task = asyncio.create_task(self.flusher.run(), name="flusher")
        self._tasks = [asyncio.create_task(self._maintenance(), name="maintenance"),
                       asyncio.create_task(self._close_idle_connections(), name="idle-connections")]

    def _durability(self, log: PartitionLog, offset: int, callback: Callable[[bool], None]) -> None:
        """The storage's durability hook: the flusher's, counted so a clean stop can let what waits on
        it (a commit's markers, a fence's abort) finish first."""
        self._durability_waits += 1

        def done(ok: bool) -> None:
            try:
                callback(ok)  # first: a chain's next write is counted before this one is not
            finally:
                self._durability_waits -= 1
                if self._durability_waits == 0:
                    self._durability_idle.set()

        self._durability_idle.clear()
        self.flusher.when_durable(log, offset, done)

    def _log_changed(self, topic: str, partition: int) -> None:
        self.waiters.notify((topic, partition))
        self.broker.partition_changed(topic, partition)

    def _refresh_tracked_logs(self) -> None:
        if self.broker.shared is None:
            self.flusher.track(list(self.broker.logs.logs()))

    def _new_connection(self, listener: str) -> Connection:
        connection = Connection(self.broker, self.waiters, self._connections.discard, listener,
                                self._tls.get(listener), self._sasl.get(listener))
        self._connections.add(connection)
        return connection

    async def _close_idle_connections(self) -> None:
        """Kafka's `connections.max.idle.ms`: close connections that sent nothing and wait for nothing."""
        idle_s = self.config.connections_max_idle_ms / 1000
        while True:
            await asyncio.sleep(min(max(idle_s / 4, 0.01), 10.0))
            deadline = time.monotonic() - idle_s
            for connection in list(self._connections):
                if connection.idle and connection.last_active < deadline:
                    logger.info("peer=%s closing connection idle for %d ms", connection.peer,
                                self.config.connections_max_idle_ms)
                    connection.abort()

    def _jobs(self) -> list[_Periodic]:
        broker = self.broker
        jobs = broker.maintenance_jobs()
        if broker.shared is not None and self._shared is not None:
            # The database holds the partitions: retention runs there (every broker; the partition lock
            # keeps them apart; a broker given to us on shared storage is maintained by its owner).
            config = self.config
            database = self._shared.storage
            jobs.append(("retention", config.log_retention_check_interval_ms,
                         lambda: database.apply_retention(broker.now_ms(), broker.config)))
        return [_Periodic(name, interval_ms, run) for name, interval_ms, run in jobs]

    async def _maintenance(self) -> None:
        jobs = self._jobs()
        loop = asyncio.get_running_loop()
        for job in jobs:
            job.schedule(loop.time())
        while True:
            await asyncio.sleep(max(0.05, min(min(job.due for job in jobs), loop.time() + 1) - loop.time()))
            self._refresh_tracked_logs()
            now = loop.time()
            for job in jobs:
                if now >= job.due:
                    job.run(now)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.http is not None:
            await self.http.stop()
        # Read no more requests; answer those taken (parked fetches are woken and answer now).
        for connection in list(self._connections):
            connection.stop_reading()
        self.waiters.notify_all()
        if self._connections:
            _done, pending = await asyncio.wait([c.closed for c in self._connections], timeout=SHUTDOWN_GRACE_S)
            if pending:
                for connection in list(self._connections):
                    connection.abort()
                if self._connections:
                    await asyncio.wait([c.closed for c in self._connections], timeout=SHUTDOWN_GRACE_S)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):  # a job's failure is logged where it happened
                await task
        await self._finish_coordinator_work()
        await self.flusher.stop()
        await self._flusher_task
        self.broker.close()
        if self._shared is not None:
            await self._shared.close()
        logger.info("oncelog stopped cleanly")

    async def _finish_coordinator_work(self) -> None:
        """Let coordinator chains in progress (a commit's markers, a fence's abort) finish while the flusher
        still runs, then stop timers so nothing writes to the logs once they close. What does not finish
        within the grace period is finished by the next start (Prepare* is resumed from the log)."""
        if self._durability_waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._durability_idle.wait(), SHUTDOWN_GRACE_S)
        self._scheduler.stopped = True
