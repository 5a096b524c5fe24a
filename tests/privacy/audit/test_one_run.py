"""The one-run ε lower bound (Steinke, Nasr, Jagielski 2023): values, validity, loud failure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from fedsilo.errors import DataError, PrivacyAuditFailed
from fedsilo.privacy.audit import one_run


def test_p_value_is_the_binomial_tail_without_delta():
    p = math.exp(1.0) / (1 + math.exp(1.0))
    assert one_run.p_value(1000, 50, 40, 1.0, 0.0) == pytest.approx(binom.sf(39, 50, p))
    assert one_run.p_value(1000, 50, 0, 1.0, 0.0) == 1.0
    # δ only ever adds to the p-value
    assert one_run.p_value(1000, 50, 40, 1.0, 1e-3) > one_run.p_value(1000, 50, 40, 1.0, 0.0)


def test_lower_bound_known_values():
    # 100 right out of 100 at 95 %: p^100 = 0.05 ⇒ p = 0.05^(1/100), ε = log(p / (1 − p))
    p = 0.05 ** (1 / 100)
    assert one_run.epsilon_lower_bound(1000, 100, 100, 0.0, 0.05) == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
    assert one_run.epsilon_lower_bound(1000, 100, 50, 0.0, 0.05) == 0.0  # a coin flip proves nothing
    at = one_run.epsilon_lower_bound(1000, 200, 170, 1e-5, 0.05)
    assert one_run.p_value(1000, 200, 170, at, 1e-5) < 0.05 <= one_run.p_value(1000, 200, 170, at + 1e-3, 1e-5)
    with pytest.raises(DataError):
        one_run.p_value(10, 5, 6, 1.0, 0.0)


def _randomized_response_audit(epsilon: float, seed: int, m: int = 1000) -> one_run.OneRunAudit:
    """An exactly ε-DP mechanism per canary: it reports S_i truthfully w.p. e^ε / (1 + e^ε)."""
    rng = np.random.default_rng(seed)
    included = one_run.draw_inclusion(m, rng)
    truthful = rng.random(m) < math.exp(epsilon) / (1 + math.exp(epsilon))
    report = np.where(truthful, included, ~included)
    scores = report + 0.01 * rng.random(m)  # ties broken at random
    return one_run.audit(scores, included, delta=0.0, epsilon_claimed=epsilon)


def test_bound_is_valid_and_tight_on_an_exactly_dp_mechanism():
    bounds = [_randomized_response_audit(2.0, seed).epsilon_lower_bound for seed in range(40)]
    assert sum(b > 2.0 for b in bounds) <= 2  # at most 5 % of runs may exceed the truth
    assert np.median(bounds) > 1.0  # and the audit is not vacuous


def test_check_claim_fails_loudly_only_above_the_claim():
    honest = _randomized_response_audit(1.0, 0)
    one_run.check_claim(honest)  # no exception
    rng = np.random.default_rng(1)
    included = one_run.draw_inclusion(1000, rng)
    leaky = one_run.audit(included + 0.01 * rng.random(1000), included, delta=1e-5, epsilon_claimed=1.0)
    assert leaky.correct == leaky.guesses and leaky.epsilon_lower_bound > 3.0
    with pytest.raises(PrivacyAuditFailed, match="above the claimed ε = 1"):
        one_run.check_claim(leaky)
    no_claim = one_run.audit(included + 0.0, included, delta=0.0, epsilon_claimed=None)
    one_run.check_claim(no_claim)  # nothing claimed, nothing to fail


def test_an_audit_without_guess_fractions_is_refused():
    """It divided the significance by zero (ZeroDivisionError) before it said so."""
    scores, included = np.arange(10.0), np.arange(10) % 2 == 0
    with pytest.raises(DataError, match="at least one guess fraction"):
        one_run.audit(scores, included, 1e-5, 1.0, guess_fractions=())
