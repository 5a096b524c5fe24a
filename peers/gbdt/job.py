"""A boosting job's terms, as they travel in Flower's run config (``gbdt.*`` keys).

The host's ServerApp and every bank's ClientApp read the same `GBDTJob`; each bank
derives from it, on its own side, everything that protects its data: the release plan
(`fedsilo.privacy.gbdt.plan_releases`), the SecAgg+ configurations with their noise
shares (`fedsilo.peers.gbdt.federation.secure_configs`) and, in local DP, its own noise.
Nothing of that is taken from a message of the host. Every value is checked on
construction; a bad one raises `ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.peers.gbdt.federation import BoostSettings, local_sigmas, secure_configs
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon
from fedsilo.privacy.gbdt import ReleasePlan, plan_releases
from fedsilo.privacy.secagg import SecAggConfig
from fedsilo.strategies.gbdt import BinLayout, TreeParams

PREFIX = "gbdt."
DP_MODES = ("distributed", "local", "off")


@dataclass(frozen=True)
class GBDTJob:
    """``trees`` trees of ``depth`` over ``bins`` bins per feature among ``banks`` banks (see the module docstring).

    ``row_bound`` is the public bound on a bank's training rows (a bank with more refuses);
    ``session`` the job's id, which scopes its SecAgg+ sessions.
    """

    session: str
    banks: int
    row_bound: int
    trees: int = 10
    depth: int = 3
    bins: int = 16
    learning_rate: float = 0.3
    features_per_tree: int = 0
    splits: str = "histogram"  # "histogram" or "random" (`BoostSettings.random_splits`)
    trees_per_session: int = 10
    dp_mode: str = "distributed"
    epsilon: float = 3.0
    delta: float = 1e-5
    accountant: str = "rdp"
    dropout_fraction: float = 0.3
    collusion_fraction: float = 0.1

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{PREFIX}{key} {what}")

        need(bool(self.session), "session", "must name the job")
        need(isinstance(self.banks, int) and self.banks >= 2, "banks", f"must be an integer >= 2, got {self.banks!r}")
        need(isinstance(self.row_bound, int) and self.row_bound >= 1, "row-bound", "must be a positive integer")
        need(
            isinstance(self.trees, int) and self.trees >= 1, "trees", f"must be a positive integer, got {self.trees!r}"
        )
        need(isinstance(self.bins, int) and 2 <= self.bins <= 256, "bins", f"must be in [2, 256], got {self.bins!r}")
        need(0 < self.learning_rate <= 1, "learning-rate", f"must be in (0, 1], got {self.learning_rate!r}")
        need(self.features_per_tree >= 0, "features-per-tree", "must be >= 0 (0: every feature)")
        need(self.splits in ("histogram", "random"), "splits", f"must be histogram or random, got {self.splits!r}")
        need(self.trees_per_session >= 1, "trees-per-session", "must be >= 1 over the network (sessions only)")
        need(self.dp_mode in DP_MODES, "dp-mode", f"must be one of {', '.join(DP_MODES)}, got {self.dp_mode!r}")
        TreeParams(depth=self.depth)  # checks the depth
        if self.dp_mode != "off":
            check_epsilon(self.epsilon)
            check_delta(self.delta)
            check_accountant(self.accountant)

    # ------------------------------------------------------------------ run config
    def to_run_config(self) -> dict[str, Any]:
        return {PREFIX + f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> GBDTJob:
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name.replace("_", "-")
            if key not in config:
                continue
            raw = config[key]
            kind = {"str": str, "int": int, "float": float}[str(f.type)]
            if kind is int and (isinstance(raw, bool) or not isinstance(raw, int)):
                raise ConfigError(f"{key} must be an integer, got {raw!r}")
            if kind is float and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
                raise ConfigError(f"{key} must be a number, got {raw!r}")
            values[f.name] = kind(raw)
        for required in ("session", "banks", "row_bound"):
            if required not in values:
                raise ConfigError(f"the run config names no {PREFIX}{required.replace('_', '-')}: not a boosting job")
        return cls(**values)

    # ------------------------------------------------------------------ what both sides derive
    @property
    def settings(self) -> BoostSettings:
        return BoostSettings(
            trees=self.trees,
            params=TreeParams(depth=self.depth),
            learning_rate=self.learning_rate,
            dp_mode=self.dp_mode,
            secure=True,
            dropout_fraction=self.dropout_fraction,
            collusion_fraction=self.collusion_fraction,
            session_id=self.session.encode(),
            features_per_tree=self.features_per_tree,
            trees_per_session=self.trees_per_session,
            random_splits=self.splits == "random",
        )

    def plan(self) -> ReleasePlan | None:
        if self.dp_mode == "off":
            return None
        return plan_releases(self.epsilon, self.delta, self.trees, self.depth, self.accountant, self.splits == "random")

    def configs(self, layout: BinLayout, plan: ReleasePlan | None) -> tuple[SecAggConfig, SecAggConfig]:
        return secure_configs(self.settings, layout, self.banks, self.row_bound, plan)

    def local_sigma(self, layout: BinLayout, plan: ReleasePlan | None) -> tuple[float, float]:
        return local_sigmas(plan, self.settings, layout) if self.dp_mode == "local" else (0.0, 0.0)
