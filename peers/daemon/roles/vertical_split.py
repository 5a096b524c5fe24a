"""Vertical jobs of the split scheme between two peer daemons, on Flower's Deployment Engine.

A job signed with ``[vertical] scheme = "split"`` names two participants: its host, the
**label holder** (its source holds the job's label and its own columns), and one
**feature party** (its source holds other columns of the same customers, and an id
column). The training is the simulation's (:mod:`fedsilo.simulations.vertical`, split
scheme): the same parties (:mod:`fedsilo.peers.vertical.parties`), the same relay and
ClientApp (:mod:`fedsilo.peers.vertical.apps`), the same DP plan
(:mod:`fedsilo.peers.vertical.plan`); here each party is a SuperNode of its own daemon.

1. **Acceptance** (`acceptance_facts`, both sides): each party reserves its planned
   Gaussian releases before anything is released: the label holder
   ``Mechanism(z, 1, 2 × epochs)``, the feature party ``Mechanism(z, 1, 2 × epochs + 1)``
   (the one more is a customer's release for scoring, :data:`~fedsilo.peers.vertical.plan.NETWORK_SCORING`),
   z calibrated to the job's ε at its source's δ and accountant (a held-out customer's
   one scoring release at the end of training runs at the same z). The feature party must serve
   the alignment through its shared list named like the source (as in the coded scheme:
   ``[lists.SOURCE]``, ``both`` mode, the host in ``psi``), or it declines.
2. **Alignment** (`align`, at the host, before the SuperLink starts): both-sides DH-PSI
   over mTLS on that list (audited at both ends, counted against its ``psi-quota``), then
   ``POST /v1/jobs/JOB/vertical/align`` (the coded scheme's route): each side keeps its
   own source rows in the common PSI order and the order's digest
   (``state/vertical/JOB/alignment.json``). Each shared customer's train/test side is
   :func:`~fedsilo.peers.vertical.network.release_plan` of the job (no label is an input).
3. **Training**: the host starts the SuperLink with the relay ServerApp
   (:mod:`fedsilo.peers.vertical.deployed`: it holds nothing private), both daemons start a
   SuperNode whose ClientApp plays their party (`party_file`: each daemon builds it from
   its own rows in the agreed order, encoder fitted on its own table, its noise from its
   OS CSPRNG). The feature party sends only clipped, noised embeddings of the positions it
   is asked for; the label holder only clipped, noised gradients. Each SuperNode writes
   its accountant's spending into its durable privacy record before each release leaves;
   its daemon commits that record to its ledger when the job ends (as horizontal jobs do).
4. **Publication** (`model_files`, `card`): the host publishes its part (its bottom model
   and the top model, its encoder, the held-out AUC) as a signed artefact, pulled and
   verified like any model. The feature party's bottom model stays on its own disk
   (``state/jobs/JOB/peer/PEER.final.safetensors``), never sent. When its SuperNode ends,
   the feature party commits its node's durable record plus the scoring release it
   reserved (`committed`): that release may be drawn any time later, so it is spent now.
5. **Scoring** (`scores` at the host, through :meth:`Vertical.score`, ``POST /v1/jobs/JOB/score``;
   `score_embeddings` at the feature party, ``POST /v1/jobs/JOB/vertical/embed``): the
   host runs a both-sides PSI of the named customers with the list and asks for their
   embeddings by its session (no raw identifier crosses); the feature party answers each
   customer's stored release, or draws it now from its final bottom model, clipped and
   noised at the training z from its OS CSPRNG, and stores it before the answer leaves.
   A customer is drawn once per job: asking again returns the same values (the host
   cannot average the noise away), so the committed plan bounds every customer's loss
   (a training customer: 2 × epochs + 1 releases; any other: at most 2). Counted against
   the host's query quota on the list (``queriers``; over it: 429, nothing drawn),
   audited at both ends, refused once the job is cancelled (its model withdrawn).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from fedsilo.errors import DataError, QuotaExceeded
from fedsilo.peers.alignment import aligned_rows
from fedsilo.peers.daemon import training
from fedsilo.peers.daemon.card import build_card
from fedsilo.peers.daemon.client import PeerClient, both_sides_list_kind
from fedsilo.peers.daemon.config import DataSource
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.participants import Report
from fedsilo.peers.daemon.policy import file_fingerprint
from fedsilo.peers.daemon.roles.vertical import Vertical, decode_b64, encode_b64, is_label_holder, psi_session
from fedsilo.peers.daemon.signed_job import SignedJob, parse_document
from fedsilo.peers.daemon.store import JobRow
from fedsilo.peers.data.bank import TEST, read_table
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.manifest import Member
from fedsilo.peers.risk_lists import dh_psi
from fedsilo.peers.vertical.apps import Plan, final_state_file, read_final_state, write_party_file
from fedsilo.peers.vertical.messages import Embeddings
from fedsilo.peers.vertical.network import BankRelease, ScoringReleases, order_digest, release_plan
from fedsilo.peers.vertical.parties import (
    FeatureParty,
    LabelHolder,
    Link,
    LocalModel,
    PartyDP,
    SplitSpec,
    build_bottom,
)
from fedsilo.peers.vertical.plan import NETWORK_SCORING, party_dp, planned_mechanisms, split_releases
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.audit.roc import roc
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.vertical import RowRelease

NO_LABEL = "__no_label__"  # the encoder's label slot for a party that holds none (never filled with data)
PARTY_FILE = "party.pickle"


def is_split(job: SignedJob | JobRow) -> bool:
    """Whether `job` is a vertical job of the split scheme (a stored row: read from its signed document)."""
    if isinstance(job, SignedJob):
        return job.setup == "vertical" and job.vertical_scheme == "split"
    header = parse_document(job.envelope["job"])[1]
    return header["setup"] == "vertical" and header["vertical_scheme"] == "split"


def party_encoder(frame: pd.DataFrame, label: str | None) -> TabularEncoder:
    """A party's encoder, fitted on its own rows only (`label` None: a feature party, which holds none)."""
    if label is None:
        return TabularEncoder.fit_frames([frame.assign(**{NO_LABEL: 0})], NO_LABEL)
    return TabularEncoder.fit_frames([frame], label)


