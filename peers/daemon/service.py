"""The peer's behaviour: every state change is one message through the actor's mailbox.

`PeerService` owns the store (jobs, audit log, model store), the privacy ledger and the
outgoing client. Its public coroutines are the messages the HTTP routes send; each
runs alone in the mailbox, checks everything first, then changes the store, the
ledger and the audit log in one store transaction (the ledger write is the last step
inside it, so a crash can only leave a ledger reservation without a job, which
`reconcile` releases at the next start). A refusal raises `Refused`, writes one audit
entry and changes nothing else.

Lifecycle of a job at its host: proposing (asked the participants) → ready (enough
accepted; budget reserved everywhere; waiting for training) → training → finished, or
failed / cancelled / interrupted. At a participant: accepted → training → finished, or
cancelled / failed / interrupted, or expired: an accepted participation whose signed job
expires before its host starts it releases its reservation (checked at start, every
`EXPIRY_SWEEP_SECONDS`, and when the host asks to start), so a host that vanishes
cannot hold a peer's budget.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fedsilo.errors import BudgetExceeded, DataError, FedsiloError
from fedsilo.peers.daemon import training
from fedsilo.peers.daemon.actor import Mailbox
from fedsilo.peers.daemon.card import build_card
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import PeerConfig
from fedsilo.peers.daemon.inputs import finite_number
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.model_store import publish
from fedsilo.peers.daemon.policy import check_policy, planned_mechanisms, source_facts
from fedsilo.peers.daemon.shared_lists import Served, SharedLists
from fedsilo.peers.daemon.signed_job import SignedJob, parse_document, verify_envelope
from fedsilo.peers.daemon.store import ACTIVE_STATES, JobRow, PeerStore
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.manifest import Member
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.ledger import SQLiteLedger

log = logging.getLogger("fedsilo.peer")
REPORT_KEYS = {"spent", "epsilon", "delta", "accountant", "failed"}
REPORT_WAIT_SECONDS = 120.0
EXPIRY_SWEEP_SECONDS = 60.0


class PeerService:
    """See the module docstring. Call `start()` inside the event loop before serving."""

    def __init__(self, config: PeerConfig, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self.name = identity.name
        self.store = PeerStore(config.state_dir)
        self.ledger = SQLiteLedger(config.state_dir / "ledger.sqlite")
        self.mailbox = Mailbox()
        self.client = PeerClient(identity)
        self.lists = SharedLists(config.lists, config.state_dir / "psi")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[str, Any] = {}  # job id (host) or "JOB/peer" -> HostedTraining / JoinedTraining

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self.mailbox.start()
        await self.client.__aenter__()
        await self.mailbox.ask(self._open)
        self._spawn(self._sweep_expired())

    async def _sweep_expired(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_SECONDS)

            async def expire() -> None:
                self._expire_participations()

            await self.mailbox.ask(expire)

    async def stop(self) -> None:
        """Stop the engine processes of running jobs (they show as interrupted at the next start)."""
        for running in list(self._running.values()):
            await asyncio.to_thread(running.stop)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.mailbox.stop()
        await self.client.__aexit__()
        self.ledger.close()
        self.lists.close()
        self.store.close()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._finished_task)

    def _finished_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work of peer %s failed", self.name, exc_info=task.exception())

    async def _open(self) -> None:
        """Set each source's budget from peer.toml, then reconcile the store with the ledger."""
        for source in self.config.sources.values():
            with self.store.transaction():
                self.ledger.set_budget(source.name, source.epsilon, source.delta, source.accountant)
                self.store.audit.append(
                    "local",
                    "budget.set",
                    "ok",
                    f"ε = {source.epsilon:g}, δ = {source.delta:g}, {source.accountant}",
                    source=source.name,
                )
        self._reconcile()

    def _reconcile(self) -> None:
        """After a restart: stop orphaned engine processes, mark interrupted jobs honestly, and
        make the ledger match the store.

        A job that was training may have released updates, so its whole reservation is
        committed as spent; a hosted job that had not started is interrupted and its
        reservation released; a reservation without an active job (a crash between the
        ledger write and the store commit) is released, unless the job ended after this
        peer's SuperNode joined it (then it may have released updates: committed in full).
        Accepted participations stay.
        """
        for job_id, names in training.stop_orphaned_processes(self.config.state_dir).items():
            with self.store.transaction():
                self.store.audit.append(
                    "local",
                    "job.processes.stopped",
                    "ok",
                    "left running by the previous run: " + ", ".join(names),
                    job=job_id,
                )
        active = {job.job_id: job for job in self.store.jobs(ACTIVE_STATES)}
        for job in active.values():
            record = self.ledger.jobs(job.source).get(job.job_id) if job.source else None
            with self.store.transaction():
                if job.state == "training":
                    spent = [m.to_dict() for m in self._commit_own(job, None)]
                    self.store.set_state(
                        job.job_id,
                        "interrupted",
                        "the daemon stopped during training; the whole reservation is counted as spent",
                        spent=spent,
                    )
                    self.store.audit.append(
                        "local",
                        "job.interrupted",
                        "ok",
                        "restart during training: reservation committed as spent",
                        job=job.job_id,
                        source=job.source,
                    )
                elif job.hosting:
                    if record is not None and record.state == "reserved":
                        self.ledger.release(job.source, job.job_id)
                    self.store.set_state(job.job_id, "interrupted", "the host restarted before training started")
                    self.store.audit.append(
                        "local",
                        "job.interrupted",
                        "ok",
                        "restart before training: reservation released",
                        job=job.job_id,
                        source=job.source,
                    )
                    self._spawn(self._tell_participants(job.job_id, "cancel"))
                elif record is None:
                    self.store.set_state(job.job_id, "interrupted", "its budget reservation is missing after a restart")
                    self.store.audit.append(
                        "local", "job.interrupted", "ok", "reservation missing", job=job.job_id, source=job.source
                    )
        for source in self.config.sources:
            for job_id, record in self.ledger.jobs(source).items():
                if record.state != "reserved" or job_id in active:
                    continue
                ended = self.store.job(job_id)
                with self.store.transaction():
                    if ended is not None and ended.source == source and self._joined(job_id):
                        spent = self._commit_own(ended, None)
                        self.store.set_state(job_id, ended.state, ended.detail, spent=[m.to_dict() for m in spent])
                    else:
                        self.ledger.release(source, job_id)
                        self.store.audit.append(
                            "local",
                            "budget.release",
                            "ok",
                            "reservation without an active job (left by a crash) released",
                            job=job_id,
                            source=source,
                        )
        self._expire_participations()

    def _expire_participations(self) -> None:
        """Expire every accepted participation whose signed job expired before its host
        started it: the reservation is released, the job marked expired, both audited."""
        now = dt.datetime.now(dt.UTC)
        for job in self.store.jobs(("accepted",)):
            expires = parse_document(job.envelope["job"])[1]["expires"]
            if job.hosting or expires > now:
                continue
            with self.store.transaction():
                released = self._release_own(job.job_id)
                detail = f"the host did not start it before the job expired at {expires.isoformat()}"
                self.store.set_state(job.job_id, "expired", detail)
                self.store.audit.append(
                    "local",
                    "job.expired",
                    "ok",
                    detail + ("; reservation released" if released else ""),
                    job=job.job_id,
                    source=job.source,
                )

    # -- the mailbox ------------------------------------------------------------------
    async def _run(self, actor: str, action: str, work: Callable[[], Awaitable[Any]], job: str | None = None) -> Any:
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

    async def serve_list(self, member: Member, action: str, list_name: str, work: Callable[[], Served]) -> bytes:
        """Run one PSI / query request (`work`, blocking) in a thread, alone in the actor, and audit it.

        A refusal is audited by the HTTP layer (and changes nothing); success writes one
        entry: who, which list, how many identifiers (never which).
        """

        async def run() -> bytes:
            try:
                served = await asyncio.to_thread(work)
            except DataError as error:  # the holder's own file: tell its log, not the caller
                with self.store.transaction():
                    self.store.audit.append(
                        member.name, action, "failed", f"the list cannot be served: {error}", source=list_name
                    )
                refusal = Refused(
                    f"{self.name} cannot serve list {list_name!r} now (a problem with its own file, "
                    "recorded in its audit log); ask its operator",
                    503,
                )
                refusal.audited = True
                raise refusal from None
            with self.store.transaction():
                self.store.audit.append(member.name, action, "ok", served.detail, source=list_name)
            return served.body

        return await self.mailbox.ask(run)

    async def record_own(self, member: Member, body: Any) -> dict[str, Any]:
        """This peer's own client records a PSI or query it ran at another peer (counts only)."""
        if member.name != self.name:
            raise Refused(f"only {self.name}'s own certificate may write to its log of PSI and queries", 403)
        if not isinstance(body, dict) or set(body) != {"action", "peer", "list", "outcome", "sent", "learned"}:
            raise Refused("a record is {action, peer, list, outcome, sent, learned}", 400)
        action, outcome = body["action"], body["outcome"]
        counts = (body["sent"], body["learned"])
        if (
            action not in ("psi.run", "query.run")
            or outcome not in ("started", "ok", "refused")
            or not all(isinstance(body[k], str) and 0 < len(body[k]) <= 200 for k in ("peer", "list"))
            or not all(c is None or (isinstance(c, int) and not isinstance(c, bool) and c >= 0) for c in counts)
        ):
            raise Refused(
                "a record names action psi.run|query.run, outcome started|ok|refused, the peer and list, "
                "and counts (non-negative integers or null)",
                400,
            )
        detail = f"at {body['peer']}: {counts[0]} identifiers sent" + (
            f", {counts[1]} learned" if counts[1] is not None else ""
        )

        async def work() -> dict[str, Any]:
            with self.store.transaction():
                entry = self.store.audit.append(self.name, action, outcome, detail, source=body["list"])
            return {"seq": entry.seq}

        return await self.mailbox.ask(work)

    def member_for(self, fingerprint: str) -> Member | None:
        """The member holding this certificate in the newest manifest copied to this peer, if any."""
        return self.identity.current_manifest().by_fingerprint(fingerprint)

    # -- jobs at the host -------------------------------------------------------------
    async def submit(self, caller: Member, envelope: Any) -> dict[str, Any]:
        """A model owner's signed job, to be hosted here and proposed to its participants."""

        async def work() -> dict[str, Any]:
            if not caller.has("model-owner"):
                raise Refused(f"{caller.name} is not a model owner: only model owners submit jobs", 403)
            job = self._verify(envelope)
            if job.owner != caller.name:
                raise Refused(f"the job is signed by {job.owner} but submitted by {caller.name}", 403)
            if job.host != self.name:
                raise Refused(f"this peer is {self.name}, the job names {job.host} as its host: submit it there", 400)
            self._check_replay(job)
            check_policy(job, self.config.policy)
            reply = await self._participation(job) if self.name in job.participants else None
            with self.store.transaction():
                self.store.insert_job(
                    job.job_id,
                    job.owner,
                    job.host,
                    True,
                    job.source if reply is not None else None,
                    "proposing",
                    job.envelope,
                    job.nonce,
                )
                for peer in job.participants:
                    if peer == self.name:
                        self.store.set_participant(job.job_id, peer, "accepted", "", reply)
                    else:
                        self.store.set_participant(job.job_id, peer, "pending")
                self.store.audit.append(
                    caller.name,
                    "job.submit",
                    "ok",
                    f"hosting; proposing to {', '.join(job.participants)}",
                    job=job.job_id,
                )
                if reply is not None:
                    self.store.audit.append(
                        caller.name,
                        "job.accept",
                        "ok",
                        f"owner {job.owner}, ε ≤ {job.config.dp.epsilon:g}",
                        job=job.job_id,
                        source=job.source,
                    )
                    self._reserve(job, reply, caller.name)
            self._spawn(self._propose_all(job))
            return self._view(job.job_id)

        return await self._run(caller.name, "job.submit", work, job=_job_id(envelope))

    async def _propose_all(self, job: SignedJob) -> None:
        async def ask(peer: str) -> None:
            member = self.identity.manifest.member(peer)
            try:
                assert member is not None and member.address
                reply = await self.client.call("POST", f"{member.address}/v1/proposals", job.envelope)
                if not isinstance(reply, dict) or reply.get("decision") not in ("accepted", "declined"):
                    raise PeerUnreachable(f"{peer} sent an answer that is not a decision")
            except PeerUnreachable as error:
                reply = {"decision": "unreachable", "reason": str(error)}
            await self.mailbox.ask(lambda: self._record_decision(job, peer, reply))

        await asyncio.gather(*(ask(p) for p in job.participants if p != self.name))
        await self.mailbox.ask(lambda: self._close_proposals(job))

    async def _record_decision(self, job: SignedJob, peer: str, reply: dict[str, Any]) -> None:
        with self.store.transaction():
            decision = reply["decision"]
            self.store.set_participant(
                job.job_id, peer, decision, str(reply.get("reason", "")), reply if decision == "accepted" else None
            )
            self.store.audit.append(peer, f"job.{decision}", "ok", str(reply.get("reason", "")), job=job.job_id)

    async def _close_proposals(self, job: SignedJob) -> None:
        row = self.store.job(job.job_id)
        if row is None or row.state != "proposing":
            return  # cancelled meanwhile
        accepted = [p for p in self.store.participants(job.job_id) if p["decision"] == "accepted"]
        if len(accepted) >= job.min_participants:
            with self.store.transaction():
                self.store.set_state(
                    job.job_id,
                    "ready",
                    f"{len(accepted)} of {len(job.participants)} participants "
                    "accepted; budget reserved; waiting for training",
                )
                self.store.audit.append(
                    "local", "job.ready", "ok", ", ".join(p["peer"] for p in accepted), job=job.job_id
                )
            self._spawn(self._host_training(job, accepted))
            return
        with self.store.transaction():
            self._release_own(job.job_id)
            self.store.set_state(
                job.job_id,
                "failed",
                f"only {len(accepted)} of {len(job.participants)} participants "
                f"accepted; the job needs {job.min_participants}",
            )
            self.store.audit.append("local", "job.failed", "ok", "not enough participants accepted", job=job.job_id)
        self._spawn(self._tell_participants(job.job_id, "cancel"))

    async def _tell_participants(self, job_id: str, action: str, prefix: str = "jobs") -> None:
        """Best effort: POST /v1/PREFIX/JOB/ACTION to every other accepted participant."""
        for participant in self.store.participants(job_id):
            member = self.identity.manifest.member(participant["peer"])
            if participant["decision"] != "accepted" or member is None or member.name == self.name:
                continue
            try:
                await self.client.call("POST", f"{member.address}/v1/{prefix}/{job_id}/{action}", {})
            except PeerUnreachable as error:
                log.warning("could not tell %s to %s job %s: %s", member.name, action, job_id, error)

    async def _host_training(self, job: SignedJob, accepted: list[dict[str, Any]]) -> None:
        """Start the SuperLink, tell the participants, wait, collect their reports, publish the model."""
        keys = [p["reply"]["node_public_key"] for p in accepted]
        try:
            hosted = await asyncio.to_thread(
                training.start_hosting, job.config, self.config.state_dir, self.identity, len(accepted), keys
            )
        except FedsiloError as error:
            reason = f"the SuperLink did not start: {error}"
            await self.mailbox.ask(lambda: self._host_failed(job.job_id, reason))
            return
        self._running[job.job_id] = hosted
        await self.mailbox.ask(
            lambda: self._set(job.job_id, "training", "job.training", f"SuperLink at {hosted.fleet_address}")
        )
        for participant in accepted:
            if participant["peer"] == self.name:
                self._spawn(self._join(job.job_id, hosted.fleet_address))
                continue
            member = self.identity.manifest.member(participant["peer"])
            try:
                assert member is not None and member.address
                await self.client.call(
                    "POST", f"{member.address}/v1/jobs/{job.job_id}/start", {"fleet_address": hosted.fleet_address}
                )
            except PeerUnreachable as error:
                log.warning("could not start %s in job %s: %s", participant["peer"], job.job_id, error)
        try:
            result = await asyncio.to_thread(training.finish_hosting, hosted)
        except FedsiloError as error:
            reason = f"training failed: {error}"
            await self.mailbox.ask(lambda: self._host_failed(job.job_id, reason))
            return
        finally:
            self._running.pop(job.job_id, None)
        reports = await self._await_reports(job.job_id, [p["peer"] for p in accepted])
        try:
            card = build_card(job, self.store.participants(job.job_id), reports, result.metrics)
            files = {
                "model.safetensors": result.model_path,
                "encoder.json": result.encoder_path,
                "metrics.json": result.model_path.with_name("metrics.json"),
            }
            await self.publish_model(job.job_id, files, card)
        except (FedsiloError, OSError, ValueError) as error:  # the job must end, its ledger settled
            log.error("publishing the model of job %s failed", job.job_id, exc_info=error)
            reason = f"publishing the model failed: {error}"
            await self.mailbox.ask(lambda: self._host_failed(job.job_id, reason))
            return
        await self.mailbox.ask(
            lambda: self._set(
                job.job_id,
                "finished",
                "job.finished",
                f"model published; {len(reports)} of {len(accepted)} participants reported their spending",
            )
        )
        await self._tell_participants(job.job_id, "replicate", prefix="models")

    async def _await_reports(self, job_id: str, peers: list[str]) -> dict[str, dict[str, Any]]:
        """The participants' spending reports, waiting up to REPORT_WAIT_SECONDS for all of them."""
        deadline = asyncio.get_running_loop().time() + REPORT_WAIT_SECONDS
        while True:
            reports = {
                p["peer"]: p["reply"]["report"]
                for p in self.store.participants(job_id)
                if p["peer"] in peers and p["reply"] and "report" in p["reply"]
            }
            if len(reports) == len(peers) or asyncio.get_running_loop().time() > deadline:
                return reports
            await asyncio.sleep(0.2)

    async def _host_failed(self, job_id: str, reason: str) -> None:
        """End a hosted job that failed: stop its engine processes, settle this peer's ledger, tell the others.

        Before training nothing was released: the reservation goes back. During training
        this peer's own SuperNode may have released updates: its whole reservation is
        committed as spent (as a restart during training does), unless its accountant's
        spending was committed already.
        """
        job = self.store.job(job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return
        await self._stop_engines(job_id)
        with self.store.transaction():
            spent = None
            if job.state == "training":
                spent = [m.to_dict() for m in self._commit_own(job, None)]
                settled = "its spending is committed" if spent else "no reservation held"
            else:
                settled = "reservation released" if self._release_own(job_id) else "no reservation held"
            self.store.set_state(job_id, "failed", reason, spent=spent)
            self.store.audit.append("local", "job.failed", "ok", f"{reason}; {settled}", job=job_id, source=job.source)
        self._spawn(self._tell_participants(job_id, "cancel"))

    async def _set(self, job_id: str, state: str, action: str, detail: str) -> None:
        with self.store.transaction():
            self.store.set_state(job_id, state, detail)
            self.store.audit.append("local", action, "ok", detail, job=job_id)

    async def report(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """A participant reports what its accountant spent in a job this peer hosts.

        Accepted once per participant, while the job trains, and only within what the
        participant planned when it accepted (`_checked_report`); anything else is refused.
        """

        async def work() -> dict[str, Any]:
            job = self.store.job(job_id)
            if job is None or not job.hosting:
                raise Refused(f"job {job_id} is not hosted here", 404)
            participant = next((p for p in self.store.participants(job_id) if p["peer"] == caller.name), None)
            if participant is None or participant["decision"] != "accepted":
                raise Refused(f"{caller.name} is not an accepted participant of job {job_id}", 403)
            if job.state != "training":
                raise Refused(f"job {job_id} is {job.state}: a report is accepted only while it trains", 409)
            if "report" in participant["reply"]:
                raise Refused(f"{caller.name} already reported its spending in job {job_id}", 409)
            report = _checked_report(body, participant["reply"])
            with self.store.transaction():
                self._record_report(job_id, participant, report)
                self.store.audit.append(caller.name, "job.report", "ok", f"ε = {report['epsilon']:.4f}", job=job_id)
            return {"ok": True}

        return await self._run(caller.name, "job.report", work, job=job_id)

    def _record_report(self, job_id: str, participant: dict[str, Any], report: dict[str, Any]) -> None:
        self.store.set_participant(
            job_id, participant["peer"], "accepted", participant["reason"], {**participant["reply"], "report": report}
        )

    # -- jobs at a participant --------------------------------------------------------
    async def propose(self, caller: Member, envelope: Any) -> dict[str, Any]:
        """A host proposes a job; this peer decides by its policy and budget."""

        async def work() -> dict[str, Any]:
            if not caller.has("peer"):
                raise Refused(f"{caller.name} is not a peer: only a job's host proposes it", 403)
            job = self._verify(envelope)
            if job.host != caller.name:
                raise Refused(f"the job names {job.host} as host but {caller.name} proposes it", 403)
            if self.name not in job.participants:
                raise Refused(f"{self.name} is not a participant of job {job.job_id}", 400)
            self._check_replay(job)
            try:
                check_policy(job, self.config.policy)
                reply = await self._participation(job)
                with self.store.transaction():
                    self.store.insert_job(
                        job.job_id, job.owner, job.host, False, job.source, "accepted", job.envelope, job.nonce
                    )
                    self.store.audit.append(
                        caller.name,
                        "job.accept",
                        "ok",
                        f"owner {job.owner}, ε ≤ {job.config.dp.epsilon:g}",
                        job=job.job_id,
                        source=job.source,
                    )
                    self._reserve(job, reply, caller.name)
                return reply
            except Refused as refusal:
                with self.store.transaction():
                    self.store.audit.append(
                        caller.name, "job.decline", "ok", str(refusal), job=job.job_id, source=job.source
                    )
                return {"decision": "declined", "reason": str(refusal)}

        return await self._run(caller.name, "job.propose", work, job=_job_id(envelope))

    async def _participation(self, job: SignedJob) -> dict[str, Any]:
        """This peer's acceptance reply (checks its source and budget; Refused if it cannot)."""
        source = self.config.sources.get(job.source)
        if source is None:
            raise Refused(
                f"this peer has no data source {job.source!r} (it has: {', '.join(self.config.sources)})", 403
            )
        facts = await asyncio.to_thread(source_facts, source, job)
        planned = planned_mechanisms(job, facts)
        status = self.ledger.status(source.name)
        node_key = await asyncio.to_thread(training.node_public_key, self.config.state_dir)
        return {
            "decision": "accepted",
            "peer": self.name,
            "rows": facts.rows,
            "n_train": facts.n_train,
            "fingerprint": facts.fingerprint,
            "planned": [m.to_dict() for m in planned],
            "delta": status.delta,
            "accountant": status.accountant,
            "node_public_key": node_key,
        }

    def _reserve(self, job: SignedJob, reply: dict[str, Any], actor: str) -> None:
        """Reserve the planned mechanism (inside the caller's store transaction)."""
        planned = [Mechanism.from_dict(m) for m in reply["planned"]]
        try:
            projected = self.ledger.reserve(job.source, job.job_id, planned)
        except BudgetExceeded as error:
            raise Refused(f"budget: {error}", 403) from None
        self.store.audit.append(
            actor,
            "budget.reserve",
            "ok",
            f"projected ε = {projected:.4f} of {self.config.sources[job.source].epsilon:g}",
            job=job.job_id,
            source=job.source,
        )

    async def start_training(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """The host says training starts: join its SuperLink with this peer's SuperNode."""

        async def work() -> dict[str, Any]:
            job = self.store.job(job_id)
            if job is None:
                raise Refused(f"no job {job_id!r} here", 404)
            if caller.name != job.host:
                raise Refused(f"only the host {job.host} may start job {job_id}", 403)
            self._expire_participations()
            job = self.store.job(job_id)
            if job.state != "accepted":
                raise Refused(f"job {job_id} is {job.state}, not waiting to start", 409)
            if not isinstance(body, dict) or not training.is_fleet_address(body.get("fleet_address")):
                raise Refused(
                    'the body must be {"fleet_address": "HOST:PORT"} (a host name or IP address and '
                    "a port: it becomes the SuperNode's --superlink argument)",
                    400,
                )
            await self._set(job_id, "training", "job.training", f"joining {body['fleet_address']}")
            self._spawn(self._join(job_id, body["fleet_address"]))
            return self._view(job_id)

        return await self._run(caller.name, "job.start", work, job=job_id)

    async def _join(self, job_id: str, fleet_address: str) -> None:
        """Run this peer's SuperNode for the job, then commit what its accountant spent."""
        job = self.store.job(job_id)
        assert job is not None and job.source is not None
        config, _ = parse_document(job.envelope["job"])
        source = self.config.sources[job.source]
        try:
            joined = await asyncio.to_thread(
                training.start_joining, config, self.config.state_dir, self.identity, fleet_address, source
            )

            async def register() -> bool:  # in the mailbox: a cancel or failure either sees it or ran before
                still = self.store.job(job_id)
                if still is not None and still.state == "training":
                    self._running[f"{job_id}/peer"] = joined
                    return True
                return False

            if not await self.mailbox.ask(register):
                await asyncio.to_thread(joined.stop)
                return
            spent = await asyncio.to_thread(training.finish_joining, joined)
            failure = None
        except FedsiloError as error:
            spent, failure = training.spent_so_far(self.config.state_dir, job_id), str(error)
        finally:
            self._running.pop(f"{job_id}/peer", None)
        report = await self.mailbox.ask(lambda: self._close_participation(job_id, spent, failure))
        if report is None:
            return
        if job.hosting:

            async def record() -> None:
                participant = next(p for p in self.store.participants(job_id) if p["peer"] == self.name)
                with self.store.transaction():
                    self._record_report(job_id, participant, report)

            await self.mailbox.ask(record)
            return
        member = self.identity.manifest.member(job.host)
        try:
            assert member is not None and member.address
            await self.client.call("POST", f"{member.address}/v1/jobs/{job_id}/report", report)
        except PeerUnreachable as error:
            log.warning("could not report job %s to its host: %s", job_id, error)

    async def _close_participation(
        self, job_id: str, spent: list[Mechanism], failure: str | None
    ) -> dict[str, Any] | None:
        """Commit `spent` (or release an untouched reservation); returns the report for the host."""
        job = self.store.job(job_id)
        if job is None or job.source is None or job.state != "training":
            return None  # cancelled meanwhile (cancel settled the ledger)
        source = self.config.sources[job.source]
        with self.store.transaction():
            if spent:
                self.ledger.commit(job.source, job_id, spent)
                epsilon = epsilon_spent(spent, source.delta, source.accountant)
                self.store.audit.append(
                    "local", "budget.commit", "ok", f"ε = {epsilon:.4f} spent", job=job_id, source=job.source
                )
            else:
                self._release_own(job_id)
                epsilon = 0.0
            spent_json = [m.to_dict() for m in spent]
            if job.hosting:  # the hosting side decides the job's final state
                self.store.set_state(job_id, "training", job.detail, spent=spent_json)
            elif failure:
                self.store.set_state(job_id, "failed", failure, spent=spent_json)
                self.store.audit.append("local", "job.failed", "ok", failure, job=job_id, source=job.source)
            else:
                self.store.set_state(
                    job_id, "finished", f"spent ε = {epsilon:.4f} of data source {job.source}", spent=spent_json
                )
                self.store.audit.append(
                    "local", "job.finished", "ok", f"ε = {epsilon:.4f}", job=job_id, source=job.source
                )
        return {
            "spent": spent_json,
            "epsilon": epsilon,
            "delta": source.delta,
            "accountant": source.accountant,
            "failed": failure,
        }

    async def replicate(self, caller: Member, job_id: str) -> dict[str, Any]:
        """The host announces the job's model: fetch, verify and keep a copy."""

        async def work() -> dict[str, Any]:
            job = self.store.job(job_id)
            if job is None or job.hosting:
                raise Refused(f"no participation in job {job_id!r} here", 404)
            if caller.name != job.host:
                raise Refused(f"only the host {job.host} may announce the model of job {job_id}", 403)
            self._spawn(self._fetch_replica(job_id, job.host, job.envelope))
            return {"ok": True}

        return await self._run(caller.name, "model.replicate", work, job=job_id)

    async def _fetch_replica(self, job_id: str, host: str, envelope: dict[str, Any]) -> None:
        member = self.identity.manifest.member(host)
        assert member is not None and member.address
        staging = self.store.models_dir / job_id / ".incoming"
        try:
            card = await pull_model(self.client, member.address, job_id, staging, job_envelope=envelope)
        except FedsiloError as error:
            log.warning("could not replicate the model of job %s: %s", job_id, error)
            await self.record_refusal(host, "model.replicate", f"the model did not verify: {error}")
            return

        async def keep() -> None:
            final = self.store.models_dir / job_id / f"v{card['version']}"
            if final.exists():
                shutil.rmtree(staging, ignore_errors=True)
                return
            staging.rename(final)
            with self.store.transaction():
                self.store.add_model(job_id, int(card["version"]), final, card["signer"])
                self.store.audit.append(
                    host, "model.replicate", "ok", f"version {card['version']} verified", job=job_id
                )

        await self.mailbox.ask(keep)

    # -- either side ------------------------------------------------------------------
    async def cancel(self, caller: Member, job_id: str) -> dict[str, Any]:
        """Cancel an active job: by its owner, its host, or this peer itself; releases the reservation."""

        async def work() -> dict[str, Any]:
            job = self.store.job(job_id)
            if job is None:
                raise Refused(f"no job {job_id!r} here", 404)
            if caller.name not in (job.owner, job.host, self.name):
                raise Refused(f"{caller.name} may not cancel job {job_id}: only its owner or host can", 403)
            if job.state not in ACTIVE_STATES:
                raise Refused(f"job {job_id} is already {job.state}", 409)
            await self._stop_engines(job_id)
            spent = training.spent_so_far(self.config.state_dir, job_id) if job.state == "training" else []
            with self.store.transaction():
                if spent and job.source:
                    spent = self._commit_own(job, spent)
                    settled = "what its accountant spent before the cancel is committed"
                else:
                    settled = "reservation released" if self._release_own(job_id) else "no reservation held"
                self.store.set_state(
                    job_id,
                    "cancelled",
                    f"cancelled by {caller.name}",
                    spent=[m.to_dict() for m in spent] if spent else None,
                )
                self.store.audit.append(caller.name, "job.cancel", "ok", settled, job=job_id, source=job.source)
            if job.hosting:
                self._spawn(self._tell_participants(job_id, "cancel"))
            return self._view(job_id)

        return await self._run(caller.name, "job.cancel", work, job=job_id)

    async def _stop_engines(self, job_id: str) -> None:
        """Stop the job's SuperLink (host) and this peer's SuperNode, if running."""
        for key in (job_id, f"{job_id}/peer"):
            running = self._running.pop(key, None)
            if running is not None:
                await asyncio.to_thread(running.stop)

    def _joined(self, job_id: str) -> bool:
        """Whether this peer's SuperNode ever started for the job (its working directory exists)."""
        return (self.config.state_dir / "jobs" / job_id / "peer").is_dir()

    def _commit_own(self, job: JobRow, spent: list[Mechanism] | None) -> list[Mechanism]:
        """Commit this peer's reservation for `job` as `spent`, or in full if None (inside a store transaction).

        A reservation already committed (its accountant's spending, at the end of its
        SuperNode) stays as it is. Returns what the ledger now holds as spent for the job.
        """
        record = self.ledger.jobs(job.source).get(job.job_id) if job.source else None
        if job.source is None or record is None:
            return []
        if record.state == "committed":
            return list(record.mechanisms)
        mechanisms = list(record.mechanisms) if spent is None else spent
        self.ledger.commit(job.source, job.job_id, mechanisms)
        source = self.config.sources[job.source]
        epsilon = epsilon_spent(mechanisms, source.delta, source.accountant)
        self.store.audit.append(
            "local",
            "budget.commit",
            "ok",
            f"ε = {epsilon:.4f} spent"
            + (" (the whole reservation: the job may have released updates)" if spent is None else ""),
            job=job.job_id,
            source=job.source,
        )
        return mechanisms

    def _release_own(self, job_id: str) -> bool:
        job = self.store.job(job_id)
        if job is None or job.source is None:
            return False
        record = self.ledger.jobs(job.source).get(job_id)
        if record is None or record.state != "reserved":
            return False
        self.ledger.release(job.source, job_id)
        self.store.audit.append("local", "budget.release", "ok", "", job=job_id, source=job.source)
        return True

    async def publish_model(self, job_id: str, files: dict[str, Path], card: dict[str, Any]) -> dict[str, Any]:
        """Store the final model of a hosted job as a signed, versioned artefact."""

        async def work() -> dict[str, Any]:
            job = self.store.job(job_id)
            if job is None or not job.hosting:
                raise Refused(f"job {job_id} is not hosted here", 404)
            version, directory = await asyncio.to_thread(
                publish, self.store.models_dir, self.identity, job_id, files, card
            )
            with self.store.transaction():
                self.store.add_model(job_id, version, directory, self.name)
                self.store.audit.append("local", "model.publish", "ok", f"version {version}", job=job_id)
            return {"job_id": job_id, "version": version}

        return await self._run("local", "model.publish", work, job=job_id)

    # -- reads (no state change: not through the mailbox) -------------------------------
    def may_read_model(self, caller: Member, job_id: str) -> bool:
        job = self.store.job(job_id)
        if job is None:
            return False
        return (
            caller.name in (job.owner, job.host)
            or caller.name in job.envelope["job"]["participants"]
            or caller.name in self.config.policy.model_readers
        )

    def _view(self, job_id: str) -> dict[str, Any]:
        job = self.store.job(job_id)
        assert job is not None
        view = job.summary()
        if job.hosting:
            view["participants"] = [
                {k: p[k] for k in ("peer", "decision", "reason")} for p in self.store.participants(job_id)
            ]
        return view

    def takes_part(self, job: JobRow, member: str) -> bool:
        """Whether `member` owns, hosts or is a participant of `job` (as the owner-signed job names them)."""
        return member in (job.owner, job.host) or member in job.envelope["job"]["participants"]

    def visible_jobs(self, viewer: str | None) -> list[JobRow]:
        """The jobs `viewer` takes part in (None: this peer's operator, who sees all)."""
        return [job for job in self.store.jobs() if viewer is None or self.takes_part(job, viewer)]

    def visible_sources(self, viewer: str | None) -> list[str]:
        """This peer's data sources that jobs `viewer` takes part in use (None: all of them)."""
        if viewer is None:
            return sorted(self.config.sources)
        return sorted({job.source for job in self.visible_jobs(viewer) if job.source in self.config.sources})

    def job_view(self, job_id: str, viewer: str | None) -> dict[str, Any] | None:
        """The job as `viewer` may see it, or None if it takes no part in it (or there is no such job).

        Participants' reasons (a decline may state a peer's remaining budget) are shown only
        to the job's owner, to the operator, and to each participant for its own row.
        """
        job = self.store.job(job_id)
        if job is None or (viewer is not None and not self.takes_part(job, viewer)):
            return None
        view = self._view(job_id)
        if viewer is not None and viewer != job.owner and "participants" in view:
            view["participants"] = [p if p["peer"] == viewer else {**p, "reason": ""} for p in view["participants"]]
        return view

    def budgets(self, viewer: str | None) -> list[dict[str, Any]]:
        """The budget of each source `viewer` may see (see `visible_sources`)."""
        out = []
        for name in self.visible_sources(viewer):
            status = self.ledger.status(name)
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

    # -- checks -----------------------------------------------------------------------
    def _verify(self, envelope: Any) -> SignedJob:
        return verify_envelope(envelope, self.identity.manifest, self.identity.ca_certificate)

    def _check_replay(self, job: SignedJob) -> None:
        if self.store.job(job.job_id) is not None:
            raise Refused(
                f"job {job.job_id} is already known here: a replayed or duplicate job is refused; use a new job id", 409
            )
        if self.store.nonce_seen(job.nonce):
            raise Refused("this job's nonce was seen before: a replayed job is refused", 409)


def _checked_report(body: Any, accepted: dict[str, Any]) -> dict[str, Any]:
    """A participant's spending report, checked against what it planned when it `accepted`; Refused 400 otherwise.

    The report must name the δ and accountant of its acceptance, mechanisms at the
    planned noise and sample rate and of at most the planned steps, and ε finite, equal
    to what those mechanisms cost and at most the planned ε: the card then states only
    numbers within what the participant committed to.
    """
    if not isinstance(body, dict) or not {"spent", "epsilon", "delta"} <= set(body) <= REPORT_KEYS:
        raise Refused("a report is {spent: [mechanisms], epsilon, delta, accountant, failed}", 400)
    if not isinstance(body["spent"], list):
        raise Refused("a report's spent is a list of mechanisms", 400)
    try:
        spent = [Mechanism.from_dict(m) for m in body["spent"]]
    except FedsiloError as exc:
        raise Refused(f"a report's spent is a list of mechanisms ({exc})", 400) from None
    epsilon, delta = finite_number(body["epsilon"], "a report's epsilon"), finite_number(body["delta"], "its delta")
    accountant, failed = body.get("accountant", accepted["accountant"]), body.get("failed")
    if delta != accepted["delta"] or accountant != accepted["accountant"]:
        raise Refused(
            f"the report names δ = {delta:g} ({accountant!r}); the participant accepted with δ = "
            f"{accepted['delta']:g} ({accepted['accountant']})",
            400,
        )
    if failed is not None and not (isinstance(failed, str) and len(failed) <= 2000):
        raise Refused("a report's failed is null or a message of at most 2000 characters", 400)
    planned = [Mechanism.from_dict(m) for m in accepted["planned"]]
    runs = {(m.noise_multiplier, m.sample_rate) for m in planned}
    if any((m.noise_multiplier, m.sample_rate) not in runs for m in spent) or sum(m.steps for m in spent) > sum(
        m.steps for m in planned
    ):
        raise Refused(
            f"the report's mechanisms ({sum(m.steps for m in spent)} DP-SGD steps) are not within the "
            f"participant's plan of {sum(m.steps for m in planned)} steps at its planned noise and sample "
            "rate",
            400,
        )
    cost, ceiling = epsilon_spent(spent, delta, accountant), epsilon_spent(planned, delta, accountant)
    if not (0 <= epsilon <= ceiling * (1 + 1e-9) and math.isclose(epsilon, cost, rel_tol=1e-6, abs_tol=1e-9)):
        raise Refused(
            f"the report states ε = {epsilon:.6g}; its mechanisms cost ε = {cost:.6g} and the participant "
            f"planned at most ε = {ceiling:.6g}",
            400,
        )
    return {
        "spent": [m.to_dict() for m in spent],
        "epsilon": epsilon,
        "delta": delta,
        "accountant": accountant,
        "failed": failed,
    }


def _job_id(envelope: Any) -> str | None:
    try:
        value = envelope["job"]["job_id"]
        return value if isinstance(value, str) and len(value) <= 64 else None
    except (TypeError, KeyError):
        return None
