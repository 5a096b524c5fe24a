"""Membership inference as a measurement: a loss-threshold attack and a calibrated one.

Both attacks see only the released model's logits on a row and the row's label, as
anyone holding the model does. Scores are "higher means more likely a member".

- Loss threshold (Yeom et al. 2018): score = −loss. Members tend to have lower loss.
- Calibrated, LiRA-style offline (Carlini et al. 2022): some rows are simply easy.
  The attack compares the target model's logit-scaled confidence φ on a row with the
  confidences of reference models that did not train on that row:
  score = (φ_target − μ_ref) / σ, μ_ref the row's mean over the reference models, σ one
  standard deviation pooled over all rows and reference models (the "fixed variance"
  variant LiRA recommends with few reference models). For a binary logistic output,
  φ = log(p_y / (1 − p_y)) is the logit signed by the label: (2y − 1)·z.

Contract: the reference models must not have trained on any row that is scored; the
caller trains them on the institution's own non-member rows that are kept out of the
scored set (see `simulations/privacy_audit.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.errors import DataError
from fedsilo.privacy.audit.roc import Roc, roc

LOW_FPRS = (0.01, 0.001)


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise DataError(f"{z.size} logits for {y.size} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("membership attacks need 0/1 labels")
    return z, y


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence in the true label, φ = (2y − 1)·z."""
    z, y = _check(logits, labels)
    return (2.0 * y - 1.0) * z


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−BCE(z, y) per row: the loss-threshold attack's scores."""
    return -np.logaddexp(0.0, -confidence(logits, labels))


def calibrated_scores(target_logits: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA-style offline scores; `reference_logits` has one row per reference model."""
    phi = confidence(target_logits, labels)
    refs = np.atleast_2d(np.asarray(reference_logits, dtype=np.float64))
    if refs.shape[1] != phi.size or refs.shape[0] < 1:
        raise DataError(f"reference logits of shape {refs.shape} do not match {phi.size} scored rows")
    ref_phi = refs * (2.0 * np.asarray(labels, dtype=np.float64).ravel() - 1.0)
    mu = ref_phi.mean(axis=0)
    sigma = float(np.std(ref_phi - mu)) if refs.shape[0] > 1 else float(np.std(ref_phi))
    return (phi - mu) / max(sigma, 1e-6)


@dataclass(frozen=True)
class AttackResult:
    """One attack's figures on one set of members and non-members."""

    attack: str
    roc: Roc

    def summary(self) -> dict[str, float | int | str]:
        return {
            "attack": self.attack,
            "auc": round(self.roc.auc, 4),
            "tpr_at_1pct_fpr": round(self.roc.tpr_at(LOW_FPRS[0]), 4),
            "tpr_at_0.1pct_fpr": round(self.roc.tpr_at(LOW_FPRS[1]), 4),
            "advantage": round(self.roc.advantage, 4),
            "members": self.roc.members,
            "nonmembers": self.roc.nonmembers,
        }


def attack(name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray) -> AttackResult:
    return AttackResult(name, roc(member_scores, nonmember_scores))
