"""Model replication: keep a verified copy of the model of a job this peer took part in.

`Replication` answers the host's announcement that a job's model is published
(`replicate`, only from that job's host): it pulls the model, verifies it against the
signed card and the owner-signed job (`model_pull.pull_model`), and keeps it in the
model store as a new version, audited. A model that does not verify is audited and not
kept. It calls no other role.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.manifest import Member

log = logging.getLogger("fedsilo.peer")


class Replication:
    """See the module docstring."""

    def __init__(self, context: PeerContext) -> None:
        self.ctx = context

    async def replicate(self, caller: Member, job_id: str) -> dict[str, Any]:
        """The host announces the job's model: fetch, verify and keep a copy (in the background)."""

        async def work() -> dict[str, Any]:
            job = self.ctx.store.job(job_id)
            if job is None or job.hosting:
                raise Refused(f"no participation in job {job_id!r} here", 404)
            if caller.name != job.host:
                raise Refused(f"only the host {job.host} may announce the model of job {job_id}", 403)
            self.ctx.spawn(self._fetch(job_id, job.host, job.envelope))
            return {"ok": True}

        return await self.ctx.run(caller.name, "model.replicate", work, job=job_id)

    async def _fetch(self, job_id: str, host: str, envelope: dict[str, Any]) -> None:
        address = self.ctx.address(host)
        staging = self.ctx.store.models_dir / job_id / ".incoming"
        try:
            card = await pull_model(self.ctx.client, address, job_id, staging, job_envelope=envelope)
        except FedsiloError as error:
            log.warning("could not replicate the model of job %s: %s", job_id, error)
            await self.ctx.record_refusal(host, "model.replicate", f"the model did not verify: {error}")
            return

        async def keep() -> None:
            final = self.ctx.store.models_dir / job_id / f"v{card['version']}"
            if final.exists():
                shutil.rmtree(staging, ignore_errors=True)
                return
            staging.rename(final)
            with self.ctx.store.transaction():
                self.ctx.store.add_model(job_id, int(card["version"]), final, card["signer"])
                self.ctx.store.audit.append(
                    host, "model.replicate", "ok", f"version {card['version']} verified", job=job_id
                )

        await self.ctx.mailbox.ask(keep)
