"""PNG plots of a run: learning curves with the privacy spent, and the yardsticks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_rounds(
    path: Path,
    rounds: list[int],
    auc: list[float],
    epsilon_max: list[float],
    epsilon_budget: float | None,
    auc_title: str = "Federated model, pooled held-out rows",
) -> None:
    """AUC of the global model per round, and the largest ε any bank has spent."""
    fig, (ax_auc, ax_eps) = plt.subplots(1, 2, figsize=(10, 4))
    ax_auc.plot(rounds, auc, marker="o", color="tab:blue")
    ax_auc.set(title=auc_title, xlabel="round", ylabel="ROC-AUC")
    ax_auc.grid(alpha=0.3)
    ax_eps.plot(rounds, epsilon_max, marker="o", color="tab:red", label="ε spent (max over banks)")
    if epsilon_budget is not None:
        ax_eps.axhline(epsilon_budget, linestyle="--", color="grey", label=f"job's ε = {epsilon_budget:g}")
    ax_eps.set(title="Privacy spent per bank", xlabel="round", ylabel="ε")
    ax_eps.set_ylim(bottom=0)
    ax_eps.legend(loc="lower right")
    ax_eps.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_comparison(
    path: Path,
    federated: float,
    centralized: float | None,
    local: dict[str, float] | None,
    intervals: dict[str, tuple[float | None, float | None]] | None = None,
) -> None:
    """Federated AUC against the centralized model and each bank's local-only model.

    `intervals` (keys "federated", "centralized" and the banks' names) draws each
    bar's confidence interval as an error bar.
    """
    keys, names, values, colors = ["federated"], ["federated"], [federated], ["tab:blue"]
    if centralized is not None:
        keys.append("centralized")
        names.append("centralized\n(non-private)")
        values.append(centralized)
        colors.append("tab:green")
    for bank, auc in (local or {}).items():
        keys.append(bank)
        names.append(f"{bank}\nalone")
        values.append(auc)
        colors.append("tab:orange")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4))
    ax.bar(range(len(names)), values, color=colors)
    bounds = [(intervals or {}).get(k, (None, None)) for k in keys]
    drawn = [(i, v, lo, hi) for i, (v, (lo, hi)) in enumerate(zip(values, bounds)) if lo is not None and hi is not None]
    if drawn:
        ax.errorbar(
            [d[0] for d in drawn],
            [d[1] for d in drawn],
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
            yerr=[[d[1] - d[2] for d in drawn], [d[3] - d[1] for d in drawn]],
        )
        ax.text(0.99, 0.98, "error bars: 95% bootstrap CI", transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    low = min([v for v in values if v == v] + [d[2] for d in drawn]) if values else 0.5
    ax.set_ylim(max(0.0, min(0.5, low - 0.05)), 1.0)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set(title="ROC-AUC on all banks' held-out rows", ylabel="ROC-AUC")
    for i, v in enumerate(values):
        ax.text(i + 0.12, v + 0.005, f"{v:.3f}", ha="left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_calibration(path: Path, curves: dict[str, list[dict[str, float]]]) -> None:
    """Reliability plot: observed event rate against mean predicted probability, per bin and model.

    `curves` maps a model's name to `fedsilo.peers.evaluation.calibration_curve` bins.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for (name, bins), color in zip(curves.items(), ("tab:blue", "tab:green", "tab:orange")):
        x = [b["mean_predicted"] for b in bins]
        y = [b["observed_rate"] for b in bins]
        top = max([top, *x, *y])
        ax.plot(x, y, marker="o", color=color, label=name)
    top = min(1.0, top * 1.1 + 0.01)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", label="perfectly calibrated")
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean predicted probability (bin)",
        ylabel="observed event rate",
        title="Calibration on all banks' held-out rows\n(equal-count bins)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_institutions(path: Path, aucs: dict[str, dict[str, float | None]]) -> None:
    """Per institution: alone, horizontal on common columns, federated transfer (own held-out rows)."""
    series = [
        ("local_only", "alone", "tab:orange"),
        ("horizontal_common", "horizontal, common columns", "tab:grey"),
        ("federated", "federated transfer", "tab:blue"),
    ]
    names = list(aucs)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(names) + 2), 4))
    width = 0.8 / len(series)
    for j, (key, label, color) in enumerate(series):
        values = [aucs[n].get(key) for n in names]
        xs = [i + (j - 1) * width for i in range(len(names))]
        shown = [(x, v) for x, v in zip(xs, values) if v is not None]
        if not shown:
            continue
        ax.bar([x for x, _ in shown], [v for _, v in shown], width=width, color=color, label=label)
        for x, v in shown:
            ax.text(x, v + 0.005, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set(title="ROC-AUC per institution, on its own held-out rows", ylabel="ROC-AUC")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_privacy_audit(
    path: Path, attacks: list, epsilon_claimed: float | None, epsilon_lower_bound: float | None, confidence: float
) -> None:
    """Membership attacks' ROC on log–log axes, and the ε claimed against the measured lower bound.

    `attacks` are `fedsilo.privacy.audit.membership.AttackResult`s. A point at FPR 0 cannot be
    drawn on a log axis; the curves start at the smallest non-zero FPR measured.
    """
    fig, (ax_roc, ax_eps) = plt.subplots(1, 2, figsize=(10, 4.2))
    floor = 1.0
    for result, color in zip(attacks, ("tab:blue", "tab:purple", "tab:green")):
        r = result.roc
        keep = r.fpr > 0
        floor = min(floor, float(r.fpr[keep].min()))
        ax_roc.plot(
            r.fpr[keep],
            np.maximum(r.tpr[keep], floor / 10),
            color=color,
            label=f"{result.attack}: AUC {r.auc:.3f}, TPR@1% {r.tpr_at(0.01):.3f}",
        )
    grid = np.logspace(np.log10(floor), 0, 50)
    ax_roc.plot(grid, grid, linestyle=":", color="grey", label="chance")
    ax_roc.set(
        xscale="log",
        yscale="log",
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        title="Membership inference against the released model",
    )
    ax_roc.set_xlim(floor, 1)
    ax_roc.set_ylim(floor / 10, 1)
    ax_roc.legend(loc="lower right", fontsize=7)
    ax_roc.grid(alpha=0.3, which="both")
    names = ["ε claimed", f"ε lower bound\n({confidence:.0%} confidence)"]
    values = [epsilon_claimed, epsilon_lower_bound]
    colors = [
        "tab:grey",
        "tab:red"
        if (epsilon_claimed is not None and epsilon_lower_bound is not None and epsilon_lower_bound > epsilon_claimed)
        else "tab:green",
    ]
    for i, (v, c) in enumerate(zip(values, colors)):
        if v is None:
            ax_eps.text(i, 0.05, "none" if i == 0 else "not run", ha="center")
        else:
            ax_eps.bar(i, v, color=c)
            ax_eps.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax_eps.set_xticks(range(2), names)
    ax_eps.set(title="One-run canary audit", ylabel="ε")
    ax_eps.set_ylim(bottom=0, top=max([v for v in values if v is not None] + [1.0]) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(path: Path, points: list[dict], axes: tuple[str, ...] = ()) -> None:
    """Federated ROC-AUC per grid point (mean, error bar ± one standard deviation over seeds).

    x: ε (or, when ε is not varied, the first varied of lr, rounds, banks); one panel
    per (setup, dropout); one line per combination of the other varied axes. The
    yardsticks are lines in the same colour: centralized dashed, local-only dotted. The
    y-axis runs from chance (0.5) to 1 (lower only if a value is below chance), so that
    a difference of 0.004 looks as small as it is.
    """
    x_key = next((k for k in ("epsilon", "lr", "rounds", "banks") if k in axes), "epsilon")
    panel_keys = [k for k in ("setup", "dropout") if k != x_key]
    line_keys = [k for k in axes if k not in panel_keys and k != x_key]
    panels = sorted({tuple(p[k] for k in panel_keys) for p in points}, key=str)
    fig, grid = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    values = [
        p[m]
        for p in points
        for m in ("final_auc_mean", "centralized_auc_mean", "local_auc_mean_mean")
        if p[m] is not None
    ]
    bottom = min(0.5, math.floor(min(values, default=0.5) * 20) / 20)
    for ax, panel in zip(grid[0], panels):
        chosen = [p for p in points if tuple(p[k] for k in panel_keys) == panel]
        lines = sorted({tuple(p[k] for k in line_keys) for p in chosen}, key=str)
        for colour, line in zip(itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), lines):
            members = sorted((p for p in chosen if tuple(p[k] for k in line_keys) == line), key=lambda p: p[x_key])
            name = ", ".join(f"{_AXIS_NAMES.get(k, k)} {v}" for k, v in zip(line_keys, line)) or "federated"
            xs = [p[x_key] for p in members]
            ax.errorbar(
                xs,
                [p["final_auc_mean"] for p in members],
                yerr=_errors(members, "final_auc"),
                marker="o",
                capsize=3,
                color=colour,
                label=name,
            )
            for measure, style, what in (("centralized_auc", "--", "centralized"), ("local_auc_mean", ":", "local")):
                have = [p for p in members if p[f"{measure}_mean"] is not None]
                if not have:
                    continue
                ys = [p[f"{measure}_mean"] for p in have]
                if len({round(y, 9) for y in ys}) == 1 or len(have) == 1:
                    ax.axhline(ys[0], linestyle=style, color=colour, linewidth=1, label=f"{what} ({name})")
                else:
                    ax.errorbar(
                        [p[x_key] for p in have],
                        ys,
                        yerr=_errors(have, measure),
                        linestyle=style,
                        color=colour,
                        linewidth=1,
                        capsize=2,
                        label=f"{what} ({name})",
                    )
        title = ", ".join(
            f"{v}" if k == "setup" else f"{_AXIS_NAMES.get(k, k)} {v:g}" for k, v in zip(panel_keys, panel)
        )
        ax.set(
            title=title,
            xlabel=_AXIS_NAMES.get(x_key, x_key) + (" per institution" if x_key == "epsilon" else ""),
            ylabel="ROC-AUC on the pooled held-out rows",
        )
        xs = sorted({p[x_key] for p in chosen})
        if x_key in ("epsilon", "lr") and len(xs) > 1:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_ylim(bottom, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_AXIS_NAMES = {"epsilon": "ε", "banks": "banks", "dropout": "dropout", "lr": "lr", "rounds": "rounds"}


def _errors(points: list[dict], measure: str) -> list[float]:
    """± one standard deviation over seeds (0 where a point ran once)."""
    return [p[f"{measure}_std"] or 0.0 for p in points]


def plot_vertical_audit(path: Path, section: dict) -> None:
    """The vertical audit: label-inference AUC (norm, direction) and `pay_0` reconstruction R², with and without DP."""
    fig, (ax_label, ax_rec) = plt.subplots(1, 2, figsize=(10, 4))
    label = section["label_inference"]
    width = 0.38
    if "with_dp" in label:
        attacks = ["norm", "direction"]
        x = np.arange(len(attacks))
        for offset, key, color, name in (
            (-width / 2, "without_dp", "tab:red", "without DP"),
            (width / 2, "with_dp", "tab:green", "with DP"),
        ):
            values = [label[key][f"{a}_auc"] for a in attacks]
            ax_label.bar(x + offset, values, width, color=color, label=name)
            for xi, v in zip(x + offset, values):
                ax_label.text(xi, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
        ax_label.set_xticks(x, [f"{a} scoring" for a in attacks])
        ax_label.axhline(0.5, linestyle=":", color="grey", label="chance")
        ax_label.set_ylim(0, 1.22)
        ax_label.legend(loc="upper center", ncol=3, fontsize=8)
    else:
        ax_label.text(0.5, 0.5, "no gradient returned\n(frozen bottoms)", ha="center", va="center")
        ax_label.set_xticks([])
    ax_label.set(ylabel="attack ROC-AUC", title="Label inference by the feature party (from gradients)")
    rec = section["feature_reconstruction"]
    values = [rec["without_dp"]["r2"], rec["with_dp"]["r2"]]
    ax_rec.bar(["without DP", "with DP"], values, color=["tab:red", "tab:green"])
    for i, v in enumerate(values):
        ax_rec.text(i, v + 0.01 if v >= 0 else v - 0.04, f"{v:.3f}", ha="center", fontsize=8)
    ax_rec.axhline(0.0, color="grey", linewidth=0.8)
    ax_rec.set_ylim(min(-0.1, min(values) - 0.1), max(1.0, max(values) + 0.1))
    ax_rec.set(ylabel="R² (≤ 0: nothing recovered)", title=f"Reconstruction of {rec['column']} by the label holder")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
