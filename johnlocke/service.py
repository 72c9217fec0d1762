"""The daemon's parts that live beside the HTTP frontend, and how the CLI drives them.

A ``Service`` is started before the tracker listens and stopped after the listeners are closed
and requests in flight are answered (so a final snapshot sees the final state). On SIGHUP the CLI
re-reads the configuration file; if it is valid, every service's ``reload`` gets the new one. A
service that cannot apply its part raises, and keeps running with what it had: the error is
logged and the other services still reload. ``reload`` may be a coroutine (a service that must
read files does so off the event loop); the CLI awaits it before logging the reload as done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Protocol

from johnlocke.config import Config


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def reload(self, config: Config) -> None | Awaitable[None]:
        """Apply a new, already validated configuration, or raise and keep the old one."""
        ...


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a service's background task (if any) and wait until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
