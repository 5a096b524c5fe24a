"""The run's final scores: intervals, paired differences, the calibration plot and error bars."""

import numpy as np
import pytest

from fedsilo.simulations.report.plots import plot_calibration, plot_comparison
from fedsilo.simulations.report.scores import final_scores, summary_lines

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.1).astype(int)
    signal = y + rng.normal(size=600)
    fed = 1 / (1 + np.exp(-(signal - 2.5)))
    weak = rng.random(600)  # no skill
    return final_scores(
        y, fed, centralized=fed, local={"bank-00000": weak, "bank-00001": fed**2}, seed=0, resamples=300
    )


def test_every_interval_contains_its_point(scores):
    assert scores["rows"] == 600 and scores["bootstrap"]["resamples"] == 300
    for name in ("federated", "centralized"):
        for metric, value in scores[name].items():
            assert value["low"] <= value["value"] <= value["high"], (name, metric)


def test_paired_differences(scores):
    diffs = scores["roc_auc_differences"]
    # the centralized stand-in is the federated model itself, and bank-00001 ranks rows as it does
    assert diffs["federated_minus_centralized"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert diffs["federated_minus_best_alone"] == {"bank": "bank-00001", "value": 0.0, "low": 0.0, "high": 0.0}
    mean_alone = (scores["local_only"]["bank-00000"]["roc_auc"]["value"] + scores["federated"]["roc_auc"]["value"]) / 2
    assert scores["local_only_mean"]["roc_auc"]["value"] == pytest.approx(mean_alone)
    assert diffs["federated_minus_mean_alone"]["low"] > 0  # the weak bank is clearly worse


def test_console_lines_show_intervals(scores):
    text = "\n".join(summary_lines(scores))
    assert "on 600 held-out rows" in text and "KS" in text and "95% CI" in text
    assert "federated − best bank alone (bank-00001): +0.000 (95% CI +0.000 to +0.000)" in text


def test_calibration_and_comparison_plots(scores, tmp_path):
    plot_calibration(tmp_path / "calibration.png", scores["calibration"])
    intervals = {"federated": (0.7, 0.8), "bank-00000": (0.5, 0.7)}
    plot_comparison(tmp_path / "comparison.png", 0.75, None, {"bank-00000": 0.6}, intervals)
    for name in ("calibration.png", "comparison.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert [b["rows"] for b in scores["calibration"]["federated"]] == [60] * 10
