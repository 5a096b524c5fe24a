"""The privacy-budget ledger: interface and the budget arithmetic shared by backends.

Model. Each data source (one institution's table of customer records) has a total
budget (ε, δ) and an accountant name ("rdp" or "prv"). A job *reserves* the
mechanisms it plans to run before it starts (and may *replan*, replacing that reservation
by a new plan that fits, while it has not started), then *commits* what it actually ran, or
*releases* the reservation if it never ran. At every point the ledger guarantees

    epsilon_spent(committed + all active reservations, δ, accountant) <= budget ε

where the composition is done by one Opacus accountant over the stored mechanism
histories (never by adding stored epsilons). Assumption: every job of a source runs
on the records of that same source, so all their losses compose; δ is the source's
budget δ.

Backends only load and store records inside a transaction (:meth:`_transaction`);
every check and every write of one operation happens in that one transaction, so a
failed operation leaves the stored state unchanged.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

from fedsilo.errors import BudgetExceeded, ConfigError, LedgerError
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.accounting.mechanism import PureMechanism
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon

JobState = Literal["reserved", "committed"]


@dataclass(frozen=True)
class SourceRecord:
    """A source's stored budget (backend storage format)."""

    source: str
    epsilon: float
    delta: float
    accountant: str


@dataclass(frozen=True)
class JobRecord:
    """One job's stored mechanisms on one source (backend storage format)."""

    job_id: str
    state: JobState
    mechanisms: tuple[Mechanism | PureMechanism, ...]


@dataclass(frozen=True)
class BudgetStatus:
    """A snapshot of one source's budget.

    ``spent_epsilon`` is ε of the committed jobs; ``reserved_epsilon`` is what the
    active reservations add on top, ε(committed + reserved) − ε(committed) (not additive
    across jobs, since composition is sublinear); ``remaining_epsilon`` is
    ``epsilon_budget`` − ε(committed + reserved); ``jobs`` counts reserved and
    committed jobs.
    """

    source: str
    epsilon_budget: float
    delta: float
    spent_epsilon: float
    reserved_epsilon: float
    remaining_epsilon: float
    jobs: int
    accountant: str = "rdp"


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_mechanisms(
    mechanisms: Sequence[Mechanism | PureMechanism], what: str
) -> tuple[Mechanism | PureMechanism, ...]:
    if isinstance(mechanisms, (Mechanism, PureMechanism)):
        mechanisms = (mechanisms,)
    out = tuple(mechanisms)
    for m in out:
        if not isinstance(m, (Mechanism, PureMechanism)):
            raise ConfigError(f"{what} must be a sequence of Mechanism or PureMechanism, got {type(m).__name__}")
    return out


