"""`fedsilo simulate --setup vertical --model gbdt`: the broker boosts on its columns and the bank's ε-DP codes."""

import json

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.peers.vertical.messages import BatchRequest
from fedsilo.peers.vertical.parties import SplitSpec
from fedsilo.privacy.accounting import PureMechanism
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.simulations.api import simulate
from fedsilo.simulations.config import SimulationConfig, build_config
from fedsilo.simulations.scoring import load_run
from fedsilo.simulations.vertical import DEFAULT_OVERLAP, build_parties, pooled_table
from fedsilo.simulations.vertical_gbdt import CODE_GROUP, code_layout, coded_parties, score_with_codes, train_coded
from fedsilo.strategies.gbdt import BinLayout, FeatureGroup, side_by_side
from fedsilo.strategies.gbdt.layout import NUMERIC, ONE_HOT


def test_the_vertical_gbdt_run_writes_the_broker_ensemble_and_the_bank_ledger_holds_exactly_one_pure_release(tmp_path):
    result = simulate(setup="vertical", model="gbdt", customers=1600, trees=3, depth=2, epsilon=3.0, out=str(tmp_path))
    run, v = result.run_dir, result.summary.vertical
    assert v["model"] == "gbdt" and v["trees"] == 3
    for key in ("vertical_auc_shared", "alone_auc_shared", "centralized_auc_shared"):
        assert 0.0 <= v[key] <= 1.0
    bank = SQLiteLedger(run / "ledger-bank.sqlite")
    (job,) = bank.jobs("bank").values()
    assert job.mechanisms == (PureMechanism(3.0, 1),)  # the codes' one k-RR release, nothing else
    assert bank.status("bank").spent_epsilon == pytest.approx(3.0)
    broker = SQLiteLedger(run / "ledger-broker.sqlite")
    (job,) = broker.jobs("broker").values()
    assert job.mechanisms == () and broker.status("broker").spent_epsilon == 0.0
    data = json.loads((run / "part-broker.json").read_text())
    assert data["owner"] == "broker" and data["code_group"] == CODE_GROUP
    model = GBDTModel.from_dict(data)  # the fedsilo.gbdt loader reads the broker's part
    assert len(model.trees) == 3 and model.layout.groups[-1].name == CODE_GROUP
    card = json.loads((run / "model_card.json").read_text())
    assert card["model"]["kind"] == "gbdt" and card["parties"]["bank"]["epsilon_spent"] == pytest.approx(3.0)
    assert not list(run.glob("part-bank*"))  # the bank's rule is fixed: it has no trained part
    with pytest.raises(ConfigError, match="is a vertical run: each party keeps its own part"):
        load_run(run)  # fedsilo score's loader: the broker's part alone cannot score (it needs the bank's code)


def _parties(seed=0):
    config = SimulationConfig(setup="vertical", model="gbdt", customers=1600, trees=4, depth=2, seed=seed)
    parties = build_parties(pooled_table(config), config, SplitSpec("logreg", (), 4), None, None, DEFAULT_OVERLAP)
    return config, parties


def test_the_bank_receives_the_same_bytes_whatever_the_broker_labels():
    """Attacker: the bank, with every frame it receives, in two runs whose labels differ (all flipped)."""
    config, parties = _parties()
    link, holder = parties.holder.links[0], parties.holder
    seen: dict[str, list[bytes]] = {"true": [], "flipped": []}
    models = {}
    for which in ("true", "flipped"):
        if which == "flipped":
            holder.y = 1 - holder.y
        bank, receiver = coded_parties(parties, config)
        tap = lambda direction, name, frame, w=which: seen[w].append(frame) if direction == "to_party" else None  # noqa: E731
        models[which], _, _ = train_coded(parties, bank, receiver, config, tap)
    assert [t.to_dict() for t in models["true"].trees] != [t.to_dict() for t in models["flipped"].trees]
    rebuilt = [
        BatchRequest(1, link.positions[holder.train_index], True).to_bytes(),
        BatchRequest(2, link.positions[holder.test_index], False).to_bytes(),
    ]
    assert seen["true"] == seen["flipped"] == rebuilt  # positions and sides only: no gradient, no label, no tree


