"""ROC figures of a membership attack, and the bound that (ε, δ)-DP puts on them.

Scores are "higher means more likely a member". Ties between a member's and a
non-member's score count one half (the Mann–Whitney convention), so a constant score
has AUC exactly 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import DataError


@dataclass(frozen=True)
class Roc:
    """The ROC curve of one attack: false- and true-positive rates, from (0, 0) to (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray
    members: int
    nonmembers: int

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoids between distinct thresholds)."""
        return float(np.sum(np.diff(self.fpr) * (self.tpr[1:] + self.tpr[:-1]) / 2.0))

    def tpr_at(self, fpr: float) -> float:
        """The largest true-positive rate among thresholds whose false-positive rate is ≤ `fpr`."""
        ok = self.fpr <= fpr + 1e-12
        return float(self.tpr[ok].max())

    @property
    def advantage(self) -> float:
        """Membership advantage max over thresholds of TPR − FPR (Yeom et al. 2018)."""
        return float(np.max(self.tpr - self.fpr))


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> Roc:
    """ROC of the rule "member if score ≥ t", over every threshold t."""
    members = np.asarray(member_scores, dtype=np.float64).ravel()
    others = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if members.size == 0 or others.size == 0:
        raise DataError("a membership attack needs at least one member and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(others).all()):
        raise DataError("membership scores contain NaN or infinity")
    scores = np.concatenate([members, others])
    is_member = np.concatenate([np.ones(members.size), np.zeros(others.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    true_pos = np.cumsum(is_member)
    false_pos = np.cumsum(1.0 - is_member)
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tpr = np.r_[0.0, true_pos[last_of_tie] / members.size]
    fpr = np.r_[0.0, false_pos[last_of_tie] / others.size]
    return Roc(fpr=fpr, tpr=tpr, members=members.size, nonmembers=others.size)


def advantage_bound(epsilon: float, delta: float) -> float:
    """Largest membership advantage (TPR − FPR) an (ε, δ)-DP training allows.

    (e^ε − 1 + 2δ)/(e^ε + 1). Any test of "member or not" on an (ε, δ)-DP output obeys
    FPR + e^ε·FNR ≥ 1 − δ and FNR + e^ε·FPR ≥ 1 − δ (Kairouz, Oh and Viswanath 2015);
    adding the two, FPR + FNR ≥ 2(1 − δ)/(e^ε + 1), so TPR − FPR = 1 − FNR − FPR is at
    most the value above (Humphries et al. 2020 state the same bound for a prior of ½).
    Capped at 1; ε = ∞ (no DP) gives 1.
    """
    if epsilon < 0 or not 0 <= delta <= 1:
        raise DataError(f"advantage bound needs ε ≥ 0 and δ in [0, 1], got ε = {epsilon}, δ = {delta}")
    if math.isinf(epsilon) or epsilon > 700:
        return 1.0
    e = math.exp(epsilon)
    return min(1.0, (e - 1.0 + 2.0 * delta) / (e + 1.0))
