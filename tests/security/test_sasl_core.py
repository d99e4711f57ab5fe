"""SASL without sockets: SCRAM against RFC 7677's test vector, the session's transition table, JAAS
parsing and the settings checks."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oncelog.config import ConfigError, broker_config
from oncelog.errors import ErrorCode
from oncelog.security import scram
from oncelog.security.jaas import JaasError, parse_jaas
from oncelog.security.principal import KafkaPrincipal
from oncelog.security.sasl import BEFORE_AUTHENTICATION, ListenerSasl, SaslSession, State
from oncelog.security.scram import ScramClient, ScramError, ScramServer, make_credential

# RFC 7677 section 3: user "user", password "pencil".
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _rfc_credential() -> scram.ScramCredential:
    import base64

    return make_credential("SCRAM-SHA-256", "pencil", 4096, base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))


def test_the_server_side_matches_rfc_7677() -> None:
    server = ScramServer("SCRAM-SHA-256", lambda user: _rfc_credential() if user == "user" else None)
    with mock.patch.object(scram.secrets, "token_urlsafe", lambda _n: RFC_SERVER_NONCE):
        assert server.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_a_changed_proof_or_nonce_is_refused() -> None:
    for final in (RFC_CLIENT_FINAL.replace(b"p=dHz", b"p=dHy"), RFC_CLIENT_FINAL.replace(b"r=rOpr", b"r=XOpr")):
        server = ScramServer("SCRAM-SHA-256", lambda user: _rfc_credential())
        with mock.patch.object(scram.secrets, "token_urlsafe", lambda _n: RFC_SERVER_NONCE):
            server.first(RFC_CLIENT_FIRST)
        with pytest.raises(ScramError):
            server.final(final)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_client_and_server_agree_and_a_wrong_password_fails_like_an_unknown_user(mechanism: str) -> None:
    stored = {"alice": make_credential(mechanism, "secret")}

    def exchange(user: str, password: str) -> str | None:
        client, server = ScramClient(mechanism, user, password), ScramServer(mechanism, stored.get)
        try:
            client.verify(server.final(client.final(server.first(client.first()))))
        except ScramError as error:
            return str(error)
        return None

    assert exchange("alice", "secret") is None
    refused = "Authentication failed: Invalid user credentials"
    assert exchange("alice", "wrong") == exchange("mallory", "secret") == refused


def test_channel_binding_delegation_tokens_and_a_foreign_authorization_id_are_refused() -> None:
    for first in (b"p=tls-unique,,n=a,r=x", b"n,,n=a,r=x,tokenauth=true", b"n,a=bob,n=alice,r=x", b"n,,r=x"):
        with pytest.raises(ScramError):
            ScramServer("SCRAM-SHA-256", lambda user: None).first(first)


def test_an_authorization_id_equal_to_the_user_and_unknown_extensions_are_fine() -> None:
    credential = make_credential("SCRAM-SHA-256", "secret")
    server = ScramServer("SCRAM-SHA-256", lambda user: credential)
    assert server.first(b"n,a=alice,n=alice,r=abc,foo=bar").startswith(b"r=abc")


def test_the_client_final_must_echo_the_gs2_header() -> None:
    credential = make_credential("SCRAM-SHA-256", "secret")
    server, client = ScramServer("SCRAM-SHA-256", lambda user: credential), ScramClient("SCRAM-SHA-256", "u", "secret")
    final = client.final(server.first(client.first()))
    with pytest.raises(ScramError, match="channel binding"):
        server.final(final.replace(b"c=biws", b"c=eSws"))  # "y,," instead of "n,,"


def test_an_unknown_user_costs_no_key_derivation() -> None:
    ScramServer("SCRAM-SHA-512", lambda user: None).first(b"n,,n=warm-up,r=x")  # the dummy keys, once
    with mock.patch.object(scram.hashlib, "pbkdf2_hmac", side_effect=AssertionError("PBKDF2 per attempt")):
        first = ScramServer("SCRAM-SHA-512", lambda user: None).first(b"n,,n=nobody,r=x")
        again = ScramServer("SCRAM-SHA-512", lambda user: None).first(b"n,,n=nobody,r=y")
    assert first.split(b",")[1] == again.split(b",")[1]  # one salt per unknown name, like a real user


# --- the session's transition table ------------------------------------------------------------------

def _session(reauth_ms: int = 0, clock: list[int] | None = None) -> SaslSession:
    now = clock if clock is not None else [0]
    listener = ListenerSasl(("PLAIN", "SCRAM-SHA-512"), {"admin": "admin-secret", "bob": "bob-secret"},
                            reauth_ms=reauth_ms)
    credentials = {"alice": make_credential("SCRAM-SHA-512", "alice-secret")}
    return SaslSession(listener, lambda user, mechanism: credentials.get(user), lambda: now[0])


def test_only_the_sasl_apis_are_served_before_authentication() -> None:
    session = _session()
    assert {key for key in range(80) if session.allows(key)} == set(BEFORE_AUTHENTICATION)
    assert session.handshake("PLAIN") == (ErrorCode.none, ["PLAIN", "SCRAM-SHA-512"])
    assert session.authenticate(b"\0admin\0admin-secret", 2).error_code == ErrorCode.none
    assert session.principal == KafkaPrincipal("User", "admin") and session.allows(3)


@pytest.mark.parametrize(("token", "why"), [
    (b"\0admin\0wrong", "invalid username or password"),
    (b"\0nobody\0admin-secret", "invalid username or password"),
    (b"bob\0admin\0admin-secret", "asked to act as"),
    (b"admin-secret", "NUL"),
])
def test_a_bad_plain_token_fails_the_session(token: bytes, why: str) -> None:
    session = _session()
    session.handshake("PLAIN")
    answer = session.authenticate(token, 1)
    assert answer.error_code == ErrorCode.sasl_authentication_failed and session.state is State.FAILED
    assert why in session.failure and not session.allows(18)


def test_a_mechanism_not_enabled_fails() -> None:
    session = _session()
    assert session.handshake("SCRAM-SHA-256")[0] == ErrorCode.unsupported_sasl_mechanism
    assert session.state is State.FAILED


def test_scram_through_the_session() -> None:
    session = _session()
    session.handshake("SCRAM-SHA-512")
    client = ScramClient("SCRAM-SHA-512", "alice", "alice-secret")
    challenge = session.authenticate(client.first(), 2)
    assert session.state is State.CHALLENGED
    final = session.authenticate(client.final(challenge.auth_bytes), 2)
    client.verify(final.auth_bytes)
    assert session.principal == KafkaPrincipal("User", "alice")


def test_reauthentication_keeps_the_principal_and_the_session_expires_without_it() -> None:
    clock = [1_000]
    session = _session(reauth_ms=500, clock=clock)
    session.handshake("PLAIN")
    assert session.authenticate(b"\0admin\0admin-secret", 1).session_lifetime_ms == 500
    clock[0] = 1_499
    assert not session.expired()
    clock[0] = 1_500
    assert session.expired()
    session.handshake("PLAIN")  # re-authentication: only SASL requests meanwhile
    assert not session.allows(3)
    assert session.authenticate(b"\0admin\0admin-secret", 1).error_code == ErrorCode.none
    assert not session.expired() and session.expires_at_ms == 2_000
    session.handshake("PLAIN")
    answer = session.authenticate(b"\0bob\0bob-secret", 1)
    assert answer.error_code == ErrorCode.sasl_authentication_failed and "re-authentication as User:bob" in \
        session.failure


def test_a_v0_session_is_not_told_its_lifetime_but_expires_all_the_same() -> None:
    clock = [0]
    session = _session(reauth_ms=500, clock=clock)
    session.handshake("PLAIN", version=0)
    assert session.authenticate(b"\0admin\0admin-secret", 0).session_lifetime_ms == 0
    clock[0] = 500
    assert session.expired()


def test_reauthentication_when_not_enabled_is_refused_and_the_session_goes_on() -> None:
    session = _session()
    session.handshake("PLAIN")
    session.authenticate(b"\0admin\0admin-secret", 2)
    assert session.handshake("PLAIN")[0] == ErrorCode.illegal_sasl_state
    assert session.state is State.AUTHENTICATED and session.allows(3)


def test_reauthentication_may_not_switch_mechanism() -> None:
    session = _session(reauth_ms=1000)
    session.handshake("PLAIN")
    session.authenticate(b"\0admin\0admin-secret", 2)
    assert session.handshake("SCRAM-SHA-512")[0] == ErrorCode.illegal_sasl_state
    assert session.state is State.FAILED


def test_a_failed_session_answers_without_raising() -> None:
    session = _session()
    session.handshake("PLAIN")
    session.authenticate(b"\0admin\0wrong", 2)
    assert session.authenticate(b"\0admin\0admin-secret", 2).error_code == ErrorCode.illegal_sasl_state
    assert session.handshake("PLAIN")[0] == ErrorCode.illegal_sasl_state
    assert session.state is State.FAILED and session.principal is None


def test_authenticate_out_of_order_is_illegal() -> None:
    session = _session()
    assert session.authenticate(b"\0admin\0admin-secret", 1).error_code == ErrorCode.illegal_sasl_state


# --- JAAS and settings ----------------------------------------------------------------------------------

def test_jaas_values_quoted_or_bare() -> None:
    jaas = parse_jaas('org.apache.kafka.common.security.plain.PlainLoginModule required username=admin '
                      'password="a \\"quoted\\" secret" user_admin="x";')
    assert jaas.options == {"username": "admin", "password": 'a "quoted" secret', "user_admin": "x"}
    assert jaas.users() == {"admin": "x"}
    for bad in ("Module", "Module sometimes;", "Module required user_a=\"x\"", "M required; N required;"):
        with pytest.raises(JaasError):
            parse_jaas(bad)


SASL_LISTENER = {"listeners": "SASL_PLAINTEXT://127.0.0.1:0"}


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, "sasl.enabled.mechanisms is not set"),
    ({"sasl.enabled.mechanisms": "GSSAPI"}, "names GSSAPI"),
    ({"sasl.enabled.mechanisms": "PLAIN"}, "enables PLAIN but has no users"),
    ({"sasl.enabled.mechanisms": "PLAIN", "sasl.jaas.config": "org.apache.kafka.common.security.plain."
      "PlainLoginModule required username=\"x\";"}, "defines no user_"),
    ({"sasl.enabled.mechanisms": "SCRAM-SHA-256", "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config":
      "org.apache.kafka.common.security.plain.PlainLoginModule required;"}, "needs org.apache.kafka.common.security"
                                                                            ".scram.ScramLoginModule"),
    ({"sasl.enabled.mechanisms": "SCRAM-SHA-256", "connections.max.reauth.ms": "-1"}, "must be a whole number"),
])
def test_bad_sasl_settings_are_named(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        broker_config({**SASL_LISTENER, **extra})


def test_jaas_settings_are_sensitive_in_describe_configs() -> None:
    from oncelog.security.settings import is_sensitive

    assert is_sensitive("listener.name.sasl_ssl.plain.sasl.jaas.config") and is_sensitive("sasl.jaas.config")
    assert not is_sensitive("sasl.enabled.mechanisms")


# --- hostile tokens -----------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(mechanism=st.sampled_from(["PLAIN", "SCRAM-SHA-512"]), tokens=st.lists(st.binary(max_size=200), max_size=3))
def test_any_token_sequence_ends_in_an_answer_never_an_exception(mechanism: str, tokens: list[bytes]) -> None:
    session = _session()
    session.handshake(mechanism)
    for token in tokens:
        answer = session.authenticate(token, 2)
        assert answer.error_code in (ErrorCode.none, ErrorCode.sasl_authentication_failed, ErrorCode.illegal_sasl_state)
        if session.state is State.FAILED:
            assert not session.allows(3) and session.principal is None
            break
    assert session.principal is None or session.state is State.AUTHENTICATED


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_jaas_text_parses_or_says_why(text: str) -> None:
    try:
        parse_jaas(text)
    except JaasError as error:
        assert str(error).startswith("sasl.jaas.config")
