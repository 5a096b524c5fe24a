"""`fedsilo simulate --model gbdt` end to end (no Ray: the banks run in process), then `fedsilo score`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _loans import write_loans

from fedsilo.cli import main
from fedsilo.errors import ConfigError
from fedsilo.peers.gbdt import GBDTModel
from fedsilo.privacy.ledger import SQLiteLedger


@pytest.fixture(scope="module")
def gbdt_run(tmp_path_factory):
    import fedsilo

    root = tmp_path_factory.mktemp("gbdt-run")
    data = root / "loans.csv"
    write_loans(data)
    result = fedsilo.simulate(
        data=str(data),
        label="default",
        id_column="customer_id",
        banks=4,
        model="gbdt",
        trees=3,
        depth=2,
        bins=8,
        features_per_tree=2,
        lr=0.3,
        dp_mode="distributed",
        epsilon=3.0,
        compare="centralized,local",
        out=str(root / "runs"),
    )
    return result, data


def test_the_run_folder_holds_the_model_the_card_and_each_banks_ledger(gbdt_run) -> None:
    result, _ = gbdt_run
    folder = result.run_dir
    card = json.loads((folder / "model_card.json").read_text())
    assert card["job"]["model"] == {
        "kind": "gbdt",
        "trees": 3,
        "depth": 2,
        "bins": 8,
        "features_per_tree": 2,
    }
    assert card["privacy"]["feature_groups_per_tree"] == 2 < card["privacy"]["feature_groups"]
    assert card["artifacts"]["model"]["file"] == "model.json"
    assert card["artifacts"]["model"]["format"] == "fedsilo.gbdt"
    privacy = card["privacy"]
    assert privacy["mode"] == "distributed" and privacy["releases_planned"] == 3 * 3
    ledger = SQLiteLedger(folder / "ledger.sqlite")
    try:
        assert sorted(ledger.sources()) == [p["name"] for p in card["participants"]]
        for participant in card["participants"]:
            status = ledger.status(participant["name"])
            assert 0 < status.spent_epsilon <= 3.0
            (record,) = ledger.jobs(participant["name"]).values()
            assert participant["releases"] == len(record.mechanisms) > 0 and record.state == "committed"
    finally:
        ledger.close()
    assert result.summary.epsilon_max <= 3.0
    assert result.summary.centralized_auc is not None and result.summary.local_auc_mean is not None
    assert len(GBDTModel.load(folder / "model.json").trees) == 3
    assert result.paths.model == folder / "model.json" and result.paths.model.is_file()


def test_fedsilo_score_scores_with_the_gbdt_model_as_the_model_file_does(gbdt_run, tmp_path, capsys) -> None:
    result, data = gbdt_run
    out = tmp_path / "scores.csv"
    assert main(["score", str(result.run_dir), "--data", str(data), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    rows = pd.read_csv(data)
    assert list(scores.columns) == ["customer_id", "score"] and len(scores) == len(rows)
    from fedsilo.peers.data.encoding import TabularEncoder

    encoder = TabularEncoder.load(result.run_dir / "encoder.json")
    model = GBDTModel.load(result.run_dir / "model.json")
    expected = model.predict_proba(encoder.transform_features(rows).astype(np.float64))
    assert np.allclose(scores["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert 0 < expected.min() and expected.max() < 1


def test_fedsilo_export_writes_a_booster_that_scores_as_fedsilo_score(gbdt_run, tmp_path, capsys) -> None:
    import xgboost

    result, data = gbdt_run
    booster_file, features, scores = tmp_path / "model.xgb.json", tmp_path / "bins.csv", tmp_path / "scores.csv"
    args = ["export", str(result.run_dir), "--xgboost", str(booster_file), "--data", str(data)]
    assert main([*args, "--features-out", str(features)]) == 0
    assert main(["score", str(result.run_dir), "--data", str(data), "--out", str(scores)]) == 0
    table = pd.read_csv(features)
    assert table.columns[0] == "customer_id"  # the run's id column, then one bin column per feature group
    booster = xgboost.Booster(model_file=str(booster_file))
    assert list(table.columns[1:]) == booster.feature_names
    predicted = booster.predict(xgboost.DMatrix(table.drop(columns="customer_id")))
    assert np.allclose(predicted, pd.read_csv(scores)["score"].to_numpy(), rtol=0, atol=1e-5)
    assert main(args) == 2  # --data without --features-out: refused, nothing half-written
    assert "go together" in capsys.readouterr().err
    model_file = result.run_dir / "model.json"
    original = model_file.read_text()
    model_file.write_text(original.replace("0.", "0.1", 1))  # one digit altered after the run
    try:
        assert main(["export", str(result.run_dir), "--xgboost", str(tmp_path / "other.json")]) == 2
        assert "altered" in capsys.readouterr().err and not (tmp_path / "other.json").exists()
    finally:
        model_file.write_text(original)


def test_gbdt_settings_are_checked() -> None:
    from fedsilo.simulations.config import SimulationConfig

    with pytest.raises(ConfigError, match="--depth"):
        SimulationConfig(model="gbdt", depth=0)
    with pytest.raises(ConfigError, match="--bins"):
        SimulationConfig(model="gbdt", bins=1)
    with pytest.raises(ConfigError, match="transfer"):
        SimulationConfig(model="gbdt", setup="transfer")
