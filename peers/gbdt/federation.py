"""Boosting a histogram GBDT across banks: the host's loop over trees and levels.

The simulation calls the banks in this process; a Flower ServerApp runs the same loop with
the banks reached by messages (``exchange``, `fedsilo.peers.gbdt.server_app`).

For every tree each bank computes its gradients; for every level the host broadcasts
the tree so far, every bank computes its histograms for the open nodes, and the host
obtains their sum: through SecAgg+ (`fedsilo.strategies.gbdt.secure_sum`, the host
sees only the sum; in distributed DP each bank's masked vector carries its discrete
Gaussian share), or, without secure aggregation, by adding the banks' releases
itself after `check_histogram` (a malformed one is refused naming the bank and left
out). The host grows the level (`Tree.grow`); after the last level one more release
gives the leaves' totals and values; every bank updates its margins with the tree.
Under DP the trees grow with a noise-aware floor on a child's hessian
(`fedsilo.strategies.gbdt.noise_aware`, from the public noise of a level release).
With ``random_splits`` the host draws every split of a tree at random, publicly
(`random_tree`), no level is released, and the leaf release is the tree's only one
(the floor then follows the leaf noise). DP holds for any choice of splits, adaptive or
adversarial: each release's sensitivity is bounded per row whatever the tree.

Sessions: with ``trees_per_session > 0`` (the default, 10) the secure sums run in
multi-release SecAgg+ sessions (`fedsilo.strategies.gbdt.SecureSession`): one key
set-up serves every release of that many trees, and a tree's releases stay in one
session. A bank that refuses a release (or is dropped) leaves its session, per the
session's safety rules (`fedsilo.privacy.secagg.session`), and takes part again in
the next one; a session that can no longer reach its threshold is replaced by a new
one at the next release. ``trees_per_session = 0`` runs one full SecAgg+ round per
release (`secure_sum`).

Accounting: every released sum that contains a bank's input is one Gaussian mechanism
(`ReleasePlan.per_release`, q = 1) in that bank's spent history. In distributed DP the
shares are sized for the largest vector of the job (rounding adds ``sqrt(dim)`` to the
integer sensitivity, `fedsilo.privacy.secagg.noise`) and for ``D + C`` missing or
colluding banks, so the effective multiplier of every release is at least the planned
one and recording the planned one overstates ε, never understates it. An aborted
round (below the threshold) releases nothing and is not charged; its tree stops there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.peers.gbdt.bank import LEAVES, LEVEL, GBDTBank
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.gbdt import ReleasePlan, leaf_sensitivity, level_sensitivity, releases_per_tree
from fedsilo.privacy.secagg import DistributedNoise, SecAggConfig, ThresholdNotMet, Verifier
from fedsilo.privacy.secagg.noise import integer_l2_sensitivity
from fedsilo.strategies.gbdt import (
    BinLayout,
    SecureSession,
    SumOutcome,
    Tree,
    TreeParams,
    check_histogram,
    noise_aware,
    secure_sum,
)
from fedsilo.strategies.gbdt.secure_session import Exchange

DISTRIBUTED_BITS = 32


@dataclass(frozen=True)
class BoostSettings:
    """What the host runs: ``trees`` trees grown with ``params``, shrunk by ``learning_rate``."""

    trees: int
    params: TreeParams
    learning_rate: float = 0.3
    dp_mode: str = "distributed"  # "distributed" | "local" | "off"
    secure: bool = True
    dropout_fraction: float = 0.3
    collusion_fraction: float = 0.1
    session_id: bytes = b"gbdt"
    features_per_tree: int = 0  # 0: every group; else each tree splits on this many groups drawn by the host
    trees_per_session: int = 10  # secure sums: one SecAgg+ key set-up per this many trees; 0: a full round per release
    random_splits: bool = False  # the host draws every split at random (public); only the leaves are released

    def groups_per_tree(self, layout: BinLayout) -> int:
        k = self.features_per_tree
        return len(layout.groups) if k <= 0 or k >= len(layout.groups) else k


@dataclass
class BoostResult:
    model: GBDTModel
    spent: dict[str, list[Mechanism]]
    params: TreeParams  # what the trees were grown with (`noise_aware` of the settings')
    releases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def local_sigmas(plan: ReleasePlan | None, settings: BoostSettings, layout: BinLayout) -> tuple[float, float]:
    """A bank's own noise in local DP, in sum units: (level histograms, leaf totals), each z · its sensitivity."""
    if plan is None:
        return 0.0, 0.0
    z = plan.noise_multiplier
    return z * level_sensitivity(settings.groups_per_tree(layout)), z * leaf_sensitivity()


