"""The final figures of a run on the pooled held-out rows, each with a bootstrap interval.

`final_scores` scores the federated model (and the yardsticks, when trained) with every
metric of `fedsilo.peers.evaluation.METRICS`, a 95 % percentile interval over `RESAMPLES`
resamples of the held-out rows, the same resamples for every model, so that the
differences it reports (federated minus the best bank alone, minus the mean of the
banks alone, minus the centralized model) are paired. It also gives the federated
model's calibration curve. The result is JSON-ready: `metrics.json` holds it whole and
the model card all of it but the calibration curve. `summary_lines` is its console form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.peers.evaluation import bootstrap, calibration_curve, interval

RESAMPLES = 1000
LEVEL = 0.95
CALIBRATION_BINS = 10
LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "ks": "KS",
    "gini": "Gini",
    "brier": "Brier",
    "log_loss": "log loss",
}


def final_scores(
    labels: np.ndarray,
    federated: np.ndarray,
    centralized: np.ndarray | None = None,
    local: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Scores and intervals of the probabilities of each model on the same held-out rows (see module docstring)."""
    labels = np.asarray(labels)
    models = {"federated": federated, **({"centralized": centralized} if centralized is not None else {})}
    full = bootstrap(labels, models, resamples, seed)
    out: dict[str, Any] = {
        "rows": int(labels.size),
        "positives": int(labels.sum()),
        "bootstrap": {
            "resamples": resamples,
            "level": LEVEL,
            "method": "percentile; held-out rows resampled with replacement, the same resamples for "
            "every model (differences are paired)",
        },
    }
    for name in models:
        out[name] = {m: interval(full.point[name][m], full.samples[name][m], LEVEL) for m in full.point[name]}
    fed_auc = full.samples["federated"]["roc_auc"]
    differences: dict[str, Any] = {}
    if centralized is not None:
        differences["federated_minus_centralized"] = _difference(full.point, full.samples, "centralized")
    if local:
        auc = bootstrap(labels, {"federated": federated, **local}, resamples, seed, only=("roc_auc",))
        names = list(local)
        points = np.array([auc.point[n]["roc_auc"] for n in names])
        alone = np.vstack([auc.samples[n]["roc_auc"] for n in names])
        out["local_only"] = {
            n: {"roc_auc": interval(auc.point[n]["roc_auc"], auc.samples[n]["roc_auc"], LEVEL)} for n in names
        }
        out["local_only_mean"] = {"roc_auc": interval(float(points.mean()), alone.mean(axis=0), LEVEL)}
        best = int(np.nanargmax(points))
        fed_point = full.point["federated"]["roc_auc"]
        differences["federated_minus_best_alone"] = {
            "bank": names[best],
            **interval(fed_point - points[best], fed_auc - alone[best], LEVEL),
        }
        differences["federated_minus_mean_alone"] = interval(
            fed_point - float(points.mean()), fed_auc - alone.mean(axis=0), LEVEL
        )
    if differences:
        out["roc_auc_differences"] = differences
    out["calibration"] = {name: calibration_curve(labels, p, CALIBRATION_BINS) for name, p in models.items()}
    return out


def _difference(point: dict, samples: dict, other: str) -> dict[str, float | None]:
    return interval(
        point["federated"]["roc_auc"] - point[other]["roc_auc"],
        samples["federated"]["roc_auc"] - samples[other]["roc_auc"],
        LEVEL,
    )


def ci_text(value: dict[str, float | None], digits: int = 3, signed: bool = False) -> str:
    """'0.761 (95% CI 0.745–0.778)'; the point alone where no interval is defined."""
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    if value.get("value") is None:
        return "n/a"
    text = fmt.format(value["value"])
    if value.get("low") is None:
        return text
    return f"{text} ({LEVEL:.0%} CI {fmt.format(value['low'])} to {fmt.format(value['high'])})"


def summary_lines(scores: dict[str, Any]) -> list[str]:
    """The console lines: every metric of the federated model, and the paired AUC differences."""
    fed = scores["federated"]
    lines = [
        f"  on {scores['rows']:,} held-out rows ({scores['positives']:,} events), {LEVEL:.0%} bootstrap intervals:"
    ]
    lines += [f"    {LABELS[m]:<9} {ci_text(fed[m])}" for m in ("pr_auc", "ks", "gini", "brier", "log_loss")]
    diffs = scores.get("roc_auc_differences", {})
    names = {
        "federated_minus_best_alone": "federated − best bank alone",
        "federated_minus_mean_alone": "federated − mean of banks alone",
        "federated_minus_centralized": "federated − centralized",
    }
    for key, title in names.items():
        if key in diffs:
            which = f" ({diffs[key]['bank']})" if "bank" in diffs[key] else ""
            lines.append(f"  ROC-AUC {title}{which}: {ci_text(diffs[key], signed=True)}")
    return lines
