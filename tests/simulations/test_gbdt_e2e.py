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
        "splits": "histogram",
    }
    assert card["job"]["engine"] == "in-process"  # the default of --model gbdt
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


def test_random_splits_spend_one_release_per_tree_in_each_banks_ledger(tmp_path) -> None:
    import fedsilo

    write_loans(tmp_path / "loans.csv")
    result = fedsilo.simulate(
        data=str(tmp_path / "loans.csv"),
        label="default",
        id_column="customer_id",
        banks=4,
        model="gbdt",
        trees=5,
        depth=3,
        splits="random",
        dp_mode="distributed",
        epsilon=3.0,
        compare="none",
        out=str(tmp_path / "runs"),
    )
    card = json.loads((result.run_dir / "model_card.json").read_text())
    assert card["job"]["model"]["splits"] == "random" and card["privacy"]["releases_planned"] == 5
    assert card["privacy"]["mechanism"].startswith("Gaussian mechanism on each tree's leaf totals")
    ledger = SQLiteLedger(result.run_dir / "ledger.sqlite")
    try:
        for participant in card["participants"]:
            (record,) = ledger.jobs(participant["name"]).values()
            assert record.state == "committed" and sum(m.steps for m in record.mechanisms) == 5
            assert 2.9 < ledger.status(participant["name"]).spent_epsilon <= 3.0
    finally:
        ledger.close()
    trees = GBDTModel.load(result.run_dir / "model.json").trees
    assert len(trees) == 5 and all(len(t.leaves()) == 8 for t in trees)


def test_gbdt_settings_are_checked() -> None:
    from fedsilo.simulations.config import SimulationConfig

    with pytest.raises(ConfigError, match="--depth"):
        SimulationConfig(model="gbdt", depth=0)
    with pytest.raises(ConfigError, match="--bins"):
        SimulationConfig(model="gbdt", bins=1)
    with pytest.raises(ConfigError, match="transfer"):
        SimulationConfig(model="gbdt", setup="transfer")
    with pytest.raises(ConfigError, match="--splits is histogram or random"):
        SimulationConfig(model="gbdt", splits="greedy")
    with pytest.raises(ConfigError, match="--splits applies to --model gbdt only"):
        SimulationConfig(model="mlp", splits="random")
    with pytest.raises(ConfigError, match="--splits random is the horizontal setup's"):
        SimulationConfig(model="gbdt", setup="vertical", splits="random")


def test_the_engine_defaults_to_in_process_for_gbdt_and_flower_elsewhere() -> None:
    from fedsilo.simulations.config import SimulationConfig

    assert SimulationConfig(model="gbdt").runs_on == "in-process"
    assert SimulationConfig(model="gbdt", engine="flower").runs_on == "flower"
    assert SimulationConfig(model="mlp").runs_on == "flower"
    assert SimulationConfig(setup="vertical", dp_mode="off").runs_on == "flower"
    with pytest.raises(ConfigError, match="--engine in-process applies to --setup vertical and --model gbdt"):
        SimulationConfig(model="mlp", engine="in-process")
    with pytest.raises(ConfigError, match="--engine 'ray' is unknown"):
        SimulationConfig(model="gbdt", engine="ray")


def test_the_engine_without_secure_aggregation_is_refused_before_anything_is_written(tmp_path) -> None:
    import fedsilo

    with pytest.raises(ConfigError, match="--engine flower runs the peers' boosting app pair"):
        fedsilo.simulate(
            model="gbdt", engine="flower", secure_aggregation="off", dp_mode="off", banks=3, out=str(tmp_path / "runs")
        )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_only_the_simulation_answers_which_bank_a_node_is_and_what_it_recorded() -> None:
    """`query.gbdtbank` (bank index, releases recorded) is the harness's: a deployed peer's ClientApp refuses it."""
    from flwr.app import Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedsilo.peers.client.app import app as deployed_app
    from fedsilo.peers.gbdt.job import GBDTJob
    from fedsilo.peers.job import JobConfig
    from fedsilo.simulations.gbdt_engine import FACTS_KEY, FACTS_QUERY, simulation_client_app

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    run_config = {
        **JobConfig(label="y", encoder_path="", job_id="j", peers=3).to_run_config(),
        **GBDTJob(session="j", banks=3, row_bound=10).to_run_config(),
    }

    def ask(app):
        msg = Message(RecordDict(), dst_node_id=5, message_type=f"query.{FACTS_QUERY}")
        msg.metadata.__dict__["_src_node_id"] = 1
        context = Context(
            run_id=1, node_id=5, node_config={"partition-id": 2}, state=RecordDict(), run_config=run_config
        )
        return app(msg, context)

    reply = ask(simulation_client_app())
    assert not reply.has_error()
    assert dict(reply.content.config_records[FACTS_KEY]) == {"index": 2, "spent": 0}
    with pytest.raises(ValueError, match="No query function registered with name 'gbdtbank'"):
        ask(deployed_app)
