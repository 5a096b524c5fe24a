"""This peer's privacy budgets: reserve, commit and release in its ledger, each audited.

`Budget` owns the ledger's entries of this peer's data sources: it sets each source's
budget from peer.toml at start (`set_from_config`), reserves a job's planned mechanisms
when this peer accepts it (`reserve`), replaces that plan when the job's training rows
change before it starts (`replan`), commits what was spent (`commit`) and releases an
untouched reservation (`release`). Every method runs inside the caller's store
transaction (in the mailbox), with the ledger write the last step of the transaction's
work, and writes one audit entry; it calls no other role.
"""

from __future__ import annotations

from fedsilo.errors import BudgetExceeded
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.participants import Acceptance
from fedsilo.peers.daemon.signed_job import SignedJob
from fedsilo.peers.daemon.store import JobRow
from fedsilo.peers.errors import Refused
from fedsilo.privacy.accounting import Mechanism, epsilon_spent


class Budget:
    """See the module docstring."""

    def __init__(self, context: PeerContext) -> None:
        self.ctx = context

    def set_from_config(self) -> None:
        """Set each source's budget from peer.toml (at start, each in its own transaction)."""
        for source in self.ctx.config.sources.values():
            with self.ctx.store.transaction():
                self.ctx.ledger.set_budget(source.name, source.epsilon, source.delta, source.accountant)
                self.ctx.store.audit.append(
                    "local",
                    "budget.set",
                    "ok",
                    f"ε = {source.epsilon:g}, δ = {source.delta:g}, {source.accountant}",
                    source=source.name,
                )

    def reserve(self, job: SignedJob, acceptance: Acceptance, actor: str) -> None:
        """Reserve the planned mechanisms; Refused 403 if the source's budget cannot take them."""
        try:
            projected = self.ctx.ledger.reserve(job.source, job.job_id, list(acceptance.planned))
        except BudgetExceeded as error:
            raise Refused(f"budget: {error}", 403) from None
        self.ctx.audit_job(
            actor,
            "budget.reserve",
            f"projected ε = {projected:.4f} of {self.ctx.config.sources[job.source].epsilon:g}",
            job,
        )

    def replan(self, job: JobRow, planned: list[Mechanism], why: str) -> float:
        """Replace the job's reservation by `planned` (its plan once its training rows are settled), audited;
        the projected ε. BudgetExceeded, with the old reservation kept, if the new plan does not fit."""
        assert job.source is not None
        projected = self.ctx.ledger.replan(job.source, job.job_id, planned)
        self.ctx.audit_job(
            "local",
            "budget.replan",
            f"{why}: projected ε = {projected:.4f} of {self.ctx.config.sources[job.source].epsilon:g}",
            job,
        )
        return projected

    def commit(self, job: JobRow, spent: list[Mechanism] | None) -> list[Mechanism]:
        """Commit this peer's reservation for `job` as `spent`, or in full if None.

        A reservation already committed (its accountant's spending, at the end of its
        SuperNode) stays as it is. Returns what the ledger now holds as spent for the job.
        """
        record = self.ctx.ledger.jobs(job.source).get(job.job_id) if job.source else None
        if job.source is None or record is None:
            return []
        if record.state == "committed":
            return list(record.mechanisms)
        mechanisms = list(record.mechanisms) if spent is None else spent
        self.ctx.ledger.commit(job.source, job.job_id, mechanisms)
        source = self.ctx.config.sources[job.source]
        epsilon = epsilon_spent(mechanisms, source.delta, source.accountant)
        self.ctx.audit_job(
            "local",
            "budget.commit",
            f"ε = {epsilon:.4f} spent"
            + (" (the whole reservation: the job may have released updates)" if spent is None else ""),
            job,
        )
        return mechanisms

    def commit_spent(self, job: JobRow, spent: list[Mechanism]) -> float:
        """Commit what this peer's accountant spent in `job` (over a reservation not yet committed); its ε."""
        assert job.source is not None
        source = self.ctx.config.sources[job.source]
        self.ctx.ledger.commit(job.source, job.job_id, spent)
        epsilon = epsilon_spent(spent, source.delta, source.accountant)
        self.ctx.audit_job("local", "budget.commit", f"ε = {epsilon:.4f} spent", job)
        return epsilon

    def release(self, job_id: str) -> bool:
        """Release the job's reservation if one is held; whether one was."""
        job = self.ctx.store.job(job_id)
        if job is None or job.source is None:
            return False
        record = self.ctx.ledger.jobs(job.source).get(job_id)
        if record is None or record.state != "reserved":
            return False
        self.ctx.ledger.release(job.source, job_id)
        self.ctx.audit_job("local", "budget.release", "", job)
        return True
