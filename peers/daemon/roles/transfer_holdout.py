"""A transfer job's shared customers held out at all their institutions or none, agreed between daemons.

The agreement is :mod:`fedsilo.peers.shared_holdout`'s, its frames carried over mTLS:
participants are indexed in the order of their names. Before training, the host asks
each accepted participant in that order to take its step (``POST
/v1/jobs/JOB/transfer/holdout``, body ``{"order": [names]}``, host only):

1. it checks it holds the pins of every earlier participant in the order;
2. it splits its source's rows, the free ones drawn from the OS CSPRNG (``seed=None``:
   the signed job's seed is public, see the shared_holdout module);
3. with every later participant it runs the daemon's both-sides DH-PSI on that
   participant's list named like the job's source (``POST /v1/lists/SOURCE/psi`` and
   ``/psi/confirm``: audited at both ends, counted against the list's ``psi-quota``), then
   sends it the pin frame of the customers they share with the PSI's session
   (``POST /v1/jobs/JOB/transfer/pins``), which that participant pins against its own
   confirmed result of that run (one use);
4. it stores its sides for the job (:func:`fedsilo.peers.daemon.training.store_agreed_sides`),
   which the table its SuperNode reads then carries;
5. it plans DP-SGD again on the rows that split trains and replaces the job's reservation
   by that plan (below), and answers the host its new training row count and plan, which
   the host keeps as this participant's acceptance (the report and the card are checked
   against it).

Why the plan is made again here. A participant reserves, at acceptance, DP-SGD's plan on
the training rows of its own seeded split. The agreement then pins shared customers to
the sides other institutions drew, so the rows it trains on differ (a class may hold out
more or fewer rows), and its SuperNode plans on those (the ClientApp's `split_rows`, with
the sides in the table's split column): it would run more steps than were reserved, or
at another sample rate. Reserving an upper bound and committing what was spent would not
do either: the node's plan is calibrated to spend the job's whole ε on its rows, so a
different row count is a different mechanism, not a smaller one. So the reservation is
replaced, before the SuperNode starts, by the plan on exactly the rows it will train
(`fedsilo.peers.daemon.training.training_rows`, the node's own split of the node's own
table): one ledger write (`PrivacyLedger.replan`), the old plan kept until then. If the
new plan does not fit the source's budget, or none exists (too few training rows), the
peer declines the job: its reservation is released, the job marked failed here (the host
fails it everywhere). The agreement before it releases nothing that DP accounts for: only
PSI set membership, audited at both ends and counted against the list's quota.

Only PSI frames and pin frames cross. The agreement's state before the split is kept in
memory: a daemon restarted mid-agreement has lost it, and the job fails rather than
training on a split the others did not agree.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from fedsilo.errors import BudgetExceeded, FedsiloError
from fedsilo.peers.alignment import aligned_rows
from fedsilo.peers.daemon.client import PeerClient, both_sides_list_kind
from fedsilo.peers.daemon.config import DataSource, SharedList
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.policy import SourceFacts, planned_mechanisms
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.shared_lists import SharedLists
from fedsilo.peers.daemon.signed_job import SignedJob, verify_envelope
from fedsilo.peers.daemon.store import JobRow
from fedsilo.peers.daemon.training import agreed_sides, store_agreed_sides, training_rows
from fedsilo.peers.data.bank import TEST, read_table
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.manifest import Member
from fedsilo.peers.risk_lists import dh_psi
from fedsilo.peers.shared_holdout import HoldoutMember
from fedsilo.privacy.accounting import Mechanism

EXCHANGE_SECONDS = 120.0


def check_holdout_list(job: SignedJob, source: DataSource, lists: dict[str, SharedList], me: str) -> None:
    """Refused (403) unless this peer can take its part in `job`'s agreement: its source has an id column,
    and (unless it comes first in name order) its list named like the source, over the source's file and id
    column, allows every earlier participant both-sides DH-PSI. Checked at acceptance, before any reservation."""
    if source.id_column is None:
        raise Refused(
            f"a transfer job with shared customers aligns them on data source {source.name}'s id column, "
            "and it declares none (sources.id-column)",
            403,
        )
    earlier = [p for p in sorted(job.participants) if p < me]
    if not earlier:
        return
    shared = lists.get(source.name)
    problem = None
    if shared is None:
        problem = "it has no such list"
    elif shared.id_column != source.id_column or shared.path.resolve() != source.path.resolve():
        problem = f"it must read the source's own file and id column ({source.id_column})"
    elif not set(earlier) <= set(shared.psi) or "both" not in shared.psi_modes or "dh" not in shared.psi_protocols:
        problem = f"it must allow {', '.join(earlier)} both-sides DH-PSI (psi, psi-modes, psi-protocols)"
    if problem is not None:
        raise Refused(
            f"a transfer job with shared customers aligns them through the list named like the source, "
            f"[lists.{source.name}], of every participant after the first in name order: {problem}",
            403,
        )


def _session(body: Any) -> bytes:
    value = body.get("session") if isinstance(body, dict) else None
    try:
        session = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        session = b""
    if len(session) != 16:
        raise Refused('the body must name the PSI run: {"session": "<32 hex digits>", "frame": "<base64>"}', 400)
    return session


def _frame(body: Any) -> bytes:
    value = body.get("frame") if isinstance(body, dict) else None
    if not isinstance(value, str) or len(value) > 8_000_000:
        raise Refused("the pin frame must be a base64 string", 400)
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise Refused("the pin frame is not valid base64", 400) from None


class TransferHoldout:
    """One participant's half of the agreement for each transfer job with shared customers."""

    def __init__(self, context: PeerContext, budget: Budget, lists: SharedLists) -> None:
        self.ctx = context
        self.budget = budget
        self.lists = lists
        self.members: dict[str, HoldoutMember] = {}

    def _job(self, job_id: str) -> tuple[JobRow, SignedJob]:
        job = self.ctx.store.job(job_id)
        if job is None or job.source is None:
            raise Refused(f"no job {job_id!r} with a data source here", 404)
        identity = self.ctx.identity
        signed = verify_envelope(job.envelope, identity.manifest, identity.ca_certificate, check_live=False)
        if signed.setup != "transfer" or not signed.shared_customers:
            raise Refused(f"job {job_id} is not a transfer job with shared customers", 409)
        if job.state != "accepted" and not (job.hosting and job.state == "ready"):
            raise Refused(f"job {job_id} is {job.state} here: its split is agreed before training only", 409)
        return job, signed

    @staticmethod
    def _index(signed: SignedJob, name: str) -> int:
        return sorted(signed.participants).index(name)

    def _member(self, job: JobRow, signed: SignedJob) -> HoldoutMember:
        member = self.members.get(job.job_id)
        if member is None:
            assert job.source is not None
            frame = read_table(self.ctx.config.sources[job.source].path)
            labels = frame[signed.label].to_numpy()
            member = HoldoutMember(self._index(signed, self.ctx.name), labels, signed.config.train.test_fraction, None)
            self.members[job.job_id] = member
        return member

    async def pins(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """An earlier participant's pin frame about the customers of its PSI run `session` with this list."""

        async def work() -> dict[str, Any]:
            job, signed = self._job(job_id)
            if caller.name not in signed.participants or self._index(signed, caller.name) >= self._index(
                signed, self.ctx.name
            ):
                raise Refused(f"only an earlier participant of job {job_id} sends this peer pins", 403)
            session, frame = _session(body), _frame(body)
            member = await asyncio.to_thread(self._member, job, signed)
            assert job.source is not None
            try:
                rows = aligned_rows(self.lists.take_confirmed(caller.name, job.source, session))
                member.aligned(self._index(signed, caller.name), rows)
                member.receive(self._index(signed, caller.name), frame)
            except FedsiloError as error:
                raise Refused(f"{caller.name}'s pins for job {job_id}: {error}", 409) from None
            with self.ctx.store.transaction():
                self.ctx.audit_job(caller.name, "transfer.pins", f"{len(rows)} shared customers' sides pinned", job)
            return {"peer": self.ctx.name, "shared": len(rows)}

        return await self.ctx.run(caller.name, "transfer.pins", work, job=job_id)

    async def step(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """This participant's step of the agreement (module docstring); the host asks, in the order."""

        async def check() -> tuple[JobRow, SignedJob, HoldoutMember, list[str]]:
            job, signed = self._job(job_id)
            if caller.name != job.host:
                raise Refused(f"only job {job_id}'s host {job.host} starts the agreement of its split", 403)
            order = body.get("order") if isinstance(body, dict) else None
            if not isinstance(order, list) or order != sorted(set(order)) or not set(order) <= set(signed.participants):
                raise Refused('the body is {"order": [the accepted participants, sorted by name]}', 400)
            if self.ctx.name not in order:
                raise Refused(f"{self.ctx.name} is not among the accepted participants {order}", 409)
            if agreed_sides(self.ctx.config.state_dir, job_id) is not None:
                raise Refused(f"job {job_id}'s split is agreed here already; it is agreed once", 409)
            member = await asyncio.to_thread(self._member, job, signed)
            missing = [p for p in order[: order.index(self.ctx.name)] if self._index(signed, p) not in member.rows]
            if missing:
                raise Refused(f"no pins yet from {', '.join(missing)}: the agreement runs in the order {order}", 409)
            return job, signed, member, order

        job, signed, member, order = await self.ctx.run(caller.name, "transfer.holdout", check, job=job_id)
        mine = order.index(self.ctx.name)
        assert job.source is not None
        source = self.ctx.config.sources[job.source]
        table = await asyncio.to_thread(read_table, source.path)
        if source.id_column is None or source.id_column not in table.columns:
            raise Refused(f"data source {source.name} needs its id column to align shared customers", 409)
        ids = table[source.id_column].astype(str).tolist()
        sides = member.sides if member.sides is not None else member.split()
        shared: dict[str, int] = {}
        try:
            async with PeerClient(self.ctx.identity, timeout=EXCHANGE_SECONDS) as client:
                for peer in order[mine + 1 :]:
                    url = self.ctx.address(peer)
                    await self._audit(job, "psi.run", f"at {peer}: both-sides PSI of {len(ids)} identifiers")
                    kind = await both_sides_list_kind(client, url, peer, job.source)
                    result, session = await dh_psi(client, url, job.source, ids, kind, "both")
                    member.aligned(self._index(signed, peer), aligned_rows(result))
                    frame = member.frame_for(self._index(signed, peer))
                    payload = {"session": session.hex(), "frame": base64.b64encode(frame).decode()}
                    await client.call("POST", f"{url}/v1/jobs/{job_id}/transfer/pins", payload)
                    shared[peer] = len(aligned_rows(result))
        except PeerUnreachable as error:
            raise Refused(f"the agreement of job {job_id}'s split failed: {error}", 502) from None
        await asyncio.to_thread(store_agreed_sides, self.ctx.config.state_dir, job_id, sides, len(table))
        self.members.pop(job_id, None)
        test = int((np.asarray(sides) == TEST).sum())
        await self._audit(job, "transfer.holdout", f"split agreed: {test} of {len(sides)} rows held out")
        n_train, planned = await self._replan(job, signed, source, len(table))
        return {
            "peer": self.ctx.name,
            "shared": shared,
            "rows": len(sides),
            "test": test,
            "n_train": n_train,
            "planned": [m.to_dict() for m in planned],
        }

    async def _replan(
        self, job: JobRow, signed: SignedJob, source: DataSource, rows: int
    ) -> tuple[int, list[Mechanism]]:
        """Plan DP-SGD on the rows the agreed split trains and replace the job's reservation by that plan
        (module docstring); Refused, with the job declined and its reservation released, if it does not fit."""
        state_dir = self.ctx.config.state_dir
        try:
            n_train = await asyncio.to_thread(training_rows, signed.config, state_dir, source)
            facts = SourceFacts(rows=rows, n_train=n_train, fingerprint="")
            planned = await asyncio.to_thread(planned_mechanisms, signed, facts)
        except (FedsiloError, Refused) as error:
            reason = f"job {signed.job_id} has no DP plan on the rows its agreed split trains here: {error}"
            await self.ctx.mailbox.ask(lambda: self._decline(job.job_id, reason))
            raise Refused(reason, 403) from None

        async def settle() -> None:
            row = self.ctx.store.job(job.job_id)
            if row is None or not (row.state == "accepted" or (row.hosting and row.state == "ready")):
                raise Refused(f"job {job.job_id} is {row.state if row else 'gone'} here: its plan stays as it was", 409)
            try:
                with self.ctx.store.transaction():
                    self.budget.replan(row, planned, f"planned on the {n_train} training rows of the agreed split")
            except BudgetExceeded as error:
                reason = f"budget: the plan on the {n_train} training rows of the agreed split does not fit: {error}"
                await self._decline(job.job_id, reason)
                raise Refused(reason, 403) from None

        await self.ctx.mailbox.ask(settle)
        return n_train, planned

    async def _decline(self, job_id: str, reason: str) -> None:
        """After the split, this peer cannot train the job: release its reservation and (unless it hosts
        the job, whose failure the hosting side records) mark it failed, audited (in the mailbox)."""
        row = self.ctx.store.job(job_id)
        if row is None or row.state not in ("accepted", "ready"):
            return
        with self.ctx.store.transaction():
            released = self.budget.release(job_id)
            if not row.hosting:
                self.ctx.store.set_state(job_id, "failed", reason)
            self.ctx.audit_job("local", "job.decline", reason + ("; reservation released" if released else ""), row)

    async def _audit(self, job: JobRow, action: str, detail: str) -> None:
        async def work() -> None:
            with self.ctx.store.transaction():
                self.ctx.audit_job("local", action, detail, job)

        await self.ctx.mailbox.ask(work)
