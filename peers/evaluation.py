"""Scoring a model on a bank's rows: ROC-AUC and log-loss."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by the Mann–Whitney rank statistic (ties count one half).

    Returns NaN when only one class is present, where the AUC is undefined.
    """
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def evaluate(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean binary cross-entropy and ROC-AUC of `model` on (features, labels)."""
    model.eval()
    logits = model(features).squeeze(-1)
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, labels))
    return {"loss": loss, "auc": roc_auc(labels.numpy(), logits.numpy())}
