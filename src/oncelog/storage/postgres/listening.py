"""Following a NOTIFY channel for as long as a store is open: refresh once on (re)connecting, on every
notification, and every `refresh_s` in case one was missed; a lost connection is made again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

logger = logging.getLogger(__name__)


async def follow(url: str, channel: str, refresh: Callable[[], Awaitable[None]], closed: Callable[[], bool],
                 what: str, refresh_s: float) -> None:
    while not closed():
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                await connection.execute(f"LISTEN {channel}")
                await refresh()  # what changed while we were not listening
                while not closed():
                    async for _notify in connection.notifies(timeout=refresh_s):
                        await refresh()
                    await refresh()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # never give up: a broker that stopped listening would act on stale state
            logger.warning("%s listener failed (%r); retrying", what, error)
            await asyncio.sleep(1.0)
