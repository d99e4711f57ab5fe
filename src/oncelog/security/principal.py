"""Kafka principals and `ssl.principal.mapping.rules` (Kafka's `SslPrincipalMapper`, KIP-371).

A principal is a type and a name, written `User:alice`. A TLS client that presents a certificate is
known by the certificate's subject distinguished name in RFC 2253 form (`CN=alice,OU=eng,O=Acme`),
rewritten by the first mapping rule that matches it; without a certificate it is `User:ANONYMOUS`.

Rules, as Kafka writes them: a comma-separated list of `RULE:pattern/replacement/` entries, each with an
optional `L` or `U` suffix (lower- or upper-case the result), and `DEFAULT` (the name unchanged). The
pattern is a regular expression that must match the whole name; `$1`.. in the replacement are its
groups. Commas inside a pattern are part of it: a new entry starts only at `,RULE:` or `,DEFAULT`.
No matching rule fails the authentication, as in Kafka.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANONYMOUS = "ANONYMOUS"
USER_TYPE = "User"


@dataclass(frozen=True, slots=True)
class KafkaPrincipal:
    principal_type: str
    name: str

    def __str__(self) -> str:
        return f"{self.principal_type}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> KafkaPrincipal:
        principal_type, sep, name = text.partition(":")
        if not sep or not principal_type or not name:
            raise ValueError(f"{text!r} is not a principal: expected TYPE:NAME, e.g. User:alice")
        return cls(principal_type, name)


ANONYMOUS_PRINCIPAL = KafkaPrincipal(USER_TYPE, ANONYMOUS)


class NoMatchingRule(ValueError):
    """No `ssl.principal.mapping.rules` entry matches a certificate's name."""


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str] | None
    """None: DEFAULT."""
    replacement: str = ""
    case: str = ""

    def apply(self, name: str) -> str | None:
        if self.pattern is None:
            return name
        match = self.pattern.fullmatch(name)
        if match is None:
            return None
        result = match.expand(self.replacement)
        return result.lower() if self.case == "L" else result.upper() if self.case == "U" else result


_ENTRY_START = re.compile(r",\s*(?=RULE:|DEFAULT\s*(?:,|$))")
_RULE = re.compile(r"RULE:(?P<pattern>(?:[^/\\]|\\.)*)/(?P<replacement>(?:[^/\\]|\\.)*)/(?P<case>[LU]?)")


class PrincipalMapper:
    def __init__(self, rules: str = "DEFAULT") -> None:
        self.rules = [self._parse(entry.strip()) for entry in _ENTRY_START.split(rules.strip()) if entry.strip()]
        if not self.rules:
            raise ValueError("ssl.principal.mapping.rules is empty: use DEFAULT")

    @staticmethod
    def _parse(entry: str) -> _Rule:
        if entry == "DEFAULT":
            return _Rule(None)
        match = _RULE.fullmatch(entry)
        if match is None:
            raise ValueError(f"ssl.principal.mapping.rules: {entry!r} is neither DEFAULT nor "
                             "RULE:pattern/replacement/[LU]")
        try:
            pattern = re.compile(match["pattern"].replace("\\/", "/"))
        except re.error as error:
            raise ValueError(f"ssl.principal.mapping.rules: bad pattern {match['pattern']!r}: {error}") from error
        raw = match["replacement"].replace("\\/", "/")
        groups = [int(number) for number in re.findall(r"\$(\d+)", raw)]
        if any(number > pattern.groups for number in groups):
            raise ValueError(f"ssl.principal.mapping.rules: {entry!r} refers to a group its pattern does not have")
        # Java writes group references $1; Python's expand wants \g<1>.
        replacement = re.sub(r"\$(\d+)", r"\\g<\1>", raw.replace("\\", "\\\\"))
        return _Rule(pattern, replacement, match["case"])

    def name(self, distinguished_name: str) -> str:
        for rule in self.rules:
            mapped = rule.apply(distinguished_name)
            if mapped is not None:
                return mapped
        raise NoMatchingRule(f"no ssl.principal.mapping.rules entry matches {distinguished_name!r}")


# The attribute keywords of RFC 2253 (what Java's X500Principal.getName() prints); others by OID name.
_KEYWORDS = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
             "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
             "domainComponent": "DC", "userId": "UID"}


def _escape(value: str) -> str:
    escaped = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


_IA5_OIDS = {"emailAddress": "1.2.840.113549.1.9.1"}
"""Attributes Java's X500Principal.getName() prints as OID=#<DER hex> (IA5String values)."""


def _attribute(key: str, value: str) -> str:
    if key in _KEYWORDS:
        return f"{_KEYWORDS[key]}={_escape(value)}"
    if key in _IA5_OIDS and len(value.encode()) < 128:
        encoded = value.encode()
        return f"{_IA5_OIDS[key]}=#16{len(encoded):02x}{encoded.hex()}"
    return f"{key}={_escape(value)}"


def distinguished_name(subject: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """RFC 2253 text of a subject as `ssl.SSLSocket.getpeercert()` gives it (most specific RDN first), in
    the form Java's `X500Principal.getName()` prints, so principals copied from Kafka match."""
    return ",".join("+".join(_attribute(key, value) for key, value in rdn) for rdn in reversed(subject))
