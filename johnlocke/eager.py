"""Coroutines run at once, in the caller's turn, and handed to a task only if they must wait.

Theory of operation
-------------------
With the memory store an announce never waits: creating a task for it would cost more than the
announce. So the frontends (UDP datagrams, WebSocket messages) and the TLS handshake start their
coroutine with ``send(None)``, which runs it up to its first real suspension, or to its end.
Only a coroutine that yields (it waits on a future: the Redis store, a handshake's bytes) gets
a task, ``resume``, that finishes it as the task it never had would: it clears the mark the
yield set on the future (a task does the same before it waits), waits for the future, and sends
the coroutine on; the coroutine reads the future's result itself when resumed. What the wait
raises (the future's exception, or the cancellation of that task at shutdown) is thrown into
the coroutine where it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(
    coro: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[None]] | None = None
) -> asyncio.Task[None] | None:
    """Run ``coro`` now; if it has to wait, a task finishes it (kept in ``tasks`` until done,
    so shutdown can wait for it). Returns that task, or None if ``coro`` is done already."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    task = asyncio.get_running_loop().create_task(resume(coro, waiting))
    if tasks is not None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return task


async def resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Drive ``coro``, which ``send(None)`` has run up to a yield of ``waiting``, to its end;
    return what it returns."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)  # a bare yield: run again on the next loop turn
            else:
                waiting._asyncio_future_blocking = False
                await waiting
        except BaseException as exc:
            # The future failed, or this task was cancelled (even after the future was done: a
            # cancel between its result and this task's wake-up): either way the coroutine
            # hears of it where it waits, as it would in a task of its own.
            try:
                waiting = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            return done.value
