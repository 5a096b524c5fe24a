"""The actor's mailbox: every state-changing message is handled alone, in arrival order.

`Mailbox.ask(work)` queues a coroutine function and returns its result (or raises its
exception) once the single worker task has run it; no two pieces of work overlap, even
when one awaits (a data read in a thread, say). So two requests can never, for
example, both reserve the last of a data source's budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Mailbox:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="peer-actor")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def ask(self, work: Callable[[], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((work, future))
        return await future

    async def _run(self) -> None:
        while True:
            work, future = await self._queue.get()
            try:
                result = await work()
            except asyncio.CancelledError:
                if not future.done():
                    future.cancel()
                raise
            except BaseException as error:  # delivered to the caller, the actor goes on
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)
