"""Vertical (split) learning on Flower's Simulation Engine, two and three parties (issue 18).

From the relay's side (the orchestrator sees every message it forwards): no id, column
name, raw value or label in any RecordDict, in the bytes Flower moves; each party's
ledger holds exactly its mechanisms; without DP the parties' parts equal a centralized
split model trained on the joined columns with the same batches. One Ray runtime (a
local cluster) serves the whole module: each Ray start costs 20-30 s.
"""

import copy
import json
import shutil
import tempfile

import numpy as np
import pytest
import torch

from fedsilo.errors import ProtocolError
from fedsilo.peers.flower_compat.objects import deflated_tree
from fedsilo.peers.vertical import records
from fedsilo.peers.vertical.alignment import align_vertical
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder, Link, PartyDP, SplitSpec
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.vertical import plan_noise
from fedsilo.simulations.api import simulate
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.engine import EngineSettings
from fedsilo.simulations.ray_cluster import LocalRayCluster
from fedsilo.simulations.vertical import HOLDER_COLUMNS, LABEL, PARTY_COLUMNS, _encoder, pooled_table
from fedsilo.simulations.vertical_engine import train_and_score_on_engine

pytestmark = pytest.mark.slow
EPOCHS, BATCH, LR = 2, 64, 0.3


@pytest.fixture(scope="module")
def engine():
    temp_dir = tempfile.mkdtemp(prefix="fsray-", dir="/tmp")
    cluster = LocalRayCluster(cpus=2, temp_dir=temp_dir)
    try:
        cluster.__enter__()
        yield EngineSettings(ray_address=cluster.address)
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _scenario(feature_parties: int, dp: PartyDP | None, spec: SplitSpec):
    """The broker (label holder) and 1 or 2 feature parties, each with its own customers and columns, aligned by PSI."""
    table = pooled_table(SimulationConfig(setup="vertical", customers=1000, dp_mode="off"))
    rng = np.random.default_rng(3)
    broker_rows = np.sort(rng.choice(len(table), 500, replace=False))
    names = ["bank", "card"][:feature_parties]
    columns = [list(PARTY_COLUMNS)] if feature_parties == 1 else [list(PARTY_COLUMNS[:8]), list(PARTY_COLUMNS[8:])]
    party_rows = [
        rng.permutation(np.union1d(broker_rows[rng.random(500) < 0.8], rng.choice(len(table), 150))) for _ in names
    ]
    broker = table.iloc[broker_rows][[*HOLDER_COLUMNS, LABEL]].reset_index(drop=True)
    broker_x, broker_y = _encoder(broker, LABEL).transform(broker)
    alignment = align_vertical(
        [f"customer-{r}" for r in broker_rows],
        broker_y,
        [[f"customer-{r}" for r in rows] for rows in party_rows],
        0.2,
        seed=0,
    )
    joint, positions = alignment.joint()
    parties, links, raw = [], [], []
    for k, (name, cols, rows) in enumerate(zip(names, columns, party_rows)):
        frame = table.iloc[rows][cols].reset_index(drop=True)
        x = _encoder(frame, None).transform_features(frame)
        pair = alignment.parties[k]
        noise = SecureNoise() if dp else None
        parties.append(
            FeatureParty(name, x[pair.rows], pair.sides, pair.digest, spec, lr=LR, seed=k + 1, dp=dp, noise=noise)
        )
        links.append(Link(name, positions[k], alignment.holder[k].shared, alignment.holder[k].digest, spec.embedding))
        raw.append(frame.iloc[pair.rows].to_numpy(dtype=np.float32))
    holder = LabelHolder(
        "broker",
        broker_x,
        broker_y,
        joint,
        alignment.holder_sides,
        links,
        spec,
        lr=LR,
        seed=7,
        dp=dp,
        noise=SecureNoise() if dp else None,
    )
    return holder, parties, raw, broker.to_numpy(dtype=np.float32)


