"""Simulated TCP connections and the driver that runs a simulated client program over them.

Theory of operation: a client program is a generator. It yields `Call(api_key, version, fields)` and
gets the decoded response back (or `Disconnected` thrown in when the connection failed or the request
timed out), or yields `Sleep(ms)`. `ClientDriver` runs it: one request at a time, each on the client's
current connection (a new one once the old is gone), with a request timeout after which the client
closes the connection and the program sees `Disconnected`, as librdkafka and the Java client do. The
request may still reach the broker after that: its bytes were on the wire.

A `Connection` keeps TCP's promise (in order, each way) and nothing more: every message is delayed by a
seeded amount (now and then by more than a client's timeout), and a fault can sever it, losing what is
in flight both ways; the client hears of it (a reset) after a short delay, or only through its timeout.
A connection belongs to one broker incarnation; a crash severs them all.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from oncelog.protocol.codec import build_request, decode_response, encode_request

from .world import Node, World, _Reply


@dataclass(frozen=True)
class Call:
    api_key: int
    version: int
    fields: dict[str, Any]
    timeout_ms: int = 3_000


@dataclass(frozen=True)
class Sleep:
    ms: int


class Disconnected(Exception):
    """The connection failed or the request timed out: the request may or may not have been served."""


Program = Generator[Call | Sleep, Any, None]


@dataclass
class NetworkFaults:
    slow: float = 0.0
    """Chance a message takes 0.5–6 s instead of 0–3 ms."""
    sever: float = 0.0
    """Chance a message severs its connection (it and everything after it lost)."""


class Network:
    def __init__(self, world: World, faults: NetworkFaults) -> None:
        self.world = world
        self.faults = faults
        self.node: Node | None = None
        self.connections: list[Connection] = []
        self._ids = itertools.count(1)
        self.faults_injected = 0

    def delay(self) -> int:
        rng = self.world.random
        if self.faults.slow and rng.random() < self.faults.slow:
            self.faults_injected += 1
            return rng.randint(500, 6_000)
        return rng.randint(0, 3)

    def connect(self, client: ClientDriver) -> Connection:
        connection = Connection(self, client, self.node, next(self._ids))
        self.connections.append(connection)
        if self.node is None:
            connection.sever("no broker listening")
        return connection

    def broker_died(self) -> None:
        for connection in self.connections:
            connection.sever("broker died")
        self.connections.clear()
        self.node = None


class Connection:
    def __init__(self, network: Network, client: ClientDriver, node: Node | None, number: int) -> None:
        self.network = network
        self.world = network.world
        self.client = client
        self.node = node
        self.number = number
        self.severed = False
        self.closed_by_client = False
        self._to_broker_ms = 0
        self._to_client_ms = 0
        self._replies: deque[_Reply] = deque()

    @property
    def usable(self) -> bool:
        return not self.severed and not self.closed_by_client

    def _maybe_sever(self) -> bool:
        rate = self.network.faults.sever
        if rate and self.world.random.random() < rate:
            self.network.faults_injected += 1
            self.sever("network fault")
            return True
        return False

    def send(self, frame: bytes) -> None:
        if self.severed or self._maybe_sever():
            return
        due = max(self.world.now_ms + self.network.delay(), self._to_broker_ms)
        self._to_broker_ms = due
        self.world.at(due - self.world.now_ms, lambda: self._arrive(frame), f"c{self.number} request arrives")

    def _arrive(self, frame: bytes) -> None:
        node = self.node
        if self.severed or node is None or not node.alive:
            return
        reply = _Reply()
        self._replies.append(reply)
        node.handle(frame, f"sim:{self.number}", lambda response: self._answered(reply, response))

    def _answered(self, reply: _Reply, frame: bytes | None) -> None:
        reply.ready, reply.frame = True, frame
        while self._replies and self._replies[0].ready:
            head = self._replies.popleft()
            if head.frame is None:
                continue
            if self.severed or self._maybe_sever():
                return
            answer = head.frame
            due = max(self.world.now_ms + self.network.delay(), self._to_client_ms)
            self._to_client_ms = due
            self.world.at(due - self.world.now_ms, lambda answer=answer: self._deliver(answer),  # type: ignore[misc]
                          f"c{self.number} response arrives")

    def _deliver(self, frame: bytes) -> None:
        if self.usable:
            self.client.received(self, frame)

    def sever(self, why: str) -> None:
        if self.severed:
            return
        self.severed = True
        self._replies.clear()
        # The client hears a reset soon, unless the packets are lost too (then its timeout tells it).
        if not self.closed_by_client and self.world.random.random() < 0.8:
            self.world.at(self.world.random.randint(1, 20), lambda: self.client.reset(self, why),
                          f"c{self.number} reset")


class ClientDriver:
    """Runs one client program: its requests, timeouts and sleeps, as events."""

    def __init__(self, world: World, network: Network, name: str, program: Program,
                 on_exit: Callable[[ClientDriver], None] = lambda client: None) -> None:
        self.world = world
        self.network = network
        self.name = name
        self.program = program
        self.on_exit = on_exit
        self.finished = False
        self.stopped = False
        self._connection: Connection | None = None
        self._correlation = itertools.count(1)
        self._waiting: tuple[int, Call, Any] | None = None
        """(correlation id, call, timeout event) of the request in flight."""

    def start(self, delay_ms: int = 0) -> None:
        self.world.at(delay_ms, lambda: self._resume(None, None), f"{self.name} starts")

    def stop(self) -> None:
        """The client vanishes (its process died): nothing more is sent, nothing more is heard."""
        self.stopped = True
        if self._waiting is not None:
            self._waiting[2].cancel()
            self._waiting = None
        if self._connection is not None:
            self._connection.closed_by_client = True

    def _resume(self, value: Any, error: BaseException | None) -> None:
        if self.stopped or self.finished:
            return
        try:
            command = self.program.throw(error) if error is not None else self.program.send(value)
        except StopIteration:
            self.finished = True
            self.on_exit(self)
            return
        if isinstance(command, Sleep):
            self.world.at(command.ms, lambda: self._resume(None, None), f"{self.name} wakes")
            return
        self._send(command)

    def _send(self, call: Call) -> None:
        connection = self._connection
        if connection is None or not connection.usable:
            connection = self._connection = self.network.connect(self)
        correlation_id = next(self._correlation)
        request = build_request(call.api_key, call.version, call.fields)
        frame = encode_request(call.api_key, call.version, correlation_id, self.name, request)[4:]
        timeout = self.world.at(call.timeout_ms, lambda: self._give_up(connection, "request timed out"),
                                f"{self.name} request timeout")
        self._waiting = (correlation_id, call, timeout)
        connection.send(frame)

    def received(self, connection: Connection, frame: bytes) -> None:
        waiting = self._waiting
        if waiting is None or connection is not self._connection:
            return
        correlation_id, call, timeout = waiting
        answered, response = decode_response(frame, call.api_key, call.version)
        assert answered == correlation_id, f"{self.name}: response {answered} answers request {correlation_id}"
        timeout.cancel()
        self._waiting = None
        self._resume(response, None)

    def reset(self, connection: Connection, why: str) -> None:
        if connection is self._connection:
            self._give_up(connection, why)

    def _give_up(self, connection: Connection, why: str) -> None:
        connection.closed_by_client = True
        if self._waiting is None or connection is not self._connection:
            return
        self._waiting[2].cancel()
        self._waiting = None
        self._connection = None
        # A client backs off before it reconnects (librdkafka's reconnect.backoff.ms).
        self.world.at(self.world.random.randint(10, 100), lambda: self._resume(None, Disconnected(why)),
                      f"{self.name} sees {why}")
