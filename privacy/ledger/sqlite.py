"""The embedded default ledger: one SQLite file, safe across threads and processes."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fedsilo.errors import ConfigError, LedgerError
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.ledger.base import JobRecord, PrivacyLedger, SourceRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source     TEXT PRIMARY KEY,
    epsilon    REAL NOT NULL,
    delta      REAL NOT NULL,
    accountant TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    source     TEXT NOT NULL REFERENCES sources(source),
    job_id     TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'committed')),
    mechanisms TEXT NOT NULL,  -- JSON list of Mechanism.to_dict()
    PRIMARY KEY (source, job_id)
);
"""


class SQLiteLedger(PrivacyLedger):
    """A :class:`PrivacyLedger` stored in the SQLite file at ``path``.

    The schema is created on open. The database is in WAL mode with a busy timeout of
    ``timeout`` seconds; every operation is one transaction, and writing operations
    start with ``BEGIN IMMEDIATE`` and re-read the state inside it, so several
    ledger objects, threads or processes on the same file are serialized and can
    never together reserve past a budget. Call :meth:`close` (or use ``with``) when done.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: no implicit transactions, we issue BEGIN ourselves.
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the privacy ledger at {self.path!r}: {exc}") from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise LedgerError(f"the privacy ledger at {self.path!r} cannot use WAL mode")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            with self._transaction(write=True):
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise LedgerError(
                        f"the privacy ledger at {self.path!r} has schema version {version}; "
                        f"this fedsilo reads version {SCHEMA_VERSION}. Upgrade fedsilo"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the connection; the object cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[None]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise LedgerError(
                    f"the privacy ledger at {self.path!r} could not complete the operation "
                    f"({exc}); nothing was changed. If it is busy, retry"
                ) from exc

    def _get_source(self, source: str) -> SourceRecord | None:
        row = self._conn.execute(
            "SELECT source, epsilon, delta, accountant FROM sources WHERE source = ?", (source,)
        ).fetchone()
        return SourceRecord(*row) if row else None

    def _put_source(self, record: SourceRecord) -> None:
        self._conn.execute(
            "INSERT INTO sources (source, epsilon, delta, accountant) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET epsilon = excluded.epsilon, "
            "delta = excluded.delta, accountant = excluded.accountant",
            (record.source, record.epsilon, record.delta, record.accountant),
        )

    def _list_sources(self) -> list[str]:
        return [row[0] for row in self._conn.execute("SELECT source FROM sources")]

    def _get_jobs(self, source: str) -> dict[str, JobRecord]:
        rows = self._conn.execute(
            "SELECT job_id, state, mechanisms FROM jobs WHERE source = ? ORDER BY rowid",
            (source,),
        )
        return {
            job_id: JobRecord(job_id, state, tuple(Mechanism.from_dict(d) for d in json.loads(mechanisms)))
            for job_id, state, mechanisms in rows
        }

    def _put_job(self, source: str, job: JobRecord) -> None:
        self._conn.execute(
            "INSERT INTO jobs (source, job_id, state, mechanisms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source, job_id) DO UPDATE SET state = excluded.state, "
            "mechanisms = excluded.mechanisms",
            (source, job.job_id, job.state, json.dumps([m.to_dict() for m in job.mechanisms])),
        )

    def _delete_job(self, source: str, job_id: str) -> None:
        self._conn.execute("DELETE FROM jobs WHERE source = ? AND job_id = ?", (source, job_id))
