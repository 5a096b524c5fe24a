"""Batch work on every core: hashing, blinding and exponentiating PSI group elements (X25519).

:class:`Workers` runs the batch functions of this module either in the calling process
(``processes=1``) or in a pool of ``spawn``-ed processes (safe next to threads, Flower
or aiohttp). At most ``2 * processes`` batches are in flight, so a stream of a million
identifiers is read as it is processed and never held as a million Python strings.
Secret scalars travel to the pool over its local pipes only; they are never logged.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from privacy.errors import ConfigError
from privacy.psi import x25519
from privacy.psi.identifiers import PSI_DOMAIN, digests

__all__ = ["Workers", "BATCH", "blind_identifiers", "exponentiate", "check"]

BATCH = 2048
"""Elements per task: about 80 ms of work, small enough that the last task of a stage
keeps one core waiting only briefly, large enough that pickling and the pool's
bookkeeping stay under 1 % of the time."""


def _blind_batch(values: list[str], kind: str | None, scalar: bytes) -> bytes:
    return x25519.multiply(x25519.hash_onto_curve(digests(values, kind, PSI_DOMAIN)), scalar).tobytes()


def _multiply_batch(batch: tuple[int, bytes], scalar: bytes) -> bytes:
    start, elements = batch
    rows = _as_rows(elements)
    x25519.check_elements(rows, start)
    return x25519.multiply(rows, scalar, start).tobytes()


def _check_batch(batch: tuple[int, bytes]) -> None:
    start, elements = batch
    x25519.check_elements(_as_rows(elements), start)


def _as_rows(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, x25519.ELEMENT_BYTES)


class Workers:
    """Where batches run: this process (``processes=1``) or a pool (default: every core).

    Use it as a context manager, or call :meth:`close`; one ``Workers`` can serve many
    PSI runs (both sides of a local run may share it).
    """

    def __init__(self, processes: int | None = None) -> None:
        processes = (os.cpu_count() or 1) if processes is None else processes
        if not isinstance(processes, int) or processes < 1:
            raise ConfigError(f"workers must be a positive number of processes, got {processes!r}")
        self.processes = processes
        self._pool: Any = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(self.processes)
        return self._pool

    def start(self) -> None:
        """Start the pool now (about a second) rather than on the first batch."""
        if self.processes > 1:
            pool = self._get_pool()
            pool.map(_check_batch, [(0, b"")] * self.processes)

    def map(self, fn: Callable[..., Any], batches: Iterable[Any], *args: Any) -> Iterator[Any]:
        """``fn(batch, *args)`` for each batch, in order, at most ``2 * processes`` in flight."""
        if self.processes == 1:
            for batch in batches:
                yield fn(batch, *args)
            return
        pool = self._get_pool()
        pending: collections.deque[Any] = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(fn, (batch, *args)))
            if len(pending) >= 2 * self.processes:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        """Stop the pool's processes (idempotent)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _row_batches(rows: np.ndarray, size: int) -> Iterator[tuple[int, bytes]]:
    for start in range(0, len(rows), size):
        yield start, rows[start:start + size].tobytes()


def _collect(parts: Iterable[bytes]) -> np.ndarray:
    buf = bytearray()
    for part in parts:
        buf += part
    return np.frombuffer(bytes(buf), dtype=np.uint8).reshape(-1, x25519.ELEMENT_BYTES)


def blind_identifiers(values: Iterable[str], kind: str | None, scalar: bytes, workers: Workers,
                      batch: int = BATCH) -> np.ndarray:
    """``H(canonical(v)) ** scalar`` for each value, in order, as an ``(n, 32)`` array."""
    return _collect(workers.map(_blind_batch, _chunks(values, batch), kind, scalar))


def exponentiate(elements: np.ndarray, scalar: bytes, workers: Workers, batch: int = BATCH) -> np.ndarray:
    """``e ** scalar`` for each received element; refuses (ProtocolError) any element that
    is not a canonical point of the curve, or of small order (see :mod:`privacy.psi.x25519`)."""
    return _collect(workers.map(_multiply_batch, _row_batches(elements, batch), scalar))


def check(elements: np.ndarray, workers: Workers, batch: int = BATCH) -> None:
    """Refuse (ProtocolError) any element that is not a canonical non-zero point of the curve."""
    for _ in workers.map(_check_batch, _row_batches(elements, batch)):
        pass
