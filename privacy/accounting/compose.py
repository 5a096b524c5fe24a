"""Composition and calibration over Opacus' accountants (RDP or PRV).

Assumption behind every function here: all mechanisms passed together were run on
the *same* set of records (one institution's data source), so their privacy losses
compose; δ is that source's budget δ. Composition is always done by one Opacus
accountant over the whole history, never by summing per-job epsilons.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as privacy_analysis
from opacus.accountants.accountant import IAccountant
from opacus.accountants.utils import MAX_SIGMA, get_noise_multiplier

from privacy.accounting import store
from privacy.accounting.mechanism import Mechanism
from privacy.errors import BudgetExceeded, ConfigError

ACCOUNTANTS: dict[str, type[IAccountant]] = {"rdp": RDPAccountant, "prv": PRVAccountant}

#: Same tolerance as ``opacus.accountants.utils.get_noise_multiplier``.
EPSILON_TOLERANCE = 0.01


def check_accountant(accountant: str) -> str:
    """Return ``accountant`` if it names a supported accountant, else ConfigError."""
    if accountant not in ACCOUNTANTS:
        raise ConfigError(
            f"unknown accountant {accountant!r}; use one of {sorted(ACCOUNTANTS)}"
        )
    return accountant


def check_delta(delta: float) -> float:
    """Return ``delta`` as a float if it lies in (0, 1), else ConfigError."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0 < delta < 1):
        raise ConfigError(
            f"delta must be a number in (0, 1), typically below 1/number of records, got {delta!r}"
        )
    return float(delta)


