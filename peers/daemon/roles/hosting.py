"""The jobs this peer hosts: take a model owner's job, propose it, start training, collect reports, publish.

`Hosting` takes a model owner's signed job (`submit`), proposes it to its participants
and records each decision, then either fails the job (too few accepted) or (a transfer
job with shared customers first has its participants agree their split and re-plan
their budget on it, `roles.transfer_holdout`) starts the SuperLink, tells the accepted participants to join, waits for training and for their
spending reports (`report`, each checked against the participant's acceptance), and
publishes the signed model and its card (`publish_model`); it tells the participants
to replicate the model, or to cancel if the job fails (`tell_participants`).

At the host a job goes proposing → ready (enough accepted; budget reserved everywhere)
→ training → finished, or failed / cancelled / interrupted. When the host is a
participant of its own job, it accepts and joins through `Participating` and records its
own report here. It calls `Budget` for the ledger.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedsilo.errors import DataError, FedsiloError
from fedsilo.peers.daemon import training
from fedsilo.peers.daemon.card import build_card
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.context import PeerContext, job_id_of
from fedsilo.peers.daemon.model_store import publish
from fedsilo.peers.daemon.participants import Acceptance, Participant, Report
from fedsilo.peers.daemon.policy import check_policy, check_trainable
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.roles.participating import Participating
from fedsilo.peers.daemon.roles.transfer_holdout import TransferHoldout
from fedsilo.peers.daemon.roles.vertical import EXCHANGE_SECONDS, Vertical
from fedsilo.peers.daemon.roles.vertical_split import VerticalSplit, is_split
from fedsilo.peers.daemon.signed_job import SignedJob
from fedsilo.peers.daemon.store import ACTIVE_STATES
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.manifest import Member

log = logging.getLogger("fedsilo.peer")
REPORT_WAIT_SECONDS = 120.0
START_ATTEMPTS, START_RETRY_SECONDS = 3, 2.0  # telling a participant to start its SuperNode


class Hosting:
    """See the module docstring."""

    def __init__(self, context: PeerContext, budget: Budget, participating: Participating) -> None:
        self.ctx = context
        self.budget = budget
        self.participating = participating
        self.vertical: Vertical | None = None  # set by the service: vertical jobs run there
        self.transfer_holdout: TransferHoldout | None = None  # set by the service: shared customers' split
        self.split: VerticalSplit | None = None  # set by the service: the split scheme's alignment and publication

    async def submit(self, caller: Member, envelope: Any) -> dict[str, Any]:
        """A model owner's signed job, to be hosted here and proposed to its participants."""

        async def work() -> dict[str, Any]:
            if not caller.has("model-owner"):
                raise Refused(f"{caller.name} is not a model owner: only model owners submit jobs", 403)
            job = self.ctx.verify(envelope)
            if job.owner != caller.name:
                raise Refused(f"the job is signed by {job.owner} but submitted by {caller.name}", 403)
            if job.host != self.ctx.name:
                raise Refused(
                    f"this peer is {self.ctx.name}, the job names {job.host} as its host: submit it there", 400
                )
            self.ctx.check_replay(job)
            check_policy(job, self.ctx.config.policy)
            check_trainable(job)
            own = await self.participating.acceptance(job) if self.ctx.name in job.participants else None
            with self.ctx.store.transaction():
                self.ctx.store.insert_job(
                    job.job_id,
                    job.owner,
                    job.host,
                    True,
                    job.source if own is not None else None,
                    "proposing",
                    job.envelope,
                    job.nonce,
                )
                for peer in job.participants:
                    if peer == self.ctx.name:
                        self.ctx.store.set_participant(job.job_id, Participant(peer, "accepted", "", own))
                    else:
                        self.ctx.store.set_participant(job.job_id, Participant(peer, "pending"))
                self.ctx.store.audit.append(
                    caller.name,
                    "job.submit",
                    "ok",
                    f"hosting; proposing to {', '.join(job.participants)}",
                    job=job.job_id,
                )
                if own is not None:
                    self.participating.record_acceptance(job, own, caller.name)
            self.ctx.spawn(self._propose_all(job))
            return self.ctx.view(job.job_id)

        return await self.ctx.run(caller.name, "job.submit", work, job=job_id_of(envelope))

    async def _propose_all(self, job: SignedJob) -> None:
        async def ask(peer: str) -> None:
            try:
                address = self.ctx.address(peer)
                reply = await self.ctx.client.call("POST", f"{address}/v1/proposals", job.envelope)
                participant = _decision(peer, reply)
            except PeerUnreachable as error:
                participant = Participant(peer, "unreachable", str(error))
            await self.ctx.mailbox.ask(lambda: self._record_decision(job, participant))

        await asyncio.gather(*(ask(p) for p in job.participants if p != self.ctx.name))
        await self.ctx.mailbox.ask(lambda: self._close_proposals(job))

    async def _record_decision(self, job: SignedJob, participant: Participant) -> None:
        with self.ctx.store.transaction():
            self.ctx.store.set_participant(job.job_id, participant)
            self.ctx.store.audit.append(
                participant.peer, f"job.{participant.decision}", "ok", participant.reason, job=job.job_id
            )

    async def _close_proposals(self, job: SignedJob) -> None:
        row = self.ctx.store.job(job.job_id)
        if row is None or row.state != "proposing":
            return  # cancelled meanwhile
        accepted = [p for p in self.ctx.store.participants(job.job_id) if p.decision == "accepted"]
        if len(accepted) >= job.min_participants:
            with self.ctx.store.transaction():
                self.ctx.store.set_state(
                    job.job_id,
                    "ready",
                    f"{len(accepted)} of {len(job.participants)} participants "
                    "accepted; budget reserved; waiting for training",
                )
                self.ctx.store.audit.append(
                    "local", "job.ready", "ok", ", ".join(p.peer for p in accepted), job=job.job_id
                )
            if is_split(job):
                self.ctx.spawn(self._host_split(job, accepted))
            elif job.setup == "vertical":
                self.ctx.spawn(self._host_vertical(job, accepted))
            else:
                self.ctx.spawn(self._host_training(job, accepted))
            return
        with self.ctx.store.transaction():
            self.budget.release(job.job_id)
            self.ctx.store.set_state(
                job.job_id,
                "failed",
                f"only {len(accepted)} of {len(job.participants)} participants "
                f"accepted; the job needs {job.min_participants}",
            )
            self.ctx.store.audit.append("local", "job.failed", "ok", "not enough participants accepted", job=job.job_id)
        self.ctx.spawn(self.tell_participants(job.job_id, "cancel"))

    async def tell_participants(self, job_id: str, action: str, prefix: str = "jobs") -> None:
        """Best effort: POST /v1/PREFIX/JOB/ACTION to every other accepted participant."""
        for participant in self.ctx.store.participants(job_id):
            member = self.ctx.identity.manifest.member(participant.peer)
            if participant.decision != "accepted" or member is None or member.name == self.ctx.name:
                continue
            try:
                await self.ctx.client.call("POST", f"{member.address}/v1/{prefix}/{job_id}/{action}", {})
            except PeerUnreachable as error:
                log.warning("could not tell %s to %s job %s: %s", member.name, action, job_id, error)

    async def _agree_holdout(self, job: SignedJob, accepted: list[Participant]) -> str | None:
        """Ask each accepted participant, in name order, to take its step of the shared customers' split
        (`roles.transfer_holdout`) and keep the plan it reserved on its agreed rows; the reason it failed, or None."""
        assert self.transfer_holdout is not None
        order = sorted(p.peer for p in accepted)
        me = self.ctx.identity.manifest.member(self.ctx.name)
        assert me is not None
        for peer in order:
            try:
                if peer == self.ctx.name:
                    reply = await self.transfer_holdout.step(me, job.job_id, {"order": order})
                else:
                    address = self.ctx.address(peer)
                    reply = await self.ctx.client.call(
                        "POST", f"{address}/v1/jobs/{job.job_id}/transfer/holdout", {"order": order}
                    )
                await self.ctx.mailbox.ask(functools.partial(self._replanned, job.job_id, peer, reply))
            except (FedsiloError, PeerUnreachable, Refused) as error:
                return f"the shared customers' split was not agreed at {peer}: {error}"
        return None

    async def _replanned(self, job_id: str, peer: str, reply: Any) -> None:
        """Keep, as `peer`'s acceptance, the training rows and plan it reserved once its split was agreed
        (`roles.transfer_holdout`): its report and the card are then checked against what it trains.
        DataError if the reply does not state them (a count within its rows, a list of mechanisms)."""
        participant = self.ctx.store.participant(job_id, peer)
        assert participant is not None and participant.acceptance is not None
        old = participant.acceptance
        if not isinstance(reply, dict):
            raise DataError(f"{peer} answered its step with {type(reply).__name__}, not {{n_train, planned, ...}}")
        new = Acceptance.from_json({**old.to_json(), "n_train": reply.get("n_train"), "planned": reply.get("planned")})
        if not 0 < new.n_train <= old.rows:
            raise DataError(f"{peer} states {new.n_train} training rows of its {old.rows} after the split")
        with self.ctx.store.transaction():
            self.ctx.store.set_participant(job_id, replace(participant, acceptance=new))
            self.ctx.store.audit.append(
                peer, "job.replan", "ok", f"{new.n_train} training rows after the agreed split", job=job_id
            )

    async def _host_split(self, job: SignedJob, accepted: list[Participant]) -> None:
        """A split vertical job (`roles.vertical_split`): align with the feature party, then train on the
        Deployment Engine as any hosted job (the relay ServerApp, both parties' SuperNodes), publish this
        peer's part."""
        assert self.split is not None
        others = [p.peer for p in accepted if p.peer != self.ctx.name]
        if len(others) != 1 or len(accepted) != 2:
            reason = f"a vertical job runs between its label holder and one feature party; accepted: {len(accepted)}"
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return
        # still "ready": nothing of this peer's is released before its SuperNode runs, so a failed alignment
        # releases the reservation (a failure in training commits it whole)
        await self.ctx.mailbox.ask(lambda: self._set_detail(job.job_id, "aligning with the feature party by PSI"))
        try:
            async with PeerClient(self.ctx.identity, timeout=EXCHANGE_SECONDS) as client:
                shared = await self.split.align(job, others[0], client)
        except (FedsiloError, PeerUnreachable) as error:
            reason = f"the vertical job failed: {type(error).__name__}: {error}"
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return
        row = self.ctx.store.job(job.job_id)
        if row is None or row.state != "ready":
            return  # cancelled while aligning (the cancellation settled the ledgers)
        log.info("job %s: %d customers shared with %s; training starts", job.job_id, shared, others[0])
        await self._host_training(job, accepted)

    async def _host_training(self, job: SignedJob, accepted: list[Participant]) -> None:
        """Start the SuperLink, tell the participants, wait, collect their reports, publish the model."""
        if job.setup == "transfer" and job.shared_customers:
            reason = await self._agree_holdout(job, accepted)
            if reason is not None:
                await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
                return
        keys = [_acceptance(p).node_public_key for p in accepted]
        split = is_split(job)
        try:
            hosted = await asyncio.to_thread(
                training.start_hosting,
                job.config,
                self.ctx.config.state_dir,
                self.ctx.identity,
                len(accepted),
                keys,
                job.min_participants,
                split,
            )
        except FedsiloError as error:
            reason = f"the SuperLink did not start: {error}"
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return
        self.ctx.running[job.job_id] = hosted
        await self.ctx.mailbox.ask(
            lambda: self.ctx.set_state(job.job_id, "training", "job.training", f"SuperLink at {hosted.fleet_address}")
        )
        others = [p.peer for p in accepted if p.peer != self.ctx.name]
        if len(others) < len(accepted):
            self.ctx.spawn(self._join_own(job.job_id, hosted.fleet_address))
        started = await asyncio.gather(*(self._start_participant(job.job_id, p, hosted.fleet_address) for p in others))
        unreachable = [f"{peer} ({error})" for peer, error in zip(others, started, strict=True) if error]
        if unreachable:
            # The ServerApp waits for every accepted participant's node before its first message: a peer that
            # never got the SuperLink's address would hold the job (and everyone's reservation) for
            # PEER_WAIT_SECONDS. Fail now, naming it (`_failed` stops the engines; the others are told to cancel).
            reason = (
                f"participant(s) did not start training after {START_ATTEMPTS} attempts: "
                f"{'; '.join(unreachable)}; the job stopped before its first round"
            )
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason, by_record=True))
            return
        try:
            result = await asyncio.to_thread(training.finish_hosting, hosted, self.participating.wall_seconds)
        except FedsiloError as error:
            lost = self._lost(job.job_id, hosted.nodes, hosted.lost_nodes(), accepted)
            reason = f"training failed: {error}"
            if lost:
                reason = (
                    f"training failed: lost participant(s) {', '.join(lost)} (stopped answering); "
                    f"too few survivors for the job ({error})"
                )
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return
        finally:
            self.ctx.running.pop(job.job_id, None)
        lost = self._lost(job.job_id, hosted.nodes, hosted.lost_nodes(), accepted)
        if lost:
            await self.ctx.mailbox.ask(lambda: self._record_dropouts(job.job_id, lost))
        reports = await self._await_reports(job.job_id, [p.peer for p in accepted if p.peer not in lost])
        try:
            if split:  # this peer's part, from its own SuperNode's final state (the relay holds nothing)
                assert self.split is not None
                work_dir = training.peer_work_dir(self.ctx.config.state_dir, job.job_id)
                files = await asyncio.to_thread(self.split.model_files, job, work_dir, result.metrics)
                card = self.split.card(job, files, reports)
            else:
                card = build_card(
                    job,
                    self.ctx.store.participants(job.job_id),
                    reports,
                    result.metrics,
                    self.ctx.identity.manifest.suite,
                )
                files = {
                    result.model_path.name: result.model_path,  # model.safetensors, or a gbdt job's model.json
                    "encoder.json": result.encoder_path,
                    "metrics.json": result.model_path.with_name("metrics.json"),
                }
            await self.publish_model(job.job_id, files, card)
        except (FedsiloError, OSError, ValueError) as error:  # the job must end, its ledger settled
            log.error("publishing the model of job %s failed", job.job_id, exc_info=error)
            reason = f"publishing the model failed: {error}"
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return
        await self.ctx.mailbox.ask(
            lambda: self.ctx.set_state(
                job.job_id,
                "finished",
                "job.finished",
                f"model published; {len(reports)} of {len(accepted)} participants reported their spending"
                + (f"; lost during training: {', '.join(lost)}" if lost else ""),
            )
        )
        if not split:  # a split job's model is the label holder's part, kept there (as the coded scheme's)
            await self.tell_participants(job.job_id, "replicate", prefix="models")

    async def _set_detail(self, job_id: str, detail: str) -> None:
        """Change a ready or training job's detail (in the mailbox), unless it ended meanwhile."""
        row = self.ctx.store.job(job_id)
        if row is not None and row.state in ("ready", "training"):
            with self.ctx.store.transaction():
                self.ctx.store.set_state(job_id, row.state, detail)

    async def _start_participant(self, job_id: str, peer: str, fleet_address: str) -> str | None:
        """Tell `peer` to start its SuperNode: None once it did, else its last error (a few attempts)."""
        error: PeerUnreachable | None = None
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                address = self.ctx.address(peer)
                await self.ctx.client.call(
                    "POST", f"{address}/v1/jobs/{job_id}/start", {"fleet_address": fleet_address}
                )
                return None
            except PeerUnreachable as failed:
                error = failed
                log.warning("could not start %s in job %s (attempt %d): %s", peer, job_id, attempt, error)
            if attempt < START_ATTEMPTS:
                await asyncio.sleep(START_RETRY_SECONDS)
        return str(error)

    @staticmethod
    def _lost(job_id: str, nodes: tuple[int, ...], lost_nodes: list[int], accepted: list[Participant]) -> list[str]:
        """The accepted participants whose node the ServerApp lost (`nodes` is in the order of `accepted`)."""
        names = dict(zip(nodes, (p.peer for p in accepted), strict=False))
        lost = [names[n] for n in lost_nodes if n in names]
        if lost:
            log.warning("job %s lost participant(s) %s during training", job_id, ", ".join(lost))
        return lost

    async def _record_dropouts(self, job_id: str, lost: list[str]) -> None:
        """Audit each participant lost during a job that went on with the survivors (in the mailbox)."""
        with self.ctx.store.transaction():
            for peer in lost:
                self.ctx.store.audit.append(
                    peer,
                    "job.dropout",
                    "ok",
                    "stopped answering during training; the job went on without it",
                    job=job_id,
                )

    async def _host_vertical(self, job: SignedJob, accepted: list[Participant]) -> None:
        """A vertical job (`roles.vertical`): align, receive the codes, train here, publish; nothing to join."""
        assert self.vertical is not None
        await self.ctx.mailbox.ask(
            lambda: self.ctx.set_state(job.job_id, "training", "job.training", "aligning with the feature party by PSI")
        )
        outcome = await self.vertical.host(job, accepted)
        if isinstance(outcome, str):
            reason = f"the vertical job failed: {outcome}"
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return
        try:
            await self.publish_model(job.job_id, outcome, self.vertical.card(job, outcome))
        except (FedsiloError, OSError, ValueError) as error:
            reason = f"publishing the model failed: {error}"
            await self.ctx.mailbox.ask(lambda: self._failed(job.job_id, reason))
            return

        async def finish() -> None:
            row = self.ctx.store.job(job.job_id)
            if row is None or row.state != "training":
                return  # cancelled meanwhile
            with self.ctx.store.transaction():
                self.budget.commit_spent(row, [])
                detail = "model published; the label holder spent nothing (it released positions only)"
                self.ctx.store.set_state(job.job_id, "finished", detail, spent=[])
                self.ctx.audit_job("local", "job.finished", detail, row)

        await self.ctx.mailbox.ask(finish)

    async def _join_own(self, job_id: str, fleet_address: str) -> None:
        """This peer's own SuperNode in the job it hosts; its report is recorded here, not sent."""
        report = await self.participating.join(job_id, fleet_address)
        if report is None:
            return

        async def record() -> None:
            own = self.ctx.store.participant(job_id, self.ctx.name)
            assert own is not None
            with self.ctx.store.transaction():
                self._record_report(job_id, own, report)

        await self.ctx.mailbox.ask(record)

    async def _await_reports(self, job_id: str, peers: list[str]) -> dict[str, Report]:
        """The participants' spending reports, waiting up to REPORT_WAIT_SECONDS for all of them."""
        deadline = asyncio.get_running_loop().time() + REPORT_WAIT_SECONDS
        while True:
            reports = {
                p.peer: p.report
                for p in self.ctx.store.participants(job_id)
                if p.peer in peers and p.report is not None
            }
            if len(reports) == len(peers) or asyncio.get_running_loop().time() > deadline:
                return reports
            await asyncio.sleep(0.2)

    async def _failed(self, job_id: str, reason: str, by_record: bool = False) -> None:
        """End a hosted job that failed: stop its engine processes, settle this peer's ledger, tell the others.

        Before training nothing was released: the reservation goes back. During training
        this peer's own SuperNode may have released updates: its whole reservation is
        committed as spent (as a restart during training does), unless its accountant's
        spending was committed already. With `by_record` (the job stopped before its first
        round) its node's durable privacy record settles it, as a cancel does: what it
        holds is committed, an empty one releases the reservation.
        """
        job = self.ctx.store.job(job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return
        await self.ctx.stop_engines(job_id)
        recorded = training.spent_so_far(self.ctx.config.state_dir, job_id) if by_record else []
        with self.ctx.store.transaction():
            spent = None
            if by_record and not recorded:
                settled = "reservation released" if self.budget.release(job_id) else "no reservation held"
            elif by_record:
                spent = [m.to_dict() for m in self.budget.commit(job, recorded)]
                settled = "what its accountant recorded is committed"
            elif job.state == "training":
                spent = [m.to_dict() for m in self.budget.commit(job, None)]
                settled = "its spending is committed" if spent else "no reservation held"
            else:
                settled = "reservation released" if self.budget.release(job_id) else "no reservation held"
            self.ctx.store.set_state(job_id, "failed", reason, spent=spent)
            self.ctx.audit_job("local", "job.failed", f"{reason}; {settled}", job)
        self.ctx.spawn(self.tell_participants(job_id, "cancel"))

    async def report(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """A participant reports what its accountant spent in a job this peer hosts.

        Accepted once per participant, while the job trains, and only within what the
        participant planned when it accepted (`Report.checked`); anything else is refused.
        """

        async def work() -> dict[str, Any]:
            job = self.ctx.store.job(job_id)
            if job is None or not job.hosting:
                raise Refused(f"job {job_id} is not hosted here", 404)
            participant = self.ctx.store.participant(job_id, caller.name)
            if participant is None or participant.decision != "accepted":
                raise Refused(f"{caller.name} is not an accepted participant of job {job_id}", 403)
            if job.state != "training":
                raise Refused(f"job {job_id} is {job.state}: a report is accepted only while it trains", 409)
            if participant.report is not None:
                raise Refused(f"{caller.name} already reported its spending in job {job_id}", 409)
            report = Report.checked(body, _acceptance(participant))
            with self.ctx.store.transaction():
                self._record_report(job_id, participant, report)
                self.ctx.store.audit.append(caller.name, "job.report", "ok", f"ε = {report.epsilon:.4f}", job=job_id)
            return {"ok": True}

        return await self.ctx.run(caller.name, "job.report", work, job=job_id)

    def _record_report(self, job_id: str, participant: Participant, report: Report) -> None:
        self.ctx.store.set_participant(
            job_id, Participant(participant.peer, "accepted", participant.reason, participant.acceptance, report)
        )

    async def publish_model(self, job_id: str, files: dict[str, Path], card: dict[str, Any]) -> dict[str, Any]:
        """Store the final model of a hosted job as a signed, versioned artefact."""

        async def work() -> dict[str, Any]:
            job = self.ctx.store.job(job_id)
            if job is None or not job.hosting:
                raise Refused(f"job {job_id} is not hosted here", 404)
            version, directory = await asyncio.to_thread(
                publish, self.ctx.store.models_dir, self.ctx.identity, job_id, files, card
            )
            with self.ctx.store.transaction():
                self.ctx.store.add_model(job_id, version, directory, self.ctx.name)
                self.ctx.store.audit.append("local", "model.publish", "ok", f"version {version}", job=job_id)
            return {"job_id": job_id, "version": version}

        return await self.ctx.run("local", "model.publish", work, job=job_id)


def _decision(peer: str, reply: Any) -> Participant:
    """The participant row for `peer`'s answer to a proposal; PeerUnreachable if the answer is not a decision."""
    if not isinstance(reply, dict) or reply.get("decision") not in ("accepted", "declined"):
        raise PeerUnreachable(f"{peer} sent an answer that is not a decision")
    reason = str(reply.get("reason", ""))
    if reply["decision"] == "declined":
        return Participant(peer, "declined", reason)
    try:
        return Participant(peer, "accepted", reason, Acceptance.from_json(reply))
    except DataError as error:
        raise PeerUnreachable(f"{peer} sent an acceptance that is not one ({error})") from None


def _acceptance(participant: Participant) -> Acceptance:
    """The acceptance of a participant whose decision is "accepted" (it always has one)."""
    assert participant.acceptance is not None
    return participant.acceptance
