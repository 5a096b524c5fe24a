"""fedsilo's Python API (see `fedsilo.simulations.api`): what the command line does, a notebook can do.

    import fedsilo
    result = fedsilo.simulate(banks=3, rounds=2)   # SimulationResult: metrics, ε per bank, paths
    model = fedsilo.load_run(result.run_dir)       # a run folder or a `fedsilo model pull` folder
    scores = model.score(df)                       # one probability per row of df

`import fedsilo` is light: the names are loaded on first use, and torch, Flower and
Ray only when a simulation or a model needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "RoundMetrics",
    "RunPaths",
    "ScoringModel",
    "SimulationConfig",
    "SimulationResult",
    "SweepResult",
    "load_run",
    "simulate",
    "sweep",
]

_HOMES = {"SimulationConfig": "fedsilo.simulations.config", "ScoringModel": "fedsilo.simulations.scoring"}

if TYPE_CHECKING:
    from fedsilo.simulations.api import RoundMetrics, RunPaths, SimulationResult, SweepResult, load_run, simulate, sweep
    from fedsilo.simulations.config import SimulationConfig
    from fedsilo.simulations.scoring import ScoringModel


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'fedsilo' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_HOMES.get(name, "fedsilo.simulations.api")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
