"""A persistent cache of noise calibrations, shared by every process on the machine.

`calibrate_noise` is a pure function of (ε, δ, sample rate, steps, accountant) and of
the Opacus version, the RDP orders (or PRV method) and fedsilo's own search code that
compute it, and it is slow
(seconds: a handful of PRV or a dozen RDP evaluations). With thousands of simulated banks every Ray worker
would recompute the same few values; this cache keeps each result in one small file
(`fedsilo.privacy.accounting.store`, kind `noise-calibration`), so any process computes each
calibration at most once. The cached value is the exact float `calibrate_noise`
returned, so a hit changes nothing.

The key holds a fingerprint of the calibration's source (`calibrate_noise` and the
PRV search it calls) and its tolerance, so a cache written by an older search is never
read by a newer one: two peers of one consortium then plan the same multiplier for the
same job whatever their caches held (a stale entry once made a peer reserve σ = 5.3494
where the current search gives 5.3001 for the same ε, δ, q and steps).
"""

from __future__ import annotations

import hashlib
import inspect
from functools import cache, lru_cache
from pathlib import Path

from fedsilo.privacy.accounting import compose, store
from fedsilo.privacy.accounting.compose import CALIBRATION_TOLERANCE, PRV_METHOD, RDP_ALPHAS, calibrate_noise

KIND = "noise-calibration"


def cache_dir() -> Path:
    return store.root() / KIND


@cache
def search_fingerprint() -> str:
    """A digest of the code that searches σ (and its tolerance): a change to either is a new cache."""
    source = inspect.getsource(compose.calibrate_noise) + inspect.getsource(compose._calibrate_prv)
    return hashlib.sha256(f"{source}|{CALIBRATION_TOLERANCE!r}".encode()).hexdigest()[:16]


def _key(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> str:
    method = [PRV_METHOD] if accountant == "prv" else []  # a PRV σ is only valid for the ε it was searched with
    return store.key(
        [
            repr(epsilon),
            repr(delta),
            repr(q),
            steps,
            accountant,
            store.opacus_version(),
            RDP_ALPHAS,
            search_fingerprint(),
            *method,
        ]
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
