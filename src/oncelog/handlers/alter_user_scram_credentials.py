"""AlterUserScramCredentials (key 51), version 0: add, replace or delete users' SCRAM credentials.

The client sends the salt, the iteration count and the salted password (PBKDF2 of the password), never
the password; the broker derives StoredKey and ServerKey and stores those. Validation and error codes
are Kafka's `ScramControlManager`: unknown mechanism UNSUPPORTED_SASL_MECHANISM; fewer than 4096 or more
than 16384 iterations, an empty name, salt or salted password UNACCEPTABLE_CREDENTIAL; deleting what does
not exist RESOURCE_NOT_FOUND; one user's mechanism touched twice DUPLICATE_RESOURCE. All valid changes
are written together and durably (the data directory, or the database every broker shares) before the
answer; a storage failure fails them all (KAFKA_STORAGE_ERROR).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from oncelog.errors import ErrorCode
from oncelog.logs import safe
from oncelog.protocol.codec import build_response
from oncelog.security.scram import MAX_ITERATIONS, MIN_ITERATIONS, ScramCredential, credential_from_salted

from .base import AwaitCompletion, RequestContext

logger = logging.getLogger(__name__)

API_KEY = 51
VERSIONS = (0, 0)
MECHANISMS = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}


def _problem(name: str, mechanism: int, iterations: int | None = None, salt: bytes = b"x",
             salted: bytes = b"x") -> tuple[ErrorCode, str] | None:
    if not name:
        return ErrorCode.unacceptable_credential, "Username must not be empty"
    if mechanism not in MECHANISMS:
        return ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism"
    if iterations is not None:
        if iterations < MIN_ITERATIONS[MECHANISMS[mechanism]]:
            return ErrorCode.unacceptable_credential, "Too few iterations"
        if iterations > MAX_ITERATIONS:
            return ErrorCode.unacceptable_credential, "Too many iterations"
        if not salt:
            return ErrorCode.unacceptable_credential, "Salt must not be empty"
        if not salted:
            return ErrorCode.unacceptable_credential, "Salted password must not be empty"
    return None


def handle(context: RequestContext, request: Any) -> Any:
    store = context.broker.security
    names = list(dict.fromkeys([str(d.name) for d in request.deletions] + [str(u.name) for u in request.upsertions]))
    if store is None:  # not started yet
        return build_response(API_KEY, context.api_version,
                              error_response(request, ErrorCode.coordinator_not_available))
    problems: dict[str, tuple[ErrorCode, str]] = {}
    touched = Counter([(str(d.name), int(d.mechanism)) for d in request.deletions]
                      + [(str(u.name), int(u.mechanism)) for u in request.upsertions])
    for (name, _mechanism), count in touched.items():
        if count > 1:
            problems.setdefault(name, (ErrorCode.duplicate_resource,
                                       "A user credential cannot be altered twice in the same request"))
    existing = store.users()
    for deletion in request.deletions:
        name, mechanism = str(deletion.name), int(deletion.mechanism)
        problem = _problem(name, mechanism) or (
            None if MECHANISMS.get(mechanism, "") in existing.get(name, {}) else
            (ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist"))
        if problem is not None:
            problems.setdefault(name, problem)
    for upsertion in request.upsertions:
        problem = _problem(str(upsertion.name), int(upsertion.mechanism), int(upsertion.iterations),
                           bytes(upsertion.salt), bytes(upsertion.salted_password))
        if problem is not None:
            problems.setdefault(str(upsertion.name), problem)
    upserts: list[tuple[str, ScramCredential]] = [
        (str(u.name), credential_from_salted(MECHANISMS[int(u.mechanism)], bytes(u.salted_password), bytes(u.salt),
                                             int(u.iterations)))
        for u in request.upsertions if str(u.name) not in problems]
    deletions = [(str(d.name), MECHANISMS[int(d.mechanism)]) for d in request.deletions if str(d.name) not in problems]

    def respond(error: OSError | None) -> Any:
        if error is not None:
            logger.error("storing SCRAM credentials failed: %s", safe(error))
            for name, _ in [*upserts, *deletions]:
                problems.setdefault(name, (ErrorCode.kafka_storage_error,
                                           f"the broker could not store the credentials: {error.strerror or error}"))
        elif upserts or deletions:
            logger.info("SCRAM credentials changed: %s", ", ".join(
                [f"{name} {credential.mechanism} set" for name, credential in upserts]
                + [f"{name} {mechanism} deleted" for name, mechanism in deletions]))
        results = [{"user": name, "error_code": problems.get(name, (ErrorCode.none, None))[0],
                    "error_message": problems.get(name, (ErrorCode.none, None))[1]} for name in names]
        return build_response(API_KEY, context.api_version, {"throttle_time": 0, "results": results})

    if not upserts and not deletions:
        return respond(None)
    return AwaitCompletion(store.apply_credentials(upserts, deletions), respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    names = dict.fromkeys([str(d.name) for d in request.deletions] + [str(u.name) for u in request.upsertions])
    return {"throttle_time": 0, "results": [{"user": name, "error_code": code, "error_message": None}
                                            for name in names]}
