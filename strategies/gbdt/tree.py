"""The host's side of histogram boosting: one tree grown level by level from summed histograms.

Nodes are numbered as in a heap (root 0, children ``2i + 1`` left and ``2i + 2``
right). At each level the host holds, for every *open* node, the summed gradient and
hessian histograms ``(G, H)`` over every (group, bin) (a ``(nodes, total_bins, 2)``
array, noisy under DP); it never sees a row. For each node and group it scans the
cut points "bin <= t goes left" with the XGBoost gain (Chen & Guestrin, KDD 2016, eq. 7)

    gain = G_L² / (H_L + λ) + G_R² / (H_R + λ) - G² / (H + λ),

taking the node's totals ``G, H`` from the same group's bins (so left + right = total
exactly, also under noise), and keeps the best cut whose two sides each have hessian
at least ``min_child_hessian``; a node whose best gain is not above ``min_gain`` (or at
the last level) becomes a leaf. Ties go to the first group, then the lowest cut.
Leaf values come from a separate release of each leaf's totals:
``w = -G / (max(H, min_child_hessian) + λ)`` clipped to ``[-max_leaf, max_leaf]``
(all post-processing of the released sums).

Under DP the summed hessians are noisy, and the gain of a cut that leaves few rows on
one side is dominated by that noise (``G_L² / (H_L + λ)`` explodes when the noise drives
``H_L`` towards ``-λ``): the noisy maximum then picks spurious cuts. `noise_aware`
raises ``min_child_hessian`` to ``MIN_CHILD_NOISE_SDS`` standard deviations of the noise
on one released hessian slot, a public number, so that only cuts whose two sides hold
clearly more hessian than noise compete (post-processing: it costs no budget).

`check_histogram` is what a host or a bank applies to one histogram before it is used
or masked: a non-finite value, a wrong shape or a value outside the clipped range is
refused naming the bank.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError, DataError
from fedsilo.strategies.gbdt.layout import BinLayout

ABSENT, OPEN, SPLIT, LEAF = 0, 1, 2, 3


class HistogramRefused(DataError):
    """One bank's histogram (or leaf totals) was malformed; it is not used."""

    def __init__(self, bank: str, reason: str) -> None:
        self.bank = bank
        super().__init__(f"histogram of bank {bank} refused: {reason}")


def check_histogram(bank: str, values: object, shape: tuple[int, ...], bound: float | None) -> np.ndarray:
    """``values`` as float64 if it has ``shape``, is finite, ``|G| <= bound`` and ``0 <= H <= bound / 4``.

    The last axis is (G, H); ``bound`` is the clipped range of a sum (rows × 1 for G);
    None skips the range check (a release that carries the bank's own noise).
    """
    if not isinstance(values, np.ndarray) or not np.issubdtype(values.dtype, np.number):
        raise HistogramRefused(bank, f"expected a numeric array, got {type(values).__name__}")
    if values.shape != shape:
        raise HistogramRefused(bank, f"shape {values.shape}, the host asked for {shape} (bins it was not asked for)")
    x = values.astype(np.float64)
    if not np.isfinite(x).all():
        raise HistogramRefused(bank, f"{int((~np.isfinite(x)).sum())} NaN or infinite value(s)")
    if bound is None:
        return x
    g, h = x[..., 0], x[..., 1]
    slack = 1e-9 * max(bound, 1.0)
    if np.abs(g).max(initial=0.0) > bound + slack:
        raise HistogramRefused(bank, f"a gradient sum {np.abs(g).max():g} exceeds the clipped range ±{bound:g}")
    if h.min(initial=0.0) < -slack or h.max(initial=0.0) > bound / 4 + slack:
        raise HistogramRefused(bank, f"a hessian sum lies outside the clipped range [0, {bound / 4:g}]")
    return x


@dataclass(frozen=True)
class TreeParams:
    """Public growth parameters (the same for every bank and the host)."""

    depth: int = 4
    reg_lambda: float = 1.0
    min_child_hessian: float = 1.0
    min_gain: float = 0.0
    max_leaf: float = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int) or not 1 <= self.depth <= 8:
            raise ConfigError(f"tree depth must be an integer in [1, 8], got {self.depth!r}")
        if not (self.reg_lambda > 0 and self.min_child_hessian >= 0 and self.max_leaf > 0):
            raise ConfigError("reg_lambda and max_leaf must be > 0, min_child_hessian >= 0")


