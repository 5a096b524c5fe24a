"""The credit-risk metrics and their bootstrap intervals, against hand-computed values."""

import math

import numpy as np
import pytest

from fedsilo.peers.evaluation import METRICS, binary_metrics, bootstrap, calibration_curve, interval, roc_auc

# Scores from the highest down: 0.9 (event), 0.8 (event and non-event: a tie), 0.4, 0.35 (event), 0.1.
Y = np.array([0, 0, 1, 1, 0, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.8, 0.9])


def test_metrics_of_a_tiny_vector_by_hand():
    m = binary_metrics(Y, P)
    # pairs (event, non-event) ranked right: 0.9 beats all 3; 0.8 ties one (½) and beats 2; 0.35 beats 0.1.
    assert m["roc_auc"] == pytest.approx(6.5 / 9)
    assert m["roc_auc"] == pytest.approx(roc_auc(Y, P))
    assert m["gini"] == pytest.approx(2 * 6.5 / 9 - 1)
    # thresholds 0.9, 0.8, 0.4, 0.35: recall steps of 1/3 at precision 1/1, 2/3, 3/5
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # TPR − FPR at each threshold: 1/3, 2/3 − 1/3, 2/3 − 2/3, 1 − 2/3, 0
    assert m["ks"] == pytest.approx(1 / 3)
    assert m["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2 + 0.8**2 + 0.1**2) / 6)
    assert m["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8) + math.log(0.2) + math.log(0.9)) / 6
    )


def test_perfect_and_reversed_ranking():
    y = np.array([0, 0, 1, 1])
    assert binary_metrics(y, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(
        {
            "roc_auc": 1.0,
            "pr_auc": 1.0,
            "ks": 1.0,
            "gini": 1.0,
            "brier": (0.01 + 0.04 + 0.04 + 0.01) / 4,
            "log_loss": -(math.log(0.9) + math.log(0.8) * 2 + math.log(0.9)) / 4,
        }
    )
    reversed_ = binary_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert reversed_["roc_auc"] == 0.0 and reversed_["gini"] == -1.0 and reversed_["ks"] == pytest.approx(1.0)


def test_one_class_leaves_ranking_metrics_undefined():
    m = binary_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]))
    assert all(math.isnan(m[k]) for k in ("roc_auc", "pr_auc", "ks", "gini"))
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.09 + 0.16) / 4)


def _data(n, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    return y, 1 / (1 + np.exp(-(1.2 * y + rng.normal(size=n) - 1.8)))


def test_interval_contains_the_point_and_narrows_with_more_rows():
    widths = []
    y_all, p_all = _data(4000)
    for n in (250, 4000):  # the first 250 rows, then all
        y, p = y_all[:n], p_all[:n]
        b = bootstrap(y, {"model": p}, resamples=400, seed=0)
        assert set(b.point["model"]) == set(METRICS) and b.samples["model"]["ks"].shape == (400,)
        for metric in METRICS:
            ci = interval(b.point["model"][metric], b.samples["model"][metric])
            assert ci["low"] <= ci["value"] <= ci["high"], metric
        auc = interval(b.point["model"]["roc_auc"], b.samples["model"]["roc_auc"])
        widths.append(auc["high"] - auc["low"])
    assert widths[1] < widths[0] / 2  # ~ 1/√n: 4 times narrower in theory


def test_resamples_are_shared_by_models_and_calls():
    y, p = _data(500)
    one = bootstrap(y, {"a": p}, resamples=50, seed=3)
    two = bootstrap(y, {"b": p**2, "a": p}, resamples=50, seed=3, only=("roc_auc",))
    assert np.array_equal(one.samples["a"]["roc_auc"], two.samples["a"]["roc_auc"])
    # p² ranks the rows as p does: identical AUC on every resample, so their paired difference is exactly 0
    assert np.array_equal(two.samples["a"]["roc_auc"], two.samples["b"]["roc_auc"])


def test_calibration_curve_bins_by_predicted_probability():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    assert calibration_curve(y, p, bins=2) == [
        {"mean_predicted": pytest.approx(0.2), "observed_rate": pytest.approx(1 / 3), "rows": 3},
        {"mean_predicted": pytest.approx(0.7), "observed_rate": pytest.approx(2 / 3), "rows": 3},
    ]
