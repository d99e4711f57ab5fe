"""A small blocking Kafka client for the CLI and for raw-protocol tests.

It speaks the same codecs as the broker (kio), negotiates nothing fancy: `request(api_key, version,
fields)` sends one request built from a dict and returns the decoded response. It is deliberately tiny;
applications should use a real Kafka client.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from oncelog.protocol.codec import build_request, decode_response, encode_request, response_class
from oncelog.protocol.framing import skip_tagged_fields
from oncelog.security.scram import ScramClient, ScramError

from .client_security import ClientConfigError, ClientSecurity

PLAINTEXT = ClientSecurity()


def _tls_context(security: ClientSecurity) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=security.ca_file)
    if security.cert_file:
        context.load_cert_chain(security.cert_file, security.key_file)
    return context


def is_flexible_response(api_key: int, api_version: int) -> bool:
    return bool(response_class(api_key, api_version).__flexible__) and api_key != 18


class ClientError(RuntimeError):
    """The broker could not be reached or answered something we cannot read."""


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.rpartition(":")
    if not host or not port.isdigit():
        raise ClientError(f"bootstrap address {bootstrap!r} is not HOST:PORT")
    return host, int(port)


class KafkaClient:
    def __init__(self, bootstrap: str, timeout_s: float = 10.0, client_id: str = "oncelog-cli",
                 security: ClientSecurity = PLAINTEXT) -> None:
        host, port = parse_bootstrap(bootstrap)
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        try:
            self._socket = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as error:
            raise ClientError(
                f"cannot connect to {bootstrap}: {error.strerror or error}. Is `oncelog serve` running there?"
            ) from error
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._correlation_id = 0
        self._client_id = client_id
        try:
            if security.tls:
                self._socket = _tls_context(security).wrap_socket(self._socket, server_hostname=host)
            if security.sasl:
                self._authenticate(security)
        except (ssl.SSLError, ssl.CertificateError) as error:
            self._socket.close()
            raise ClientError(f"TLS with {bootstrap} failed: {error}. Check ssl.ca.location, and that the port "
                              "is a TLS listener") from error
        except BaseException:
            self._socket.close()
            raise

    def _authenticate(self, security: ClientSecurity) -> None:
        handshake = self.request(17, 1, {"mechanism": security.mechanism})
        if int(handshake.error_code) != 0:
            raise ClientError(f"the broker does not accept SASL mechanism {security.mechanism} here (it offers "
                              f"{', '.join(handshake.mechanisms) or 'none'})")
        if security.mechanism == "PLAIN":
            self._sasl_token(f"\0{security.username}\0{security.password}".encode())
            return
        scram = ScramClient(security.mechanism, security.username, security.password)
        server_first = self._sasl_token(scram.first())
        server_final = self._sasl_token(scram.final(server_first))
        try:
            scram.verify(server_final)
        except ScramError as error:
            raise ClientError(f"the broker failed to prove it knows the credentials: {error}") from error

    def _sasl_token(self, token: bytes) -> bytes:
        answer = self.request(36, 2, {"auth_bytes": token})
        if int(answer.error_code) != 0:
            raise ClientError(f"authentication failed: {answer.error_message or 'no reason given'}")
        return bytes(answer.auth_bytes)

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> KafkaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        try:
            self._socket.sendall(data)
        except OSError as error:
            raise ClientError(f"cannot send to {self._bootstrap}: {error.strerror or error}") from error

    def receive_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._receive_exactly(4))
        if size < 0:
            raise ClientError(f"{self._bootstrap} sent a frame of size {size}: is it a Kafka broker?")
        return self._receive_exactly(size)

    def _receive_exactly(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            try:
                chunk = self._socket.recv(count - len(chunks))
            except TimeoutError as error:
                raise ClientError(f"no answer from {self._bootstrap} within {self._timeout_s:g} s: is a Kafka "
                                  "broker listening there?") from error
            except OSError as error:
                raise ClientError(f"the connection to {self._bootstrap} failed: {error.strerror or error}") from error
            if not chunk:
                raise ClientError("the broker closed the connection")
            chunks += chunk
        return bytes(chunks)

    def request_body(self, api_key: int, api_version: int, fields: dict[str, Any]) -> bytes:
        """Send a request; return the response body undecoded (for responses kio cannot read)."""
        self._correlation_id += 1
        correlation_id = self._correlation_id
        self.send_raw(encode_request(api_key, api_version, correlation_id, self._client_id,
                                     build_request(api_key, api_version, fields)))
        frame = self.receive_frame()
        received_id = int.from_bytes(frame[0:4], "big", signed=True)
        if received_id != correlation_id:
            raise ClientError(f"correlation id {received_id} does not match {correlation_id}")
        position = 4
        if is_flexible_response(api_key, api_version):
            position = skip_tagged_fields(frame, position)
        return frame[position:]

    def request(self, api_key: int, api_version: int, fields: dict[str, Any], *, expect_response: bool = True) -> Any:
        self._correlation_id += 1
        correlation_id = self._correlation_id
        request = build_request(api_key, api_version, fields)
        self.send_raw(encode_request(api_key, api_version, correlation_id, self._client_id, request))
        if not expect_response:
            return None
        received_id, response = decode_response(self.receive_frame(), api_key, api_version)
        if received_id != correlation_id:
            raise ClientError(f"correlation id {received_id} does not match {correlation_id}")
        return response


def connect(args: Any, address: str | None = None) -> KafkaClient:
    """A client for a CLI command: to `args.bootstrap` (or `address`, another broker of the cluster),
    secured by `args.command_config` if given."""
    security = PLAINTEXT
    command_config = getattr(args, "command_config", None)
    if command_config is not None:
        from oncelog.config import ConfigError, load_properties

        try:
            security = ClientSecurity.from_properties(load_properties(command_config))
        except ClientConfigError as error:
            raise ConfigError(f"{command_config}: {error}") from error
    return KafkaClient(address or args.bootstrap, security=security)
