"""Screening DP-GBDT methods on validation seeds: a pooled-row simulation of the federated DP run.

Not the federation: every training row of the 10 banks sits in one simulated bank, so a
level's histogram is the pooled sum the SecAgg+ federation releases, and that bank adds
Gaussian noise at the *effective* multiplier of the distributed run (the shares sized
for the tolerated dropouts and colluders, `secure_configs`), to both the level
histograms and the leaf totals (the plan calibrated with ``--accountant``, PRV by default as
the job's). The trees grow with the real host code
(`fedsilo.peers.gbdt.federation.boost`, with the noise-aware floor). A run takes
seconds instead of minutes, so methods can be compared over several seeds and repeats
(the noise is fresh in each repeat) before one is run through `bench/gbdt.py`.

Each arm is a JSON object of these keys (defaults: the command's defaults):

* ``trees``, ``depth``, ``lr``, ``k`` (groups per tree), ``bins``, ``lam`` (λ);
* ``noise``: a factor on the noise (0: no noise and no floor: the non-private ceiling);
  ``snoise`` and ``lnoise`` override it for the split histograms and the leaf totals
  alone (the noise-aware floor follows the split noise);
* ``floor``: a fixed ``min_child_hessian`` (the noise-aware floor still applies above it);
* ``c``: the split histograms' gradients clipped to ``[-c, c]`` (the leaf totals keep
  ``|g| <= 1``), with the level sensitivity ``sqrt(k (c² + 1/16))``: gradient clipping
  in the spirit of Li et al.'s gradient-based data filtering (AAAI 2020);
* ``hs``: the banks scale their hessians by ``hs`` in the split histograms and the host
  divides the noisy sums back (level sensitivity ``sqrt(k (c² + (hs/4)²))``): a
  different share of the level noise between G and H (the floor follows H's noise);
* ``tr``: totally random trees (Maddock et al., CCS 2022, "TR"): every split is a public
  random (group, cut), no level histogram is released, and the plan's ``trees`` releases
  are the leaf totals alone (``depth``, ``trees``, ``lr``, ``lam``, ``bins``, ``noise``
  apply; the floor on a leaf's hessian is 2.5 leaf-noise standard deviations);
* ``alpha``, ``beta``: the host draws a tree's groups with probability
  ``(1 - alpha) · score / Σ score + alpha / J``, ``score`` an exponential average (weight
  ``beta`` on the past) of each group's share of the root's released gain when drawn
  (post-processing of released sums); ``alpha = 1``: the uniform draw.

It patches the host's draw, the level sensitivity and the banks' gradients in this
process only. Select on validation seeds (3, 4, 5), never on the test seeds 0, 1, 2.

    python bench/gbdt_screen.py --arms '[{}, {"c": 0.5}, {"lam": 50}]' --seeds 3,4,5 --repeats 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _gbdt_common import DEFAULT_DATA

from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.evaluation import roc_auc
from fedsilo.peers.gbdt import GBDTBank, federation, layout_from_encoder
from fedsilo.peers.gbdt.bank import LEAVES
from fedsilo.privacy import gbdt as privacy_gbdt
from fedsilo.simulations.banks import build_population
from fedsilo.simulations.config import build_config
from fedsilo.strategies.gbdt import TreeParams
from fedsilo.strategies.gbdt.tree import Tree

SCORES: dict[str, Any] = {}  # the adaptive draw's state for the current run
ACCOUNTANT = "prv"  # the calibration of the plan (`--accountant`)


def load(data: str, seed: int) -> tuple[Any, Any]:
    """The encoder and every bank's encoded split, as `fedsilo simulate --model gbdt` builds them."""
    config = build_config(
        None,
        {
            "data": data,
            "label": "Y",
            "id_column": "ID",
            "banks": 10,
            "partition": "dirichlet:0.5",
            "model": "gbdt",
            "seed": seed,
        },
    )
    with tempfile.TemporaryDirectory() as work:
        population = build_population(config, Path(work) / "source")
        frames = {i: population.frame(i) for i in range(population.n_banks)}
        encoder = TabularEncoder.fit([BankSummary.from_frame(f, "Y") for f in frames.values()], "Y")
        tensors = {i: encode_bank(frames[i], encoder, config.test_fraction, config.seed) for i in frames}
    return encoder, tensors