def split_noise_sd(
    settings: BoostSettings,
    layout: BinLayout,
    n_banks: int,
    plan: ReleasePlan | None,
    configs: tuple[SecAggConfig, SecAggConfig] | None,
) -> float:
    """Standard deviation of the noise on one slot of a summed level histogram, in sum units (public).

    Distributed: the multiplier of the shares when every bank adds its own (``configs``); local: each
    of the ``n_banks`` adds ``z · level sensitivity``; no DP: 0.
    """
    return _summed_noise_sd(LEVEL, settings, layout, n_banks, plan, configs)


def leaf_noise_sd(
    settings: BoostSettings,
    layout: BinLayout,
    n_banks: int,
    plan: ReleasePlan | None,
    configs: tuple[SecAggConfig, SecAggConfig] | None,
) -> float:
    """`split_noise_sd`'s counterpart for one summed leaf total (the floor on a leaf's hessian when no level is
    released)."""
    return _summed_noise_sd(LEAVES, settings, layout, n_banks, plan, configs)


def _summed_noise_sd(
    kind: str,
    settings: BoostSettings,
    layout: BinLayout,
    n_banks: int,
    plan: ReleasePlan | None,
    configs: tuple[SecAggConfig, SecAggConfig] | None,
) -> float:
    if settings.dp_mode == "off" or plan is None:
        return 0.0
    index = 0 if kind == LEVEL else 1
    if settings.dp_mode == "distributed":
        if configs is None or configs[index].noise is None:
            raise ConfigError("distributed DP needs the secure-aggregation configurations with their noise")
        sensitivity = level_sensitivity(settings.groups_per_tree(layout)) if kind == LEVEL else leaf_sensitivity()
        return configs[index].noise.noise_multiplier * sensitivity
    return math.sqrt(n_banks) * local_sigmas(plan, settings, layout)[index]


def secure_configs(
    settings: BoostSettings, layout: BinLayout, n_banks: int, row_bound: int, plan: ReleasePlan | None
) -> tuple[SecAggConfig, SecAggConfig]:
    """The SecAgg+ configurations of level and leaf releases (with noise shares in distributed DP)."""
    clip = 1.0
    if settings.dp_mode == "local" and plan is not None:  # room for the bank's own noise (8 sd; beyond: clipped)
        clip += 8 * plan.noise_multiplier * level_sensitivity(settings.groups_per_tree(layout)) / row_bound
    base = SecAggConfig(
        clip=clip,
        bits=DISTRIBUTED_BITS,
        max_weight=1.0,
        dropout_fraction=settings.dropout_fraction,
        collusion_fraction=settings.collusion_fraction,
        session_id=settings.session_id,
    )
    if settings.dp_mode != "distributed":
        return base, base
    if plan is None:
        raise ConfigError("distributed DP needs a release plan")
    graph = base.graph_parameters_for(n_banks)
    missing = graph.dropped + graph.corrupt
    if n_banks - missing < 1:
        raise ConfigError(
            f"with {n_banks} banks the tolerated dropouts ({graph.dropped}) and colluders ({graph.corrupt}) "
            "leave no honest noise: use more banks, lower the fractions, or --dp-mode local"
        )
    scale = base.encoder(n_banks).scale
    k = settings.groups_per_tree(layout)
    level_dim = 2 ** (settings.params.depth - 1) * layout.widest_slots(k) * 2
    leaf_dim = 2**settings.params.depth * 2

    def with_noise(sensitivity: float, dim: int) -> SecAggConfig:
        value_sensitivity = sensitivity / row_bound
        peer_sigma = plan.noise_multiplier * integer_l2_sensitivity(value_sensitivity, scale, dim)
        peer_sigma /= math.sqrt(n_banks - missing)
        z = peer_sigma * math.sqrt(n_banks) / (value_sensitivity * scale)
        noise = DistributedNoise(noise_multiplier=z, l2_sensitivity=value_sensitivity, expected_peers=n_banks)
        return replace(base, noise=noise, min_survivors=max(1, n_banks - graph.dropped))

    return with_noise(level_sensitivity(k), level_dim), with_noise(leaf_sensitivity(), leaf_dim)


