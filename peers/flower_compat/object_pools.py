"""Flower's object pushes and pulls on long-lived threads instead of a new thread pool per message.

Flower 1.42 pushes and pulls a message's objects (`push_objects`,
`push_object_contents_from_iterable`, `pull_objects` in
`flwr.supercore.inflatable.inflatable_utils`) on a `ThreadPoolExecutor` it creates for
that one call and shuts down without waiting (`shutdown(wait=False,
cancel_futures=True)`). So every message pushed or pulled starts fresh threads, and
`Thread.start` waits until each new thread has run. Profiled on the 2-core host of
`bench/deployed_vertical.py --scheme split` (py-spy, a deployed split job's steady
batches), starting those threads was 12 % of the ServerApp's main thread and 8 % of a
SuperNode's: several milliseconds per hop, on the critical path of every exchange.

`reuse_object_threads` rebinds that module's `concurrent` name (it uses only
`concurrent.futures.ThreadPoolExecutor` and `concurrent.futures.as_completed`) to a
stand-in whose `ThreadPoolExecutor(max_workers=n)` is a `_PoolView`: a view of one
process-wide pool whose idle threads are reused. A view keeps Flower's contract per
call: at most `n` of its tasks run at once (a semaphore), `shutdown(cancel_futures=True)`
cancels its tasks not started yet (queued, or waiting for one of the `n` slots), `shutdown(wait=True)` waits for its own tasks only;
tasks already running finish on their own, as with Flower's `wait=False`. The
requests, their order within a call and their concurrency are Flower's; only the
threads are reused. Flower has no option for any of it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import types
from collections.abc import Callable
from typing import Any

# Enough for every object push and pull a SuperNode or ServerApp has in flight (each call
# runs at most min(its limit, the cores) at once; a call's leftovers after an error end on their own).
SHARED_WORKERS = 32


class _PoolView:
    """One Flower call's `ThreadPoolExecutor(max_workers)`, running on a shared pool (module docstring)."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, max_workers: int | None = None) -> None:
        self._pool = pool
        self._slots = threading.BoundedSemaphore(max(1, max_workers or 1))
        self._futures: list[concurrent.futures.Future[Any]] = []
        self._cancelled = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        def limited() -> Any:
            with self._slots:
                if self._cancelled:  # shut down while it waited for a slot: never started, as Flower's would not
                    raise concurrent.futures.CancelledError()
                return fn(*args, **kwargs)

        future = self._pool.submit(limited)
        self._futures.append(future)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self._cancelled = True
            for future in self._futures:
                future.cancel()
        if wait:
            concurrent.futures.wait(self._futures)

    def __enter__(self) -> _PoolView:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown(wait=True)


_lock = threading.Lock()
_shared: concurrent.futures.ThreadPoolExecutor | None = None


def _view(max_workers: int | None = None, **_kwargs: Any) -> _PoolView:
    global _shared  # one pool per process, made on first use
    with _lock:
        if _shared is None:
            _shared = concurrent.futures.ThreadPoolExecutor(SHARED_WORKERS, thread_name_prefix="flwr-objects")
        return _PoolView(_shared, max_workers)


def reuse_object_threads() -> None:
    """Run Flower's object pushes and pulls on one reused pool in this process (idempotent; module docstring)."""
    from flwr.supercore.inflatable import inflatable_utils

    if isinstance(inflatable_utils.concurrent, types.SimpleNamespace):
        return
    inflatable_utils.concurrent = types.SimpleNamespace(  # type: ignore[attr-defined]
        futures=types.SimpleNamespace(ThreadPoolExecutor=_view, as_completed=concurrent.futures.as_completed)
    )