class ClippedSplitBank(GBDTBank):
    """The pooled bank; its split histograms use gradients clipped to ``[-clip, clip]`` and hessians scaled by
    ``hessian_scale`` (divided back out of the noisy sums, so their noise shrinks by that factor)."""

    clip = 1.0
    hessian_scale = 1.0

    def start_tree(self) -> None:
        super().start_tree()
        self._leaf_g = self._g
        self._level_g = np.clip(self._g, -self.clip, self.clip)

    def level_histogram(self, tree: Tree) -> np.ndarray:
        self._g = self._level_g
        try:
            sums = super().level_histogram(tree)
        finally:
            self._g = self._leaf_g
        sums[..., 1] *= self.hessian_scale
        return sums

    def release(self) -> np.ndarray:
        sums = super().release()
        if self._request is not None and self._request[0] == "level":
            sums[..., 1] /= self.hessian_scale
        return sums


def adaptive_draw(layout: Any, settings: Any) -> tuple[int, ...] | None:
    groups, k = len(layout.groups), settings.groups_per_tree(layout)
    if k == groups:
        return None
    score = SCORES["score"]
    p = np.full(groups, 1.0 / groups)
    if SCORES["alpha"] < 1 and score.sum() > 0:
        p = (1 - SCORES["alpha"]) * score / score.sum() + SCORES["alpha"] / groups
    return tuple(sorted(int(j) for j in np.random.default_rng().choice(groups, k, replace=False, p=p)))


_grow = Tree.grow


def scored_grow(self: Tree, sums: np.ndarray, layout: Any, params: TreeParams) -> list[dict[str, Any]]:
    decisions = _grow(self, sums, layout, params)
    if SCORES and self.features is not None and self.level_of(decisions[0]["node"]) == 0:
        gains = np.zeros(len(layout.groups))
        for d in decisions:
            if "group" in d:
                gains[d["group"]] += max(d["gain"], 0.0)
        drawn = list(self.features)
        beta = SCORES["beta"]
        SCORES["score"][drawn] = beta * SCORES["score"][drawn] + (1 - beta) * gains[drawn] / max(gains.sum(), 1e-12)
    return decisions


