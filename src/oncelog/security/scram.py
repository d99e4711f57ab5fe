"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's `ScramSaslServer` speaks them.

Theory of operation: a stored credential is (salt, iterations, StoredKey, ServerKey) — never the
password: StoredKey = H(HMAC(SaltedPassword, "Client Key")) lets the server check a client's proof,
ServerKey = HMAC(SaltedPassword, "Server Key") lets it prove itself. `ScramServer` runs one exchange:

    client-first  n,,n=alice,r=<client nonce>
    server-first  r=<client nonce><server nonce>,s=<salt, base64>,i=<iterations>
    client-final  c=biws,r=<both nonces>,p=<proof, base64>
    server-final  v=<server signature, base64>       (or e=<error>)

The client proof is ClientKey XOR HMAC(StoredKey, AuthMessage); the server recovers ClientKey from it
and checks H(ClientKey) == StoredKey. An unknown user is answered like a wrong password, after the same
work (a dummy credential), so the exchange does not tell which names exist. Channel binding is not
offered (`n,,`), as in Kafka, and the client-final `c=` must echo the GS2 header; extensions are ignored
except `tokenauth=true` (delegation tokens), which is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MIN_ITERATIONS = {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 4096}
"""Kafka's ScramMechanism minimum iterations."""
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 4096


class ScramError(Exception):
    """The exchange failed; the message is safe to send to the client."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hash(mechanism: str) -> str:
    return MECHANISMS[mechanism]


def _hmac(mechanism: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, _hash(mechanism)).digest()


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(_hash(mechanism), password.encode(), salt, iterations)


def credential_from_salted(mechanism: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    client_key = _hmac(mechanism, salted, b"Client Key")
    stored_key = hashlib.new(_hash(mechanism), client_key).digest()
    return ScramCredential(mechanism, salt, iterations, stored_key, _hmac(mechanism, salted, b"Server Key"))


def make_credential(mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS,
                    salt: bytes | None = None) -> ScramCredential:
    salt = salt if salt is not None else os.urandom(32)
    return credential_from_salted(mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _attributes(message: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError(f"invalid SCRAM message attribute {part[:20]!r}")
        attributes[key] = value
    return attributes


def _unescape_name(name: str) -> str:
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise ScramError("invalid user name encoding")
    return name.replace("=2C", ",").replace("=3D", "=")


_DUMMY_SECRET = os.urandom(32)
_DUMMIES: dict[str, ScramCredential] = {}


def _dummy_credential(mechanism: str, user: str) -> ScramCredential:
    """Keys nobody knows, made once per mechanism; the salt is derived from the name with a secret of this
    process, so repeated attempts for one unknown name see one salt, as for a real user."""
    if mechanism not in _DUMMIES:
        _DUMMIES[mechanism] = make_credential(mechanism, secrets.token_hex(32))
    salt = hmac.new(_DUMMY_SECRET, user.encode(), "sha256").digest()
    dummy = _DUMMIES[mechanism]
    return ScramCredential(mechanism, salt, dummy.iterations, dummy.stored_key, dummy.server_key)


class ScramServer:
    """One SCRAM exchange. `lookup(user)` gives the user's credential for this mechanism, or None."""

    def __init__(self, mechanism: str, lookup: Callable[[str], ScramCredential | None]) -> None:
        self.mechanism = mechanism
        self._lookup = lookup
        self.user = ""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._credential: ScramCredential | None = None
        self._known = False
        self._gs2_header = ""

    def first(self, message: bytes) -> bytes:
        text = message.decode("utf-8", "strict")
        flag, comma, rest = text.partition(",")
        authorization, comma2, bare = rest.partition(",")
        if not comma or not comma2 or flag not in ("n", "y") or (authorization and not authorization.startswith("a=")):
            raise ScramError("channel binding is not supported; the client-first message must start with n,,")
        self._gs2_header = f"{flag},{authorization},"
        parts = bare.split(",")
        if len(parts) < 2 or not parts[0].startswith("n=") or not parts[1].startswith("r=") or len(parts[1]) < 3:
            raise ScramError("the client-first message needs n= and r=")
        extensions = dict(part.partition("=")[::2] for part in parts[2:])
        if extensions.get("tokenauth", "").lower() == "true":  # Kafka's delegation tokens: not served
            raise ScramError("delegation token authentication is not supported")
        self.user = _unescape_name(parts[0][2:])
        if authorization and _unescape_name(authorization[2:]) != self.user:
            raise ScramError("the authorization id must be the user name")
        credential = self._lookup(self.user)
        self._known = credential is not None
        # An unknown user gets a convincing exchange (a per-user salt that stays the same, no extra work)
        # and fails at the end like a wrong password.
        self._credential = credential or _dummy_credential(self.mechanism, self.user)
        self._nonce = parts[1][2:] + secrets.token_urlsafe(24)
        self._client_first_bare = bare
        self._server_first = f"r={self._nonce},s={_b64(self._credential.salt)},i={self._credential.iterations}"
        return self._server_first.encode()

    def final(self, message: bytes) -> bytes:
        credential = self._credential
        assert credential is not None, "final before first"
        text = message.decode("utf-8", "strict")
        without_proof, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise ScramError("the client-final message has no proof")
        attributes = _attributes(without_proof)
        # Kafka's ScramSaslServer accepts a nonce that ends with the server-first one (some librdkafka
        # versions send the client nonce twice); the proof still covers the exact text the client sent.
        if not attributes.get("r", "").endswith(self._nonce):
            raise ScramError("invalid nonce")
        if attributes.get("c") != _b64(self._gs2_header.encode()):  # RFC 5802 5.1: the GS2 header, echoed
            raise ScramError("invalid channel binding")
        try:
            proof = base64.b64decode(proof_text, validate=True)
        except ValueError as error:
            raise ScramError("invalid proof encoding") from error
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self.mechanism, credential.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("Authentication failed: Invalid user credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        computed = hashlib.new(_hash(self.mechanism), client_key).digest()
        if not self._known or not hmac.compare_digest(computed, credential.stored_key):
            raise ScramError("Authentication failed: Invalid user credentials")
        return f"v={_b64(_hmac(self.mechanism, credential.server_key, auth_message))}".encode()


class ScramClient:
    """The client side, for `oncelog` tools and tests."""

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.mechanism, self.user, self.password = mechanism, user, password
        self._nonce = secrets.token_urlsafe(18)
        self._bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self._nonce}"
        self._auth_message = b""
        self._salted = b""

    def first(self) -> bytes:
        return f"n,,{self._bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        attributes = _attributes(server_first.decode())
        if not attributes.get("r", "").startswith(self._nonce):
            raise ScramError("the server's nonce does not extend ours")
        salt, iterations = base64.b64decode(attributes["s"]), int(attributes["i"])
        self._salted = salted_password(self.mechanism, self.password, salt, iterations)
        without_proof = f"c=biws,r={attributes['r']}"
        self._auth_message = f"{self._bare},{server_first.decode()},{without_proof}".encode()
        client_key = _hmac(self.mechanism, self._salted, b"Client Key")
        stored_key = hashlib.new(_hash(self.mechanism), client_key).digest()
        signature = _hmac(self.mechanism, stored_key, self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        attributes = _attributes(server_final.decode())
        if "e" in attributes:
            raise ScramError(attributes["e"])
        server_key = _hmac(self.mechanism, self._salted, b"Server Key")
        expected = _b64(_hmac(self.mechanism, server_key, self._auth_message))
        if not hmac.compare_digest(attributes.get("v", ""), expected):
            raise ScramError("the server's signature is wrong")
