"""The dispatch table: one module per API key, each stating its versions and behaviour.

An API is advertised by ApiVersions if and only if it is in `HANDLERS`.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    api_versions,
    create_topics,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_producers,
    fetch,
    init_producer_id,
    list_offsets,
    metadata,
    offset_for_leader_epoch,
    produce,
)
from .base import ApiHandler

_MODULES: tuple[ModuleType, ...] = (
    produce,
    fetch,
    list_offsets,
    metadata,
    api_versions,
    create_topics,
    delete_topics,
    offset_for_leader_epoch,
    describe_configs,
    describe_cluster,
    init_producer_id,
    describe_producers,
)


def _handler(module: ModuleType) -> ApiHandler:
    version_min, version_max = module.VERSIONS
    name = module.__name__.rsplit(".", 1)[1]
    return ApiHandler(module.API_KEY, name, version_min, version_max, module.handle)


HANDLERS: dict[int, ApiHandler] = {module.API_KEY: _handler(module) for module in _MODULES}
