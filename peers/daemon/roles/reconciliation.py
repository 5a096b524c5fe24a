"""Reconciliation at start: make the store, the ledger and the engine processes agree after a restart.

`Reconciliation.open` (run once in the mailbox when the daemon starts) sets each
source's budget from peer.toml, stops engine processes the previous run left behind,
marks jobs that were active honestly (`reconcile`) and expires overdue participations.
A crash can only leave a ledger reservation without an active job (the ledger write is
the last step inside each store transaction); `reconcile` releases it, or commits it in
full if this peer's SuperNode had joined the job. It calls `Budget`, `Participating`
(expiry) and `Hosting` (to tell the participants of an interrupted hosted job to cancel).
"""

from __future__ import annotations

from fedsilo.peers.daemon import training
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.roles.hosting import Hosting
from fedsilo.peers.daemon.roles.participating import Participating
from fedsilo.peers.daemon.store import ACTIVE_STATES


class Reconciliation:
    """See the module docstring."""

    def __init__(self, context: PeerContext, budget: Budget, participating: Participating, hosting: Hosting) -> None:
        self.ctx = context
        self.budget = budget
        self.participating = participating
        self.hosting = hosting

    async def open(self) -> None:
        """Set each source's budget from peer.toml, then reconcile the store with the ledger."""
        self.budget.set_from_config()
        self.reconcile()

    def reconcile(self) -> None:
        """After a restart: stop orphaned engine processes, mark interrupted jobs honestly, and
        make the ledger match the store.

        A job that was training may have released updates, so its whole reservation is
        committed as spent; a hosted job that had not started is interrupted and its
        reservation released; a reservation without an active job (a crash between the
        ledger write and the store commit) is released, unless the job ended after this
        peer's SuperNode joined it (then it may have released updates: committed in full).
        Accepted participations stay (unless expired).
        """
        store, ledger = self.ctx.store, self.ctx.ledger
        for job_id, names in training.stop_orphaned_processes(self.ctx.config.state_dir).items():
            with store.transaction():
                store.audit.append(
                    "local",
                    "job.processes.stopped",
                    "ok",
                    "left running by the previous run: " + ", ".join(names),
                    job=job_id,
                )
        active = {job.job_id: job for job in store.jobs(ACTIVE_STATES)}
        for job in active.values():
            record = ledger.jobs(job.source).get(job.job_id) if job.source else None
            with store.transaction():
                if job.state == "training":
                    spent = [m.to_dict() for m in self.budget.commit(job, None)]
                    store.set_state(
                        job.job_id,
                        "interrupted",
                        "the daemon stopped during training; the whole reservation is counted as spent",
                        spent=spent,
                    )
                    self.ctx.audit_job(
                        "local", "job.interrupted", "restart during training: reservation committed as spent", job
                    )
                elif job.hosting:
                    if record is not None and record.state == "reserved":
                        ledger.release(job.source, job.job_id)
                    store.set_state(job.job_id, "interrupted", "the host restarted before training started")
                    self.ctx.audit_job("local", "job.interrupted", "restart before training: reservation released", job)
                    self.ctx.spawn(self.hosting.tell_participants(job.job_id, "cancel"))
                elif record is None:
                    store.set_state(job.job_id, "interrupted", "its budget reservation is missing after a restart")
                    self.ctx.audit_job("local", "job.interrupted", "reservation missing", job)
        for source in self.ctx.config.sources:
            for job_id, record in ledger.jobs(source).items():
                if record.state != "reserved" or job_id in active:
                    continue
                ended = store.job(job_id)
                with store.transaction():
                    if ended is not None and ended.source == source and self._joined(job_id):
                        spent = self.budget.commit(ended, None)
                        store.set_state(job_id, ended.state, ended.detail, spent=[m.to_dict() for m in spent])
                    else:
                        ledger.release(source, job_id)
                        store.audit.append(
                            "local",
                            "budget.release",
                            "ok",
                            "reservation without an active job (left by a crash) released",
                            job=job_id,
                            source=source,
                        )
        self.participating.expire_overdue()

    def _joined(self, job_id: str) -> bool:
        """Whether this peer's SuperNode ever started for the job (its working directory exists)."""
        return (self.ctx.config.state_dir / "jobs" / job_id / "peer").is_dir()
