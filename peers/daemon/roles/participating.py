"""The jobs this peer joins: decide on a proposal, reserve its budget, run its SuperNode, report.

`Participating` answers a host's proposal by this peer's policy and budget (`propose`:
accept with an `Acceptance` and a budget reservation, or decline, both audited), joins
the host's SuperLink with this peer's SuperNode when the host starts the job
(`start_training`), commits what its accountant spent and reports it to the host
(`join`), and expires accepted participations whose signed job expired before its host
started it (`expire_overdue`, at start, every `EXPIRY_SWEEP_SECONDS` and when the host
asks to start), so a host that vanishes cannot hold this peer's budget.

At a participant a job goes accepted → training → finished, or cancelled / failed /
interrupted / expired. `join` also serves the host's own SuperNode when the host takes
part in its job: it returns the report and the caller (`Hosting`) records it. It calls
`Budget` for the ledger and nothing of the other roles.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from fedsilo.errors import DataError, FedsiloError
from fedsilo.peers.daemon import training
from fedsilo.peers.daemon.context import PeerContext, job_id_of
from fedsilo.peers.daemon.participants import Acceptance, Report
from fedsilo.peers.daemon.policy import (
    check_model_size,
    check_policy,
    check_trainable,
    planned_mechanisms,
    source_facts,
)
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.roles.transfer_holdout import check_holdout_list
from fedsilo.peers.daemon.roles.vertical import Vertical
from fedsilo.peers.daemon.roles.vertical_split import VerticalSplit, is_split
from fedsilo.peers.daemon.signed_job import SignedJob, parse_document
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.manifest import Member
from fedsilo.peers.job import JobConfig, plan_dp
from fedsilo.privacy.accounting import Mechanism

log = logging.getLogger("fedsilo.peer")
EXPIRY_SWEEP_SECONDS = 60.0


class Participating:
    """See the module docstring."""

    def __init__(self, context: PeerContext, budget: Budget) -> None:
        self.ctx = context
        self.budget = budget
        self.vertical: Vertical | None = None  # set by the service (vertical jobs' own acceptance)
        self.split: VerticalSplit | None = None  # set by the service (the split scheme's acceptance and party)

    async def propose(self, caller: Member, envelope: Any) -> dict[str, Any]:
        """A host proposes a job; this peer decides by its policy and budget (the reply is the decision's JSON)."""

        async def work() -> dict[str, Any]:
            if not caller.has("peer"):
                raise Refused(f"{caller.name} is not a peer: only a job's host proposes it", 403)
            job = self.ctx.verify(envelope)
            if job.host != caller.name:
                raise Refused(f"the job names {job.host} as host but {caller.name} proposes it", 403)
            if self.ctx.name not in job.participants:
                raise Refused(f"{self.ctx.name} is not a participant of job {job.job_id}", 400)
            self.ctx.check_replay(job)
            try:
                check_policy(job, self.ctx.config.policy)
                check_trainable(job)
                acceptance = await self.acceptance(job)
                with self.ctx.store.transaction():
                    self.ctx.store.insert_job(
                        job.job_id, job.owner, job.host, False, job.source, "accepted", job.envelope, job.nonce
                    )
                    self.record_acceptance(job, acceptance, caller.name)
                return acceptance.to_json()
            except Refused as refusal:
                with self.ctx.store.transaction():
                    self.ctx.audit_job(caller.name, "job.decline", str(refusal), job)
                return {"decision": "declined", "reason": str(refusal)}

        return await self.ctx.run(caller.name, "job.propose", work, job=job_id_of(envelope))

    async def acceptance(self, job: SignedJob) -> Acceptance:
        """This peer's acceptance of `job` (checks its source; Refused if it has none of that name)."""
        source = self.ctx.config.sources.get(job.source)
        if source is None:
            raise Refused(
                f"this peer has no data source {job.source!r} (it has: {', '.join(self.ctx.config.sources)})", 403
            )
        if is_split(job):  # each party plans its Gaussian releases (`roles.vertical_split`)
            assert self.split is not None
            rows, n_train, fingerprint, planned = await asyncio.to_thread(self.split.acceptance_facts, job, source)
        elif job.setup == "vertical":  # the label holder plans nothing, the feature party one code per customer
            assert self.vertical is not None
            rows, n_train, fingerprint, planned = await asyncio.to_thread(self.vertical.acceptance_facts, job, source)
        else:
            if job.setup == "transfer" and job.shared_customers:
                check_holdout_list(job, source, self.ctx.config.lists, self.ctx.name)
            facts = await asyncio.to_thread(source_facts, source, job, self.ctx.identity.manifest.suite)
            check_model_size(job, self.ctx.config.policy, facts.features)
            rows, n_train, fingerprint = facts.rows, facts.n_train, facts.fingerprint
            planned = list(planned_mechanisms(job, facts))
        status = self.ctx.ledger.status(source.name)
        node_key = await asyncio.to_thread(training.node_public_key, self.ctx.config.state_dir)
        return Acceptance(
            peer=self.ctx.name,
            rows=rows,
            n_train=n_train,
            fingerprint=fingerprint,
            planned=tuple(planned),
            delta=status.delta,
            accountant=status.accountant,
            node_public_key=node_key,
        )

    def record_acceptance(self, job: SignedJob, acceptance: Acceptance, actor: str) -> None:
        """Audit the acceptance and reserve its plan (inside the caller's store transaction, the job inserted)."""
        self.ctx.audit_job(actor, "job.accept", f"owner {job.owner}, ε ≤ {job.config.dp.epsilon:g}", job)
        self.budget.reserve(job, acceptance, actor)

    async def start_training(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """The host says training starts: join its SuperLink with this peer's SuperNode."""

        async def work() -> dict[str, Any]:
            job = self.ctx.store.job(job_id)
            if job is None:
                raise Refused(f"no job {job_id!r} here", 404)
            if caller.name != job.host:
                raise Refused(f"only the host {job.host} may start job {job_id}", 403)
            self.expire_overdue()
            job = self.ctx.store.job(job_id)
            assert job is not None
            if job.state != "accepted":
                raise Refused(f"job {job_id} is {job.state}, not waiting to start", 409)
            if job.envelope["job"].get("setup") == "vertical" and not is_split(job):
                # its reservation covers the codes only: a SuperNode would train on this peer's table under it
                raise Refused(
                    f"job {job_id} is a coded vertical job: it runs no SuperNode here (its one release is "
                    f"POST /v1/jobs/{job_id}/vertical/release)",
                    409,
                )
            if not isinstance(body, dict) or not training.is_fleet_address(body.get("fleet_address")):
                raise Refused(
                    'the body must be {"fleet_address": "HOST:PORT"} (a host name or IP address and '
                    "a port: it becomes the SuperNode's --superlink argument)",
                    400,
                )
            await self.ctx.set_state(job_id, "training", "job.training", f"joining {body['fleet_address']}")
            self.ctx.spawn(self._join_and_report(job_id, job.host, body["fleet_address"]))
            return self.ctx.view(job_id)

        return await self.ctx.run(caller.name, "job.start", work, job=job_id)

    async def _join_and_report(self, job_id: str, host: str, fleet_address: str) -> None:
        report = await self.join(job_id, fleet_address)
        if report is None:
            return
        try:
            address = self.ctx.address(host)
            await self.ctx.client.call("POST", f"{address}/v1/jobs/{job_id}/report", report.to_json())
        except PeerUnreachable as error:
            log.warning("could not report job %s to its host: %s", job_id, error)

    async def join(self, job_id: str, fleet_address: str) -> Report | None:
        """Run this peer's SuperNode for the job, then commit what its accountant spent.

        Returns the report for the host, or None if the job was cancelled or failed meanwhile
        (whoever ended it settled the ledger).
        """
        job = self.ctx.store.job(job_id)
        assert job is not None and job.source is not None
        config, _ = parse_document(job.envelope["job"])
        source = self.ctx.config.sources[job.source]
        try:
            await asyncio.to_thread(self.check_agreed_plan, config, job.source)
            party = None
            if is_split(job):  # this peer's party, from its own rows in the agreed order (`roles.vertical_split`)
                assert self.split is not None
                work_dir = training.peer_work_dir(self.ctx.config.state_dir, job_id)
                party = await asyncio.to_thread(self.split.party_file, job, work_dir)
            joined = await asyncio.to_thread(
                training.start_joining,
                config,
                self.ctx.config.state_dir,
                self.ctx.identity,
                fleet_address,
                source,
                job.host,
                party,
            )

            async def register() -> bool:  # in the mailbox: a cancel or failure either sees it or ran before
                still = self.ctx.store.job(job_id)
                if still is not None and still.state == "training":
                    self.ctx.running[f"{job_id}/peer"] = joined
                    return True
                return False

            if not await self.ctx.mailbox.ask(register):
                await asyncio.to_thread(joined.stop)
                return None
            spent = await asyncio.to_thread(training.finish_joining, joined, self.wall_seconds)
            if is_split(job):  # a feature party also commits the scoring release it reserved
                assert self.split is not None
                spent = self.split.committed(job, spent)
            failure = None
        except FedsiloError as error:
            spent, failure = training.spent_so_far(self.ctx.config.state_dir, job_id), str(error)
        finally:
            self.ctx.running.pop(f"{job_id}/peer", None)
        return await self.ctx.mailbox.ask(lambda: self._close(job_id, spent, failure))

    def check_agreed_plan(self, config: JobConfig, source_name: str) -> None:
        """For a job whose split was agreed (`roles.transfer_holdout`), DataError unless DP-SGD's plan on the rows
        its SuperNode is about to train is exactly the one reserved: then nothing starts and nothing unreserved
        is spent. The agreed sides pin every row and a changed row count is refused (`training.working_table`),
        so this holds unless the stored sides or the reservation changed after the re-plan; it is checked
        rather than assumed. Other jobs: nothing to check."""
        state_dir = self.ctx.config.state_dir
        if training.agreed_sides(state_dir, config.job_id) is None:
            return
        n_train = training.training_rows(config, state_dir, self.ctx.config.sources[source_name])
        record = self.ctx.ledger.jobs(source_name).get(config.job_id)
        trained = plan_dp(config, n_train).whole_job
        if record is None or record.state != "reserved" or record.mechanisms != (trained,):
            raise DataError(
                f"the SuperNode of job {config.job_id} would train {n_train} rows with {trained}, which is not "
                f"the reservation ({list(record.mechanisms) if record else 'none'}): data source {source_name} "
                "or its agreed sides changed since the re-plan; run the job again"
            )

    async def _close(self, job_id: str, spent: list[Mechanism], failure: str | None) -> Report | None:
        """Commit `spent` (or release an untouched reservation); returns the report for the host."""
        job = self.ctx.store.job(job_id)
        if job is None or job.source is None or job.state != "training":
            return None  # cancelled meanwhile (cancel settled the ledger)
        source = self.ctx.config.sources[job.source]
        with self.ctx.store.transaction():
            if spent:
                epsilon = self.budget.commit_spent(job, spent)
            else:
                self.budget.release(job_id)
                epsilon = 0.0
            spent_json = [m.to_dict() for m in spent]
            if job.hosting:  # the hosting side decides the job's final state
                self.ctx.store.set_state(job_id, "training", job.detail, spent=spent_json)
            elif failure:
                self.ctx.store.set_state(job_id, "failed", failure, spent=spent_json)
                self.ctx.audit_job("local", "job.failed", failure, job)
            else:
                self.ctx.store.set_state(
                    job_id, "finished", f"spent ε = {epsilon:.4f} of data source {job.source}", spent=spent_json
                )
                self.ctx.audit_job("local", "job.finished", f"ε = {epsilon:.4f}", job)
        return Report(tuple(spent), epsilon, source.delta, source.accountant, failure)

    @property
    def wall_seconds(self) -> float:
        """How long this peer's engine may train one job (peer.toml [policy] max-wall-minutes)."""
        return self.ctx.config.policy.max_wall_minutes * 60.0

    def expire_overdue(self) -> None:
        """Expire every accepted participation whose signed job expired before its host
        started it: the reservation is released, the job marked expired, both audited (in the mailbox)."""
        now = dt.datetime.now(dt.UTC)
        for job in self.ctx.store.jobs(("accepted",)):
            expires = parse_document(job.envelope["job"])[1]["expires"]
            if job.hosting or expires > now:
                continue
            with self.ctx.store.transaction():
                released = self.budget.release(job.job_id)
                detail = f"the host did not start it before the job expired at {expires.isoformat()}"
                self.ctx.store.set_state(job.job_id, "expired", detail)
                self.ctx.audit_job("local", "job.expired", detail + ("; reservation released" if released else ""), job)

    async def sweep_expired(self) -> None:
        """Run `expire_overdue` in the mailbox every `EXPIRY_SWEEP_SECONDS`, for the daemon's life."""
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_SECONDS)

            async def expire() -> None:
                self.expire_overdue()

            await self.ctx.mailbox.ask(expire)
