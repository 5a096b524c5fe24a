"""Cancelling a job, on either side: by its owner, its host, or this peer itself.

`Cancellation` ends an active job (`cancel`): it stops the job's engine processes,
settles this peer's ledger (what its accountant spent before the cancel is committed;
an untouched reservation is released), marks the job cancelled, audits it, and, at the
host, tells the accepted participants to cancel too (`Hosting.tell_participants`).
"""

from __future__ import annotations

from typing import Any

from fedsilo.peers.daemon import training
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.roles.hosting import Hosting
from fedsilo.peers.daemon.store import ACTIVE_STATES
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.manifest import Member


class Cancellation:
    """See the module docstring."""

    def __init__(self, context: PeerContext, budget: Budget, hosting: Hosting) -> None:
        self.ctx = context
        self.budget = budget
        self.hosting = hosting

    async def cancel(self, caller: Member, job_id: str) -> dict[str, Any]:
        """Cancel an active job: by its owner, its host, or this peer itself; releases the reservation."""

        async def work() -> dict[str, Any]:
            job = self.ctx.store.job(job_id)
            if job is None:
                raise Refused(f"no job {job_id!r} here", 404)
            if caller.name not in (job.owner, job.host, self.ctx.name):
                raise Refused(f"{caller.name} may not cancel job {job_id}: only its owner or host can", 403)
            withdraw = job.state == "finished" and job.envelope["job"].get("setup") == "vertical"
            if job.state not in ACTIVE_STATES and not withdraw:
                raise Refused(f"job {job_id} is already {job.state}", 409)
            await self.ctx.stop_engines(job_id)
            spent = training.spent_so_far(self.ctx.config.state_dir, job_id) if job.state == "training" else []
            with self.ctx.store.transaction():
                if spent and job.source:
                    spent = self.budget.commit(job, spent)
                    settled = "what its accountant spent before the cancel is committed"
                else:
                    settled = "reservation released" if self.budget.release(job_id) else "no reservation held"
                self.ctx.store.set_state(
                    job_id,
                    "cancelled",
                    f"cancelled by {caller.name}" + ("; its model is withdrawn (no more scoring)" if withdraw else ""),
                    spent=[m.to_dict() for m in spent] if spent else None,
                )
                self.ctx.audit_job(caller.name, "job.cancel", settled, job)
            if job.hosting:
                self.ctx.spawn(self.hosting.tell_participants(job_id, "cancel"))
            return self.ctx.view(job_id)

        return await self.ctx.run(caller.name, "job.cancel", work, job=job_id)
