"""One connection's SASL authentication: Kafka's `SaslServerAuthenticator` as a transition table.

Theory of operation: on a SASL_PLAINTEXT or SASL_SSL listener a connection starts unauthenticated;
only ApiVersions, SaslHandshake and SaslAuthenticate are served (anything else closes it, Kafka's
IllegalSaslStateException). SaslHandshake picks a mechanism the listener enables; SaslAuthenticate
carries the mechanism's tokens — one for PLAIN, two for SCRAM. Success names the principal
`User:<name>`; failure answers SASL_AUTHENTICATION_FAILED and the connection closes after
`connection.failed.authentication.delay.ms` (a brake on guessing, KIP-306).

Re-authentication (KIP-368): with `connections.max.reauth.ms` > 0, SaslAuthenticate v1+ tells the
client how long its session lasts; before then it runs SaslHandshake + SaslAuthenticate again on the
same connection, as the same principal. A request that arrives after the session expired closes the
connection.

    state            event                         next state
    START            handshake (mechanism enabled) MECHANISM_CHOSEN
    START            handshake (not enabled)       FAILED
    MECHANISM_CHOSEN token (PLAIN ok / SCRAM last) AUTHENTICATED
    MECHANISM_CHOSEN token (SCRAM first)          CHALLENGED
    CHALLENGED       token (SCRAM final ok)        AUTHENTICATED
    AUTHENTICATED    handshake (same mechanism)    MECHANISM_CHOSEN   (re-authentication, when enabled)
    any              a bad token, a wrong order    FAILED
    FAILED           anything                      FAILED (answered ILLEGAL_SASL_STATE; the connection closes)
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from oncelog.errors import ErrorCode

from .principal import USER_TYPE, KafkaPrincipal
from .scram import MECHANISMS as SCRAM_MECHANISMS
from .scram import ScramCredential, ScramError, ScramServer

PLAIN = "PLAIN"
SUPPORTED_MECHANISMS = (PLAIN, *SCRAM_MECHANISMS)
HANDSHAKE_KEY, AUTHENTICATE_KEY, API_VERSIONS_KEY = 17, 36, 18
BEFORE_AUTHENTICATION = frozenset({API_VERSIONS_KEY, HANDSHAKE_KEY, AUTHENTICATE_KEY})


class State(enum.Enum):
    START = "START"
    MECHANISM_CHOSEN = "MECHANISM_CHOSEN"
    CHALLENGED = "CHALLENGED"
    AUTHENTICATED = "AUTHENTICATED"
    FAILED = "FAILED"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.START: frozenset({State.MECHANISM_CHOSEN, State.FAILED}),
    State.MECHANISM_CHOSEN: frozenset({State.AUTHENTICATED, State.CHALLENGED, State.FAILED}),
    State.CHALLENGED: frozenset({State.AUTHENTICATED, State.FAILED}),
    State.AUTHENTICATED: frozenset({State.MECHANISM_CHOSEN, State.FAILED}),
    State.FAILED: frozenset(),
}


@dataclass(frozen=True)
class ListenerSasl:
    """What one SASL listener accepts."""

    mechanisms: tuple[str, ...]
    plain_users: dict[str, str] = field(default_factory=dict)
    reauth_ms: int = 0
    failed_delay_ms: int = 100
    max_receive_size: int = 524288


@dataclass
class Answer:
    """What the handler puts in its response."""

    error_code: ErrorCode = ErrorCode.none
    error_message: str | None = None
    auth_bytes: bytes = b""
    session_lifetime_ms: int = 0


class SaslSession:
    def __init__(self, listener: ListenerSasl, scram_lookup: Callable[[str, str], ScramCredential | None],
                 clock_ms: Callable[[], int]) -> None:
        self.listener = listener
        self._scram_lookup = scram_lookup
        self._clock_ms = clock_ms
        self.state = State.START
        self.mechanism = ""
        self.principal: KafkaPrincipal | None = None
        """Set once authenticated; kept through a re-authentication."""
        self.expires_at_ms: int | None = None
        self._scram: ScramServer | None = None
        self.failure = ""
        """Why the session failed (for the broker's log line; the client gets a generic message)."""
        self.raw_tokens = False
        """SaslHandshake v0 chose the mechanism: its tokens come as bare frames until authenticated."""

    def _to(self, state: State) -> None:
        assert state in TRANSITIONS[self.state], f"SASL {self.state.name} -> {state.name}"
        self.state = state

    @property
    def authenticated(self) -> bool:
        return self.principal is not None and self.state in (State.AUTHENTICATED, State.MECHANISM_CHOSEN,
                                                             State.CHALLENGED)

    def allows(self, api_key: int) -> bool:
        """May a request of `api_key` be served now?"""
        if self.state is State.AUTHENTICATED:
            return True
        return api_key in BEFORE_AUTHENTICATION and self.state is not State.FAILED

    def expired(self) -> bool:
        return self.expires_at_ms is not None and self._clock_ms() >= self.expires_at_ms

    def _fail(self, why: str, code: ErrorCode, message: str) -> Answer:
        self.failure = why
        self._to(State.FAILED)
        return Answer(code, message)

    def handshake(self, mechanism: str, version: int = 1) -> tuple[ErrorCode, list[str]]:
        enabled = list(self.listener.mechanisms)
        if self.state is State.FAILED:  # the connection is closing: nothing more is decided here
            return ErrorCode.illegal_sasl_state, enabled
        if self.state is State.AUTHENTICATED and (self.listener.reauth_ms <= 0 or version == 0):
            # Kafka answers a re-authentication it does not expect with ILLEGAL_SASL_STATE and keeps serving.
            return ErrorCode.illegal_sasl_state, enabled
        if self.state is State.AUTHENTICATED and mechanism != self.mechanism:
            self._fail(f"re-authentication with {mechanism} after {self.mechanism}", ErrorCode.illegal_sasl_state,
                       "")
            return ErrorCode.illegal_sasl_state, enabled
        if self.state not in (State.START, State.AUTHENTICATED):
            self._fail(f"SaslHandshake in state {self.state.name}", ErrorCode.illegal_sasl_state, "")
            return ErrorCode.illegal_sasl_state, enabled
        if mechanism not in enabled:
            self._fail(f"mechanism {mechanism!r} is not enabled", ErrorCode.unsupported_sasl_mechanism, "")
            return ErrorCode.unsupported_sasl_mechanism, enabled
        self.mechanism = mechanism
        self._scram = None
        self.raw_tokens = version == 0
        self._to(State.MECHANISM_CHOSEN)
        return ErrorCode.none, enabled

    def authenticate(self, token: bytes, version: int) -> Answer:
        if self.state is State.FAILED:
            return Answer(ErrorCode.illegal_sasl_state, "the authentication already failed")
        if self.state is State.MECHANISM_CHOSEN and self.mechanism == PLAIN:
            return self._plain(token, version)
        if self.state is State.MECHANISM_CHOSEN and self.mechanism in SCRAM_MECHANISMS:
            self._scram = ScramServer(self.mechanism, lambda user: self._scram_lookup(user, self.mechanism))
            try:
                challenge = self._scram.first(token)
            except (ScramError, UnicodeDecodeError) as error:
                return self._fail(str(error), ErrorCode.sasl_authentication_failed,
                                  f"Authentication failed during authentication due to invalid credentials with "
                                  f"SASL mechanism {self.mechanism}")
            self._to(State.CHALLENGED)
            return Answer(auth_bytes=challenge)
        if self.state is State.CHALLENGED and self._scram is not None:
            try:
                final = self._scram.final(token)
            except (ScramError, UnicodeDecodeError) as error:
                return self._fail(f"user {self._scram.user!r}: {error}", ErrorCode.sasl_authentication_failed,
                                  f"Authentication failed during authentication due to invalid credentials with "
                                  f"SASL mechanism {self.mechanism}")
            return self._succeed(self._scram.user, version, final)
        return self._fail(f"SaslAuthenticate in state {self.state.name}", ErrorCode.illegal_sasl_state,
                          "SaslAuthenticate request received out of order")

    def _plain(self, token: bytes, version: int) -> Answer:
        parts = token.split(b"\0")
        failed = "Authentication failed: Invalid username or password"
        if len(parts) != 3:
            return self._fail("a PLAIN token must be authzid NUL user NUL password",
                              ErrorCode.sasl_authentication_failed, failed)
        authorization_id, user, password = (part.decode("utf-8", "replace") for part in parts)
        if authorization_id and authorization_id != user:
            return self._fail(f"user {user!r} asked to act as {authorization_id!r}",
                              ErrorCode.sasl_authentication_failed, "Authentication failed: Client requested an "
                              "authorization id that is different from username")
        expected = self.listener.plain_users.get(user)
        # compare_digest even for unknown users, so timing does not tell which names exist
        if not hmac.compare_digest((expected or "\0unknown").encode(), password.encode()) or expected is None:
            return self._fail(f"user {user!r}: invalid username or password", ErrorCode.sasl_authentication_failed,
                              failed)
        return self._succeed(user, version, b"")

    def _succeed(self, user: str, version: int, final: bytes) -> Answer:
        principal = KafkaPrincipal(USER_TYPE, user)
        if self.principal is not None and principal != self.principal:  # KIP-368: the same principal only
            return self._fail(f"re-authentication as {principal} on a connection of {self.principal}",
                              ErrorCode.sasl_authentication_failed,
                              "Cannot change principals during re-authentication")
        self.principal = principal
        self.raw_tokens = False
        self._to(State.AUTHENTICATED)
        # The session expires whatever the version (Kafka's calcCompletionTimesAndReturnSessionLifetimeMs);
        # only v1+ clients are told when, so older ones are simply disconnected then.
        lifetime = self.listener.reauth_ms
        self.expires_at_ms = self._clock_ms() + lifetime if lifetime > 0 else None
        return Answer(auth_bytes=final, session_lifetime_ms=lifetime if version >= 1 else 0)
