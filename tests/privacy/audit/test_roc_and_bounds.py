"""ROC figures and the DP advantage bound: exact values on small hand-made cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from fedsilo.errors import DataError
from fedsilo.privacy.audit.membership import calibrated_scores, confidence, loss_scores
from fedsilo.privacy.audit.roc import advantage_bound, roc


def test_perfect_separation_random_and_ties():
    perfect = roc([3.0, 4.0], [1.0, 2.0])
    assert perfect.auc == 1.0 and perfect.advantage == 1.0 and perfect.tpr_at(0.0) == 1.0
    ties = roc([1.0, 1.0, 1.0], [1.0, 1.0])
    assert ties.auc == 0.5 and ties.advantage == 0.0
    inverted = roc([1.0], [2.0])
    assert inverted.auc == 0.0


def test_auc_equals_mann_whitney_and_tpr_at_low_fpr():
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.5, 1, 300), rng.normal(0, 1, 400)
    r = roc(members, others)
    pairs = (members[:, None] > others[None, :]).mean() + 0.5 * (members[:, None] == others[None, :]).mean()
    assert r.auc == pytest.approx(pairs, abs=1e-12)
    # TPR at FPR ≤ 1 %: threshold just above the 4 highest non-members (4/400 = 1 %)
    t = np.sort(others)[-5]
    assert r.tpr_at(0.01) == pytest.approx(np.mean(members > t))


def test_advantage_bound_values():
    assert advantage_bound(0.0, 0.0) == 0.0
    assert advantage_bound(math.log(3), 0.0) == pytest.approx(0.5)
    assert advantage_bound(1.0, 1e-5) == pytest.approx((math.e - 1 + 2e-5) / (math.e + 1))
    assert advantage_bound(math.inf, 0.0) == 1.0
    with pytest.raises(DataError):
        advantage_bound(-1.0, 0.0)


def test_scores_and_refusals():
    z, y = np.array([2.0, -1.0]), np.array([1.0, 1.0])
    assert confidence(z, y).tolist() == [2.0, -1.0]
    assert loss_scores(z, y) == pytest.approx(-np.log1p(np.exp(-np.array([2.0, -1.0]))))
    refs = np.array([[1.0, 0.0], [3.0, -2.0]])  # per-row means 2 and -1: both rows calibrate to 0
    assert calibrated_scores(z, refs, y) == pytest.approx([0.0, 0.0])
    with pytest.raises(DataError):
        roc([], [1.0])
    with pytest.raises(DataError):
        confidence(z, np.array([0.0, 2.0]))


def test_audit_package_imports_no_framework():
    code = (
        "import sys, fedsilo.privacy.audit.roc, fedsilo.privacy.audit.membership, fedsilo.privacy.audit.one_run, "
        "fedsilo.privacy.audit.reconstruction\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'flwr', 'aiohttp'} or m.split('.')[1:2] in (['strategies'], ['peers'], ['simulations'])]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