def pooled(tensors: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Every bank's training and held-out rows pooled, and the row bound (the largest bank's training rows)."""
    x = np.concatenate([t.x_train.numpy() for t in tensors.values()]).astype(np.float64)
    y = np.concatenate([t.y_train.numpy() for t in tensors.values()])
    x_test = np.concatenate([t.x_test.numpy() for t in tensors.values()]).astype(np.float64)
    y_test = np.concatenate([t.y_test.numpy() for t in tensors.values()])
    return x, y, x_test, y_test, max(t.n_train for t in tensors.values())


def run_random_trees(encoder: Any, tensors: Any, a: dict[str, Any]) -> float:
    """The ``tr`` arm: data-independent random splits, only the leaves released (at the effective multiplier)."""
    layout = layout_from_encoder(encoder, a["bins"])
    x, y, x_test, y_test, row_bound = pooled(tensors)
    settings = federation.BoostSettings(a["trees"], TreeParams(depth=a["depth"]), a["lr"], random_splits=True)
    plan = privacy_gbdt.plan_releases(3.0, 1e-5, a["trees"], a["depth"], a["accountant"], random_splits=True)
    leaf = federation.secure_configs(settings, layout, 10, row_bound, plan)[1]  # shares sized for the D + C banks
    sigma = leaf.noise.noise_multiplier * privacy_gbdt.leaf_sensitivity() * a["noise"]
    bank = GBDTBank("pooled", 1, layout.bin_rows(x), y, layout, row_bound, local_sigma=(0.0, max(sigma, 1e-12)))
    params = TreeParams(depth=a["depth"], reg_lambda=a["lam"], min_child_hessian=max(2.5 * sigma, 1.0))
    margin = np.zeros(len(y_test))
    bins_test = layout.bin_rows(x_test)
    for _ in range(a["trees"]):
        bank.start_tree()
        tree = federation.random_tree(layout, a["depth"])
        bank.request(LEAVES, tree)
        tree.set_leaf_values(bank.release(), params)
        bank.finish_tree(tree, a["lr"])
        margin += a["lr"] * tree.predict(bins_test)
    return float(roc_auc(y_test, margin))


def run(encoder: Any, tensors: Any, arm: dict[str, Any]) -> float:
    a = {"trees": 30, "depth": 2, "lr": 0.5, "k": 6, "bins": 16, "lam": 1.0, "noise": 1.0, "c": 1.0, "alpha": 1.0}
    a["accountant"] = ACCOUNTANT
    if arm.get("tr"):
        a.update(trees=100, depth=4, lr=0.3)
        a.update(arm)
        return run_random_trees(encoder, tensors, a)
    a.update(arm)
    layout = layout_from_encoder(encoder, a["bins"])
    x, y, x_test, y_test, row_bound = pooled(tensors)
    params = TreeParams(depth=a["depth"], reg_lambda=a["lam"], min_child_hessian=a.get("floor", 1.0))
    settings = federation.BoostSettings(a["trees"], params, a["lr"], features_per_tree=a["k"])
    plan = privacy_gbdt.plan_releases(3.0, 1e-5, a["trees"], a["depth"], a["accountant"])
    level, leaf = federation.secure_configs(settings, layout, 10, row_bound, plan)
    z_level, z_leaf = level.noise.noise_multiplier, leaf.noise.noise_multiplier
    c, noise, hs = a["c"], a["noise"], a.get("hs", 1.0)

    def sensitivity(groups: int) -> float:  # level sensitivity with clipped gradients, at the effective multiplier
        return (
            float(np.sqrt(groups * (c**2 + (hs * privacy_gbdt.HESS_BOUND) ** 2)))
            * z_level
            / plan.noise_multiplier
            * a.get("snoise", noise)
        )

    sigmas = (
        plan.noise_multiplier * sensitivity(settings.groups_per_tree(layout)),
        z_leaf * privacy_gbdt.leaf_sensitivity() * a.get("lnoise", noise),
    )
    ClippedSplitBank.clip, ClippedSplitBank.hessian_scale = c, hs
    bank = ClippedSplitBank("pooled", 1, layout.bin_rows(x), y, layout, row_bound, local_sigma=sigmas)
    SCORES.clear()
    SCORES.update(score=np.zeros(len(layout.groups)), alpha=a["alpha"], beta=a.get("beta", 0.7))
    original, original_sd = federation.level_sensitivity, federation.split_noise_sd
    federation.level_sensitivity = sensitivity
    federation.split_noise_sd = lambda *args: original_sd(*args) / hs  # the floor: the hessians' own noise
    try:
        model = federation.boost([bank], layout, replace(settings, dp_mode="local", secure=False), plan, row_bound)
    finally:
        federation.level_sensitivity, federation.split_noise_sd = original, original_sd
    return float(roc_auc(y_test, model.model.predict_margin(x_test)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--arms", default="[{}]", help="JSON list of arms (see the module docstring)")
    parser.add_argument("--seeds", default="3,4,5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accountant", default="prv", choices=("prv", "rdp"), help="as --accountant (default prv)")
    args = parser.parse_args()
    global ACCOUNTANT
    ACCOUNTANT = args.accountant
    federation._draw_groups = adaptive_draw
    Tree.grow = scored_grow
    data = {s: load(args.data, s) for s in (int(v) for v in args.seeds.split(","))}
    for arm in json.loads(args.arms):
        aucs = [run(*data[s], arm) for s in data for _ in range(args.repeats)]
        se = np.std(aucs) / np.sqrt(len(aucs))
        print(json.dumps(arm), f"ROC-AUC {np.mean(aucs):.4f} ± {se:.4f}", [round(v, 4) for v in aucs], flush=True)


if __name__ == "__main__":
    main()
