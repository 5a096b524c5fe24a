"""What a member may see: jobs, sources, budgets and models, by need-to-know (reads only).

`Views` reads the store and the ledger and changes nothing, so it does not go through
the mailbox. A member sees the jobs it owns, hosts or takes part in, the budgets of this
peer's sources those jobs use, and the models it may pull; `viewer` None is this peer's
operator, who sees everything. Of the audit log (the operator's), a member sees whether
the chain verifies and the entries it is the actor of, without their sequence numbers and
hashes (which would count everyone else's actions); a member named like one of the log's
own actors (`NOT_MEMBERS`: this peer, its operator, unknown certificates) sees none. The chain is checked in full, off the
event loop on a read-only connection of its own (20,000 entries take about a second), at
most once per `CHAIN_CHECK_SECONDS` however many callers ask. `reachability` asks every other member with an address
for its health, each within `PROBE_SECONDS` and all at once, so a status page answers
within that time however many members are down. It calls no other role.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

from fedsilo.peers.daemon.audit_log import AuditLog, ChainCheck
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.model_store import CARD
from fedsilo.peers.daemon.store import JobRow
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.identity.manifest import Member
from fedsilo.peers.job import TrainSpec

PROBE_SECONDS = 3.0
AUDIT_RECENT = 50  # audit entries a status page shows (the newest)
# actors in the audit log that are no member: a member admitted under one of these names sees no entry
NOT_MEMBERS = frozenset({"local", "operator", "unknown"})
CHAIN_CHECK_SECONDS = 10.0  # a status page reuses the chain's last full check for this long


class Views:
    """See the module docstring."""

    def __init__(self, context: PeerContext) -> None:
        self.ctx = context
        self._chain_lock = asyncio.Lock()
        self._chain: tuple[float, ChainCheck] | None = None  # (when, the last full check)

    def may_read_model(self, caller: Member, job_id: str) -> bool:
        """Whether `caller` may pull the model of `job_id`: its owner, host, participants and policy's readers."""
        job = self.ctx.store.job(job_id)
        if job is None:
            return False
        return (
            caller.name in (job.owner, job.host)
            or caller.name in job.envelope["job"]["participants"]
            or caller.name in self.ctx.config.policy.model_readers
        )

    @staticmethod
    def takes_part(job: JobRow, member: str) -> bool:
        """Whether `member` owns, hosts or is a participant of `job` (as the owner-signed job names them)."""
        return member in (job.owner, job.host) or member in job.envelope["job"]["participants"]

    def visible_jobs(self, viewer: str | None) -> list[JobRow]:
        """The jobs `viewer` takes part in (None: this peer's operator, who sees all)."""
        return [job for job in self.ctx.store.jobs() if viewer is None or self.takes_part(job, viewer)]

    def visible_sources(self, viewer: str | None) -> list[str]:
        """This peer's data sources that jobs `viewer` takes part in use (None: all of them)."""
        if viewer is None:
            return sorted(self.ctx.config.sources)
        return sorted({job.source for job in self.visible_jobs(viewer) if job.source in self.ctx.config.sources})

    def job_view(self, job_id: str, viewer: str | None) -> dict[str, Any] | None:
        """The job as `viewer` may see it, or None if it takes no part in it (or there is no such job).

        Participants' reasons (a decline may state a peer's remaining budget) are shown only
        to the job's owner, to the operator, and to each participant for its own row.
        """
        job = self.ctx.store.job(job_id)
        if job is None or (viewer is not None and not self.takes_part(job, viewer)):
            return None
        view = self.ctx.view(job_id)
        if viewer is not None and viewer != job.owner and "participants" in view:
            view["participants"] = [p if p["peer"] == viewer else {**p, "reason": ""} for p in view["participants"]]
        return view

    def budgets(self, viewer: str | None) -> list[dict[str, Any]]:
        """The budget of each source `viewer` may see (see `visible_sources`)."""
        out = []
        for name in self.visible_sources(viewer):
            status = self.ctx.ledger.status(name)
            out.append(
                {
                    "source": name,
                    "epsilon_budget": status.epsilon_budget,
                    "delta": status.delta,
                    "spent_epsilon": status.spent_epsilon,
                    "reserved_epsilon": status.reserved_epsilon,
                    "remaining_epsilon": status.remaining_epsilon,
                    "jobs": status.jobs,
                    "accountant": status.accountant,
                }
            )
        return out

    def job_list(self, viewer: str | None) -> list[dict[str, Any]]:
        """Each job `viewer` may see, newest first: id, setup, state and its detail, owner and host, its
        source, the rounds it plans and, once its model is here, the model card's metrics."""
        return [
            {
                "job_id": job.job_id,
                "setup": job.envelope["job"].get("setup", "horizontal"),
                "dp": job.envelope["job"]["run_config"].get("dp.mode", "local"),
                "state": job.state,
                "detail": job.detail,
                "owner": job.owner,
                "host": job.host,
                "source": job.source,
                "rounds": job.envelope["job"]["run_config"].get("train.rounds", TrainSpec.rounds),
                "metrics": self._card_metrics(job.job_id),
                "updated": job.updated,
            }
            for job in reversed(self.visible_jobs(viewer))
        ]

    def _card_metrics(self, job_id: str) -> dict[str, Any] | None:
        """Rounds run, final AUC and loss from the card of the newest model of `job_id` here (None: no model)."""
        found = self.ctx.store.model(job_id)
        if found is None:
            return None
        metrics = json.loads((found[1] / CARD).read_text()).get("metrics", {})
        return {"model_version": found[0], **{k: metrics.get(k) for k in ("rounds", "final_auc", "final_loss")}}

    async def chain_check(self) -> ChainCheck:
        """The audit chain's full check, at most `CHAIN_CHECK_SECONDS` old (see the module docstring)."""
        async with self._chain_lock:
            if self._chain is None or time.monotonic() - self._chain[0] >= CHAIN_CHECK_SECONDS:
                self._chain = (time.monotonic(), await asyncio.to_thread(self._verify_apart))
            return self._chain[1]

    def _verify_apart(self) -> ChainCheck:
        conn = sqlite3.connect(f"file:{self.ctx.store.path}?mode=ro", uri=True)
        try:
            return AuditLog(conn, self.ctx.store.audit.suite).verify()
        finally:
            conn.close()

    async def audit(self, viewer: str | None, recent: int = AUDIT_RECENT) -> dict[str, Any]:
        """The audit log as `viewer` may see it: whether its hash chain verifies, and the newest `recent`
        entries (a member's: only those it is the actor of, without seq and hashes; see the module docstring)."""
        audit = self.ctx.store.audit
        check = await self.chain_check()
        if viewer is None:
            entries = audit.entries(max(0, self._last_seq() - recent))
            return {
                "chain_ok": check.ok,
                "entries_total": check.entries,
                "first_broken": check.first_broken,
                "reason": check.reason,
                "chain_hash": audit.hash_label,
                "entries": [e.to_dict() for e in reversed(entries)],
            }
        rows = self.ctx.store.conn.execute(
            "SELECT time, action, job, source, outcome, detail FROM audit WHERE actor = ? ORDER BY seq DESC LIMIT ?",
            (viewer, 0 if viewer in NOT_MEMBERS else recent),
        ).fetchall()
        keys = ("time", "action", "job", "source", "outcome", "detail")
        return {"chain_ok": check.ok, "entries": [{"actor": viewer, **dict(zip(keys, row))} for row in rows]}

    def _last_seq(self) -> int:
        row = self.ctx.store.conn.execute("SELECT MAX(seq) FROM audit").fetchone()
        return int(row[0] or 0)

    async def reachability(self, timeout: float = PROBE_SECONDS) -> list[dict[str, Any]]:
        """Every other member with an address: whether its daemon answered /v1/health within `timeout` s."""

        async def probe(member: Member) -> dict[str, Any]:
            start = time.monotonic()
            try:
                await asyncio.wait_for(self.ctx.client.call("GET", f"{member.address}/v1/health"), timeout)
                reachable, detail = True, f"answered in {1000 * (time.monotonic() - start):.0f} ms"
            except TimeoutError:
                reachable, detail = False, f"no answer within {timeout:g} s"
            except PeerUnreachable as error:
                reachable, detail = False, str(error)
            return {"member": member.name, "address": member.address, "reachable": reachable, "detail": detail}

        manifest = self.ctx.identity.current_manifest()
        others = [m for m in manifest.members if m.address and m.name != self.ctx.name]
        return list(await asyncio.gather(*(probe(m) for m in others)))