def _centralized(holder: LabelHolder, parties: list[FeatureParty]):
    """One model over the joined columns (the bottoms and the holder's part), SGD on the same batches."""
    bottoms = [copy.deepcopy(p.bottom) for p in parties]
    local = copy.deepcopy(holder.model)
    params = [q for m in (*bottoms, local) for q in m.parameters()]
    rng = np.random.default_rng(0)
    for _ in range(EPOCHS):
        order = rng.permutation(holder.train_index)
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            received = torch.cat(
                [b(p.x[link.positions[index]]) for b, p, link in zip(bottoms, parties, holder.links)], 1
            )
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                local(holder.x[index], received), holder.y[index]
            )
            with torch.no_grad():
                for q, g in zip(params, torch.autograd.grad(loss, params)):
                    q.sub_(LR * g)
    test = holder.test_index
    with torch.no_grad():
        received = torch.cat([b(p.x[link.positions[test]]) for b, p, link in zip(bottoms, parties, holder.links)], 1)
        probabilities = torch.sigmoid(local(holder.x[test], received)).numpy()
    return bottoms, local, probabilities


def _inspect(seen, raw, broker_raw, holder: LabelHolder) -> None:
    """The relay's view: every RecordDict it forwarded, as the bytes Flower moves, carries nothing raw."""
    words = [c.encode() for c in (*HOLDER_COLUMNS, *PARTY_COLUMNS, LABEL, "default")] + [b"customer-"]
    kinds = set()
    values = np.unique(np.concatenate([r.ravel() for r in raw] + [broker_raw.ravel()]))
    values = values[np.abs(values) > 1]  # amounts, limits, ages: 0/±1 could coincide with anything
    for direction, _party, content in seen:
        wire = b"".join(deflated_tree(content).values())
        assert not any(w in wire for w in words)
        for message in records.decode_all(content).values():
            kinds.add((direction, type(message).__name__))
            if hasattr(message, "values"):
                assert message.values.dtype == np.float32 and not np.isin(message.values, values).any()
                # no label rides along: no column of a returned gradient is a 0/1 vector
                assert not np.isin(message.values, [0.0, 1.0]).all(axis=0).any()
    assert kinds == {("to_party", "BatchRequest"), ("to_party", "Gradients"), ("to_holder", "Embeddings")}
    assert holder.y.numpy().tobytes() not in b"".join(b"".join(deflated_tree(c).values()) for _, _, c in seen)


