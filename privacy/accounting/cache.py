"""A persistent cache of noise calibrations, shared by every process on the machine.

`calibrate_noise` is a pure function of (ε, δ, sample rate, steps, accountant) and of
the Opacus version and RDP orders that compute it, and it is slow (seconds: hundreds of
RDP orders, a dozen evaluations). With thousands of simulated banks every Ray worker
would recompute the same few values; this cache keeps each result in one small file
under `$FEDSILO_CACHE` (default `$XDG_CACHE_HOME/fedsilo`, else `~/.cache/fedsilo`),
written atomically, so any process computes each calibration at most once. A cache
that cannot be read or written is ignored (the value is computed). The cached value
is the exact float `calibrate_noise` returned, so a hit changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from privacy.accounting.compose import RDP_ALPHAS, calibrate_noise


def cache_dir() -> Path:
    root = os.environ.get("FEDSILO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fedsilo")
    return Path(root) / "noise-calibration"


def _key(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> str:
    try:
        opacus = metadata.version("opacus")
    except metadata.PackageNotFoundError:
        opacus = "unknown"
    text = json.dumps([repr(epsilon), repr(delta), repr(q), steps, accountant, opacus, RDP_ALPHAS])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@lru_cache(maxsize=1024)
def cached_calibration(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> float:
    """`calibrate_noise(epsilon, delta, q, steps, accountant)`, from the cache when there."""
    path = cache_dir() / f"{_key(epsilon, delta, q, steps, accountant)}.json"
    try:
        return float(json.loads(path.read_text())["noise_multiplier"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = calibrate_noise(epsilon, delta, q, steps, accountant=accountant)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({"noise_multiplier": value, "epsilon": epsilon, "delta": delta,
                                       "sample_rate": q, "steps": steps, "accountant": accountant}))
        os.replace(partial, path)
    except OSError:
        pass
    return value
