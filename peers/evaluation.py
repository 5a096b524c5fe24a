"""Scoring a model on a bank's rows: the metrics credit-risk modellers report, with intervals.

`evaluate` gives the per-round figures (mean log loss of the logits, ROC-AUC).
`binary_metrics` gives, from 0/1 labels and predicted probabilities of the event:

- roc_auc: the Mann–Whitney statistic (ties count one half); gini = 2·roc_auc − 1;
- pr_auc: average precision, Σ (recallₖ − recallₖ₋₁)·precisionₖ over the distinct
  scores from the highest down (ties form one threshold);
- ks: the Kolmogorov–Smirnov distance between the two classes' score distributions,
  max over thresholds of |TPR − FPR|;
- brier: the mean of (p − y)²; log_loss: the mean of −[y·log p + (1 − y)·log(1 − p)],
  with p clipped to [1e-15, 1 − 1e-15].

The ranking metrics are NaN when only one class is present. `bootstrap` resamples the
rows with replacement (the same resamples for every model, so differences between
models are paired) and `interval` turns a metric's resampled values into a percentile
interval. Its seed only makes a report reproducible: resampling the evaluation rows
protects nothing, so it need not come from the OS generator. `calibration_curve` bins
the rows by predicted probability into equal-count bins (a reliability plot's points).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.stats import rankdata
from torch import nn

METRICS = ("roc_auc", "pr_auc", "ks", "gini", "brier", "log_loss")
LOWER_IS_BETTER = frozenset({"brier", "log_loss"})
_CLIP = 1e-15
_BOOTSTRAP_STREAM = 0xB007


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


@torch.no_grad()
def predict_proba(model: nn.Module, features: torch.Tensor) -> np.ndarray:
    """The model's probability of the event (sigmoid of its logit) per row, float64."""
    model.eval()
    return torch.sigmoid(model(features).squeeze(-1).double()).numpy()


class _Scored:
    """One model's predictions on fixed rows, precomputed so that weighting the rows is cheap."""

    def __init__(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        y = np.asarray(labels, dtype=np.float64)
        p = np.asarray(probabilities, dtype=np.float64)
        if y.shape != p.shape or y.ndim != 1:
            raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be vectors of one length")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("labels must be 0/1")
        _, group = np.unique(-p, return_inverse=True)  # group 0: the highest score
        groups = int(group.max()) + 1 if len(p) else 0
        # row -> its score group, split by class: (weights @ these) sums the weights per group
        self.pos_groups = sparse.csr_matrix((y, (np.arange(len(p)), group)), shape=(len(p), groups))
        self.neg_groups = sparse.csr_matrix((1.0 - y, (np.arange(len(p)), group)), shape=(len(p), groups))
        clipped = np.clip(p, _CLIP, 1.0 - _CLIP)
        self.squared_error = (p - y) ** 2
        self.log_loss = -(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped))

    def metrics(self, weights: np.ndarray, only: tuple[str, ...] = METRICS) -> dict[str, np.ndarray]:
        """The metrics `only` per row of `weights` (shape (k, rows)): row i counted weights[:, i] times."""
        total = weights.sum(axis=1)
        out = {"brier": weights @ self.squared_error / total, "log_loss": weights @ self.log_loss / total}
        if not set(only) - set(out):
            return {m: out[m] for m in only}
        pos = np.asarray((self.pos_groups.T @ weights.T).T)  # (k, groups)
        neg = np.asarray((self.neg_groups.T @ weights.T).T)
        n_pos, n_neg = pos.sum(axis=1, keepdims=True), neg.sum(axis=1, keepdims=True)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        nan = np.where((n_pos[:, 0] == 0) | (n_neg[:, 0] == 0), np.nan, 0.0)  # one class: undefined
        with np.errstate(divide="ignore", invalid="ignore"):
            out["roc_auc"] = (pos * (n_neg - fp) + 0.5 * pos * neg).sum(axis=1) / (n_pos * n_neg)[:, 0] + nan
            out["gini"] = 2.0 * out["roc_auc"] - 1.0
            if "pr_auc" in only:
                precision = np.where(pos > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
                out["pr_auc"] = (pos * precision).sum(axis=1) / n_pos[:, 0] + nan
            if "ks" in only:
                out["ks"] = np.abs(tp / n_pos - fp / n_neg).max(axis=1, initial=0.0) + nan
        return {m: out[m] for m in only}


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The metrics of METRICS (see the module docstring) of probabilities against 0/1 labels."""
    values = _Scored(labels, probabilities).metrics(np.ones((1, len(labels))))
    return {metric: float(v[0]) for metric, v in values.items()}


@dataclass(frozen=True)
class Bootstrap:
    """Point values and resampled values of every metric, per model: `[model][metric]`."""

    point: dict[str, dict[str, float]]
    samples: dict[str, dict[str, np.ndarray]]
    resamples: int
    rows: int


def bootstrap(
    labels: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    resamples: int = 1000,
    seed: int = 0,
    only: tuple[str, ...] = METRICS,
) -> Bootstrap:
    """The metrics `only` of every model, on the rows and on `resamples` resamples of them.

    The resamples are the same for every model, and for every call with the same
    seed, row count and resamples (so two calls' values can be paired).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1 (got {resamples})")
    n = len(labels)
    scored = {name: _Scored(labels, p) for name, p in predictions.items()}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _BOOTSTRAP_STREAM]))
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))  # weights of ≤ 16 MB at a time
    parts: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in scored}
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        draws = rng.integers(0, n, (k, n))
        weights = np.bincount((draws + n * np.arange(k)[:, None]).ravel(), minlength=k * n).reshape(k, n)
        weights = weights.astype(np.float64)
        for name, s in scored.items():
            parts[name].append(s.metrics(weights, only))
    samples = {name: {m: np.concatenate([c[m] for c in chunks]) for m in only} for name, chunks in parts.items()}
    point = {name: {m: float(v[0]) for m, v in s.metrics(np.ones((1, n)), only).items()} for name, s in scored.items()}
    return Bootstrap(point, samples, resamples, n)


def interval(value: float, samples: np.ndarray, level: float = 0.95) -> dict[str, float | None]:
    """{"value", "low", "high"}: the point value and the percentile interval of its resampled values.

    Resamples where the metric is undefined (one class only) are left out; None where
    nothing is defined.
    """
    finite = samples[np.isfinite(samples)]
    if not np.isfinite(value) or finite.size == 0:
        return {"value": None if not np.isfinite(value) else float(value), "low": None, "high": None}
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return {"value": float(value), "low": float(low), "high": float(high)}


def calibration_curve(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-count bins by predicted probability: each bin's mean prediction, observed event rate, rows."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    return [
        {"mean_predicted": float(p[part].mean()), "observed_rate": float(y[part].mean()), "rows": int(part.size)}
        for part in np.array_split(order, min(bins, len(p)))
        if part.size
    ]