#: Under DP, a child of a split must hold this many noise standard deviations of hessian (`noise_aware`).
#: Measured on UCI (10 banks, ε = 3, 3 seeds): 1.5 to 9 give the same ROC-AUC, 0.01 above no floor (docs/gbdt.md).
MIN_CHILD_NOISE_SDS = 2.5


def noise_aware(params: TreeParams, hessian_noise_sd: float) -> TreeParams:
    """``params`` with ``min_child_hessian`` at least ``MIN_CHILD_NOISE_SDS * hessian_noise_sd``.

    ``hessian_noise_sd`` is the standard deviation of the noise on one summed hessian slot of
    a level histogram (0 without DP: ``params`` unchanged).
    """
    if not hessian_noise_sd >= 0:
        raise ConfigError(f"a noise standard deviation must be >= 0, got {hessian_noise_sd!r}")
    floor = MIN_CHILD_NOISE_SDS * hessian_noise_sd
    return params if floor <= params.min_child_hessian else replace(params, min_child_hessian=floor)


@dataclass
class Tree:
    """One tree of at most ``depth`` levels of splits, heap-indexed (see the module docstring)."""

    depth: int
    features: tuple[int, ...] | None = None  # the groups this tree may split on (None: all); public
    state: np.ndarray = field(init=False)  # per node: ABSENT, OPEN, SPLIT or LEAF
    group: np.ndarray = field(init=False)  # a split's feature group (-1 elsewhere)
    threshold: np.ndarray = field(init=False)  # a split's cut: bin <= threshold goes left (-1 elsewhere)
    value: np.ndarray = field(init=False)  # a leaf's value

    def __post_init__(self) -> None:
        size = 2 ** (self.depth + 1) - 1
        self.state = np.full(size, ABSENT, dtype=np.int8)
        self.state[0] = OPEN
        self.group = np.full(size, -1, dtype=np.int32)
        self.threshold = np.full(size, -1, dtype=np.int32)
        self.value = np.zeros(size, dtype=np.float64)

    def open_nodes(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.state == OPEN)]

    def leaves(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.state == LEAF)]

    def route(self, bins: np.ndarray) -> np.ndarray:
        """Each row's node: it walks down the splits until a node that is not a split."""
        node = np.zeros(bins.shape[0], dtype=np.int64)
        for _ in range(self.depth):
            at_split = self.state[node] == SPLIT
            if not at_split.any():
                break
            rows = np.flatnonzero(at_split)
            n = node[rows]
            right = bins[rows, self.group[n]] > self.threshold[n]
            node[rows] = 2 * n + 1 + right
        return node

    def predict(self, bins: np.ndarray) -> np.ndarray:
        """Leaf value of every row (the tree must be finished: no open node)."""
        if (self.state == OPEN).any():
            raise DataError("the tree still has open nodes")
        return self.value[self.route(bins)]

    def level_of(self, node: int) -> int:
        return int(np.floor(np.log2(node + 1)))

    def grow(self, sums: np.ndarray, layout: BinLayout, params: TreeParams) -> list[dict[str, Any]]:
        """Split or close every open node from its summed histograms; returns the decisions.

        ``sums`` is ``(open nodes, bins of the tree's feature groups, 2)`` (`BinLayout.slots`).
        """
        nodes = self.open_nodes()
        slots = layout.slots(self.features)
        if sums.shape != (len(nodes), len(slots), 2):
            raise DataError(f"summed histograms of shape {sums.shape} for {len(nodes)} open nodes")
        full = np.zeros((len(nodes), layout.total_bins, 2))
        full[:, slots] = sums
        decisions: list[dict[str, Any]] = []
        for k, node in enumerate(nodes):
            best = best_split(full[k], layout, params, self.features)
            if best is None:
                self.state[node] = LEAF
                decisions.append({"node": node, "leaf": True})
                continue
            group, cut, gain = best
            self.grow_at(node, group, cut)
            decisions.append({"node": node, "group": group, "cut": cut, "gain": gain})
        return decisions

    def grow_at(self, node: int, group: int, cut: int) -> None:
        """Split open ``node`` on ``group`` at ``cut`` (bin <= cut goes left); its children open, or leaves at the
        last level."""
        if self.state[node] != OPEN:
            raise DataError(f"node {node} is not open")
        self.state[node] = SPLIT
        self.group[node], self.threshold[node] = group, cut
        child = LEAF if self.level_of(node) + 1 >= self.depth else OPEN
        self.state[2 * node + 1] = self.state[2 * node + 2] = child

    def close(self) -> None:
        """Make every open node a leaf (no histogram needed at the last level)."""
        self.state[self.state == OPEN] = LEAF

    def set_leaf_values(self, totals: np.ndarray, params: TreeParams) -> None:
        """Leaf values from the leaves' summed ``(leaves, 2)`` totals, in `leaves()` order."""
        leaves = self.leaves()
        if totals.shape != (len(leaves), 2):
            raise DataError(f"leaf totals of shape {totals.shape} for {len(leaves)} leaves")
        h = np.maximum(totals[:, 1], params.min_child_hessian)
        self.value[leaves] = np.clip(-totals[:, 0] / (h + params.reg_lambda), -params.max_leaf, params.max_leaf)

    def to_dict(self) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = []
        for i in np.flatnonzero(self.state != ABSENT):
            if self.state[i] == SPLIT:
                nodes.append({"id": int(i), "group": int(self.group[i]), "cut": int(self.threshold[i])})
            elif self.state[i] == LEAF:
                nodes.append({"id": int(i), "leaf": float(self.value[i])})
            else:
                raise DataError("an unfinished tree cannot be saved")
        return {"depth": self.depth, "nodes": nodes}

    @classmethod
    def from_dict(cls, data: dict[str, Any], n_groups: int) -> Tree:
        tree = cls(int(data["depth"]))
        tree.state[:] = ABSENT
        size = tree.state.shape[0]
        for node in data["nodes"]:
            i = int(node["id"])
            if not 0 <= i < size:
                raise DataError(f"tree node id {i} outside a tree of depth {tree.depth}")
            if "leaf" in node:
                tree.state[i], tree.value[i] = LEAF, float(node["leaf"])
            else:
                group = int(node["group"])
                if not 0 <= group < n_groups or 2 * i + 2 >= size:
                    raise DataError(f"tree node {i} splits on group {group} or sits at the last level")
                tree.state[i], tree.group[i], tree.threshold[i] = SPLIT, group, int(node["cut"])
        reachable = tree.route(np.zeros((1, n_groups), dtype=np.int32))  # cheap sanity: the root walks somewhere
        if tree.state[0] == ABSENT or tree.state[reachable[0]] != LEAF:
            raise DataError("a tree whose root path does not end in a leaf")
        for split in np.flatnonzero(tree.state == SPLIT):
            if tree.state[2 * split + 1] == ABSENT or tree.state[2 * split + 2] == ABSENT:
                raise DataError(f"tree node {split} splits but lacks a child")
        return tree


