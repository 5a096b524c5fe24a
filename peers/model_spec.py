"""What model a job trains (`ModelSpec`), without torch.

A job's configuration names its model; building one is `fedsilo.peers.models.build_model`,
which needs torch. Kept apart so that reading and refusing a configuration (the CLI,
the job file) imports no torch. `fedsilo.peers.models` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsilo.errors import ConfigError

MODEL_KINDS = ("mlp", "logreg")  # the neural models `fedsilo.peers.models.build_model` builds
JOB_MODEL_KINDS = (*MODEL_KINDS, "gbdt")  # what a signed job may train: also boosted trees (`fedsilo.peers.gbdt`)
BOOST_KEYS = ("trees", "depth", "bins", "learning-rate", "features-per-tree", "splits")  # a gbdt job's [model] keys


@dataclass(frozen=True)
class ModelSpec:
    """What to build: `kind` is "mlp", "logreg" or "gbdt"; `hidden` the MLP's layer widths.

    A "gbdt" model (a deployed boosting job, `fedsilo.peers.gbdt`) is `trees` trees of
    `depth` levels over `bins` bins per feature, shrunk by `learning_rate`, each tree on
    `features_per_tree` sampled features (0: all), its splits chosen from noisy histograms
    (`splits` "histogram") or drawn at random, publicly, with only the leaves released
    ("random"); those fields mean nothing to the other kinds.

    `shared_features` > 0 (transfer setups) makes the first `shared_features` inputs,
    the columns of the consortium's shared vocabulary, go through their own first layer
    `shared_input`, and the remaining inputs (the institution's own columns) through
    `input`; the two are summed before the first activation. Only then can
    `shared_input` be aggregated while `input`, whose width is the institution's own,
    stays private.
    """

    kind: str = "mlp"
    hidden: tuple[int, ...] = (64, 32)
    shared_features: int = 0
    trees: int = 10
    depth: int = 3
    bins: int = 16
    learning_rate: float = 0.3
    features_per_tree: int = 0
    splits: str = "histogram"

    def __post_init__(self) -> None:
        if self.shared_features < 0:
            raise ConfigError("model.shared-features must be ≥ 0")
        if self.shared_features and self.kind != "mlp":
            raise ConfigError("a shared input block needs model kind mlp")
        if self.kind not in JOB_MODEL_KINDS:
            raise ConfigError(f"unknown model '{self.kind}': use one of {', '.join(JOB_MODEL_KINDS)}")
        if self.kind == "gbdt":
            self._check_boost()
        if self.kind == "mlp" and (not self.hidden or any(h < 1 for h in self.hidden)):
            raise ConfigError("model.hidden must list positive layer widths, e.g. [64, 32]")

    def _check_boost(self) -> None:
        def need(ok: bool, key: str, what: str, value: object) -> None:
            if not ok:
                raise ConfigError(f"model.{key} {what} (got {value!r})")

        def integer(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        need(integer(self.trees) and 1 <= self.trees <= 10_000, "trees", "must be an integer in [1, 10000]", self.trees)
        need(integer(self.depth) and 1 <= self.depth <= 8, "depth", "must be an integer in [1, 8]", self.depth)
        need(integer(self.bins) and 2 <= self.bins <= 256, "bins", "must be an integer in [2, 256]", self.bins)
        need(
            isinstance(self.learning_rate, (int, float))
            and not isinstance(self.learning_rate, bool)
            and 0 < self.learning_rate <= 1,
            "learning-rate",
            "must be a number in (0, 1]",
            self.learning_rate,
        )
        need(
            integer(self.features_per_tree) and self.features_per_tree >= 0,
            "features-per-tree",
            "must be an integer >= 0 (0: every feature)",
            self.features_per_tree,
        )
        need(self.splits in ("histogram", "random"), "splits", "must be histogram or random", self.splits)

    @property
    def releases(self) -> int:
        """A gbdt model's releases per bank: per tree, one per level and one of the leaves (random splits: the
        leaves only)."""
        return self.trees * (1 if self.splits == "random" else self.depth + 1)

    def parameter_count(self, n_features: int) -> int:
        """The parameters `build_model(self, n_features)` has, counted without building it (so a
        job declaring huge layers can be weighed before anything is allocated). A gbdt model's:
        its nodes (a split or a leaf value each), `trees * (2 ** (depth + 1) - 1)`."""
        if self.kind == "gbdt":
            return self.trees * (2 ** (self.depth + 1) - 1)
        widths = (n_features, *(self.hidden if self.kind == "mlp" else ()), 1)
        return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))

    @classmethod
    def parse_hidden(cls, text: str) -> tuple[int, ...]:
        """Parse "64,32" into (64, 32)."""
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"model.hidden '{text}' is not a comma-separated list of widths") from None
