"""`fedsilo simulate --model gbdt --engine flower`: the boosting app pair on Flower's Simulation Engine.

One local Ray cluster serves both engine runs (no DP, then distributed DP), each with one
actor for the three banks; the in-process
run (the default engine of --model gbdt) is the reference. Without DP the sums are exact
(SecAgg+'s deterministic rounding, the same configurations), so both engines must grow the
very same trees; with DP each bank's ledger must hold exactly the planned releases, which
is what the bank itself recorded (its own accountant, in its node's state).
"""

from __future__ import annotations

import json
import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest
from _loans import write_loans

from fedsilo.cli import main
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.gbdt import GBDTModel
from fedsilo.privacy.ledger import SQLiteLedger
from fedsilo.simulations.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow
TREES, DEPTH = 3, 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import fedsilo

    root = tmp_path_factory.mktemp("gbdt-engine")
    data = root / "loans.csv"
    write_loans(data)
    common = dict(
        data=str(data), label="default", id_column="customer_id", banks=3, model="gbdt", trees=TREES, depth=DEPTH,
        bins=8, lr=0.3, seed=11, compare="local", secagg_dropout_fraction=0.0, secagg_collusion_fraction=0.0,
    )  # fmt: skip
    temp_dir = tempfile.mkdtemp(prefix="fsray-", dir="/tmp")
    cluster = LocalRayCluster(cpus=2, temp_dir=temp_dir)
    try:
        cluster.__enter__()
        # one actor (2 CPUs) serves the three banks: less start-up on 2 cores, and one worker process then holds
        # every bank's binned table (`binned_rows`), which a mixed-up cache key would show as different trees
        on_ray = dict(engine="flower", ray_address=cluster.address, cpus_per_bank=2.0)
        out = {
            "engine": fedsilo.simulate(dp_mode="off", out=str(root / "engine"), **on_ray, **common),
            "dp": fedsilo.simulate(dp_mode="distributed", epsilon=3.0, out=str(root / "dp"), **on_ray, **common),
            "random": fedsilo.simulate(
                dp_mode="distributed", epsilon=3.0, splits="random", out=str(root / "random"), **on_ray, **common
            ),
        }
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
    out["in-process"] = fedsilo.simulate(dp_mode="off", out=str(root / "in-process"), **common)  # the default engine
    return out, data


def _json(run, name):
    return json.loads((run.run_dir / name).read_text())


def test_without_dp_the_engine_grows_exactly_the_in_process_trees_and_writes_the_same_report(runs) -> None:
    out, _ = runs
    engine, local = out["engine"], out["in-process"]
    assert _json(engine, "model.json") == _json(local, "model.json")
    assert len(_json(engine, "model.json")["trees"]) == TREES
    assert engine.summary.final_auc == local.summary.final_auc
    assert engine.summary.scores == local.summary.scores
    engine_metrics, local_metrics = _json(engine, "metrics.json"), _json(local, "metrics.json")
    assert engine_metrics["trees"] == local_metrics["trees"]  # the learning curve, tree by tree
    assert [(r["kind"], r["shape"], r["banks"]) for r in engine_metrics["releases"]] == [
        (r["kind"], r["shape"], r["banks"]) for r in local_metrics["releases"]
    ]
    assert len(engine_metrics["releases"]) == TREES * (DEPTH + 1)
    engine_card, local_card = _json(engine, "model_card.json"), _json(local, "model_card.json")
    assert engine_card["job"]["engine"] == "flower" and local_card["job"]["engine"] == "in-process"
    assert local_card["job"]["config"]["engine"] is None  # not given: the default of --model gbdt ran
    assert engine_card["metrics"]["pooled_test"] == local_card["metrics"]["pooled_test"]
    assert [p["name"] for p in engine_card["participants"]] == ["bank-00000", "bank-00001", "bank-00002"]
    assert engine_card["participants"] == local_card["participants"]
    for run in (engine, local):
        assert {p.name for p in run.run_dir.iterdir()} >= {"model.json", "encoder.json", "model_card.json"}


def test_with_dp_each_banks_ledger_holds_exactly_the_planned_releases_it_recorded(runs) -> None:
    out, _ = runs
    run = out["dp"]
    card = _json(run, "model_card.json")
    planned = card["privacy"]["releases_planned"]
    assert planned == TREES * (DEPTH + 1)
    releases = _json(run, "metrics.json")["releases"]
    assert len(releases) == planned and all(r["banks"] == 3 and not r["aborted"] for r in releases)
    ledger = SQLiteLedger(run.run_dir / "ledger.sqlite")
    try:
        assert sorted(ledger.sources()) == ["bank-00000", "bank-00001", "bank-00002"]
        for participant in card["participants"]:
            (record,) = ledger.jobs(participant["name"]).values()
            assert record.state == "committed" and len(record.mechanisms) == planned == participant["releases"]
            assert 0 < ledger.status(participant["name"]).spent_epsilon <= 3.0
    finally:
        ledger.close()


def test_random_splits_on_the_engine_release_only_the_leaves_one_release_per_tree(runs) -> None:
    """The app pair the daemons run, with `splits = "random"`: the banks are asked for leaf totals only."""
    out, _ = runs
    run = out["random"]
    card = _json(run, "model_card.json")
    assert card["job"]["model"]["splits"] == "random" and card["privacy"]["releases_planned"] == TREES
    releases = _json(run, "metrics.json")["releases"]
    assert [r["kind"] for r in releases] == ["leaves"] * TREES and all(r["banks"] == 3 for r in releases)
    ledger = SQLiteLedger(run.run_dir / "ledger.sqlite")
    try:
        for participant in card["participants"]:
            (record,) = ledger.jobs(participant["name"]).values()
            assert record.state == "committed" and len(record.mechanisms) == TREES == participant["releases"]
    finally:
        ledger.close()
    assert all(len(tree.leaves()) == 2**DEPTH for tree in GBDTModel.load(run.run_dir / "model.json").trees)


def test_fedsilo_score_scores_with_the_engines_model_file(runs, tmp_path) -> None:
    out, data = runs
    run = out["dp"]
    scores_path = tmp_path / "scores.csv"
    assert main(["score", str(run.run_dir), "--data", str(data), "--out", str(scores_path)]) == 0
    rows = pd.read_csv(data)
    encoder = TabularEncoder.load(run.run_dir / "encoder.json")
    expected = GBDTModel.load(run.run_dir / "model.json").predict_proba(
        encoder.transform_features(rows).astype(np.float64)
    )
    assert np.allclose(pd.read_csv(scores_path)["score"].to_numpy(), expected, rtol=0, atol=1e-12)
