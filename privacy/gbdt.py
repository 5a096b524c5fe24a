"""Differential privacy of histogram gradient boosting: sensitivities and the budget split.

A bank's release per tree level is the vector of its gradient and hessian histograms,
one (G, H) pair per (node, feature group, bin); once per tree it also releases the
(G, H) totals of the tree's leaves. What one customer (one row) changes, for the
logistic loss with margins ``f``, ``p = sigmoid(f)``:

* gradient ``g = p - y`` lies in ``[-1, 1]`` and hessian ``h = p (1 - p)`` in
  ``[0, 1/4]``: the derivatives are bounded by the loss itself, so no data-dependent
  clipping is needed; banks still clip to ``[-GRAD_BOUND, GRAD_BOUND]`` and
  ``[0, HESS_BOUND]`` so that a bug cannot break the bound;
* in a level histogram the row sits in exactly one node and, for each of the ``F``
  feature groups, in exactly one bin: adding or removing it moves ``F`` G-slots by at
  most 1 and ``F`` H-slots by at most 1/4, so the L2 sensitivity is
  ``sqrt(F (GRAD_BOUND**2 + HESS_BOUND**2))`` (:func:`level_sensitivity`);
* in the leaf release it sits in exactly one leaf: ``sqrt(GRAD_BOUND**2 + HESS_BOUND**2)``
  (:func:`leaf_sensitivity`).

Every release is a Gaussian mechanism (the distributed discrete Gaussian of
``fedsilo.privacy.secagg.noise``, accounted as a Gaussian with the effective multiplier
the honest peers' shares give, Kairouz, Liu & Steinke, ICML 2021), applied to all of a
bank's rows (no sampling, ``q = 1``). Rows of different nodes are disjoint, but the
node a row sits in depends on the model, so a level is one release, not a parallel
composition; trees and levels compose sequentially (adaptively: each tree's gradients
depend on the earlier noisy releases), which RDP/PRV composition handles.

The budget split (:func:`plan_releases`): ``trees * (depth + 1)`` releases per bank, each
with the *same noise multiplier* ``z`` (noise standard deviation over sensitivity),
calibrated so that their composition spends exactly the bank's (ε, δ). With Gaussian
mechanisms this is the uniform split of the zero-concentrated / Rényi budget across
queries used by Maddock et al., "Federated Boosted Decision Trees with Differential
Privacy", ACM CCS 2022 (Gaussian mechanism on gradient/hessian histograms under secure
aggregation, RDP accounting, equal share per split and leaf query). The leaf release
follows Li et al., "Privacy-Preserving Gradient Boosting Decision Trees", AAAI 2020, in
spending a separate part of each tree's budget on the leaves (they split it half/half
between internal nodes and leaves with the Laplace and exponential mechanisms; with
Gaussians the equal multiplier gives the leaves a much smaller absolute noise,
``z * leaf_sensitivity``, since their sensitivity is ``sqrt(F)`` times smaller). Not
followed from Li et al.: gradient-based data filtering and disjoint per-tree row sets
(they need rows that can be discarded per tree; every bank here uses all its rows) and
geometric leaf clipping (leaf values are clipped to a fixed public bound instead, a
post-processing step). Clipping the level histograms' gradients below ``GRAD_BOUND``
(the sensitivity side of their filtering: up to 60 % less level noise) was measured on
validation seeds with ``bench/gbdt_screen.py`` and lost more to the bias on the minority
class than it gained. So did an unequal split between levels and leaves: minimizing
the summed noise variances under a zCDP total gives each release ``ρ_i ∝`` its
sensitivity, 17 % of the budget to the leaves at depth 2 and 6 groups, inside the range
measured flat (docs/gbdt.md, "Accuracy at ε = 3"). So did dropping the leaf release and
taking the leaves' totals from the last level's histograms (``trees * depth`` releases,
z × 0.82 at depth 2): a leaf total then sums several level slots, each with √F times the
leaf sensitivity, and its noise, about 5.7 times the leaf release's, cost 0.013 of ROC-AUC
on validation seeds.

Random splits (``random_splits``, Maddock et al. CCS 2022's "totally random" trees): the
host draws every split (group and cut) at random, publicly, before any data is seen, so no
level histogram is released; each tree spends one release, its leaf totals, and the
budget goes to ``trees`` leaf releases. Measured on validation seeds with
``bench/gbdt_screen.py`` (``tr`` arms), many such trees at a small learning rate lose less to
the noise than the histogram splits do (docs/gbdt.md, "Random splits").

Pure math: no Flower, no network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting.mechanism import Mechanism

__all__ = [
    "GRAD_BOUND",
    "HESS_BOUND",
    "ReleasePlan",
    "leaf_sensitivity",
    "level_sensitivity",
    "plan_releases",
]

#: |dℓ/df| of the logistic loss: |sigmoid(f) - y| <= 1.
GRAD_BOUND = 1.0
#: d²ℓ/df² of the logistic loss: sigmoid(f)(1 - sigmoid(f)) <= 1/4.
HESS_BOUND = 0.25


def level_sensitivity(n_groups: int) -> float:
    """L2 sensitivity of one level's (G, H) histograms to one row: ``sqrt(F (1 + 1/16))``."""
    if not isinstance(n_groups, int) or n_groups < 1:
        raise ConfigError(f"a histogram needs at least one feature group, got {n_groups!r}")
    return math.sqrt(n_groups * (GRAD_BOUND**2 + HESS_BOUND**2))


def leaf_sensitivity() -> float:
    """L2 sensitivity of a tree's leaf (G, H) totals to one row: ``sqrt(1 + 1/16)``."""
    return math.sqrt(GRAD_BOUND**2 + HESS_BOUND**2)


@dataclass(frozen=True)
class ReleasePlan:
    """The noise of every release of a job: multiplier ``noise_multiplier`` for each of ``releases``.

    ``per_release`` is the `Mechanism` a bank's ledger records for one release (q = 1).
    """

    noise_multiplier: float
    trees: int
    depth: int
    random_splits: bool = False

    @property
    def releases(self) -> int:
        return self.trees * releases_per_tree(self.depth, self.random_splits)

    @property
    def per_release(self) -> Mechanism:
        return Mechanism(self.noise_multiplier, 1.0, 1)

    @property
    def whole_job(self) -> Mechanism:
        return Mechanism(self.noise_multiplier, 1.0, self.releases)


def releases_per_tree(depth: int, random_splits: bool = False) -> int:
    """One histogram release per level that splits, plus the leaf release; random splits: the leaf release."""
    return 1 if random_splits else depth + 1


def plan_releases(
    epsilon: float, delta: float, trees: int, depth: int, accountant: str, random_splits: bool = False
) -> ReleasePlan:
    """The common noise multiplier that makes ``trees * releases_per_tree`` releases spend (ε, δ).

    Calibrated with the job's accountant over the composition of equal Gaussian
    mechanisms (`fedsilo.privacy.accounting.cache.cached_calibration`, q = 1).
    """
    from fedsilo.privacy.accounting.cache import cached_calibration

    if not isinstance(trees, int) or trees < 1:
        raise ConfigError(f"--trees must be a positive integer, got {trees!r}")
    if not isinstance(depth, int) or not 1 <= depth <= 8:
        raise ConfigError(f"--depth must be an integer in [1, 8], got {depth!r}")
    z = cached_calibration(epsilon, delta, 1.0, trees * releases_per_tree(depth, random_splits), accountant)
    return ReleasePlan(float(z), trees, depth, random_splits)