class PrivacyLedger(abc.ABC):
    """Per-data-source privacy budget ledger (abstract; see the module docstring).

    Errors: an unknown source or job, a double reserve or commit, or lowering a budget
    below what is in use raise LedgerError; a job over budget raises BudgetExceeded;
    invalid numbers raise ConfigError. In every case nothing is changed.
    """

    # -- storage primitives, called only inside self._transaction() ---------------

    @abc.abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager[None]:
        """One atomic transaction: on normal exit every write made through the
        primitives below is kept, on an exception none is. Writes must also be
        serialized with every other writer of the same store (other objects or
        processes included), and reads inside see the latest committed state."""

    @abc.abstractmethod
    def _get_source(self, source: str) -> SourceRecord | None: ...

    @abc.abstractmethod
    def _put_source(self, record: SourceRecord) -> None: ...

    @abc.abstractmethod
    def _list_sources(self) -> list[str]: ...

    @abc.abstractmethod
    def _get_jobs(self, source: str) -> dict[str, JobRecord]: ...

    @abc.abstractmethod
    def _put_job(self, source: str, job: JobRecord) -> None: ...

    @abc.abstractmethod
    def _delete_job(self, source: str, job_id: str) -> None: ...

    def close(self) -> None:  # noqa: B027  (an optional hook: only a backend holding resources overrides it)
        """Release resources (a no-op unless the backend holds any)."""

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared logic -------------------------------------------------------------

    def _require_source(self, source: str) -> SourceRecord:
        record = self._get_source(_check_name(source, "source"))
        if record is None:
            raise LedgerError(f"unknown data source {source!r}; set its budget first with set_budget()")
        return record

    @staticmethod
    def _eps(record: SourceRecord, mechanisms: Sequence[Mechanism | PureMechanism]) -> float:
        return epsilon_spent(mechanisms, record.delta, record.accountant)

    @staticmethod
    def _all(jobs: dict[str, JobRecord], exclude: str | None = None) -> Iterator[Mechanism | PureMechanism]:
        for job_id, job in jobs.items():
            if job_id != exclude:
                yield from job.mechanisms

    def set_budget(self, source: str, epsilon: float, delta: float, accountant: str = "rdp") -> BudgetStatus:
        """Create or update the total (ε, δ) budget of ``source`` and its accountant.

        An update is refused with LedgerError if, recomputed at the new δ and with the
        new accountant, committed + reserved jobs already exceed the new ε.
        """
        _check_name(source, "source")
        new = SourceRecord(source, check_epsilon(epsilon), check_delta(delta), check_accountant(accountant))
        with self._transaction(write=True):
            if self._get_source(source) is not None:
                in_use = self._eps(new, list(self._all(self._get_jobs(source))))
                if in_use > new.epsilon:
                    raise LedgerError(
                        f"cannot set the budget of data source {source!r} to epsilon="
                        f"{new.epsilon} (delta={new.delta}, {new.accountant}): committed and "
                        f"reserved jobs already use epsilon={in_use:.4f}; choose at least that, "
                        "or release reservations first"
                    )
            self._put_source(new)
            return self._status(new)

    def reserve(self, source: str, job_id: str, planned: Sequence[Mechanism | PureMechanism]) -> float:
        """Reserve budget on ``source`` for job ``job_id`` that plans to run ``planned``.

        Returns the projected total ε(committed + all reservations + planned) at the
        source's δ. Raises BudgetExceeded if that exceeds the budget ε, LedgerError if
        the job already has a reservation or commit on this source.
        """
        _check_name(job_id, "job_id")
        planned = _check_mechanisms(planned, "planned")
        with self._transaction(write=True):
            record = self._require_source(source)
            jobs = self._get_jobs(source)
            if job_id in jobs:
                raise LedgerError(
                    f"job {job_id!r} is already {jobs[job_id].state} on data source {source!r}; use a new job id"
                )
            total = self._eps(record, [*self._all(jobs), *planned])
            self._check_budget(record, jobs, total, job_id)
            self._put_job(source, JobRecord(job_id, "reserved", planned))
            return total

    def replan(self, source: str, job_id: str, planned: Sequence[Mechanism | PureMechanism]) -> float:
        """Replace the reservation of ``job_id`` by ``planned``, a new plan of the same job (still reserved).

        For a job whose plan is settled only after it was reserved (e.g. its training
        rows change before it starts): one check and one write, so the reservation is
        either the old plan or the new one, never neither. Returns the projected total
        ε as :meth:`reserve` does. Raises BudgetExceeded, changing nothing, if the new
        plan does not fit beside everything else; LedgerError if the job has no
        reservation or is already committed.
        """
        _check_name(job_id, "job_id")
        planned = _check_mechanisms(planned, "planned")
        with self._transaction(write=True):
            record = self._require_source(source)
            jobs = self._get_jobs(source)
            self._require_reserved(source, job_id, jobs, "replan")
            total = self._eps(record, [*self._all(jobs, exclude=job_id), *planned])
            self._check_budget(record, jobs, total, job_id)
            self._put_job(source, JobRecord(job_id, "reserved", planned))
            return total

    def commit(self, source: str, job_id: str, spent: Sequence[Mechanism | PureMechanism]) -> BudgetStatus:
        """Replace the reservation of ``job_id`` by the mechanisms it actually ran.

        ``spent`` may be less than planned (freeing budget). Raises BudgetExceeded,
        changing nothing, if committed + ``spent`` + other reservations exceed the
        budget; LedgerError if the job has no reservation or is already committed.
        """
        _check_name(job_id, "job_id")
        spent = _check_mechanisms(spent, "spent")
        with self._transaction(write=True):
            record = self._require_source(source)
            jobs = self._get_jobs(source)
            self._require_reserved(source, job_id, jobs, "commit")
            total = self._eps(record, [*self._all(jobs, exclude=job_id), *spent])
            self._check_budget(record, jobs, total, job_id)
            self._put_job(source, JobRecord(job_id, "committed", spent))
            jobs[job_id] = JobRecord(job_id, "committed", spent)
            return self._status(record, jobs)

    def release(self, source: str, job_id: str) -> BudgetStatus:
        """Drop the unused reservation of ``job_id`` (the id may then be reused).
        LedgerError if there is none or the job is already committed."""
        _check_name(job_id, "job_id")
        with self._transaction(write=True):
            record = self._require_source(source)
            jobs = self._get_jobs(source)
            self._require_reserved(source, job_id, jobs, "release")
            self._delete_job(source, job_id)
            del jobs[job_id]
            return self._status(record, jobs)

    def status(self, source: str) -> BudgetStatus:
        """The budget of ``source`` as of now; LedgerError if unknown."""
        with self._transaction(write=False):
            return self._status(self._require_source(source))

    def sources(self) -> list[str]:
        """Names of all sources with a budget, sorted."""
        with self._transaction(write=False):
            return sorted(self._list_sources())

    def jobs(self, source: str) -> dict[str, JobRecord]:
        """The reserved and committed jobs of ``source`` by id (a snapshot); LedgerError if unknown.

        For reconciling the ledger with a job store after a crash."""
        with self._transaction(write=False):
            self._require_source(source)
            return self._get_jobs(source)

    # -- helpers ------------------------------------------------------------------

    def _status(self, record: SourceRecord, jobs: dict[str, JobRecord] | None = None) -> BudgetStatus:
        if jobs is None:
            jobs = self._get_jobs(record.source)
        committed = [m for j in jobs.values() if j.state == "committed" for m in j.mechanisms]
        spent = self._eps(record, committed)
        in_use = self._eps(record, list(self._all(jobs)))
        return BudgetStatus(
            source=record.source,
            epsilon_budget=record.epsilon,
            delta=record.delta,
            spent_epsilon=spent,
            reserved_epsilon=max(0.0, in_use - spent),
            remaining_epsilon=max(0.0, record.epsilon - in_use),
            jobs=len(jobs),
            accountant=record.accountant,
        )

    @staticmethod
    def _require_reserved(source: str, job_id: str, jobs: dict[str, JobRecord], action: str) -> None:
        job = jobs.get(job_id)
        if job is None:
            raise LedgerError(
                f"cannot {action} job {job_id!r} on data source {source!r}: it has no reservation; reserve() it first"
            )
        if job.state == "committed":
            raise LedgerError(
                f"cannot {action} job {job_id!r} on data source {source!r}: it is already "
                "committed, and committed spending is final"
            )

    def _check_budget(self, record: SourceRecord, jobs: dict[str, JobRecord], total: float, job_id: str) -> None:
        if math.isnan(total) or total > record.epsilon:
            in_use = self._eps(record, list(self._all(jobs, exclude=job_id)))
            remaining = max(0.0, record.epsilon - in_use)
            raise BudgetExceeded(
                f"job {job_id!r} would bring the privacy spending of data source "
                f"{record.source!r} to epsilon={total:.4f} (delta={record.delta}, "
                f"{record.accountant}), over its budget of epsilon={record.epsilon}; "
                f"remaining budget is epsilon={remaining:.4f}. Plan fewer steps, a lower "
                "sample rate or more noise (see calibrate_noise), or raise the budget"
            )
