"""Model replication: keep a verified copy of the model of a job this peer took part in.

`Replication` answers the host's announcement that a job's model is published
(`replicate`, only from that job's host): it pulls the model, verifies it against the
signed card and the owner-signed job (`model_pull.pull_model`), and keeps it in the
model store as a new version, audited. A model that does not verify is audited and not
kept. It calls no other role.

Replication completes and is idempotent:

- one fetch per job at a time: an announcement while the job's fetch runs makes it
  check once more when it ends (the host may have published a newer version);
- a version already kept is not fetched again (the host's listing is read first), so
  re-announcing a model changes nothing;
- the staging folder (`MODELS/JOB/.incoming`) is emptied before and removed after every
  fetch, and every leftover one is removed at start (a daemon killed mid-fetch);
- `resume` (at start, then every `SWEEP_SECONDS`) fetches the model of every job this
  peer took part in that ended (finished, or interrupted by a restart here) with no
  copy kept: a peer that was down when the host announced the model gets it once it is
  back. A host that is unreachable or has no model yet is asked again later, waiting
  twice as long each time, from `SWEEP_SECONDS` up to `MAX_RETRY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.manifest import Member

log = logging.getLogger("fedsilo.peer")
STAGING = ".incoming"
SWEEP_SECONDS = 60.0
MAX_RETRY_SECONDS = 3600.0
ENDED_STATES = ("finished", "interrupted")  # a participation whose host may have published a model


class Replication:
    """See the module docstring."""

    def __init__(self, context: PeerContext) -> None:
        self.ctx = context
        self._fetching: set[str] = set()
        self._again: set[str] = set()  # announced while its fetch ran: check once more
        self._retry: dict[str, tuple[float, float]] = {}  # job id -> (next attempt, monotonic; current delay)

    async def replicate(self, caller: Member, job_id: str) -> dict[str, Any]:
        """The host announces the job's model: fetch, verify and keep a copy (in the background)."""

        async def work() -> dict[str, Any]:
            job = self.ctx.store.job(job_id)
            if job is None or job.hosting:
                raise Refused(f"no participation in job {job_id!r} here", 404)
            if caller.name != job.host:
                raise Refused(f"only the host {job.host} may announce the model of job {job_id}", 403)
            self._start(job_id, job.host, job.envelope)
            return {"ok": True}

        return await self.ctx.run(caller.name, "model.replicate", work, job=job_id)

    def _start(self, job_id: str, host: str, envelope: dict[str, Any]) -> None:
        """Spawn the job's fetch unless one runs (in the mailbox or the event loop's thread)."""
        if job_id in self._fetching:
            self._again.add(job_id)
            return
        self._fetching.add(job_id)
        self.ctx.spawn(self._fetch(job_id, host, envelope))

    def clear_staging(self) -> None:
        """Remove every staging folder a previous run left (before any fetch starts)."""
        if not self.ctx.store.models_dir.is_dir():
            return
        for job_dir in self.ctx.store.models_dir.iterdir():
            for leftover in (job_dir / STAGING, job_dir / f".{STAGING}.partial"):
                if leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
                    log.info("removed the staging folder %s left by a previous run", leftover)

    async def resume(self) -> None:
        """Fetch the model of every ended participation with none kept; then again every `SWEEP_SECONDS`."""
        while True:
            now = time.monotonic()
            for job in self.ctx.store.jobs(ENDED_STATES):
                if job.hosting or self.ctx.store.model(job.job_id) is not None:
                    continue
                due, _ = self._retry.get(job.job_id, (0.0, 0.0))
                if due <= now:
                    self._start(job.job_id, job.host, job.envelope)
            await asyncio.sleep(SWEEP_SECONDS)

    def _later(self, job_id: str) -> None:
        _, delay = self._retry.get(job_id, (0.0, SWEEP_SECONDS / 2))
        delay = min(delay * 2, MAX_RETRY_SECONDS)
        self._retry[job_id] = (time.monotonic() + delay, delay)

    async def _fetch(self, job_id: str, host: str, envelope: dict[str, Any]) -> None:
        staging = self.ctx.store.models_dir / job_id / STAGING
        try:
            await self._fetch_once(job_id, host, envelope, staging)
            while job_id in self._again:
                self._again.discard(job_id)
                await self._fetch_once(job_id, host, envelope, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self._fetching.discard(job_id)
            self._again.discard(job_id)

    async def _fetch_once(self, job_id: str, host: str, envelope: dict[str, Any], staging: Path) -> None:
        try:
            address = self.ctx.address(host)
            kept = self.ctx.store.model(job_id)
            if kept is not None:
                listing = await self.ctx.client.call("GET", f"{address}/v1/models/{quote(job_id, safe='')}")
                if isinstance(listing, dict) and listing.get("version") == kept[0]:
                    return  # this version is kept already: a re-announcement changes nothing
            shutil.rmtree(staging, ignore_errors=True)
            card = await pull_model(self.ctx.client, address, job_id, staging, job_envelope=envelope)
        except PeerUnreachable as error:  # host down, or no model published (yet): ask again later
            log.info("could not reach the model of job %s at %s yet: %s", job_id, host, error)
            self._later(job_id)
            return
        except FedsiloError as error:
            log.warning("could not replicate the model of job %s: %s", job_id, error)
            self._later(job_id)
            await self.ctx.record_refusal(host, "model.replicate", f"the model did not verify: {error}")
            return

        async def keep() -> None:
            version = int(card["version"])
            kept = self.ctx.store.model(job_id)
            if kept is not None and kept[0] >= version:
                return
            final = self.ctx.store.models_dir / job_id / f"v{version}"
            shutil.rmtree(final, ignore_errors=True)  # renamed by a run killed before it recorded the model
            staging.rename(final)
            with self.ctx.store.transaction():
                self.ctx.store.add_model(job_id, version, final, card["signer"])
                self.ctx.store.audit.append(host, "model.replicate", "ok", f"version {version} verified", job=job_id)
            self._retry.pop(job_id, None)

        await self.ctx.mailbox.ask(keep)
