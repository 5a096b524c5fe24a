"""A persistent cache of noise calibrations, shared by every process on the machine.

`calibrate_noise` is a pure function of (ε, δ, sample rate, steps, accountant) and of
the Opacus version and RDP orders (or PRV method) that compute it, and it is slow
(seconds: a handful of PRV or a dozen RDP evaluations). With thousands of simulated banks every Ray worker
would recompute the same few values; this cache keeps each result in one small file
(`fedsilo.privacy.accounting.store`, kind `noise-calibration`), so any process computes each
calibration at most once. The cached value is the exact float `calibrate_noise`
returned, so a hit changes nothing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fedsilo.privacy.accounting import store
from fedsilo.privacy.accounting.compose import PRV_METHOD, RDP_ALPHAS, calibrate_noise

KIND = "noise-calibration"


def cache_dir() -> Path:
    return store.root() / KIND


def _key(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> str:
    method = [PRV_METHOD] if accountant == "prv" else []  # a PRV σ is only valid for the ε it was searched with
    return store.key(
        [repr(epsilon), repr(delta), repr(q), steps, accountant, store.opacus_version(), RDP_ALPHAS, *method]
    )


def is_cached(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> bool:
    """Whether `cached_calibration` with these arguments would be a cache hit."""
    record = store.load(KIND, _key(epsilon, delta, q, steps, accountant))
    return record is not None and isinstance(record.get("noise_multiplier"), float)


@lru_cache(maxsize=1024)
def cached_calibration(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> float:
    """`calibrate_noise(epsilon, delta, q, steps, accountant)`, from the cache when there."""
    name = _key(epsilon, delta, q, steps, accountant)
    record = store.load(KIND, name)
    if record is not None and isinstance(record.get("noise_multiplier"), float):
        return record["noise_multiplier"]
    value = calibrate_noise(epsilon, delta, q, steps, accountant=accountant)
    store.save(
        KIND,
        name,
        {
            "noise_multiplier": value,
            "epsilon": epsilon,
            "delta": delta,
            "sample_rate": q,
            "steps": steps,
            "accountant": accountant,
        },
    )
    return value
