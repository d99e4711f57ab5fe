"""README's API table says what the broker serves: every advertised API with its exact version range."""

from __future__ import annotations

import re
from pathlib import Path

from oncelog.handlers import HANDLERS


def test_the_readme_lists_every_api_with_the_versions_served() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = {int(key): versions for key, versions in re.findall(r"^\| (\d+) \| \w+ \| ([0-9–]+) \|", readme, re.M)}
    served = {api.api_key: f"{api.version_min}" if api.version_min == api.version_max
              else f"{api.version_min}–{api.version_max}" for api in HANDLERS.values()}
    assert listed == served
