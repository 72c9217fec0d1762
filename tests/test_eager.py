"""``johnlocke.eager``: a coroutine run at once, finished by a task only if it has to wait, must
behave as it would in a task of its own (results, exceptions, cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from johnlocke import eager


async def test_a_coroutine_that_never_waits_finishes_without_a_task():
    steps = []

    async def handler():
        steps.append("done")

    assert eager.run(handler()) is None
    assert steps == ["done"]


async def test_a_coroutine_that_waits_is_finished_by_a_task_kept_until_done():
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    steps = []
    tasks: set[asyncio.Task[None]] = set()

    async def handler():
        steps.append(await future)
        await asyncio.sleep(0)  # a bare yield
        steps.append("after")

    task = eager.run(handler(), tasks)
    assert task is not None and tasks == {task}
    future.set_result("result")
    await task
    assert steps == ["result", "after"]
    assert not tasks


async def test_resume_returns_what_the_coroutine_returns():
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    async def handler():
        return await future + 1

    coro = handler()
    waiting = coro.send(None)
    assert waiting is future
    loop.call_soon(future.set_result, 41)
    assert await eager.resume(coro, waiting) == 42


async def test_the_exception_of_the_awaited_future_reaches_the_coroutine():
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    caught = []

    async def handler():
        try:
            await future
        except ValueError as exc:
            caught.append(exc)

    task = eager.run(handler())
    error = ValueError("store down")
    future.set_exception(error)
    await task
    assert caught == [error]


async def test_a_cancel_while_waiting_is_heard_where_the_coroutine_waits():
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    steps = []

    async def handler():
        try:
            await future
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    task = eager.run(handler())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["cancelled"]


async def test_a_cancel_after_the_future_is_done_is_not_lost():
    # The future's result arrives, and the task is cancelled before it wakes up (shutdown
    # between a store's reply and the handler's turn): as in a plain task, the cancellation
    # wins, and the coroutine does not go on to wait again.
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    steps = []

    async def handler():
        steps.append(await first)
        steps.append(await second)

    task = eager.run(handler())
    await asyncio.sleep(0)
    first.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert task.cancelled()
    assert steps == []
    assert not second.cancelled()
