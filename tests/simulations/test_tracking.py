"""`--mlflow`: a run logged to a real local MLflow store (SQLite, no server), read back with MLflow's client."""

from __future__ import annotations

import json

import pytest

from fedsilo.simulations.tracking import store

mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow
def test_simulate_logs_params_per_round_metrics_epsilon_and_artefacts(tiny_run):
    result, _ = tiny_run
    uri, _ = store(str(result.run_dir.parent.parent / "mlruns"))
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("fedsilo")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == result.run_dir.name and run.info.status == "FINISHED"
    params = run.data.params
    assert params["banks"] == "2" and params["rounds"] == "1" and params["label"] == "default"
    assert params["epsilon"] == "3.0" and params["id_column"] == "customer_id"
    metrics = json.loads(result.paths.metrics.read_text())["rounds"]
    [auc] = client.get_metric_history(run.info.run_id, "auc")
    assert (auc.step, auc.value) == (1, pytest.approx(metrics[0]["pooled_test"]["auc"]))
    for bank, epsilon in result.epsilon.items():
        [per_round] = client.get_metric_history(run.info.run_id, f"epsilon.{bank}")
        assert per_round.step == 1 and per_round.value == pytest.approx(epsilon, rel=1e-6) and 0 < epsilon <= 3.0
        assert run.data.metrics[f"epsilon_spent.{bank}"] == pytest.approx(epsilon)
    assert run.data.metrics["final_auc"] == pytest.approx(result.final_auc, abs=1e-4)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "encoder.json", "model_card.json", "metrics.json", "rounds.png"} <= files


def test_store_defaults_to_a_local_sqlite_store_and_passes_uris_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri, artifacts = store(None)
    assert (
        uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        and artifacts == (tmp_path / "mlruns" / "artifacts").as_uri()
    )
    assert store("http://tracking:5000") == ("http://tracking:5000", None)


def test_without_mlflow_installed_the_flag_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    import importlib.util

    from fedsilo.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(["simulate", "--mlflow", "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    assert "pip install 'fedsilo[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
