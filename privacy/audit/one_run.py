"""Privacy auditing with one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

The experiment: m canaries, each independently included in the training data with
probability ½ (S_i = +1) or not (S_i = −1); train once; score every canary; guess
"in" for the k₊ highest scores and "out" for the k₋ lowest, abstain on the rest. If
training is (ε, δ)-DP, the number W of correct guesses among the r = k₊ + k₋ made is
stochastically dominated as in their Theorem 5.2:

    P[W ≥ v] ≤ P[Binomial(r, p) ≥ v] + 2mδ · max_{i=1..v} P[v > Binomial(r, p) ≥ v − i] / i,

with p = e^ε / (e^ε + 1). The p-value of an observed v under the hypothesis "ε-DP" is
the right-hand side; the ε lower bound at confidence 1 − α is the largest ε whose
p-value is below α (found by bisection: the p-value grows with ε). The statement is
"with probability ≥ 1 − α over the canaries' coin flips and the training, the
training is not (ε_lb, δ)-DP".

Guesses are fixed in advance: a small grid of k (k₊ = k₋ = k) is tried and the
confidence is split over the grid (Bonferroni), so taking the best k keeps the stated
confidence. Choosing k after looking at the outcome without that correction would not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binom

from fedsilo.errors import DataError, PrivacyAuditFailed

DEFAULT_CONFIDENCE = 0.95
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2)  # k / m on each side
_EPSILON_CEILING = 64.0


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[W ≥ v] for an (ε, δ)-DP training (Theorem 5.2 above)."""
    if not 0 <= v <= r <= m:
        raise DataError(f"need 0 ≤ correct ({v}) ≤ guesses ({r}) ≤ canaries ({m})")
    if v == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, p))
    alpha = 0.0
    if delta > 0:
        below = binom.pmf(np.arange(v - 1, -1, -1), r, p)  # P[B = v−1], P[B = v−2], ...
        cumulative = np.cumsum(below)  # P[v > B ≥ v − i], i = 1..v
        alpha = float(np.max(cumulative / np.arange(1, v + 1)))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """The largest ε with p_value(m, r, v, ε, δ) < `significance` (0 if none)."""
    if not 0 < significance < 1:
        raise DataError(f"significance must be in (0, 1), got {significance}")
    if p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < significance and high < _EPSILON_CEILING:
        low, high = high, high * 2
    for _ in range(50):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < significance:
            low = mid
        else:
            high = mid
    return low


def draw_inclusion(m: int, rng: np.random.Generator) -> np.ndarray:
    """S: each of `m` canaries included with probability ½ (True = in the training data)."""
    if m < 2:
        raise DataError(f"the one-run audit needs at least 2 canaries, got {m}")
    return rng.random(m) < 0.5


@dataclass(frozen=True)
class OneRunAudit:
    """Outcome of one canary audit; `epsilon_lower_bound` holds at `confidence`."""

    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    epsilon_claimed: float | None
    delta: float
    confidence: float

    @property
    def violates_claim(self) -> bool:
        return self.epsilon_claimed is not None and self.epsilon_lower_bound > self.epsilon_claimed

    def summary(self) -> dict:
        return {**asdict(self), "epsilon_lower_bound": round(self.epsilon_lower_bound, 4)}


def audit(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    epsilon_claimed: float | None,
    confidence: float = DEFAULT_CONFIDENCE,
    guess_fractions: tuple[float, ...] = GUESS_FRACTIONS,
) -> OneRunAudit:
    """Turn the attack's scores on the canaries into an ε lower bound (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    included = np.asarray(included, dtype=bool).ravel()
    m = scores.size
    if included.size != m:
        raise DataError(f"{m} canary scores for {included.size} inclusion flags")
    if not np.isfinite(scores).all():
        raise DataError("canary scores contain NaN or infinity")
    if not guess_fractions:
        raise DataError("the audit needs at least one guess fraction (k / m), e.g. GUESS_FRACTIONS")
    significance = (1.0 - confidence) / len(guess_fractions)
    order = np.argsort(-scores, kind="stable")
    best: tuple[float, int, int] | None = None
    for fraction in guess_fractions:
        k = max(1, int(fraction * m))
        k = min(k, m // 2)
        correct = int(included[order[:k]].sum() + (~included[order[m - k :]]).sum())
        bound = epsilon_lower_bound(m, 2 * k, correct, delta, significance)
        if best is None or bound > best[0]:
            best = (bound, 2 * k, correct)
    assert best is not None  # one bound per guess fraction, and there is at least one
    bound, r, v = best
    return OneRunAudit(
        canaries=m,
        included=int(included.sum()),
        guesses=r,
        correct=v,
        epsilon_lower_bound=bound,
        epsilon_claimed=epsilon_claimed,
        delta=delta,
        confidence=confidence,
    )


def check_claim(result: OneRunAudit) -> None:
    """Raise `PrivacyAuditFailed` if the measured lower bound exceeds the claimed ε."""
    if result.violates_claim:
        raise PrivacyAuditFailed(
            f"privacy audit FAILED: the canary audit proves ε ≥ {result.epsilon_lower_bound:.3f} at "
            f"{result.confidence:.0%} confidence ({result.correct} of {result.guesses} guesses right on "
            f"{result.canaries} canaries), above the claimed ε = {result.epsilon_claimed:g} (δ = {result.delta:g}): "
            "the training does not deliver its stated guarantee (missing noise or a wrong accountant); "
            "do not release this model and report the run"
        )