@pytest.mark.parametrize("feature_parties", [1, 2])
def test_without_dp_the_engine_trains_the_centralized_split_model_and_relays_nothing_raw(
    engine, tmp_path, feature_parties
):
    spec = SplitSpec("mlp", (6,), 3)
    holder, parties, raw, broker_raw = _scenario(feature_parties, None, spec)
    bottoms, local, expected = _centralized(holder, parties)
    seen = []
    history, probabilities = train_and_score_on_engine(
        holder, parties, EPOCHS, BATCH, 0, tmp_path, tap=lambda d, p, c: seen.append((d, p, c)), engine=engine
    )
    assert [s.epoch for s in history] == list(range(1, EPOCHS + 1))
    for reference, party in zip(bottoms, parties):
        for a, b in zip(reference.parameters(), party.bottom.parameters()):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(local.parameters(), holder.model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    _inspect(seen, raw, broker_raw, holder)
    # bytes per epoch: every training row's request, embedding and gradient, for each feature party
    rows = len(holder.train_index)
    assert history[0].bytes_to_holder > rows * 4 * spec.embedding * feature_parties


@pytest.mark.parametrize("feature_parties", [1, 2])
def test_with_dp_each_partys_ledger_holds_exactly_its_mechanisms(engine, tmp_path, feature_parties):
    spec = SplitSpec("mlp", (6,), 3)
    z = plan_noise(3.0, 1e-5, 2 * EPOCHS)
    dp = PartyDP(z, 3.0, 1e-5, "prv", 1.0, 1.0)
    holder, parties, raw, broker_raw = _scenario(feature_parties, dp, spec)
    ledgers = {}
    for party in (holder, *parties):
        ledgers[party.name] = SQLiteLedger(tmp_path / f"ledger-{party.name}.sqlite")
        ledgers[party.name].set_budget(party.name, 3.0, 1e-5, "prv")
        ledgers[party.name].reserve(party.name, "job", [Mechanism(z, 1.0, 2 * EPOCHS)])
    seen = []
    history, _ = train_and_score_on_engine(
        holder, parties, EPOCHS, BATCH, 0, tmp_path / "work", tap=lambda d, p, c: seen.append((d, p, c)), engine=engine
    )
    for party in (holder, *parties):
        ledgers[party.name].commit(party.name, "job", party.accountant.mechanisms())
        assert ledgers[party.name].jobs(party.name)["job"].mechanisms == (Mechanism(z, 1.0, 2 * EPOCHS),)
        assert ledgers[party.name].status(party.name).spent_epsilon <= 3.0
        assert history[-1].epsilon[party.name] == pytest.approx(party.accountant.spent())
        ledgers[party.name].close()
    # the counts came back from the nodes: every training row twice per epoch, every held-out row once (scoring)
    for party, link in zip(parties, holder.links):
        train_positions = link.positions[holder.train_index]
        test_positions = link.positions[holder.test_index]
        assert (party.accountant.counts[train_positions] == 2 * EPOCHS).all()
        assert (party.accountant.counts[test_positions] == 1).all()
    assert (holder.accountant.counts[holder.train_index] == 2 * EPOCHS).all()
    _inspect(seen, raw, broker_raw, holder)


def test_a_party_with_another_alignment_is_refused_before_any_release(engine, tmp_path):
    holder, parties, _, _ = _scenario(1, None, SplitSpec("mlp", (6,), 3))
    parties[0].digest = "f" * 64  # another intersection or order than the one agreed with the broker
    seen = []
    with pytest.raises(ProtocolError, match="bank: its alignment"):
        train_and_score_on_engine(holder, parties, 1, BATCH, 0, tmp_path, tap=lambda *a: seen.append(a), engine=engine)
    assert seen == []


def test_simulate_vertical_on_the_engine_writes_the_run_folder(engine, tmp_path):
    result = simulate(
        setup="vertical",
        customers=1200,
        rounds=1,
        batch_size=256,
        out=str(tmp_path),
        epsilon=3.0,
        ray_address=engine.ray_address,
        vertical_scheme="split",  # the engine carries the split scheme's exchanges (coded: one, in process)
    )
    v = result.summary.vertical
    assert v["engine"] == "flower" and 0.0 <= v["vertical_auc_shared"] <= 1.0
    card = json.loads((result.run_dir / "model_card.json").read_text())
    for owner in ("broker", "bank"):
        ledger = SQLiteLedger(result.run_dir / f"ledger-{owner}.sqlite")
        (job,) = ledger.jobs(owner).values()
        assert job.state == "committed" and ledger.status(owner).spent_epsilon <= 3.0
        assert card["parties"][owner]["epsilon_spent"] == pytest.approx(ledger.status(owner).spent_epsilon, abs=1e-3)
        ledger.close()


def test_frozen_bottoms_on_the_engine_release_each_bank_row_once_and_return_no_gradient(engine, tmp_path):
    """--frozen-bottoms: the bank's stored releases travel in its node's state; a repeat is the same vector."""
    spec = SplitSpec("mlp", (6,), 2, frozen=True)
    z_bank, z_broker = plan_noise(3.0, 1e-5, 1), plan_noise(3.0, 1e-5, EPOCHS)
    holder, parties, _, _ = _scenario(1, PartyDP(z_broker, 3.0, 1e-5), spec)
    bank_dp = PartyDP(z_bank, 3.0, 1e-5)
    bank = parties[0]
    bank.dp, bank.accountant, bank.noise = bank_dp, bank_dp.row_accountant("bank", len(bank.x)), SecureNoise()
    seen = []
    train_and_score_on_engine(
        holder, parties, EPOCHS, BATCH, 0, tmp_path, tap=lambda d, p, c: seen.append((d, p, c)), engine=engine
    )
    assert bank.accountant.counts.tolist() == [1] * len(bank.x)  # training and held-out rows: once each
    assert holder.accountant.max_releases == EPOCHS
    messages = [m for _, _, c in seen for m in records.decode_all(c).values()]
    assert not any(type(m).__name__ == "Gradients" for m in messages)
    requests = [m for m in messages if type(m).__name__ == "BatchRequest" and m.training]
    embeddings = [m for m in messages if type(m).__name__ == "Embeddings"]
    first: dict[int, np.ndarray] = {}
    for request, answer in zip(requests, embeddings):  # training batches: request then answer, in order
        for position, row in zip(request.positions.tolist(), answer.values):
            if position in first:
                np.testing.assert_array_equal(first[position], row)  # the stored release, not a new one
            first[position] = row
    assert len(first) == len(holder.train_index)
