"""Vertical jobs (the coded scheme) between two peer daemons: the label holder hosts, the feature party codes.

A vertical job names two participants: its host, the **label holder** (the broker: its
source holds the job's label and its own columns), and one **feature party** (the bank:
its source holds the six repayment statuses of :mod:`fedsilo.peers.vertical.coded`). The
mechanism is the simulation's (:mod:`fedsilo.simulations.vertical_coded`); here the
messages cross between the daemons over mTLS:

1. **Acceptance** (`acceptance`): the feature party reserves ``PureMechanism(ε, 1)``
   (each shared customer's code released once by k-ary randomized response at the job's
   ε) before anything is released; the label holder reserves nothing (its ledger records
   the job with an empty plan). The feature party serves the alignment with its shared
   list named like the job's source (``[lists.SOURCE]`` over the source's own file and id
   column, ``both`` mode, the host in ``psi``): a feature party without one declines.
2. **Alignment** (`host`, step 1): the host runs the daemon's DH-PSI in both-sides mode
   on that list (``POST /v1/lists/SOURCE/psi`` and ``/psi/confirm``: audited at both ends,
   counted against the list's ``psi-quota``), then tells the feature party its session
   and order digest (``POST /v1/jobs/JOB/vertical/align``). Only blinded group elements
   cross; each side learns which of its own customers are shared and one common order.
3. **Release** (``POST /v1/jobs/JOB/vertical/release``, once per job): the host sends
   batch positions only, chosen by :func:`~fedsilo.peers.vertical.network.release_plan`
   (no label is an input); the feature party draws each code once with its OS CSPRNG,
   stores it, commits exactly its reservation and ends the job (finished). A second
   release is refused (409): no double spend.
4. **Training and publication**: the host trains its model over its own columns and the
   one-hot codes (:func:`~fedsilo.peers.vertical.network.train_broker`), publishes it as a
   signed artefact (pulled and verified like any model), commits its empty plan.
5. **Scoring** (`score` at the host, ``POST /v1/jobs/JOB/score``; `score_codes` at the
   feature party, ``POST /v1/jobs/JOB/vertical/score``): the host runs a both-sides PSI of
   the named customers with the list, then asks for the codes of that PSI's order by its
   session: no raw identifier crosses. The feature party answers each customer's stored
   code, or draws it once now (stored: never drawn twice), within the host's query quota
   on that list (``queriers``): over the quota nothing is drawn or counted (429). A
   cancelled (withdrawn) job is refused at both ends. Every row is released at most once
   in the job, so the committed ``PureMechanism(ε, 1)`` bounds every customer's loss,
   scored ones included.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from fedsilo.errors import DataError, FedsiloError, ProtocolError, QuotaExceeded
from fedsilo.peers.alignment import aligned_rows
from fedsilo.peers.daemon.card import build_card
from fedsilo.peers.daemon.client import PeerClient, both_sides_list_kind
from fedsilo.peers.daemon.config import DataSource, SharedList
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.participants import Participant, Report
from fedsilo.peers.daemon.policy import file_fingerprint
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.shared_lists import SharedLists
from fedsilo.peers.daemon.signed_job import SignedJob, verify_envelope
from fedsilo.peers.daemon.store import JobRow
from fedsilo.peers.data.bank import TEST, TRAIN, read_table
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.manifest import Member
from fedsilo.peers.risk_lists import dh_psi
from fedsilo.peers.vertical.coded import (
    DELINQUENCY_COLUMNS,
    DELINQUENCY_K,
    CodeBudget,
    CodedParty,
    CodesReceived,
    delinquency_codes,
    one_hot,
)
from fedsilo.peers.vertical.messages import BatchRequest, Codes
from fedsilo.peers.vertical.network import BankRelease, order_digest, release_plan, train_broker
from fedsilo.peers.vertical.parties import LocalModel, SplitSpec
from fedsilo.privacy.accounting import Mechanism, PureMechanism, epsilon_spent
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.vertical import CodeRelease

if TYPE_CHECKING:
    from fedsilo.peers.daemon.roles.vertical_split import VerticalSplit

log = logging.getLogger("fedsilo.peer")
EMBEDDING = 8  # the split spec's embedding width (unused: the label holder's model has no link)
EXCHANGE_SECONDS = 300.0  # one PSI or release request of a vertical job (a PSI over a large table takes a while)


def encode_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 8_000_000:
        raise Refused(f"{what} must be a base64 string", 400)
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise Refused(f"{what} is not valid base64", 400) from None


def psi_session(body: Any) -> bytes:
    value = body.get("session") if isinstance(body, dict) else None
    try:
        session = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        session = b""
    if len(session) != 16:
        raise Refused('the body must name the PSI run: {"session": "<32 hex digits>"}', 400)
    return session


def is_label_holder(job: SignedJob | JobRow, peer: str) -> bool:
    """The label holder of a vertical job is its host."""
    return job.host == peer


def _spec(job: SignedJob) -> SplitSpec:
    model = job.config.model
    return SplitSpec(model.kind, tuple(model.hidden), EMBEDDING)


class Vertical:
    """See the module docstring."""

    def __init__(self, context: PeerContext, budget: Budget, lists: SharedLists) -> None:
        self.ctx = context
        self.budget = budget
        self.lists = lists
        self.split: VerticalSplit | None = None  # set by the service: a split job's scoring (step 5 there)

    # -- acceptance (both sides) ---------------------------------------------------------
    def list_for(self, job: SignedJob | JobRow, source: DataSource) -> SharedList:
        """The feature party's list that aligns `job`: named like the source, over its file and id column,
        both-sides PSI allowed to the host; Refused (403) naming what is missing."""
        assert job.source is not None
        shared = self.ctx.config.lists.get(job.source)
        problem = None
        if shared is None:
            problem = "it has no such list"
        elif source.id_column is None or shared.id_column != source.id_column:
            problem = f"its id column must be the source's ({source.id_column})"
        elif shared.path.resolve() != source.path.resolve():
            problem = "it must read the source's own file"
        elif job.host not in shared.psi or "both" not in shared.psi_modes or "dh" not in shared.psi_protocols:
            problem = f"it must allow {job.host} both-sides DH-PSI (psi, psi-modes, psi-protocols)"
        if problem is not None:
            raise Refused(
                f"a vertical job's feature party aligns through its shared list named like the source, "
                f"[lists.{job.source}]: {problem}",
                403,
            )
        return shared

    def acceptance_facts(self, job: SignedJob, source: DataSource) -> tuple[int, int, str, list[PureMechanism]]:
        """(rows, training rows, fingerprint, plan) of this peer's side of `job` (blocking: reads the table)."""
        try:
            frame = read_table(source.path)
        except DataError as error:
            raise Refused(f"data source {source.name} cannot serve the job: {error}", 403) from None
        if source.id_column is None or source.id_column not in frame.columns:
            raise Refused(f"data source {source.name} needs its id column for a vertical job (sources.id-column)", 403)
        fingerprint = file_fingerprint(source.path, self.ctx.identity.manifest.suite)
        if is_label_holder(job, self.ctx.name):
            if job.label not in frame.columns:
                raise Refused(f"data source {source.name} has no column {job.label!r} (the label holder's)", 403)
            return len(frame), 0, fingerprint, []
        missing = [c for c in DELINQUENCY_COLUMNS if c not in frame.columns]
        if missing:
            raise Refused(f"data source {source.name} lacks the repayment statuses {missing} the code needs", 403)
        self.list_for(job, source)
        return len(frame), 0, fingerprint, [PureMechanism(job.config.dp.epsilon, 1)]

    def _stored(self, job: JobRow) -> SignedJob:
        """The signed job as this peer accepted it: its signature and form checked again, not its expiry
        (a finished job's codes and scores are asked long after the job's validity window closed)."""
        identity = self.ctx.identity
        return verify_envelope(job.envelope, identity.manifest, identity.ca_certificate, check_live=False)

    # -- the feature party ------------------------------------------------------------------
    def _bank_job(
        self, caller: Member, job_id: str, states: tuple[str, ...], schemes: tuple[str, ...] = ("coded",)
    ) -> tuple[JobRow, SignedJob]:
        """The job and its signed form, if `caller` is its label holder, this peer its feature party, the job in
        one of `states` and of one of `schemes` (a split job's reservation covers no code, a coded job's no
        embedding); Refused otherwise."""
        job = self.ctx.store.job(job_id)
        if job is None or job.source is None:
            raise Refused(f"no job {job_id!r} here", 404)
        signed = self._stored(job)
        if signed.setup != "vertical" or job.hosting:
            raise Refused(f"job {job_id} is not a vertical job in which {self.ctx.name} is the feature party", 409)
        if signed.vertical_scheme not in schemes:
            what = "code" if "coded" in schemes else "embedding for scoring"
            raise Refused(
                f"job {job_id} runs the {signed.vertical_scheme} scheme: no {what} is released for it (its "
                "reservation covers its own releases only)",
                409,
            )
        if caller.name != job.host:
            raise Refused(f"only the job's label holder {job.host} may ask for releases of job {job_id}", 403)
        if job.state not in states:
            if job.state == "cancelled":
                raise Refused(f"job {job_id} is cancelled: its model is withdrawn and no code is released", 409)
            raise Refused(f"job {job_id} is {job.state} here, not {' or '.join(states)}", 409)
        return job, signed

    def _release_state(self, job: JobRow) -> tuple[BankRelease, pd.DataFrame]:
        assert job.source is not None
        frame = read_table(self.ctx.config.sources[job.source].path)
        return BankRelease(self.ctx.config.state_dir / "vertical" / job.job_id, len(frame)), frame

    async def align(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """The host's PSI session for the job: keep this side's order; answer {party, shared, digest, k}."""

        async def work() -> dict[str, Any]:
            job, _ = self._bank_job(caller, job_id, ("accepted",), ("coded", "split"))
            session = psi_session(body)
            digest = body.get("digest")
            assert job.source is not None
            source = self.ctx.config.sources[job.source]
            shared = self.list_for(job, source)
            state, _ = await asyncio.to_thread(self._release_state, job)
            if state.alignment() is not None:
                raise Refused(f"job {job_id} is aligned already: an alignment is kept once", 409)
            result = self.lists.take_confirmed(caller.name, shared.name, session)
            rows, mine = aligned_rows(result), order_digest(result)
            if digest != mine:
                raise Refused(
                    f"the host's order digest is not {self.ctx.name}'s: the alignment differs; run it again", 409
                )
            release_plan(len(rows), 0.5, 0)  # refuses fewer than 2 shared customers
            with self.ctx.store.transaction():
                state.save_alignment(rows, mine)
                self.ctx.audit_job(
                    caller.name, "vertical.align", f"{len(rows)} customers shared, order {mine[:12]}", job
                )
            return {"party": self.ctx.name, "shared": len(rows), "digest": mine, "k": DELINQUENCY_K}

        return await self.ctx.run(caller.name, "vertical.align", work, job=job_id)

    async def release(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """The job's one release: codes for the host's batch requests; commits the reservation, ends the job."""

        async def work() -> dict[str, Any]:
            job, signed = self._bank_job(caller, job_id, ("accepted", "finished"))  # finished: refused below
            requests = body.get("requests") if isinstance(body, dict) else None
            if not isinstance(requests, list) or not 1 <= len(requests) <= 2:
                raise Refused('the body is {"requests": [one or two base64 batch requests]}', 400)
            try:
                asked = [BatchRequest.from_bytes(decode_b64(r, "a request")) for r in requests]
            except ProtocolError as error:
                raise Refused(str(error), 400) from None
            state, frame = await asyncio.to_thread(self._release_state, job)
            aligned = state.alignment()
            if aligned is None:
                raise Refused(f"job {job_id} is not aligned yet: align first", 409)
            rows, digest = aligned
            released = state.released()
            if (released[rows] >= 0).any():
                raise Refused(
                    f"the codes of job {job_id}'s shared customers were released already: a second release "
                    "is refused (no double spend)",
                    409,
                )
            dp = signed.config.dp
            assert job.source is not None
            source = self.ctx.config.sources[job.source]
            sides = release_plan(len(rows), signed.config.train.test_fraction, signed.config.train.seed)
            party = CodedParty(
                self.ctx.name,
                delinquency_codes(frame.iloc[rows]),
                sides,
                digest,
                DELINQUENCY_K,
                CodeBudget(dp.epsilon, dp.epsilon, source.delta, source.accountant),
                SecureNoise(),
            )
            try:
                answers = [party.answer(request) for request in asked]
            except DataError as error:
                raise Refused(str(error), 400) from None
            released[rows] = party.released
            spent = party.mechanisms()
            with self.ctx.store.transaction():
                state.save_released(released)
                epsilon = self.budget.commit_spent(job, list(spent))
                detail = f"{int((party.released >= 0).sum())} codes released once each, ε = {epsilon:.4f}"
                self.ctx.store.set_state(job_id, "finished", detail, spent=[m.to_dict() for m in spent])
                self.ctx.audit_job(caller.name, "vertical.release", detail, job)
            return {"codes": [encode_b64(a.to_bytes()) for a in answers], "spent": [m.to_dict() for m in spent]}

        return await self.ctx.run(caller.name, "vertical.release", work, job=job_id)

    async def score_codes(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """Codes of the customers of the host's scoring PSI `session`, in its order, each drawn at most once."""

        async def work() -> dict[str, Any]:
            job, signed = self._bank_job(caller, job_id, ("finished",))
            session = psi_session(body)
            assert job.source is not None
            source = self.ctx.config.sources[job.source]
            shared = self.list_for(job, source)
            quota = shared.quota_of(caller.name)
            if quota is None:
                raise Refused(
                    f"{caller.name} has no scoring quota on list {shared.name!r} here (lists.{shared.name}.queriers)",
                    403,
                )
            result = self.lists.take_confirmed(caller.name, shared.name, session)
            rows = aligned_rows(result)
            state, frame = await asyncio.to_thread(self._release_state, job)
            released = state.released()
            try:
                left = self.lists.charge_query(shared, caller.name, int(rows.size))
            except QuotaExceeded as error:
                raise Refused(f"scoring on list {shared.name!r}: {error}; nothing was released", 429) from None
            new = rows[released[rows] < 0]
            if new.size:
                release = CodeRelease(DELINQUENCY_K, signed.config.dp.epsilon)
                released[new] = release.apply(delinquency_codes(frame.iloc[new]), SecureNoise())
            with self.ctx.store.transaction():
                if new.size:
                    state.save_released(released)
                detail = (
                    f"{rows.size} codes answered ({new.size} released now, once each at ε = "
                    f"{signed.config.dp.epsilon:g}); {left} left in the window"
                )
                self.ctx.audit_job(caller.name, "vertical.score", detail, job)
            codes = Codes(self.ctx.name, 0, DELINQUENCY_K, released[rows].copy())
            return {"codes": encode_b64(codes.to_bytes()), "digest": order_digest(result) if rows.size else ""}

        return await self.ctx.run(caller.name, "vertical.score", work, job=job_id)

    # -- the label holder ---------------------------------------------------------------------
    async def host(self, job: SignedJob, accepted: list[Participant]) -> dict[str, Path] | str:
        """Align, receive the codes, train: the files of the model to publish, or the reason it failed."""
        others = [p.peer for p in accepted if p.peer != self.ctx.name]
        if len(others) != 1 or len(accepted) != 2:
            return f"a vertical job runs between its label holder and one feature party; accepted: {len(accepted)}"
        bank = others[0]
        source = self.ctx.config.sources[job.source]
        try:
            async with PeerClient(self.ctx.identity, timeout=EXCHANGE_SECONDS) as client:
                return await self._align_release_train(job, bank, source, client)
        except (FedsiloError, PeerUnreachable, Refused) as error:
            return f"{type(error).__name__}: {error}"

    async def _align_release_train(
        self, job: SignedJob, bank: str, source: DataSource, client: PeerClient
    ) -> dict[str, Path]:
        """Steps 2 to 4 of the module docstring over `client`; the model's files (raises on any failure)."""
        url = self.ctx.address(bank)
        table = await asyncio.to_thread(read_table, source.path)
        assert source.id_column is not None
        ids = table[source.id_column].astype(str).tolist()
        kind = await both_sides_list_kind(client, url, bank, job.source)
        await self._audit_own(job, "psi.run", f"at {bank}: both-sides PSI of {len(ids)} identifiers for the job")
        result, session = await dh_psi(client, url, job.source, ids, kind, "both")
        rows, digest = aligned_rows(result), order_digest(result)
        hello = await client.call(
            "POST", f"{url}/v1/jobs/{job.job_id}/vertical/align", {"session": session.hex(), "digest": digest}
        )
        receiver = CodesReceived(bank, len(rows), digest, DELINQUENCY_K)
        receiver.connect(hello if isinstance(hello, dict) else {})
        sides = release_plan(len(rows), job.config.train.test_fraction, job.config.train.seed)
        train, test = np.flatnonzero(sides == TRAIN), np.flatnonzero(sides == TEST)
        requests = [receiver.request(1, train, True).to_bytes(), receiver.request(2, test, False).to_bytes()]
        reply = await client.call(
            "POST", f"{url}/v1/jobs/{job.job_id}/vertical/release", {"requests": [encode_b64(r) for r in requests]}
        )
        answers = reply.get("codes") if isinstance(reply, dict) else None
        if not isinstance(answers, list) or len(answers) != 2:
            raise ProtocolError(f"{bank} answered the release with something that is not two code messages")
        codes = np.zeros(len(rows), dtype=np.int64)
        codes[train] = receiver.receive(Codes.from_bytes(decode_b64(answers[0], "codes")))
        codes[test] = receiver.receive(Codes.from_bytes(decode_b64(answers[1], "codes")))
        await self._audit_own(job, "vertical.receive", f"{len(rows)} codes from {bank}, each released once")
        return await asyncio.to_thread(self._train_and_write, job, table, rows, sides, codes, bank, reply)

    async def _audit_own(self, job: SignedJob, action: str, detail: str) -> None:
        async def work() -> None:
            with self.ctx.store.transaction():
                self.ctx.audit_job("local", action, detail, job)

        await self.ctx.mailbox.ask(work)

    def _model_dir(self, job_id: str) -> Path:
        return self.ctx.config.state_dir / "vertical" / job_id / "model"

    def _train_and_write(
        self,
        job: SignedJob,
        table: pd.DataFrame,
        rows: np.ndarray,
        sides: np.ndarray,
        codes: np.ndarray,
        bank: str,
        reply: dict[str, Any],
    ) -> dict[str, Path]:
        source = self.ctx.config.sources[job.source]
        assert source.id_column is not None
        train = job.config.train
        trained = train_broker(
            table,
            job.label,
            source.id_column,
            rows,
            sides,
            codes,
            _spec(job),
            epochs=train.rounds,
            batch_size=train.batch_size,
            lr=train.lr,
            seed=train.seed,
        )
        out = self._model_dir(job.job_id)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().numpy().copy() for k, v in trained.holder.model.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"fedsilo.owner": self.ctx.name})
        trained.encoder.save(out / "encoder.json")
        metrics = {
            "scheme": "coded",
            "vertical_auc_shared": trained.auc,
            "shared_customers": int(len(rows)),
            "test_customers_shared": int((sides == TEST).sum()),
            "codes": DELINQUENCY_K,
            "feature_party": bank,
            "feature_party_spent": reply.get("spent"),
            "epochs": [vars(s) for s in trained.history],
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        return {
            "model.safetensors": out / "model.safetensors",
            "encoder.json": out / "encoder.json",
            "metrics.json": out / "metrics.json",
        }

    def card(self, job: SignedJob, files: dict[str, Path]) -> dict[str, Any]:
        """The model card (the common schema of `build_card`): each party's spending as its ledger holds it,
        the vertical scheme's privacy statement and what crossed; ProtocolError if the feature party
        reports spending other than the plan it accepted with."""
        metrics = json.loads(files["metrics.json"].read_text())
        participants = self.ctx.store.participants(job.job_id)
        reports = {}
        for participant in participants:
            accepted = participant.acceptance
            if participant.decision != "accepted" or accepted is None:
                continue
            if participant.peer == self.ctx.name:
                spent: tuple[Any, ...] = ()
            else:
                spent = tuple(Mechanism.from_dict(m) for m in metrics["feature_party_spent"] or [])
                if list(spent) != list(accepted.planned):
                    raise ProtocolError(
                        f"{participant.peer} reports spending {metrics['feature_party_spent']}, not the plan it "
                        f"accepted with ({[m.to_dict() for m in accepted.planned]})"
                    )
            epsilon = epsilon_spent(list(spent), accepted.delta, accepted.accountant) if spent else 0.0
            reports[participant.peer] = Report(spent, epsilon, accepted.delta, accepted.accountant)
        card = build_card(job, participants, reports, {}, self.ctx.identity.manifest.suite)
        card["setup"], card["scheme"] = "vertical", "coded"
        card["job"]["model"]["codes"] = DELINQUENCY_K
        card["privacy"] = {
            "guarantee": f"the feature party released each shared customer's {DELINQUENCY_K}-valued delinquency "
            f"code at most once, by {DELINQUENCY_K}-ary randomized response at ε = {job.config.dp.epsilon:g} "
            "(pure ε-DP per customer, its coins from its OS CSPRNG); every later request for a customer gets "
            "the stored code",
            "label_holder": "spends nothing: it sends batch positions chosen without its labels "
            "(release_plan: the number of shared customers and the job's seed), no gradient, no label",
            "alignment": "both-sides DH-PSI over mTLS: each side learns which of its own customers are shared "
            "and one common order; no raw identifier crosses",
            "in_the_clear": "blinded PSI elements, batch positions and the released codes; never an id, a column "
            "name, a raw value or a label",
            "accounting": "randomized response composes by basic composition with the Gaussian runs of the "
            "feature party's ledger",
        }
        card["metrics"] = {
            "final_auc": metrics["vertical_auc_shared"],
            "shared_customers": metrics["shared_customers"],
            "test_customers_shared": metrics["test_customers_shared"],
        }
        return card

    # -- scoring at the label holder ---------------------------------------------------------------
    async def score(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """Scores of the named customers (in this peer's table): the feature party's codes (or, in a split job,
        embeddings) asked through a PSI, the model applied here; a customer it does not hold scores None."""
        job = self.ctx.store.job(job_id)
        if job is None or not job.hosting or job.source is None:
            raise Refused(f"job {job_id} is not hosted here", 404)
        if caller.name not in (job.owner, self.ctx.name):
            raise Refused(f"only job {job_id}'s owner {job.owner} or its host may score with its model", 403)
        signed = self._stored(job)
        if signed.setup != "vertical":
            raise Refused(
                f"job {job_id} is a {signed.setup} job: score its pulled model locally (fedsilo score MODEL_DIR "
                "--data FILE --out FILE)",
                409,
            )
        split = signed.vertical_scheme == "split"  # the feature party answers embeddings (`roles.vertical_split`)
        if job.state == "cancelled":
            raise Refused(f"job {job_id} is cancelled: its model is withdrawn", 409)
        if job.state != "finished":
            raise Refused(f"job {job_id} is {job.state}: scoring needs its finished model", 409)
        wanted = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(wanted, list) or not wanted or not all(isinstance(i, str) and i for i in wanted):
            raise Refused('the body is {"ids": [one or more customer ids of this peer\'s source]}', 400)
        if len(set(wanted)) != len(wanted):
            raise Refused("the ids list a customer twice: name each once", 400)
        source = self.ctx.config.sources[job.source]
        assert source.id_column is not None
        table = await asyncio.to_thread(read_table, source.path)
        own_ids = table[source.id_column].astype(str)
        index = pd.Index(own_ids)
        unknown = [i for i in wanted if i not in index]
        if unknown:
            raise Refused(f"{len(unknown)} of the ids are not in this peer's source {source.name}: refused", 400)
        positions = np.asarray([index.get_loc(i) for i in wanted], dtype=np.int64)
        participants = [p.peer for p in self.ctx.store.participants(job_id) if p.peer != self.ctx.name]
        bank = participants[0]
        url = self.ctx.address(bank)
        try:
            async with PeerClient(self.ctx.identity, timeout=EXCHANGE_SECONDS) as client:
                kind = await both_sides_list_kind(client, url, bank, job.source)
                await self._audit_own(
                    signed, "psi.run", f"at {bank}: both-sides PSI of {len(wanted)} identifiers to score"
                )
                result, session = await dh_psi(client, url, job.source, wanted, kind, "both")
                route = "embed" if split else "score"
                reply = await client.call(
                    "POST", f"{url}/v1/jobs/{job_id}/vertical/{route}", {"session": session.hex()}
                )
        except PeerUnreachable as error:
            status = re.search(r" answered (\d{3}):", str(error))
            raise Refused(f"{bank} refused: {error}", int(status.group(1)) if status else 502) from None
        matched = aligned_rows(result)  # indices into `wanted`, in the PSI order
        if len(matched) and (not isinstance(reply, dict) or reply.get("digest") != order_digest(result)):
            raise Refused(f"{bank} answered for another order than this PSI run's: refused", 502)
        own = table.iloc[positions[matched]].drop(columns=[source.id_column])
        if split:
            assert self.split is not None
            out = await asyncio.to_thread(self.split.scores, job_id, signed, own, reply, bank)
        else:
            out = await asyncio.to_thread(self._coded_scores, job_id, signed, own, reply, bank)
        scores: list[float | None] = [None] * len(wanted)
        for j, p in enumerate(matched):
            scores[int(p)] = round(float(out[j]), 6)
        await self._audit_own(
            signed, "vertical.score", f"{len(wanted)} customers asked, {len(matched)} shared with {bank} scored"
        )
        return {
            "job": job_id,
            "feature_party": bank,
            "scheme": signed.vertical_scheme,
            "scores": dict(zip(wanted, scores)),
        }

    def _coded_scores(self, job_id: str, signed: SignedJob, own: pd.DataFrame, reply: Any, bank: str) -> np.ndarray:
        """The probabilities of the host's rows `own` (id column dropped) from its model and the bank's codes."""
        codes = Codes.from_bytes(decode_b64(reply.get("codes") if isinstance(reply, dict) else None, "codes"))
        if codes.party != bank or len(codes.codes) != len(own):
            raise Refused(f"{bank} answered {len(codes.codes)} codes for {len(own)} shared customers", 502)
        if not len(own):
            return np.zeros(0)
        model, encoder = self._load_model(job_id, signed)
        x = encoder.transform_features(own)
        features = np.hstack([x, one_hot(np.asarray(codes.codes), DELINQUENCY_K)]).astype(np.float32)
        with torch.no_grad():
            return torch.sigmoid(model(torch.as_tensor(features), torch.zeros(len(own), 0))).double().numpy()

    def _load_model(self, job_id: str, job: SignedJob) -> tuple[LocalModel, TabularEncoder]:
        latest = self.ctx.store.model(job_id)
        if latest is None:
            raise Refused(f"job {job_id} has no published model here", 409)
        directory = latest[1]
        encoder = TabularEncoder.load(directory / "encoder.json")
        model = LocalModel(_spec(job), encoder.n_features + DELINQUENCY_K, 0, job.config.train.seed)
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        model.eval()
        return model, encoder
