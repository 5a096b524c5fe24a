"""Batch work on every core: hashing, blinding and exponentiating PSI group elements.

:class:`Workers` runs the batch functions of this module either in the calling process
(``processes=1``) or on ``spawn``-ed worker processes (safe next to threads, Flower or
aiohttp), each fed over its own pipe. Each worker holds at most two batches (the one
it runs and the next), so a stream of a million identifiers is read as it is processed
and never held as a million Python strings, and no worker waits between batches.

Why not :class:`multiprocessing.pool.Pool`: its three helper threads in the calling
process (task, result and worker handling) cost about 0.25 CPU-s per 100k × 100k run,
on cores the workers need; here the calling thread sends and receives itself.

Stages that know their length (received elements) end with smaller batches, so the
last batch of a stage keeps the other cores waiting for milliseconds, not for a whole
batch. Secret scalars travel to the workers over their local pipes only; they are
never logged. Tasks name their group by its key (:mod:`fedsilo.privacy.psi.groups`): X25519
under the standard suite, the SM2 curve under gm.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, cast

import numpy as np

from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.privacy.psi import groups

__all__ = [
    "Workers",
    "BATCH",
    "Task",
    "blind_identifiers",
    "exponentiate",
    "blind_tasks",
    "exponentiate_tasks",
    "collect",
    "chunks",
    "run_streams",
]

BATCH = 2048
"""Elements per task: about 70 ms of work, large enough that pickling and the pipes
stay under 1 % of the time (the tails of sized stages use smaller ones)."""

MIN_BATCH = 256
"""The smallest batch at the end of a sized stage."""

Task = tuple[Callable[..., Any], tuple[Any, ...]]
"""One unit of work: a module-level function and its arguments (both picklable)."""


def _blind_batch(values: list[str], kind: str | None, scalar: bytes, group: str = "x25519") -> bytes:
    return groups.get(group).hash_identifiers(values, kind, scalar).tobytes()


def _multiply_batch(start: int, elements: bytes, scalar: bytes, group: str = "x25519") -> bytes:
    chosen = groups.get(group)
    return chosen.multiply(_as_rows(elements, chosen.element_bytes), scalar, start).tobytes()


def _ready() -> None:
    """A worker's first task: answering it shows the worker has imported everything."""


def _as_rows(data: bytes, width: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width)


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """A worker's loop: run each task received, send back ``(True, result)`` or ``(False, error)``.

    A thread reads tasks as they arrive, so the caller's send never waits for the task
    being computed (with both directions of the pipe full, caller and worker would each
    wait for the other).
    """
    tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                task = None
            tasks.put(task)
            if task is None:
                return

    threading.Thread(target=read, daemon=True).start()
    while (task := tasks.get()) is not None:
        fn, args = task
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # the caller re-raises it; the worker stays up
            reply = (False, exc)
        conn.send(reply)


