"""Awaiting a `Completion` from the I/O side (the core's one-shot promises are not awaitable)."""

from __future__ import annotations

import asyncio
from typing import Any

from oncelog.coordinator.runtime import Completion


async def completed(completion: Completion[Any]) -> Any:
    """The completion's value, once it is resolved."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(value: Any) -> None:
        if not future.done():
            future.set_result(value)

    completion.on_done(settle)
    return await future