def check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    """Return ``epsilon`` as a float if it is finite and > 0, else ConfigError."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (
        math.isfinite(epsilon) and epsilon > 0
    ):
        raise ConfigError(f"{name} must be a finite number > 0, got {epsilon!r}")
    return float(epsilon)


def canonical_history(mechanisms: Sequence[Mechanism]) -> list[tuple[float, float, int]]:
    """The history as Opacus stores it, in a canonical form: zero-step runs dropped,
    runs with the same (noise multiplier, sample rate) merged, sorted.

    Composition is commutative, so this changes nothing mathematically, but it makes
    the computed epsilon a function of the multiset of runs: the same jobs composed in
    any order give bit-identical results (a ledger relies on that at the budget edge).
    """
    steps: dict[tuple[float, float], int] = {}
    for m in mechanisms:
        if not isinstance(m, Mechanism):
            raise ConfigError(f"expected a Mechanism, got {type(m).__name__}")
        if m.steps:
            key = (m.noise_multiplier, m.sample_rate)
            steps[key] = steps.get(key, 0) + m.steps
    return [(sigma, q, n) for (sigma, q), n in sorted(steps.items())]


# Opacus' default RDP orders stop at 63, where small-noise, few-step jobs (a small
# bank, a high ε) find their optimum at the edge and the bound is looser than it need
# be. Every order α > 1 gives a valid bound, so a wider grid only tightens it.
RDP_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + list(range(64, 1025, 16))


def _epsilon_kwargs(accountant: str) -> dict:
    return {"alphas": RDP_ALPHAS} if accountant == "rdp" else {}


def epsilon_spent(
    mechanisms: Sequence[Mechanism], delta: float, accountant: str = "rdp"
) -> float:
    """ε of all ``mechanisms`` composed together at ``delta``, by one Opacus accountant.

    ``accountant`` is ``"rdp"`` (RDPAccountant) or ``"prv"`` (PRVAccountant, an upper
    bound). An empty history (or only zero-step runs) spends 0.0.
    """
    delta = check_delta(delta)
    acc = ACCOUNTANTS[check_accountant(accountant)]()
    history = canonical_history(mechanisms)
    if not history:
        return 0.0
    if accountant == "rdp":
        # What RDPAccountant.get_privacy_spent computes, with each (σ, q)'s per-step RDP
        # vector memoized: Opacus' compute_rdp returns that vector times the steps.
        rdp = sum(np.asarray(_rdp_per_step(sigma, q)) * steps for sigma, q, steps in history)
        epsilon, _ = privacy_analysis.get_privacy_spent(orders=RDP_ALPHAS, rdp=rdp, delta=delta)
        return float(epsilon)
    acc.history = history
    return float(acc.get_epsilon(delta=delta, **_epsilon_kwargs(accountant)))


RDP_STORE_KIND = "rdp-per-step"


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """Opacus' RDP of one step of the subsampled Gaussian at every order in RDP_ALPHAS.

    Half a second per (σ, q) at these orders, so it is also kept on disk
    (`privacy.accounting.store`): a simulation's harness and each of its workers then
    compute each vector once between them. A stored vector is the exact floats Opacus
    returned; one of the wrong length is ignored and recomputed.
    """
    name = store.key([repr(float(noise_multiplier)), repr(float(sample_rate)), store.opacus_version(), RDP_ALPHAS])
    record = store.load(RDP_STORE_KIND, name)
    if record is not None and isinstance(record.get("rdp"), list) and len(record["rdp"]) == len(RDP_ALPHAS):
        return tuple(float(v) for v in record["rdp"])
    rdp = tuple(float(v) for v in privacy_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier,
                                                               steps=1, orders=RDP_ALPHAS))
    store.save(RDP_STORE_KIND, name, {"noise_multiplier": noise_multiplier, "sample_rate": sample_rate,
                                      "rdp": list(rdp)})
    return rdp


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    prior: Sequence[Mechanism] = (),
    *,
    epsilon_tolerance: float = EPSILON_TOLERANCE,
) -> float:
    """The smallest noise multiplier σ (to within ``epsilon_tolerance`` in ε) such that
    ``epsilon_spent(prior + [Mechanism(σ, sample_rate, steps)], delta) <= target_epsilon``.

    The result is always on the safe side: its ε is <= target_epsilon and within
    ``epsilon_tolerance`` of it. Raises ConfigError for invalid arguments or a target
    so low that σ would exceed Opacus' MAX_SIGMA, and BudgetExceeded if ``prior``
    alone already spends ``target_epsilon`` (no amount of noise can fit).
    """
    target_epsilon = check_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta)
    check_accountant(accountant)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    Mechanism(1.0, sample_rate, steps)  # validates sample_rate
    tol = check_epsilon(epsilon_tolerance, "epsilon_tolerance")
    prior = list(prior)
    too_low = (
        f"target_epsilon={target_epsilon} at delta={delta} is too low for {steps} steps at "
        f"sample rate {sample_rate}: it would need a noise multiplier above {MAX_SIGMA:g}; "
        "raise the target or train fewer steps"
    )

    if not canonical_history(prior):
        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=tol,
                    **_epsilon_kwargs(accountant),
                )
            )
        except ValueError as exc:
            raise ConfigError(too_low) from exc

    base = epsilon_spent(prior, delta, accountant)
    if base >= target_epsilon:
        raise BudgetExceeded(
            f"the prior history already spends epsilon={base:.4f} at delta={delta}, "
            f"which is not below target_epsilon={target_epsilon}; no noise level fits. "
            "Raise the budget or use a data source with budget left"
        )

    def eps(sigma: float) -> float:
        return epsilon_spent(prior + [Mechanism(sigma, sample_rate, steps)], delta, accountant)

    # Same search as Opacus' get_noise_multiplier, over the composed history.
    sigma_low, sigma_high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target_epsilon:
        sigma_high *= 2
        if sigma_high > MAX_SIGMA:
            raise ConfigError(too_low)
        eps_high = eps(sigma_high)
    for _ in range(200):  # a cap in case numerical noise (PRV) defeats the tolerance
        if target_epsilon - eps_high <= tol:
            break
        sigma = (sigma_low + sigma_high) / 2
        e = eps(sigma)
        if e < target_epsilon:
            sigma_high, eps_high = sigma, e
        else:
            sigma_low = sigma
    return sigma_high