def boost(
    banks: list[GBDTBank],
    layout: BinLayout,
    settings: BoostSettings,
    plan: ReleasePlan | None,
    row_bound: int,
    *,
    verifier: Verifier | None = None,
    configs: tuple[SecAggConfig, SecAggConfig] | None = None,
    on_tree: Any = None,
    exchange: Exchange | None = None,
) -> BoostResult:
    """Grow ``settings.trees`` trees over ``banks`` (see the module docstring).

    ``exchange`` moves the sessions' messages (`fedsilo.strategies.gbdt.secure_session.Exchange`):
    by default the host calls the banks in this process; a Flower ServerApp passes one that
    sends each stage to every bank as Flower messages (`fedsilo.peers.gbdt.server_app`). It
    needs multi-release sessions (secure aggregation, ``trees_per_session > 0``).
    """
    if exchange is not None and not (settings.secure and settings.trees_per_session > 0):
        raise ConfigError("banks reached by messages release only through secure-aggregation sessions")
    if settings.dp_mode == "distributed" and not settings.secure:
        raise ConfigError("distributed DP needs secure aggregation: the noise shares only add up inside it")
    if settings.dp_mode != "off" and plan is None:
        raise ConfigError(f"dp mode {settings.dp_mode} needs a release plan")
    if settings.secure and configs is None:
        configs = secure_configs(settings, layout, len(banks), row_bound, plan)
    if plan is not None and plan.random_splits != settings.random_splits:
        raise ConfigError("the release plan and the settings disagree on random splits")
    hessian_sd = (leaf_noise_sd if settings.random_splits else split_noise_sd)(
        settings, layout, len(banks), plan, configs
    )
    params = noise_aware(settings.params, hessian_sd)
    started = time.perf_counter()
    spent: dict[str, list[Mechanism]] = {b.name: [] for b in banks}
    model = GBDTModel(layout, [], settings.learning_rate)
    log: list[dict[str, Any]] = []
    round_id = 0
    per_tree = releases_per_tree(settings.params.depth, settings.random_splits)
    session: SecureSession | None = None  # the open one, when settings.trees_per_session > 0
    opened = 0  # sessions opened so far: the next one's number
    tree_index = 0

    def session_sum(kind: str, dim: int) -> SumOutcome:
        """One release in the open session; a new session first when it cannot serve one more."""
        nonlocal session, opened
        if session is None or not session.can_serve(1):
            assert configs is not None
            trees = min(settings.trees_per_session, settings.trees - tree_index)
            opened += 1
            try:
                session = SecureSession(
                    {LEVEL: configs[0], LEAVES: configs[1]}, opened, banks, trees * per_tree, verifier, exchange
                )
            except ThresholdNotMet as aborted:  # the set-up failed: nothing was unmasked or released
                session = None
                return SumOutcome(None, aborted=str(aborted))
        return session.sum(kind, dim)

    def release(kind: str, tree: Tree, shape: tuple[int, ...]) -> np.ndarray | None:
        nonlocal round_id
        round_id += 1
        for bank in banks:
            bank.request(kind, tree)
        entry: dict[str, Any] = {"kind": kind, "shape": list(shape)}
        if settings.secure:
            assert configs is not None
            if settings.trees_per_session > 0:
                outcome = session_sum(kind, int(np.prod(shape)))
                entry["session"] = opened
            else:
                config = configs[0] if kind == LEVEL else configs[1]
                outcome = secure_sum(config, round_id, banks, int(np.prod(shape)), verifier)
            entry.update(refused=outcome.refused, dropped=outcome.dropped, aborted=outcome.aborted)
            included = list(outcome.survivors)
            sums = None if outcome.sums is None else outcome.sums.reshape(shape) * row_bound
        else:
            included, refused, parts = [], {}, []
            for bank in banks:
                try:
                    values = bank.release()
                    bound = None if settings.dp_mode == "local" else row_bound
                    parts.append(check_histogram(bank.name, values, shape, bound))
                    included.append(bank.name)
                except FedsiloError as error:
                    refused[bank.name] = str(error)
            entry["refused"] = refused
            sums = np.sum(parts, axis=0) if parts else None
        entry["banks"] = len(included)
        log.append(entry)
        if sums is not None and plan is not None and settings.dp_mode != "off":
            for name in included:
                spent[name].append(plan.per_release)
        return sums

    for t in range(settings.trees):
        tree_index = t
        if session is not None and not session.can_serve(per_tree):
            session = None  # a tree's releases stay in one session when they can: the next opens fresh
        for bank in banks:
            bank.start_tree()
        if settings.random_splits:
            tree = random_tree(layout, params.depth)
        else:
            tree = Tree(params.depth, features=_draw_groups(layout, settings))
        for _ in range(0 if settings.random_splits else params.depth):
            nodes = tree.open_nodes()
            if not nodes:
                break
            sums = release(LEVEL, tree, (len(nodes), len(layout.slots(tree.features)), 2))
            if sums is None:
                tree.close()
                break
            tree.grow(sums, layout, params)
        tree.close()
        totals = release(LEAVES, tree, (len(tree.leaves()), 2))
        if totals is None:
            continue  # nothing released: this tree is dropped, the banks' margins stay
        tree.set_leaf_values(totals, params)
        for bank in banks:
            bank.finish_tree(tree, settings.learning_rate)
        model.trees.append(tree)
        if on_tree is not None:
            on_tree(t, model)
    return BoostResult(model, spent, params, log, time.perf_counter() - started)


