"""Background work of the edge's app: one aiohttp cleanup context per periodic task, started
with the app and cancelled with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web


def periodic(interval_s: float, tick: Callable[[web.Application], None]):
    """A cleanup context that calls tick(app) every interval_s while the app runs (wall-clock
    sleeps; what tick does reads the app's injected clock)."""
    async def context(app: web.Application):
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                tick(app)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return context