def best_split(
    sums: np.ndarray, layout: BinLayout, params: TreeParams, allowed: tuple[int, ...] | None = None
) -> tuple[int, int, float] | None:
    """The best (group, cut, gain) of one node's ``(total_bins, 2)`` histograms over ``allowed`` groups, or None."""
    lam, mch = params.reg_lambda, params.min_child_hessian
    best: tuple[int, int, float] | None = None
    for j, (group, offset) in enumerate(zip(layout.groups, layout.offsets, strict=True)):
        if allowed is not None and j not in allowed:
            continue
        block = sums[offset : offset + group.n_bins]
        g_total, h_total = block[:, 0].sum(), block[:, 1].sum()
        gl = np.cumsum(block[:-1, 0])
        hl = np.cumsum(block[:-1, 1])
        gr, hr = g_total - gl, h_total - hl
        gain = gl**2 / (hl + lam) + gr**2 / (hr + lam) - g_total**2 / (h_total + lam)
        gain = np.where((hl >= mch) & (hr >= mch) & (hl + lam > 0) & (hr + lam > 0), gain, -np.inf)
        if gain.size == 0:
            continue
        t = int(np.argmax(gain))
        if gain[t] > params.min_gain and (best is None or gain[t] > best[2]):
            best = (j, t, float(gain[t]))
    return best
