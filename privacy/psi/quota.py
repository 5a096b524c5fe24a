"""Per-querier query quotas of a list holder: counts only, never identifiers.

A querier may have at most ``limit`` identifiers evaluated in any sliding window of
``window`` seconds. Every request is recorded (querier, time, how many identifiers,
whether it was granted) and nothing else: the holder never sees which identifiers
were asked (it sees blinded group elements only) and stores none of those either.
A refused request is recorded and consumes nothing.

The quota is the only bound on a querier's dictionary attack (each evaluated element
lets the querier test one identifier of its choice against the list), so set it from
policy: the number of look-ups a querier legitimately needs per window.
"""

from __future__ import annotations

import abc
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from fedsilo.errors import ConfigError, QuotaExceeded

__all__ = ["QueryRecord", "QueryQuota", "MemoryQuota", "SQLiteQuota"]


@dataclass(frozen=True)
class QueryRecord:
    """One request as the holder records it."""

    querier: str
    at: float
    count: int
    granted: bool


class QueryQuota(abc.ABC):
    """At most ``limit`` identifiers per querier per sliding ``window`` seconds."""

    def __init__(self, limit: int, window: float = 86400.0) -> None:
        if not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"a query quota must be a non-negative integer, got {limit!r}")
        if not window > 0:
            raise ConfigError(f"a quota window must be positive seconds, got {window!r}")
        self.limit, self.window = limit, float(window)

    def consume(self, querier: str, count: int, now: float | None = None) -> int:
        """Grant ``count`` identifiers to ``querier`` and return what is left in the window.

        Raises :class:`QuotaExceeded` (recording the refusal, consuming nothing) when
        the grant would pass the limit.
        """
        if not isinstance(count, int) or count < 1:
            raise ConfigError(f"a query asks for at least one identifier, got {count!r}")
        now = time.time() if now is None else now
        return self._consume(querier, count, now)

    def used(self, querier: str, now: float | None = None) -> int:
        """Identifiers granted to ``querier`` in the window ending at ``now``."""
        return self._used(querier, time.time() if now is None else now)

    def _refuse(self, querier: str, count: int, used: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"querier {querier!r} asked for {count} identifiers but has {max(self.limit - used, 0)} of its "
            f"{self.limit} left in this {self.window:g}-second window; ask the list holder for a larger quota or wait"
        )

    @abc.abstractmethod
    def _consume(self, querier: str, count: int, now: float) -> int: ...

    @abc.abstractmethod
    def _used(self, querier: str, now: float) -> int: ...

    @abc.abstractmethod
    def records(self, querier: str | None = None) -> list[QueryRecord]:
        """Every recorded request (of one querier), oldest first."""


class MemoryQuota(QueryQuota):
    """In-process quota (tests, one-shot runs); forgotten when the process ends."""

    def __init__(self, limit: int, window: float = 86400.0) -> None:
        super().__init__(limit, window)
        self._records: list[QueryRecord] = []
        self._lock = threading.Lock()

    def _used(self, querier: str, now: float) -> int:
        return sum(
            r.count for r in self._records if r.querier == querier and r.granted and now - self.window < r.at <= now
        )

    def _consume(self, querier: str, count: int, now: float) -> int:
        with self._lock:
            used = self._used(querier, now)
            granted = used + count <= self.limit
            self._records.append(QueryRecord(querier, now, count, granted))
            if not granted:
                raise self._refuse(querier, count, used)
            return self.limit - used - count

    def records(self, querier: str | None = None) -> list[QueryRecord]:
        with self._lock:
            return [r for r in self._records if querier is None or r.querier == querier]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS query_requests (
    querier TEXT NOT NULL,
    at      REAL NOT NULL,
    count   INTEGER NOT NULL,
    granted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS query_requests_by_querier ON query_requests (querier, at);
"""


class SQLiteQuota(QueryQuota):
    """A quota kept in a SQLite file: survives restarts, safe across threads and processes.

    Each grant is one ``BEGIN IMMEDIATE`` transaction that re-reads the window's usage,
    so two processes on one file can never together pass the limit.
    """

    def __init__(
        self, path: str | os.PathLike[str], limit: int, window: float = 86400.0, timeout: float = 30.0
    ) -> None:
        super().__init__(limit, window)
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the query quota store at {self.path!r}: {exc}") from exc

    def _used_in(self, querier: str, now: float) -> int:
        row = self._conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM query_requests WHERE querier = ? AND granted = 1 AND at > ? AND at <= ?",
            (querier, now - self.window, now),
        ).fetchone()
        return int(row[0])

    def _used(self, querier: str, now: float) -> int:
        with self._lock:
            return self._used_in(querier, now)

    def _consume(self, querier: str, count: int, now: float) -> int:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                used = self._used_in(querier, now)
                granted = used + count <= self.limit
                self._conn.execute(
                    "INSERT INTO query_requests (querier, at, count, granted) VALUES (?, ?, ?, ?)",
                    (querier, now, count, int(granted)),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        if not granted:
            raise self._refuse(querier, count, used)
        return self.limit - used - count

    def records(self, querier: str | None = None) -> list[QueryRecord]:
        sql = "SELECT querier, at, count, granted FROM query_requests"
        args: tuple = ()
        if querier is not None:
            sql, args = sql + " WHERE querier = ?", (querier,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [QueryRecord(q, a, c, bool(g)) for q, a, c, g in rows]

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> SQLiteQuota:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
