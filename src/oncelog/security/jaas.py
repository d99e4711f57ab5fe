"""Kafka's `sasl.jaas.config` values: `<LoginModule class> <flag> key="value" ...;`.

Only the parts a broker reads: the login module (which mechanism it belongs to), and its options —
for PLAIN, `user_<name>="<password>"` entries are the users (Kafka's `PlainServerCallbackHandler`).
Values may be quoted (with `\\"` inside) or bare words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_FLAGS = ("required", "requisite", "sufficient", "optional")
_TOKEN = re.compile(r'\s*(?:([A-Za-z0-9_.\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;"]+)|(;))')


class JaasError(ValueError):
    """A sasl.jaas.config value cannot be read; the message says where."""


@dataclass(frozen=True)
class JaasConfig:
    module: str
    flag: str
    options: dict[str, str] = field(default_factory=dict)

    def users(self) -> dict[str, str]:
        """PLAIN's `user_<name>` options: name -> password."""
        return {key[len("user_"):]: value for key, value in self.options.items() if key.startswith("user_")}


def parse_jaas(text: str, setting: str = "sasl.jaas.config") -> JaasConfig:
    head = text.strip().split(None, 2)
    if len(head) < 2 or head[1].rstrip(";") not in _FLAGS:
        raise JaasError(f"{setting}: expected '<LoginModule class> required key=\"value\" ...;', got "
                        f"{text.strip()[:60]!r}")
    module, flag = head[0], head[1].rstrip(";")
    rest = head[2] if len(head) > 2 else ""
    options: dict[str, str] = {}
    position, ended = 0, head[1].endswith(";")
    while position < len(rest) and not ended:
        match = _TOKEN.match(rest, position)
        if match is None:
            if not rest[position:].strip():
                break
            raise JaasError(f"{setting}: cannot read the options at {rest[position:position + 30]!r}")
        position = match.end()
        if match.group(3):
            ended = True
            continue
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        options[match.group(1)] = value
    if not ended:
        raise JaasError(f"{setting}: the login module entry must end with ';'")
    if rest[position:].strip():
        raise JaasError(f"{setting}: only one login module entry is allowed, found more after ';'")
    return JaasConfig(module, flag, options)