def test_the_code_is_one_ordinal_group_after_the_broker_columns():
    config, parties = _parties()
    layout = code_layout(parties, config.bins)
    own = parties.encoders["broker"].n_features
    code = layout.groups[-1]
    assert code.kind == ONE_HOT and code.columns == (own, own + 1, own + 2, own + 3) and code.n_bins == 5
    rows = np.hstack([np.zeros((4, own)), np.eye(4)])
    assert layout.bin_rows(rows)[:, -1].tolist() == [0, 1, 2, 3]  # "bin <= t" cuts the codes in their order


def test_side_by_side_shifts_the_right_layout_and_bins_as_each_alone():
    left = BinLayout((FeatureGroup("a", NUMERIC, (0,), (0.0,)),), 1)
    right = BinLayout((FeatureGroup("b", NUMERIC, (1,), (-1.0, 1.0)), FeatureGroup("c", ONE_HOT, (0,))), 2)
    both = side_by_side(left, right)
    assert both.n_features == 3 and [g.columns for g in both.groups] == [(0,), (2,), (1,)]
    x_left, x_right = np.array([[-1.0], [2.0]]), np.array([[1.0, 0.5], [0.0, -3.0]])
    expected = np.hstack([left.bin_rows(x_left), right.bin_rows(x_right)])
    assert np.array_equal(both.bin_rows(np.hstack([x_left, x_right])), expected)


def test_vertical_gbdt_settings_are_refused_outside_the_coded_scheme():
    with pytest.raises(ConfigError, match="use --vertical-scheme coded"):
        build_config(None, {"setup": "vertical", "model": "gbdt", "vertical_scheme": "split"})
    assert build_config(None, {"setup": "vertical", "model": "gbdt"}).model == "gbdt"


def test_secureboost_baseline_sums_are_exact_and_its_trees_are_the_plaintext_ones():
    """bench/_secureboost.py (the decision's evidence; phe is in the test extra): decrypted per-bin sums equal
    the plaintext fixed-point sums exactly (checked at every level, AssertionError otherwise), so its trees and
    scores are the centralized GBDT's on the union of the columns."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from _secureboost import SecureBoost

    from fedsilo.peers.gbdt import layout_from_encoder
    from fedsilo.simulations.vertical_gbdt import boost_settings, fit, joined_layout

    config, parties = _parties()
    holder = parties.holder
    joined = np.hstack([parties.broker_x[parties.joint], parties.bank_x_aligned[holder.links[0].positions]])
    layout = joined_layout(parties, config.bins)
    own_layout = layout_from_encoder(parties.encoders["broker"], config.bins)
    bank_layout = layout_from_encoder(parties.encoders["bank"], config.bins)
    own = len(own_layout.groups)
    bins = layout.bin_rows(joined)
    train, test = holder.train_index[:120], holder.test_index
    y = holder.y.numpy().astype(np.float64)
    settings = replace(boost_settings(config), trees=2, features_per_tree=0)
    sb = SecureBoost(bins[train, :own], own_layout, bins[train, own:], bank_layout, layout, key_bits=512)
    sb.fit(y[train], settings.trees, settings.params, settings.learning_rate)
    plain = fit(joined[train], y[train], layout, settings)
    assert [t.to_dict() for t in sb.trees] == [t.to_dict() for t in plain.trees]
    assert np.array_equal(sb.predict_margin(bins[test, :own], bins[test, own:]), plain.predict_margin(joined[test]))
    assert sb.costs.decryptions > 0 and sb.bank.records  # the bank's splits went through its lookup table


def test_a_broker_that_asks_again_for_codes_gets_the_same_ones_and_the_bank_spends_nothing_more():
    """Attacker: the broker, re-asking for held-out customers' codes to average the randomized response away."""
    config, parties = _parties()
    bank, receiver = coded_parties(parties, config)
    model, scores, _ = train_coded(parties, bank, receiver, config)
    holder, link = parties.holder, parties.holder.links[0]
    own = parties.broker_x[parties.joint][holder.test_index]
    again, _ = score_with_codes(model, own, bank, receiver, 3, link.positions[holder.test_index])
    assert np.array_equal(again, scores)
    assert bank.mechanisms() == [PureMechanism(3.0, 1)] and bank.spent() == pytest.approx(3.0)
