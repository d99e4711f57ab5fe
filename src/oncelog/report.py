"""What the list and describe commands print: one `Report`, as aligned tables or (`--output json`) as JSON.

A report is a few summary fields, named tables and nested reports (one per topic of `topics describe`).
The text form is what Kafka's tools print; the JSON form is the same content for scripts: each table a
list of objects whose keys are its headers in snake case ("LOG END OFFSET" → "log_end_offset"), a "-"
cell null. A report with nothing in it prints its `empty` sentence, or `[]`/`{}` in JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, a header line and a rule."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def json_key(header: str) -> str:
    return header.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass(frozen=True)
class Flag:
    """A yes/no cell: "yes" or blank in text, true or false in JSON."""

    value: bool

    def __str__(self) -> str:
        return "yes" if self.value else ""


def _json_cell(cell: object) -> object:
    if isinstance(cell, Flag):
        return cell.value
    return None if cell == "-" else cell


@dataclass
class Table:
    name: str
    headers: list[str]
    rows: list[Sequence[object]]

    def records(self) -> list[dict[str, object]]:
        return [{json_key(h): _json_cell(cell) for h, cell in zip(self.headers, row, strict=True)}
                for row in self.rows]


@dataclass
class Report:
    fields: dict[str, object] = field(default_factory=dict)
    """Summary fields: one `Key: value` line in text."""
    tables: list[Table] = field(default_factory=list)
    children: list[Report] = field(default_factory=list)
    empty: str = ""
    """Printed instead of nothing."""
    note: str = ""
    """A closing sentence for people (left out of JSON)."""

    def add(self, name: str, headers: list[str], rows: list[Sequence[object]]) -> Report:
        self.tables.append(Table(name, headers, rows))
        return self

    def is_empty(self) -> bool:
        return not self.fields and not any(t.rows for t in self.tables) and not self.children

    def text(self) -> str:
        if self.is_empty():
            return self.empty
        blocks = []
        if self.fields:
            blocks.append("  ".join(f"{key}: {value}" for key, value in self.fields.items()))
        blocks += [table(t.headers, t.rows) for t in self.tables if t.rows]
        blocks += [child.text() for child in self.children]
        return "\n\n".join(blocks) + (f"\n{self.note}" if self.note else "")

    def data(self) -> Any:
        """The JSON value: a bare list for a report that is just one table (or just children)."""
        if not self.fields and not self.children and len(self.tables) == 1:
            return self.tables[0].records()
        if not self.fields and not self.tables:
            return [child.data() for child in self.children]
        value: dict[str, Any] = {json_key(key): item for key, item in self.fields.items()}
        for each in self.tables:
            value[each.name] = each.records()
        if self.children:
            value["items"] = [child.data() for child in self.children]
        return value

    def render(self, output: str) -> str:
        return json.dumps(self.data(), indent=2, default=str) if output == "json" else self.text()


def with_output(parser: Any) -> Any:
    """Add `--output text|json` to a list or describe command's parser."""
    parser.add_argument("--output", choices=["text", "json"], default="text",
                        help="text (default: tables) or json (for scripts)")
    return parser