def random_tree(layout: BinLayout, depth: int) -> Tree:
    """A tree of ``depth`` levels whose every split is a uniform public draw: a group, then a cut among its bins.

    Data-independent (nothing is released to choose it), so it needs no secret randomness; its leaves are then
    valued from the one leaf release. Maddock et al., CCS 2022, "totally random" trees.
    """
    rng = np.random.default_rng()
    tree = Tree(depth)
    for _ in range(depth):
        for node in tree.open_nodes():
            group = int(rng.integers(len(layout.groups)))
            cut = int(rng.integers(max(layout.groups[group].n_bins - 1, 1)))
            tree.grow_at(node, group, cut)
    tree.close()
    return tree


def _draw_groups(layout: BinLayout, settings: BoostSettings) -> tuple[int, ...] | None:
    """The host's public draw of the groups a tree may split on (feature subsampling), or None for all.

    Subsampling lowers the level sensitivity to ``sqrt(k (1 + 1/16))`` (`fedsilo.privacy.gbdt`); the draw is
    public and data-independent, so it needs no secret randomness.
    """
    k = settings.groups_per_tree(layout)
    if k == len(layout.groups):
        return None
    return tuple(sorted(int(j) for j in np.random.default_rng().choice(len(layout.groups), k, replace=False)))
