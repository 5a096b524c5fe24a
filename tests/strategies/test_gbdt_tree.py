"""The federated tree equals a centralized histogram tree on the same bins (DP off)."""

from __future__ import annotations

from dataclasses import replace

import _gbdt_data as data
import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.gbdt.federation import BoostSettings, boost, secure_configs
from fedsilo.strategies.gbdt import MIN_CHILD_NOISE_SDS, BinLayout, FeatureGroup, TreeParams, best_split, noise_aware
from fedsilo.strategies.gbdt.layout import NUMERIC

PARAMS = TreeParams(depth=3, reg_lambda=1.0, min_child_hessian=1.0, max_leaf=4.0)
LR = 0.3


def reference_tree(bins: np.ndarray, g: np.ndarray, h: np.ndarray, n_bins: list[int], params: TreeParams) -> dict:
    """A centralized histogram tree straight from the rows, written independently of strategies.gbdt."""
    lam, mch = params.reg_lambda, params.min_child_hessian
    splits: dict[int, tuple[int, int]] = {}
    leaves: dict[int, float] = {}

    def grow(node: int, rows: np.ndarray, level: int) -> None:
        best = None
        if level < params.depth:
            for j, nb in enumerate(n_bins):
                gt, ht = g[rows].sum(), h[rows].sum()
                for t in range(nb - 1):
                    left = rows[bins[rows, j] <= t]
                    right = rows[bins[rows, j] > t]
                    gl, hl, gr, hr = g[left].sum(), h[left].sum(), g[right].sum(), h[right].sum()
                    if hl < mch or hr < mch:
                        continue
                    gain = gl**2 / (hl + lam) + gr**2 / (hr + lam) - gt**2 / (ht + lam)
                    if gain > params.min_gain and (best is None or gain > best[2] + 1e-9):
                        best = (j, t, gain)
        if best is None:
            hs = max(h[rows].sum(), mch)
            leaves[node] = float(np.clip(-g[rows].sum() / (hs + lam), -params.max_leaf, params.max_leaf))
            return
        j, t, _ = best
        splits[node] = (j, t)
        grow(2 * node + 1, rows[bins[rows, j] <= t], level + 1)
        grow(2 * node + 2, rows[bins[rows, j] > t], level + 1)

    grow(0, np.arange(bins.shape[0]), 0)
    return {"splits": splits, "leaves": leaves}


def reference_ensemble(bins: np.ndarray, y: np.ndarray, n_bins: list[int], trees: int) -> list[dict]:
    margin = np.zeros(len(y))
    out = []
    for _ in range(trees):
        p = 1 / (1 + np.exp(-margin))
        tree = reference_tree(bins, p - y, p * (1 - p), n_bins, PARAMS)
        out.append(tree)
        node = np.zeros(len(y), dtype=int)
        for _ in range(PARAMS.depth):
            for i, (j, t) in tree["splits"].items():
                here = node == i
                node[here] = np.where(bins[here, j] <= t, 2 * i + 1, 2 * i + 2)
        margin += LR * np.array([tree["leaves"][int(k)] for k in node])
    return out


def as_reference(model) -> list[dict]:
    out = []
    for tree in model.trees:
        d = tree.to_dict()
        out.append(
            {
                "splits": {n["id"]: (n["group"], n["cut"]) for n in d["nodes"] if "group" in n},
                "leaves": {n["id"]: n["leaf"] for n in d["nodes"] if "leaf" in n},
            }
        )
    return out


@pytest.mark.parametrize(("n_banks", "secure"), [(1, False), (4, True)])
def test_federated_trees_equal_the_centralized_histogram_trees(n_banks: int, secure: bool) -> None:
    x, y = data.rows(800)
    lay = data.layout()
    settings = BoostSettings(trees=3, params=PARAMS, learning_rate=LR, dp_mode="off", secure=secure)
    row_bound = -(-800 // n_banks)
    configs = secure_configs(settings, lay, n_banks, row_bound, None) if secure else None
    banks, directory = data.banks(x, y, n_banks, lay, row_bound, configs)
    result = boost(banks, lay, settings, None, row_bound, verifier=directory if secure else None, configs=configs)
    # the centralized reference sees the pooled rows in the banks' order
    order = np.concatenate([np.arange(800)[i::n_banks] for i in range(n_banks)])
    expected = reference_ensemble(lay.bin_rows(x[order]), y[order], [g.n_bins for g in lay.groups], 3)
    got = as_reference(result.model)
    assert len(got) == 3
    for mine, ref in zip(got, expected, strict=True):
        assert mine["splits"] == ref["splits"]  # same splits, exactly
        assert set(mine["leaves"]) == set(ref["leaves"])
        for node, value in ref["leaves"].items():
            # plain sums are exact up to float order; SecAgg+ adds fixed-point rounding (< 1e-6 here)
            assert mine["leaves"][node] == pytest.approx(value, abs=1e-12 if not secure else 1e-6)
    assert len(mine["splits"]) >= 3  # the data has structure: the trees do split
    assert all(not r.get("refused") for r in result.releases)
    assert result.spent == {b.name: [] for b in banks}  # DP off: nothing charged


def test_the_noise_aware_floor_keeps_a_noisy_sliver_from_winning_the_split() -> None:
    """A cut whose small side holds less hessian than the noise must not win on a spurious gain."""
    lay = BinLayout((FeatureGroup("x", NUMERIC, (0,), (-1.0, 0.0, 1.0)),), 1)
    sums = np.array([[-60.0, 5.0], [-200.0, 300.0], [150.0, 300.0], [110.0, 300.0]])  # bin 0: 5 of hessian
    assert best_split(sums, lay, PARAMS)[:2] == (0, 0)  # without a floor the sliver wins (gain 604 > 333)
    floored = noise_aware(PARAMS, 40.0)
    assert floored.min_child_hessian == MIN_CHILD_NOISE_SDS * 40.0 == 100.0
    assert best_split(sums, lay, floored)[:2] == (0, 1)
    assert noise_aware(PARAMS, 0.0) is PARAMS  # no DP: the growth is the exact one tested above
    assert noise_aware(replace(PARAMS, min_child_hessian=500.0), 40.0).min_child_hessian == 500.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="noise standard deviation"):
            noise_aware(PARAMS, bad)
