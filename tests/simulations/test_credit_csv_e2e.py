"""A bank-style credit CSV runs without preprocessing: `fedsilo simulate --data --label --positive --id-column`.

The table has what bank exports have: a text outcome ('good'/'bad', 5 % bad), a text
customer id, an R-style `rownames` column, text categoricals with missing values and a
numeric column with missing values, 1,000 rows. One engine run (Ray) serves every
assertion below.
"""

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pandas as pd
import pytest

from fedsilo.cli import main

pytestmark = pytest.mark.slow
ROWS = 1000


def credit_csv(path, rows=ROWS, seed=3):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=rows)
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, rows + 1),
            "ID": [f"C{100000 + i}" for i in rng.permutation(rows)],
            "age": rng.integers(21, 70, rows),
            "income": np.round(np.exp(10.5 - 0.5 * risk + 0.3 * rng.normal(size=rows)), 2),
            "housing": rng.choice(["own", "rent", "free"], rows),
            "purpose": rng.choice(["car", "home", "education", "business"], rows),
            "late_payments": rng.poisson(np.exp(0.8 * risk - 0.5)),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "income"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "housing"] = None
    bad = rng.random(rows) < 1 / (1 + np.exp(-(-3.9 + 1.6 * risk)))
    frame["status"] = np.where(bad, "bad", "good")
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("credit")
    frame = credit_csv(tmp / "credit.csv")
    assert 0.03 < (frame["status"] == "bad").mean() < 0.08 and frame.isna().any().sum() == 2
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(
            [
                "simulate",
                "--data",
                str(tmp / "credit.csv"),
                "--label",
                "status",
                "--positive",
                "bad",
                "--id-column",
                "ID",
                "--banks",
                "3",
                "--rounds",
                "2",
                "--json",
                "--quiet",
                "--out",
                str(tmp / "runs"),
            ]
        )
    assert code == 0, buffer.getvalue()
    folder = next((tmp / "runs").iterdir())
    return buffer.getvalue(), folder, frame


def test_card_records_the_label_mapping_and_the_columns_left_out(run):
    _, folder, _ = run
    data = json.loads((folder / "model_card.json").read_text())["data"]
    assert data["label_mapping"] == {"column": "status", "1": "bad", "0": "good", "rule": "--positive bad"}
    assert set(data["columns_left_out"]) == {"ID", "rownames"}
    assert not any(f.startswith(("ID", "rownames")) for f in data["features"])
    assert "income__missing" in data["features"] and "housing=__missing__" in data["features"]


def test_events_are_the_positive_value(run):
    _, folder, frame = run
    card = json.loads((folder / "model_card.json").read_text())
    held_out = card["metrics"]["pooled_test"]
    bad_rate = (frame["status"] == "bad").mean()
    assert held_out["positives"] / held_out["rows"] == pytest.approx(bad_rate, abs=0.03)


def test_metrics_json_and_card_hold_every_metric_with_an_interval(run):
    _, folder, _ = run
    final = json.loads((folder / "metrics.json").read_text())["final_pooled_test"]
    card = json.loads((folder / "model_card.json").read_text())["metrics"]["pooled_test"]
    assert final["rows"] == card["rows"] == 201 and final["bootstrap"]["resamples"] == 1000
    for metric in ("roc_auc", "pr_auc", "ks", "gini", "brier", "log_loss"):
        value = final["federated"][metric]
        assert value["low"] <= value["value"] <= value["high"], metric
        assert card["federated"][metric] == value
    assert set(final["local_only"]) == {"bank-00000", "bank-00001", "bank-00002"}
    differences = final["roc_auc_differences"]
    assert set(differences) == {
        "federated_minus_centralized",
        "federated_minus_best_alone",
        "federated_minus_mean_alone",
    }
    assert sum(b["rows"] for b in final["calibration"]["federated"]) == 201


def test_plots_and_console_show_the_intervals(run):
    output, folder, _ = run
    for plot in ("calibration.png", "comparison.png", "rounds.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "federated ROC-AUC (all banks' held-out rows): " in output and "(95% CI " in output
    for name in ("PR-AUC", "KS", "Gini", "Brier", "log loss", "federated − best bank alone"):
        assert name in output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["scores"]["federated"]["roc_auc"]["value"] == pytest.approx(summary["final_auc"], abs=1e-4)


def test_the_same_file_scores_as_it_was_given(run, tmp_path):
    """The run's own CSV scores without preprocessing: the columns training left out are ignored, not refused."""
    _, folder, frame = run
    source = tmp_path / "to_score.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scores.csv"
    assert main(["score", str(folder), "--data", str(source), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["ID", "score"] and len(scores) == len(frame)
    assert scores["ID"].tolist() == frame["ID"].tolist() and scores["score"].between(0, 1).all()
