"""Attacks on split (vertical) learning, run as measurements: what each party learns from the other's messages.

- Label inference from the returned gradients, seen from a feature party (Li et al.,
  "Label leakage and protection in two-party split learning", ICLR 2022). For a
  logistic loss the gradient of example i with respect to its embedding is
  (p_i − y_i)·v_i: positives (rare, p small) get large gradients pointing one way,
  negatives small ones pointing the other. *Norm scoring*: the gradient's norm.
  *Direction scoring*: the cosine with one gradient the attacker knows to be a
  positive's (here the attacker is handed one labelled positive, its strongest
  assumption). Both are scored by ROC AUC against the true labels; 0.5 is no leakage.
- Feature reconstruction from the received embeddings, seen from the label holder:
  an attacker who knows a feature party's raw column for a few customers (auxiliary
  data, ``known`` rows) fits a ridge regression from the received embeddings to that
  column and predicts it for the others; the measure is the R² on those others (0 or
  below: nothing recovered).
"""

from __future__ import annotations

import numpy as np

from fedsilo.errors import DataError
from fedsilo.privacy.audit.roc import roc

__all__ = ["direction_scores", "label_attack_auc", "norm_scores", "reconstruction_r2"]


def norm_scores(gradients: np.ndarray) -> np.ndarray:
    """Each returned gradient's L2 norm (higher: more likely a positive)."""
    return np.linalg.norm(np.asarray(gradients, dtype=np.float64), axis=1)


def direction_scores(gradients: np.ndarray, known_positive: np.ndarray) -> np.ndarray:
    """Cosine of each gradient with a gradient known to be a positive's."""
    g = np.asarray(gradients, dtype=np.float64)
    ref = np.asarray(known_positive, dtype=np.float64).ravel()
    return g @ ref / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(ref), 1e-12)


def label_attack_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of "positive if score ≥ t" against the true 0/1 labels."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(labels) != len(scores):
        raise DataError(f"{len(scores)} attack scores for {len(labels)} labels")
    return roc(scores[labels == 1], scores[labels == 0]).auc


def reconstruction_r2(embeddings: np.ndarray, column: np.ndarray, known: int, ridge: float = 1e-3) -> float:
    """R² of a ridge regression from embeddings to a raw column, fitted on the first ``known`` rows, tested on the rest."""
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(column, dtype=np.float64).ravel()
    if not 2 <= known < len(y) - 1 or len(x) != len(y):
        raise DataError(f"reconstruction needs 2 ≤ known < {len(y) - 1} rows with one embedding each")
    x1 = np.hstack([x, np.ones((len(x), 1))])
    a, b = x1[:known], y[:known]
    coef = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
    rest, truth = x1[known:], y[known:]
    residual = ((truth - rest @ coef) ** 2).sum()
    return float(1.0 - residual / ((truth - truth.mean()) ** 2).sum())
