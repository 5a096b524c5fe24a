"""Privacy accounting: a small facade over Opacus' RDP and PRV accountants.

- :class:`Mechanism` — one run of the Poisson-subsampled Gaussian mechanism.
- :class:`PureMechanism` — runs of a pure ε-DP mechanism (randomized response), basic composition.
- :func:`epsilon_spent` — ε of a whole history, composed by one Opacus accountant.
- :func:`calibrate_noise` — the smallest noise multiplier that fits a target ε.
- :class:`Accountant` — a stateful, checkpointable history.
- `validate` — the one check of ε, δ and accountant names, for every configuration.
- `planning` — a job's noise from public numbers (local DP-SGD and distributed DP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ACCOUNTANTS", "Accountant", "Mechanism", "PureMechanism", "calibrate_noise", "epsilon_spent"]

# Each public name's home module, loaded on first use: `compose` and `accountant` bring numpy
# and Opacus' analysis, which the command line's help and refusals do not need.
_HOMES = {
    "ACCOUNTANTS": "validate",
    "Accountant": "accountant",
    "Mechanism": "mechanism",
    "PureMechanism": "mechanism",
    "calibrate_noise": "compose",
    "epsilon_spent": "compose",
}

if TYPE_CHECKING:
    from fedsilo.privacy.accounting.accountant import Accountant
    from fedsilo.privacy.accounting.compose import calibrate_noise, epsilon_spent
    from fedsilo.privacy.accounting.mechanism import Mechanism, PureMechanism
    from fedsilo.privacy.accounting.validate import ACCOUNTANTS


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