def _spec(job: SignedJob) -> SplitSpec:
    return SplitSpec(job.config.model.kind, tuple(job.config.model.hidden))


class VerticalSplit:
    """See the module docstring."""

    def __init__(self, context: PeerContext, coded: Vertical) -> None:
        self.ctx = context
        self.coded = coded  # the alignment list's checks and the PSI helpers are the coded scheme's

    # -- acceptance (both sides) ---------------------------------------------------------
    @staticmethod
    def releases(job: SignedJob, holder: bool) -> int:
        """This peer's planned releases of its worst customer in `job` (the feature party's include scoring)."""
        releases = split_releases(job.config.train.rounds)
        return releases.holder if holder else releases.party + NETWORK_SCORING

    def dp(self, job: SignedJob, source: DataSource, holder: bool) -> PartyDP:
        """This peer's DP in `job`: its planned releases per customer at the job's ε, its source's δ and accountant.

        A held-out customer's one scoring release at the end of training, and any customer's one release for
        scoring over the network, run at the training noise too (the simulation calibrates the first for one
        release): the worst customer is a training one, whose releases are exactly the reserved mechanism.
        """
        dp = job.config.dp
        return party_dp(dp.epsilon, source.delta, source.accountant, self.releases(job, holder), dp.max_grad_norm)

    def _columns(self, job: SignedJob, source: DataSource, frame: pd.DataFrame, holder: bool) -> pd.DataFrame:
        """This peer's columns of the job (its table without the id column; the label holder's keeps the label)."""
        if source.id_column is None or source.id_column not in frame.columns:
            raise Refused(f"data source {source.name} needs its id column for a vertical job (sources.id-column)", 403)
        if holder and job.label not in frame.columns:
            raise Refused(f"data source {source.name} has no column {job.label!r} (the label holder's)", 403)
        dropped = [source.id_column] + ([] if holder else [c for c in (job.label,) if c in frame.columns])
        columns = frame.drop(columns=dropped)
        if columns.shape[1] < (2 if holder else 1):
            raise Refused(f"data source {source.name} has no feature column besides its id and label", 403)
        return columns

    def acceptance_facts(self, job: SignedJob, source: DataSource) -> tuple[int, int, str, list[Mechanism]]:
        """(rows, training rows, fingerprint, plan) of this peer's side of `job` (blocking: reads the table)."""
        try:
            frame = read_table(source.path)
        except DataError as error:
            raise Refused(f"data source {source.name} cannot serve the job: {error}", 403) from None
        holder = is_label_holder(job, self.ctx.name)
        self._columns(job, source, frame, holder)
        if not holder:
            self.coded.list_for(job, source)
        fingerprint = file_fingerprint(source.path, self.ctx.identity.manifest.suite)
        planned = planned_mechanisms(self.dp(job, source, holder), self.releases(job, holder))
        return len(frame), 0, fingerprint, planned

    def committed(self, row: JobRow, spent: list[Mechanism]) -> list[Mechanism]:
        """What this peer commits when its SuperNode ended `row`'s job having spent `spent` (its durable record):
        the feature party adds the scoring release it reserved (drawn later, by `score_embeddings`), merged
        into the record's mechanism at the same noise; the label holder commits its record as it is."""
        signed = self.coded._stored(row)
        if not spent or is_label_holder(signed, self.ctx.name):
            return spent
        assert row.source is not None
        z = self.dp(signed, self.ctx.config.sources[row.source], False).noise_multiplier
        merged, added = [], False
        for mechanism in spent:
            if (
                not added
                and isinstance(mechanism, Mechanism)
                and (mechanism.noise_multiplier, mechanism.sample_rate) == (z, 1.0)
            ):
                mechanism, added = Mechanism(z, 1.0, mechanism.steps + NETWORK_SCORING), True
            merged.append(mechanism)
        return merged if added else [*spent, Mechanism(z, 1.0, NETWORK_SCORING)]

    # -- the alignment, at the host --------------------------------------------------------
    async def align(self, job: SignedJob, bank: str, client: PeerClient) -> int:
        """Both-sides PSI with the feature party, then its alignment: both keep their rows in the common order.

        Returns the number of shared customers; raises (FedsiloError, PeerUnreachable, Refused) on any failure.
        """
        source = self.ctx.config.sources[job.source]
        url = self.ctx.address(bank)
        table = await asyncio.to_thread(read_table, source.path)
        assert source.id_column is not None
        ids = table[source.id_column].astype(str).tolist()
        kind = await both_sides_list_kind(client, url, bank, job.source)
        await self.coded._audit_own(job, "psi.run", f"at {bank}: both-sides PSI of {len(ids)} identifiers for the job")
        result, session = await dh_psi(client, url, job.source, ids, kind, "both")
        rows, digest = aligned_rows(result), order_digest(result)
        release_plan(len(rows), 0.5, 0)  # refuses fewer than 2 shared customers
        hello = await client.call(
            "POST", f"{url}/v1/jobs/{job.job_id}/vertical/align", {"session": session.hex(), "digest": digest}
        )
        if not isinstance(hello, dict) or hello.get("digest") != digest or hello.get("shared") != len(rows):
            raise Refused(f"{bank} answered the alignment with another order than this PSI run's: refused", 502)
        BankRelease(self._state(job.job_id), len(table)).save_alignment(rows, digest)
        await self.coded._audit_own(job, "vertical.align", f"{len(rows)} customers shared, order {digest[:12]}")
        return len(rows)

    def _state(self, job_id: str) -> Path:
        return self.ctx.config.state_dir / "vertical" / job_id

    # -- each side's party (blocking) ------------------------------------------------------
    def party_file(self, row: JobRow, work_dir: Path) -> Path:
        """Write this peer's party of the job into `work_dir` (its SuperNode's directory), from its own rows in
        the agreed order (the job as this peer accepted it); DataError if it has not aligned."""
        assert row.source is not None
        signed = self.coded._stored(row)
        source = self.ctx.config.sources[row.source]
        frame = read_table(source.path)
        aligned = BankRelease(self._state(row.job_id), len(frame)).alignment()
        if aligned is None:
            raise DataError(f"job {row.job_id} is not aligned at {self.ctx.name}: no party can be built")
        rows, digest = aligned
        train = signed.config.train
        sides = release_plan(len(rows), train.test_fraction, train.seed)
        holder = is_label_holder(signed, self.ctx.name)
        columns = self._columns(signed, source, frame, holder)
        spec, dp = _spec(signed), self.dp(signed, source, holder)
        party: FeatureParty | LabelHolder
        if holder:
            encoder = party_encoder(columns, signed.label)
            x, y = encoder.transform(columns)
            all_sides = np.zeros(len(frame), dtype=np.int8)
            all_sides[rows] = sides
            bank = next(p for p in signed.participants if p != self.ctx.name)
            link = Link(bank, np.arange(len(rows)), len(rows), digest, spec.embedding)
            party = LabelHolder(
                self.ctx.name, x, y, rows, all_sides, [link], spec, lr=train.lr, seed=train.seed + 2, dp=dp
            )
        else:
            encoder = party_encoder(columns, None)
            x = encoder.transform_features(columns.iloc[rows])
            party = FeatureParty(self.ctx.name, x, sides, digest, spec, lr=train.lr, seed=train.seed + 1, dp=dp)
        party.noise = SecureNoise()  # not written: each node draws its own from the OS CSPRNG
        work_dir.mkdir(parents=True, exist_ok=True)
        encoder.save(work_dir / "encoder.json")
        path = write_party_file(work_dir, 0, party, Plan(train.rounds, train.batch_size, train.seed), None)
        return path.rename(work_dir / PARTY_FILE)

    # -- scoring over the network ------------------------------------------------------------
    async def score_embeddings(self, caller: Member, job_id: str, body: Any) -> dict[str, Any]:
        """At the feature party: the scoring embeddings of the customers of the host's PSI `session`, in its
        order, each drawn at most once in the job (module docstring, step 5)."""

        async def work() -> dict[str, Any]:
            job, signed = self.coded._bank_job(caller, job_id, ("finished",), ("split",))
            session = psi_session(body)
            assert job.source is not None
            source = self.ctx.config.sources[job.source]
            shared = self.coded.list_for(job, source)
            quota = shared.quota_of(caller.name)
            if quota is None:
                raise Refused(
                    f"{caller.name} has no scoring quota on list {shared.name!r} here (lists.{shared.name}.queriers)",
                    403,
                )
            result = self.coded.lists.take_confirmed(caller.name, shared.name, session)
            rows = aligned_rows(result)
            frame = await asyncio.to_thread(read_table, source.path)
            store = ScoringReleases(self._state(job_id), len(frame), _spec(signed).embedding)
            released = await asyncio.to_thread(store.load)
            new = rows[np.isnan(released[rows]).any(axis=1)]
            if new.size:  # drawn before the quota is charged (a failure charges nothing); kept only if charged
                released[new] = await asyncio.to_thread(self._draw, job, signed, frame, new)
            try:
                left = self.coded.lists.charge_query(shared, caller.name, int(rows.size))
            except QuotaExceeded as error:
                raise Refused(f"scoring on list {shared.name!r}: {error}; nothing was released", 429) from None
            with self.ctx.store.transaction():
                if new.size:
                    await asyncio.to_thread(store.save, released)  # durable before any value leaves
                detail = (
                    f"{rows.size} embeddings answered ({new.size} released now, once each at the job's noise "
                    f"multiplier); {left} left in the window"
                )
                self.ctx.audit_job(caller.name, "vertical.embed", detail, job)
            embeddings = Embeddings(self.ctx.name, 0, released[rows].copy())
            return {
                "embeddings": encode_b64(embeddings.to_bytes()),
                "digest": order_digest(result) if rows.size else "",
            }

        return await self.ctx.run(caller.name, "vertical.embed", work, job=job_id)

    def _draw(self, job: JobRow, signed: SignedJob, frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Fresh releases of source `rows` from this feature party's final bottom model: clipped, noised at the
        training z from the OS CSPRNG (blocking: reads its SuperNode's final state)."""
        assert job.source is not None
        source = self.ctx.config.sources[job.source]
        work_dir = training.peer_work_dir(self.ctx.config.state_dir, job.job_id)
        if not (work_dir / "encoder.json").is_file() or not final_state_file(work_dir, self.ctx.name).is_file():
            raise Refused(f"job {job.job_id}'s bottom model is not on {self.ctx.name}'s disk: nothing to score", 409)
        encoder = TabularEncoder.load(work_dir / "encoder.json")
        x = encoder.transform_features(self._columns(signed, source, frame, False).iloc[rows])
        bottom = build_bottom(_spec(signed), x.shape[1], signed.config.train.seed + 1)
        state = read_final_state(work_dir, self.ctx.name)
        bottom.load_state_dict(
            {k.removeprefix("param."): torch.as_tensor(v) for k, v in state.items() if k.startswith("param.")}
        )
        dp = self.dp(signed, source, False)
        with torch.no_grad():
            h = bottom(torch.as_tensor(np.asarray(x, dtype=np.float32))).double().numpy()
        if not np.isfinite(h).all():
            raise DataError(f"job {job.job_id}'s bottom model gives outputs that are not finite numbers: not released")
        return RowRelease(dp.release_clip, dp.noise_multiplier).apply(h, SecureNoise()).astype(np.float32)

    def scores(self, job_id: str, signed: SignedJob, own: pd.DataFrame, reply: Any, bank: str) -> np.ndarray:
        """At the host: the probabilities of its rows `own` (its table's, id column dropped) from its part of the
        model and the feature party's `reply` (their embeddings, row for row); Refused if the reply does not fit."""
        embeddings = Embeddings.from_bytes(
            decode_b64(reply.get("embeddings") if isinstance(reply, dict) else None, "embeddings")
        )
        width = _spec(signed).embedding
        if embeddings.party != bank or embeddings.values.shape != (len(own), width):
            raise Refused(
                f"{bank} answered {embeddings.values.shape[0]} embeddings of width {embeddings.values.shape[1]} "
                f"for {len(own)} shared customers of width {width}: refused",
                502,
            )
        if not np.isfinite(embeddings.values).all():
            raise Refused(f"{bank} answered embeddings that are not finite numbers: refused", 502)
        if not len(own):
            return np.zeros(0)
        latest = self.ctx.store.model(job_id)
        if latest is None:
            raise Refused(f"job {job_id} has no published model here", 409)
        encoder = TabularEncoder.load(latest[1] / "encoder.json")
        model = LocalModel(_spec(signed), encoder.n_features, width, signed.config.train.seed + 2)
        model.load_state_dict(load_file(str(latest[1] / "model.safetensors")))
        model.eval()
        x = torch.as_tensor(np.asarray(encoder.transform_features(own), dtype=np.float32))
        with torch.no_grad():
            return torch.sigmoid(model(x, torch.as_tensor(embeddings.values))).double().numpy()

    # -- publication, at the host ----------------------------------------------------------
    def model_files(self, job: SignedJob, work_dir: Path, relay_metrics: dict[str, Any]) -> dict[str, Path]:
        """The host's part as the files of its model: its bottom and the top (from its SuperNode's final state),
        its encoder, and metrics (the held-out shared customers' AUC, computed here with its own labels)."""
        source = self.ctx.config.sources[job.source]
        state = read_final_state(work_dir, self.ctx.name)
        probabilities = state.pop("scores.probabilities", None)
        if probabilities is None:
            raise DataError(
                f"{self.ctx.name}'s SuperNode ended job {job.job_id} without scoring its held-out customers"
            )
        frame = read_table(source.path)
        aligned = BankRelease(self._state(job.job_id), len(frame)).alignment()
        assert aligned is not None
        rows, _ = aligned
        sides = release_plan(len(rows), job.config.train.test_fraction, job.config.train.seed)
        labels = frame[job.label].to_numpy(dtype=np.float64)[rows[sides == TEST]]
        auc = round(roc(probabilities[labels == 1], probabilities[labels == 0]).auc, 4)
        out = self.ctx.config.state_dir / "vertical" / job.job_id / "model"
        out.mkdir(parents=True, exist_ok=True)
        weights = {
            k.removeprefix("param."): np.ascontiguousarray(v) for k, v in state.items() if k.startswith("param.")
        }
        save_file(weights, str(out / "model.safetensors"), metadata={"fedsilo.owner": self.ctx.name})
        (out / "encoder.json").write_bytes((work_dir / "encoder.json").read_bytes())
        metrics = {
            "scheme": "split",
            "vertical_auc_shared": auc,
            "shared_customers": int(len(rows)),
            "test_customers_shared": int((sides == TEST).sum()),
            "feature_party": next(p for p in job.participants if p != self.ctx.name),
            "epochs": relay_metrics.get("epochs", []),
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        return {name: out / name for name in ("model.safetensors", "encoder.json", "metrics.json")}

    def card(self, job: SignedJob, files: dict[str, Path], reports: dict[str, Report]) -> dict[str, Any]:
        """The model card (the common schema of `build_card`, each party's spending as it reported it from its
        durable record) with the split scheme's privacy statement and what crossed."""
        metrics = json.loads(files["metrics.json"].read_text())
        card = build_card(job, self.ctx.store.participants(job.job_id), reports, {}, self.ctx.identity.manifest.suite)
        card["setup"], card["scheme"] = "vertical", "split"
        card["job"]["model"]["embedding_width"] = _spec(job).embedding
        card["privacy"] = {
            "guarantee": "each party's releases are Gaussian mechanisms per customer at sample rate 1 (no "
            "amplification claimed: the label holder picks the batches), their noise from the party's OS CSPRNG; "
            "each party's ledger commits its worst customer's releases",
            "feature_party": "per requested shared customer, its bottom model's output clipped to norm 1 and "
            "noised (twice per epoch per training customer with its DP-SGD update; once per held-out customer)",
            "label_holder": "per training customer and epoch, the gradient w.r.t. the feature party's embedding, "
            "clipped to norm 1 and noised (label DP), and its own part's DP-SGD update",
            "alignment": "both-sides DH-PSI over mTLS: each side learns which of its own customers are shared "
            "and one common order; no raw identifier crosses",
            "in_the_clear": "blinded PSI elements, batch positions (indices in the PSI order), noised embeddings "
            "and noised gradients; never an id, a column name, a raw value or a label",
            "feature_party_model": "stays on the feature party's disk: this artefact is the label holder's part",
        }
        card["metrics"] = {
            "final_auc": metrics["vertical_auc_shared"],
            "shared_customers": metrics["shared_customers"],
            "test_customers_shared": metrics["test_customers_shared"],
        }
        return card
