"""Composition and calibration over Opacus' accountants (RDP or PRV).

Assumption behind every function here: all mechanisms passed together were run on
the *same* set of records (one institution's data source), so their privacy losses
compose; δ is that source's budget δ. Composition is always done by one Opacus
accountant over the whole history, never by summing per-job epsilons.

PRV (the default of jobs and sources): Opacus' `PRVAccountant` (Gopi et al. 2021,
numerical composition of privacy loss random variables), which is tighter than RDP.
The ε it states is never its estimate but its certified upper bound: the estimate at
δ − δ_err plus ε_err, with ε_err = `PRV_EPS_ERROR` (0.01) and δ_err = δ/1000
(`PRV_DELTA_ERROR_FRACTION`), so the true ε at δ is below the stated one. One
deviation from Opacus, on the safe side: the truncation domain [−L, L] is derived
from an RDP bound over integer orders (`PRV_DOMAIN_ORDERS`) instead of Opacus'
fractional ones, then widened, at Opacus' mesh, to a length the FFT handles fast.
Any order set gives a valid RDP bound, and a larger L only shrinks the truncation
error; the bound costs milliseconds instead of half a second, the FFT up to 4x less. (Opacus' own caveat on that domain rule, an adaptation of Remark 5.6 of the
paper said to hold for ε_err < 1, applies unchanged.) A history of full-batch steps
only (q = 1, distributed DP) is a composition of Gaussian mechanisms, whose ε the
"prv" accountant computes exactly instead (`_gaussian_epsilon`).

Opacus (and with it torch) and scipy are imported inside the functions that compute;
validating a name, a δ or an ε is `fedsilo.privacy.accounting.validate`'s job.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsilo.errors import BudgetExceeded, ConfigError
from fedsilo.privacy.accounting import store
from fedsilo.privacy.accounting.mechanism import Mechanism, PureMechanism
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon

#: The calibration's tolerance, absolute in ε (Opacus' `get_noise_multiplier` default): a
#: calibrated σ spends between target − 0.01 and the target. Not the slack a peer allows
#: when it re-checks a plan's ε against the job's (that one is relative, 1e-6).
CALIBRATION_TOLERANCE = 0.01


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


def epsilon_spent(mechanisms: Sequence[Mechanism | PureMechanism], delta: float, accountant: str = "rdp") -> float:
    """ε of all ``mechanisms`` composed together at ``delta``, by one Opacus accountant.

    ``accountant`` is ``"rdp"`` (RDPAccountant) or ``"prv"`` (PRVAccountant, an upper
    bound). An empty history (or only zero-step runs) spends 0.0. Pure ε-DP runs
    (:class:`PureMechanism`, e.g. randomized response) compose by basic composition:
    their ε · steps is added to the Gaussian runs' ε at ``delta`` (valid: a pure
    ε₁-DP and an (ε₂, δ)-DP mechanism compose to (ε₁ + ε₂, δ), adaptively).
    """
    delta = check_delta(delta)
    check_accountant(accountant)
    pure = sum(m.epsilon * m.steps for m in mechanisms if isinstance(m, PureMechanism))
    history = canonical_history([m for m in mechanisms if not isinstance(m, PureMechanism)])
    if not history:
        return float(pure)
    return pure + _gaussian_history_epsilon(history, delta, accountant)


def _gaussian_history_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    if accountant == "rdp":
        from opacus.accountants.analysis import rdp as privacy_analysis

        # What RDPAccountant.get_privacy_spent computes, with each (σ, q)'s per-step RDP
        # vector memoized: Opacus' compute_rdp returns that vector times the steps.
        rdp = sum(np.asarray(_rdp_per_step(sigma, q)) * steps for sigma, q, steps in history)
        epsilon, _ = privacy_analysis.get_privacy_spent(orders=RDP_ALPHAS, rdp=rdp, delta=delta)
        return float(epsilon)
    if all(q == 1.0 for _, q, _ in history):
        return _gaussian_epsilon(tuple(history), delta)
    return _prv_epsilon(tuple(history), delta)


#: ε error of every PRV computation: the stated ε is the estimate (at δ − δ_err) + this.
PRV_EPS_ERROR = 0.01
#: δ error of every PRV computation, as a fraction of δ (Opacus' default, δ/1000).
PRV_DELTA_ERROR_FRACTION = 1e-3
#: RDP orders for the PRV truncation domain only (see the module docstring).
PRV_DOMAIN_ORDERS = [float(a) for a in [*range(2, 65), 80, 96, 128, 192, 256]]
PRV_STORE_KIND = "prv-epsilon"
#: Bump when the PRV computation changes, so that no stored value of another method is reused.
PRV_METHOD = "opacus-prv/int-rdp-domain/1"


def accounting_note(accountant: str, delta: float) -> str:
    """What a stated ε is, for the accountant that computed it (PRV: its error bound), as model cards say it."""
    if accountant == "prv":
        bound = prv_error_bound(delta)
        return (
            f"PRV accountant (Gopi et al. 2021, Opacus): each stated ε is its certified upper bound, the "
            f"estimate at δ − {bound['delta_error']:.3g} plus ε error {bound['eps_error']:g}; the RDP "
            "figures beside it are the same spending under Opacus' RDP accountant (looser)"
        )
    return "RDP accountant (Opacus, orders 1.1 to 1024)"


def prv_error_bound(delta: float) -> dict[str, float]:
    """What a PRV ε stated at `delta` includes: ``{"eps_error": ε_err, "delta_error": δ_err}``."""
    return {"eps_error": PRV_EPS_ERROR, "delta_error": check_delta(delta) * PRV_DELTA_ERROR_FRACTION}


def _rdp_bound(history: Sequence[tuple[float, float, int]], delta: float, orders: Sequence[float]) -> float:
    """A valid RDP bound on ε of `history` at `delta` over `orders` (loose when the optimum is outside them)."""
    from opacus.accountants.analysis import rdp as privacy_analysis

    rdp = sum(
        np.asarray(privacy_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders))
        for sigma, q, steps in history
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": still a valid bound
        return float(privacy_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


@functools.cache
def _prv_accountant_class() -> type:
    """`_PRVAccountant`, defined on first use (it subclasses Opacus', which imports torch)."""
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import Domain
    from scipy.fft import next_fast_len

    class _PRVAccountant(PRVAccountant):
        """Opacus' PRV accountant with the truncation domain bounded over integer RDP orders."""

        def _get_domain(
            self, prvs: Sequence[Any], num_self_compositions: Sequence[int], eps_error: float, delta_error: float
        ) -> Domain:
            total = sum(num_self_compositions)
            # Opacus' compute_safe_domain_size, over PRV_DOMAIN_ORDERS.
            bound = _rdp_bound(self.history, delta_error / 4, PRV_DOMAIN_ORDERS)
            for sigma, q, _ in self.history:
                bound = max(bound, _rdp_bound([(sigma, q, 1)], delta_error / (8 * total), PRV_DOMAIN_ORDERS))
            half_width = max(bound, eps_error) + 3
            mesh = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
            domain = Domain.create_aligned(-half_width, half_width, mesh)
            # Widen it to a length the FFT handles fast (Opacus' sizes can have large prime
            # factors, 4x slower), keeping Opacus' layout: t_min = -(size/2 - 1)·dt, t_max = (size/2)·dt.
            size = next_fast_len(domain.size, real=True)
            while size % 2:
                size = next_fast_len(size + 1, real=True)
            return Domain(-(size // 2 - 1) * domain.dt, (size // 2) * domain.dt, int(size))

    return _PRVAccountant


@functools.lru_cache(maxsize=4096)
def _gaussian_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """ε at `delta` of full-batch Gaussian steps (every q = 1), exactly, rounded up.

    Without sampling there is nothing for PRV to approximate: T_i steps of noise
    multiplier σ_i compose to one Gaussian mechanism with μ = sqrt(Σ T_i/σ_i²) (Dong,
    Roth and Su 2019, Cor. 3.3), whose privacy profile is δ(ε) = Φ(−ε/μ + μ/2) −
    e^ε·Φ(−ε/μ − μ/2) (Balle and Wang 2018, Thm. 8). δ(ε) decreases in ε; the returned
    ε is the upper end of a bisection bracket within 1e-9, so δ(ε) ≤ `delta` holds.
    Opacus' PRV on such a history needs a domain so fine that it takes minutes.
    """
    from scipy.special import log_ndtr

    mu = math.sqrt(sum(steps / sigma**2 for sigma, _, steps in history))

    def profile(eps: float) -> float:
        return math.exp(log_ndtr(-eps / mu + mu / 2)) - math.exp(eps + log_ndtr(-eps / mu - mu / 2))

    if profile(0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while profile(high) > delta:
        low, high = high, 2 * high
    while high - low > 1e-9:
        mid = (low + high) / 2
        low, high = (mid, high) if profile(mid) > delta else (low, mid)
    return high


@functools.lru_cache(maxsize=4096)
def _prv_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """The PRV upper bound on ε of a canonical history at `delta` (see the module docstring).

    From a fraction of a second to a second per history, so it is also kept on disk
    (`fedsilo.privacy.accounting.store`): the ledger, the peer's per-round projection and the
    harness then compute each value once per machine. A stored value is the exact float.
    """
    name = store.key(
        [
            [[repr(s), repr(q), n] for s, q, n in history],
            repr(delta),
            PRV_EPS_ERROR,
            PRV_DELTA_ERROR_FRACTION,
            PRV_DOMAIN_ORDERS,
            PRV_METHOD,
            store.opacus_version(),
        ]
    )
    record = store.load(PRV_STORE_KIND, name)
    if record is not None and isinstance(record.get("epsilon"), float):
        return record["epsilon"]
    acc = _prv_accountant_class()()
    acc.history = list(history)
    with np.errstate(divide="ignore", invalid="ignore"):  # Opacus' PRV pdf takes log(0) at the domain's edge
        epsilon = float(
            acc.get_epsilon(delta=delta, eps_error=PRV_EPS_ERROR, delta_error=delta * PRV_DELTA_ERROR_FRACTION)
        )
    store.save(PRV_STORE_KIND, name, {"history": [list(h) for h in history], "delta": delta, "epsilon": epsilon})
    return epsilon


RDP_STORE_KIND = "rdp-per-step"


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """Opacus' RDP of one step of the subsampled Gaussian at every order in RDP_ALPHAS.

    Half a second per (σ, q) at these orders, so it is also kept on disk
    (`fedsilo.privacy.accounting.store`): a simulation's harness and each of its workers then
    compute each vector once between them. A stored vector is the exact floats Opacus
    returned; one of the wrong length is ignored and recomputed.
    """
    name = store.key([repr(float(noise_multiplier)), repr(float(sample_rate)), store.opacus_version(), RDP_ALPHAS])
    record = store.load(RDP_STORE_KIND, name)
    if record is not None and isinstance(record.get("rdp"), list) and len(record["rdp"]) == len(RDP_ALPHAS):
        return tuple(float(v) for v in record["rdp"])
    from opacus.accountants.analysis import rdp as privacy_analysis

    rdp = tuple(
        float(v)
        for v in privacy_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDP_ALPHAS
        )
    )
    store.save(
        RDP_STORE_KIND, name, {"noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "rdp": list(rdp)}
    )
    return rdp


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    prior: Sequence[Mechanism] = (),
    *,
    epsilon_tolerance: float = CALIBRATION_TOLERANCE,
) -> float:
    """The smallest noise multiplier σ (to within ``epsilon_tolerance`` in ε) such that
    ``epsilon_spent(prior + [Mechanism(σ, sample_rate, steps)], delta) <= target_epsilon``.

    The result is always on the safe side: its ε is <= target_epsilon and within
    ``epsilon_tolerance`` of it. Raises ConfigError for invalid arguments or a target
    so low that σ would exceed Opacus' MAX_SIGMA, and BudgetExceeded if ``prior``
    alone already spends ``target_epsilon`` (no amount of noise can fit).
    """
    from opacus.accountants.utils import MAX_SIGMA, get_noise_multiplier

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

    if accountant == "prv":
        return _calibrate_prv(target_epsilon, delta, sample_rate, steps, prior, tol, too_low)
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


def _calibrate_prv(
    target: float, delta: float, sample_rate: float, steps: int, prior: list[Mechanism], tol: float, too_low: str
) -> float:
    """`calibrate_noise` for PRV: a bracketed secant search, about 4 PRV evaluations instead of 20.

    ε(σ) falls smoothly with σ. A cheap integer-order RDP calibration (milliseconds) gives
    a starting σ, nearly always on the safe side since PRV is tighter; the search then
    keeps a σ whose PRV ε is known to be <= target and one known to be above, and moves
    by secant steps in (log σ, log ε), with bisection when a step stalls, until the safe
    one is within `tol` of the target. Every returned σ has had its PRV ε computed by
    `epsilon_spent` (so the value is stored and a later check gives the same float).
    """
    from opacus.accountants.utils import MAX_SIGMA

    if prior:
        base = epsilon_spent(prior, delta, "prv")
        if base >= target:
            raise BudgetExceeded(
                f"the prior history already spends epsilon={base:.4f} at delta={delta}, "
                f"which is not below target_epsilon={target}; no noise level fits. "
                "Raise the budget or use a data source with budget left"
            )
    history = canonical_history(prior)

    def eps(sigma: float) -> float:
        return epsilon_spent(prior + [Mechanism(sigma, sample_rate, steps)], delta, "prv")

    def rough(sigma: float) -> float:
        return _rdp_bound([*history, (sigma, sample_rate, steps)], delta, PRV_DOMAIN_ORDERS)

    low, high = 0.0, 1.0
    while rough(high) > target:
        low, high = high, high * 2
        if high > MAX_SIGMA:
            raise ConfigError(too_low)
    for _ in range(40):  # rough σ to 0.1 %: its evaluations are milliseconds
        if high - low <= 1e-3 * high:
            break
        mid = (low + high) / 2
        low, high = (low, mid) if rough(mid) <= target else (mid, high)

    safe, e_safe = high, eps(high)
    while e_safe > target:  # PRV above the RDP bound: rare (its ε_err), step out
        safe *= 1.25
        if safe > MAX_SIGMA:
            raise ConfigError(too_low)
        e_safe = eps(safe)
    unsafe, e_unsafe = 0.0, math.inf
    for _ in range(60):
        if target - e_safe <= tol:
            break
        if unsafe > 0 and safe - unsafe <= 1e-6 * safe:
            break  # the bracket has closed: PRV's discretisation noise is above tol here
        # Secant in log-log through the bracket, or, with no unsafe point yet, assume ε ∝ 1/σ.
        slope = (math.log(e_unsafe / e_safe) / math.log(unsafe / safe)) if unsafe > 0 else -1.0
        aim = target - tol / 2
        guess = safe * math.exp(math.log(aim / e_safe) / slope) if slope < 0 else safe / 2
        if unsafe > 0 and not (unsafe < guess < safe):
            guess = (unsafe + safe) / 2
        # Keep away from the bracket's ends so that a stalling secant still shrinks it.
        if unsafe > 0:
            width = safe - unsafe
            guess = min(max(guess, unsafe + 0.05 * width), safe - 0.05 * width)
        e = eps(guess)
        if e <= target:
            safe, e_safe = guess, e
        else:
            unsafe, e_unsafe = guess, e
    return safe
