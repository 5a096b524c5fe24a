"""What model a job trains (`ModelSpec`), without torch.

A job's configuration names its model; building one is `fedsilo.peers.models.build_model`,
which needs torch. Kept apart so that reading and refusing a configuration (the CLI,
the job file) imports no torch. `fedsilo.peers.models` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsilo.errors import ConfigError

MODEL_KINDS = ("mlp", "logreg")


@dataclass(frozen=True)
class ModelSpec:
    """What to build: `kind` is "mlp" or "logreg"; `hidden` the MLP's layer widths.

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

    def __post_init__(self) -> None:
        if self.shared_features < 0:
            raise ConfigError("model.shared-features must be ≥ 0")
        if self.shared_features and self.kind != "mlp":
            raise ConfigError("a shared input block needs model kind mlp")
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model '{self.kind}': use one of {', '.join(MODEL_KINDS)}")
        if self.kind == "mlp" and (not self.hidden or any(h < 1 for h in self.hidden)):
            raise ConfigError("model.hidden must list positive layer widths, e.g. [64, 32]")

    def parameter_count(self, n_features: int) -> int:
        """The parameters `build_model(self, n_features)` has, counted without building it (so a
        job declaring huge layers can be weighed before anything is allocated)."""
        widths = (n_features, *(self.hidden if self.kind == "mlp" else ()), 1)
        return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))

    @classmethod
    def parse_hidden(cls, text: str) -> tuple[int, ...]:
        """Parse "64,32" into (64, 32)."""
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"model.hidden '{text}' is not a comma-separated list of widths") from None
