"""What every role of the peer works over: the one mailbox, the one store, the ledger, the client.

`PeerContext` owns this peer's identity and configuration, its store (jobs, audit log,
model store), its privacy ledger, its outgoing client, its actor's `Mailbox`, the
background tasks its roles spawn and the engine processes (SuperLink, SuperNode) running
for its jobs. It holds the helpers every role shares, so none is copied per role:

* `run` sends a piece of state-changing work through the mailbox (so it runs alone,
  in arrival order) and audits a `Refused` it raises; `record_refusal` audits a
  refusal or failure the HTTP layer saw; `set_state` moves a job and audits it;
  `audit_job` audits a step on a job inside the caller's transaction.
* `spawn` runs background work (proposing, training, notifying) outside the mailbox;
  that work comes back into the mailbox (`mailbox.ask`) for every state change.
* `verify` / `check_replay` check a signed job; `view` is a job as its API shows it;
  `stop_engines` stops a job's engine processes.

Roles may call everything here; this module calls no role.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fedsilo.peers.daemon.actor import Mailbox
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import PeerConfig
from fedsilo.peers.daemon.signed_job import SignedJob, verify_envelope
from fedsilo.peers.daemon.store import JobRow, PeerStore
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.consortium import Identity
from fedsilo.privacy.ledger import SQLiteLedger

log = logging.getLogger("fedsilo.peer")


class PeerContext:
    """See the module docstring. Built outside the event loop; the roles use it once the
    mailbox is started (by `PeerService.start`)."""

    def __init__(self, config: PeerConfig, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self.name = identity.name
        self.store = PeerStore(config.state_dir, identity.manifest.suite)
        self.ledger = SQLiteLedger(config.state_dir / "ledger.sqlite")
        self.mailbox = Mailbox()
        self.client = PeerClient(identity)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.running: dict[str, Any] = {}  # job id (host) or "JOB/peer" -> HostedTraining / JoinedTraining

    # -- background work ----------------------------------------------------------------
    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run `coroutine` as a background task of this peer (cancelled at stop; a failure is logged)."""
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]  # any awaitable coroutine
        self.tasks.add(task)
        task.add_done_callback(self._finished_task)

    def _finished_task(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work of peer %s failed", self.name, exc_info=task.exception())

    async def stop_engines(self, job_id: str) -> None:
        """Stop the job's SuperLink (host) and this peer's SuperNode, if running."""
        for key in (job_id, f"{job_id}/peer"):
            running = self.running.pop(key, None)
            if running is not None:
                await asyncio.to_thread(running.stop)

    # -- the mailbox ------------------------------------------------------------------
    async def run(self, actor: str, action: str, work: Callable[[], Awaitable[Any]], job: str | None = None) -> Any:
        """Run `work` in the mailbox; a Refused is written to the audit log and re-raised."""

        async def wrapped() -> Any:
            try:
                return await work()
            except Refused as refusal:
                with self.store.transaction():
                    self.store.audit.append(actor, action, "refused", str(refusal), job=job)
                refusal.audited = True
                raise

        return await self.mailbox.ask(wrapped)

    async def record_refusal(self, actor: str, action: str, detail: str, outcome: str = "refused") -> None:
        """Audit a request refused before it reached a handler (unknown peer, bad body), or one that failed."""

        async def work() -> None:
            with self.store.transaction():
                self.store.audit.append(actor, action, outcome, detail)

        await self.mailbox.ask(work)

    def audit_job(self, actor: str, action: str, detail: str, job: JobRow | SignedJob) -> None:
        """Audit a successful `action` on `job` and its data source here (inside the caller's store transaction)."""
        self.store.audit.append(actor, action, "ok", detail, job=job.job_id, source=job.source)

    async def set_state(self, job_id: str, state: str, action: str, detail: str) -> None:
        """Move a job to `state` and audit it as `action` (in the mailbox: the caller's work or `mailbox.ask`)."""
        with self.store.transaction():
            self.store.set_state(job_id, state, detail)
            self.store.audit.append("local", action, "ok", detail, job=job_id)

    # -- checks and views ---------------------------------------------------------------
    def verify(self, envelope: Any) -> SignedJob:
        """The owner-signed job in `envelope`, verified against this peer's manifest and CA."""
        return verify_envelope(envelope, self.identity.manifest, self.identity.ca_certificate)

    def check_replay(self, job: SignedJob) -> None:
        """Refused 409 if this job, or its nonce, was seen here before."""
        if self.store.job(job.job_id) is not None:
            raise Refused(
                f"job {job.job_id} is already known here: a replayed or duplicate job is refused; use a new job id", 409
            )
        if self.store.nonce_seen(job.nonce):
            raise Refused("this job's nonce was seen before: a replayed job is refused", 409)

    def address(self, peer: str) -> str:
        """The address of `peer` in this peer's manifest (every job's peers are members with one)."""
        member = self.identity.manifest.member(peer)
        assert member is not None and member.address
        return member.address

    def view(self, job_id: str) -> dict[str, Any]:
        """The job as the API shows it; a hosted job lists its participants' decisions."""
        job = self.store.job(job_id)
        assert job is not None
        view = job.summary()
        if job.hosting:
            view["participants"] = [
                {"peer": p.peer, "decision": p.decision, "reason": p.reason} for p in self.store.participants(job_id)
            ]
        return view


def job_id_of(envelope: Any) -> str | None:
    """The job id an envelope claims (for the audit entry of a refusal), if it is a short string."""
    try:
        value = envelope["job"]["job_id"]
        return value if isinstance(value, str) and len(value) <= 64 else None
    except (TypeError, KeyError):
        return None
