"""An in-process ledger: for tests, simulations and anything that needs no persistence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fedsilo.privacy.ledger.base import JobRecord, PrivacyLedger, SourceRecord


class InMemoryLedger(PrivacyLedger):
    """A :class:`PrivacyLedger` held in memory, thread-safe, lost when the object is.

    Each operation works on a copy of the state under a lock and swaps it in only on
    success, so a failed operation changes nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, SourceRecord] = {}
        self._jobs: dict[str, dict[str, JobRecord]] = {}
        self._work: tuple[dict[str, SourceRecord], dict[str, dict[str, JobRecord]]] | None = None

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[None]:
        with self._lock:
            # Records are frozen, so copying the containers is a full snapshot.
            self._work = (dict(self._sources), {s: dict(j) for s, j in self._jobs.items()})
            try:
                yield
                if write:
                    self._sources, self._jobs = self._work
            finally:
                self._work = None

    def _state(self) -> tuple[dict[str, SourceRecord], dict[str, dict[str, JobRecord]]]:
        if self._work is None:
            raise RuntimeError("ledger storage used outside a transaction")
        return self._work

    def _get_source(self, source: str) -> SourceRecord | None:
        return self._state()[0].get(source)

    def _put_source(self, record: SourceRecord) -> None:
        sources, jobs = self._state()
        sources[record.source] = record
        jobs.setdefault(record.source, {})

    def _list_sources(self) -> list[str]:
        return list(self._state()[0])

    def _get_jobs(self, source: str) -> dict[str, JobRecord]:
        return dict(self._state()[1].get(source, {}))

    def _put_job(self, source: str, job: JobRecord) -> None:
        self._state()[1][source][job.job_id] = job

    def _delete_job(self, source: str, job_id: str) -> None:
        del self._state()[1][source][job_id]
