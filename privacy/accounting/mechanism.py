"""The units of privacy accounting: one run of the subsampled Gaussian mechanism, or of a pure ε-DP one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedsilo.errors import ConfigError


@dataclass(frozen=True)
class Mechanism:
    """One run of the subsampled Gaussian mechanism: `steps` DP-SGD steps at this
    noise multiplier and Poisson sample rate.

    Contract: ``noise_multiplier`` is a finite float > 0, ``sample_rate`` a float in
    (0, 1], ``steps`` an int >= 0 (0 means "nothing spent"). Anything else raises
    :class:`~fedsilo.errors.ConfigError` at construction, so an invalid mechanism can
    never reach an accountant or a ledger.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        sigma, q, steps = self.noise_multiplier, self.sample_rate, self.steps
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"noise_multiplier must be a finite number > 0, got {sigma!r}")
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not (0 < q <= 1):
            raise ConfigError(f"sample_rate must be a number in (0, 1] (batch size / dataset size), got {q!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
        # Normalise numeric types so that equality and JSON round-trips are exact.
        object.__setattr__(self, "noise_multiplier", float(sigma))
        object.__setattr__(self, "sample_rate", float(q))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; :meth:`from_dict` inverts it exactly."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mechanism:
        """Build a mechanism from :meth:`to_dict` output; ConfigError if malformed."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a mechanism must be a mapping, got {type(data).__name__}")
        if set(data) == {"pure_epsilon", "steps"}:
            return PureMechanism.from_dict(data)  # type: ignore[return-value]
        keys = {"noise_multiplier", "sample_rate", "steps"}
        if set(data) != keys:
            raise ConfigError(f"a mechanism needs exactly the keys {sorted(keys)}, got {sorted(data)}")
        return cls(data["noise_multiplier"], data["sample_rate"], data["steps"])


@dataclass(frozen=True)
class PureMechanism:
    """``steps`` runs of a pure ``epsilon``-DP mechanism (δ = 0) on the same records, e.g. randomized response.

    Composition with the Gaussian runs of a history is basic composition
    (:func:`~fedsilo.privacy.accounting.compose.epsilon_spent`): the pure runs add
    ``epsilon · steps`` to the ε of the Gaussian ones at the source's δ. Same contract
    as :class:`Mechanism`: ``epsilon`` a finite float > 0, ``steps`` an int ≥ 0;
    ConfigError otherwise.
    """

    epsilon: float
    steps: int

    def __post_init__(self) -> None:
        eps, steps = self.epsilon, self.steps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"a pure mechanism's epsilon must be a finite number > 0, got {eps!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
        object.__setattr__(self, "epsilon", float(eps))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; :meth:`Mechanism.from_dict` (or :meth:`from_dict`) inverts it exactly."""
        return {"pure_epsilon": self.epsilon, "steps": self.steps}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PureMechanism:
        if not isinstance(data, Mapping) or set(data) != {"pure_epsilon", "steps"}:
            raise ConfigError("a pure mechanism needs exactly the keys ['pure_epsilon', 'steps']")
        return cls(data["pure_epsilon"], data["steps"])