class Workers:
    """Where batches run: this process (``processes=1``) or worker processes (default: every core).

    Use it as a context manager, or call :meth:`close`; one ``Workers`` can serve many
    PSI runs (both sides of a local run may share it), one :meth:`run` at a time.
    """

    def __init__(self, processes: int | None = None) -> None:
        processes = (os.cpu_count() or 1) if processes is None else processes
        if not isinstance(processes, int) or processes < 1:
            raise ConfigError(f"workers must be a positive number of processes, got {processes!r}")
        self.processes = processes
        self._procs: list[Any] = []
        self._conns: list[multiprocessing.connection.Connection] = []

    @property
    def pids(self) -> list[int]:
        """Process ids of the live worker processes (none before the first batch or :meth:`start`)."""
        return [proc.pid for proc in self._procs]

    def start(self) -> None:
        """Start the worker processes now, and wait until each has run a first (empty)
        batch: about a second, which a long-lived caller pays once, not on its first run."""
        if self.processes == 1 or self._procs:
            return
        ctx = multiprocessing.get_context("spawn")
        for _ in range(self.processes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs,), daemon=True, name="fedsilo-psi-worker")
            proc.start()
            theirs.close()
            self._procs.append(proc)
            self._conns.append(ours)
        for conn in self._conns:
            self._send(conn, (_ready, ()))
        for conn in self._conns:
            self._receive(conn)

    def run(self, tasks: Iterable[Task]) -> Iterator[Any]:
        """Each task's result, in task order; at most two tasks per worker in flight.

        A task's exception is raised here once the tasks already sent have come back,
        so the workers are ready for the next run.
        """
        if self.processes == 1:
            for fn, args in tasks:
                yield fn(*args)
            return
        self.start()
        todo = iter(tasks)
        busy: dict[Any, collections.deque[int]] = {conn: collections.deque() for conn in self._conns}
        done: dict[int, tuple[bool, Any]] = {}
        sent = taken = 0
        failure: BaseException | None = None
        try:
            while True:
                for conn, inflight in busy.items():  # top every worker up to two tasks
                    while len(inflight) < 2 and failure is None and (task := next(todo, None)) is not None:
                        self._send(conn, task)
                        inflight.append(sent)
                        sent += 1
                while taken in done:
                    ok, value = done.pop(taken)
                    taken += 1
                    if not ok and failure is None:
                        failure = value
                    if failure is None:
                        yield value
                if not any(busy.values()):
                    break
                ready = multiprocessing.connection.wait([c for c, q in busy.items() if q])
                for conn in cast(list[multiprocessing.connection.Connection], ready):  # wait returns what it was given
                    done[busy[conn].popleft()] = self._receive(conn)
        finally:
            for conn, inflight in busy.items():  # a consumer that stopped early: drain, keep pipes in step
                while inflight and self._conns:
                    inflight.popleft()
                    self._receive(conn)
        if failure is not None:
            raise failure

    def _send(self, conn: multiprocessing.connection.Connection, task: Task) -> None:
        try:
            conn.send(task)
        except OSError:
            self._died()

    def _receive(self, conn: multiprocessing.connection.Connection) -> tuple[bool, Any]:
        try:
            return conn.recv()
        except (EOFError, OSError):
            self._died()

    def _died(self) -> NoReturn:
        self.close()
        raise ProtocolError("a PSI worker process died; the run was aborted") from None

    def map(self, fn: Callable[..., Any], batches: Iterable[Any], *args: Any) -> Iterator[Any]:
        """``fn(batch, *args)`` for each batch, in order (see :meth:`run`)."""
        return self.run((fn, (batch, *args)) for batch in batches)

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last may be shorter), read as they are consumed."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _spans(n: int, batch: int, processes: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` spans over ``n`` items: ``batch`` long, then shrinking towards
    :data:`MIN_BATCH` as the end nears (each at most 1/(2 × processes) of what is left)."""
    start = 0
    while start < n:
        size = max(min(batch, (n - start) // (2 * processes)), min(MIN_BATCH, batch))
        yield start, min(n, start + size)
        start += size


def collect(parts: Iterable[bytes], width: int = 32) -> np.ndarray:
    """Concatenate byte results of element batches into an ``(n, width)`` array."""
    buf = bytearray()
    for part in parts:
        buf += part
    return np.frombuffer(bytes(buf), dtype=np.uint8).reshape(-1, width)


def blind_tasks(
    values: Iterable[str], kind: str | None, scalar: bytes, processes: int, batch: int = BATCH, group: str = "x25519"
) -> Iterator[Task]:
    """Tasks whose results are ``H(canonical(v)) ** scalar`` for each value, in order (bytes).

    A sequence (a list) ends with smaller batches, like received elements; any other
    iterable is read in batches of ``batch`` as it is consumed.
    """
    if isinstance(values, Sequence):
        pieces: Iterable[Any] = (values[start:stop] for start, stop in _spans(len(values), batch, processes))
    else:
        pieces = chunks(values, batch)
    return ((_blind_batch, (list(piece), kind, scalar, group)) for piece in pieces)


def exponentiate_tasks(
    elements: np.ndarray, scalar: bytes, processes: int, batch: int = BATCH, group: str = "x25519"
) -> Iterator[Task]:
    """Tasks whose results are ``e ** scalar`` for each received element (bytes), after
    the group's checks of received elements (``Group.multiply``)."""
    return (
        (_multiply_batch, (start, elements[start:stop].tobytes(), scalar, group))
        for start, stop in _spans(len(elements), batch, processes)
    )


def run_streams(workers: Workers, *streams: Iterable[Task]) -> list[list[Any]]:
    """Run several task streams back to back as one, with no wait between them (the
    workers start on the next stream while the last tasks of one still run); each
    stream's results, in order."""
    owner: collections.deque[int] = collections.deque()

    def tagged() -> Iterator[Task]:
        for index, stream in enumerate(streams):
            for task in stream:
                owner.append(index)
                yield task

    out: list[list[Any]] = [[] for _ in streams]
    for result in workers.run(tagged()):
        out[owner.popleft()].append(result)
    return out


def blind_identifiers(
    values: Iterable[str], kind: str | None, scalar: bytes, workers: Workers, batch: int = BATCH, group: str = "x25519"
) -> np.ndarray:
    """``H(canonical(v)) ** scalar`` for each value, in order, as an ``(n, width)`` array."""
    tasks = blind_tasks(values, kind, scalar, workers.processes, batch, group)
    return collect(workers.run(tasks), groups.get(group).element_bytes)


def exponentiate(
    elements: np.ndarray, scalar: bytes, workers: Workers, batch: int = BATCH, group: str = "x25519"
) -> np.ndarray:
    """``e ** scalar`` for each received element; refuses (ProtocolError) any element the
    group refuses (not a canonical point of the curve, small order, infinity: :mod:`fedsilo.privacy.psi.groups`)."""
    tasks = exponentiate_tasks(elements, scalar, workers.processes, batch, group)
    return collect(workers.run(tasks), groups.get(group).element_bytes)
