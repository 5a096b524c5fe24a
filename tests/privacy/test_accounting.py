"""Tests of privacy.accounting: Mechanism, epsilon_spent, calibrate_noise, Accountant."""

import itertools
import json
import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedsilo.errors import BudgetExceeded, ConfigError
from fedsilo.privacy.accounting import Accountant, Mechanism, calibrate_noise, epsilon_spent

# Opacus warns about the alpha range when a calibration search probes tiny noise levels.
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

DELTA = 1e-5
JOB = Mechanism(1.1, 0.01, 500)


# -- Mechanism -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        (0.0, 0.1, 1),
        (-1.0, 0.1, 1),
        (math.nan, 0.1, 1),
        (math.inf, 0.1, 1),
        (1.0, 0.0, 1),
        (1.0, 1.5, 1),
        (1.0, math.nan, 1),
        (1.0, 0.1, -1),
        (1.0, 0.1, 1.5),
        (1.0, 0.1, True),
        ("1.0", 0.1, 1),
    ],
)
def test_mechanism_rejects_invalid_values(args):
    with pytest.raises(ConfigError):
        Mechanism(*args)


def test_mechanism_json_round_trip():
    m = Mechanism(1.1, 0.0123456789, 42)
    assert Mechanism.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert Mechanism(1, 1, 0).noise_multiplier == 1.0  # ints accepted, steps=0 allowed
    with pytest.raises(ConfigError):
        Mechanism.from_dict({"noise_multiplier": 1.0, "sample_rate": 0.1})
    with pytest.raises(ConfigError):
        Mechanism.from_dict({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, "x": 0})


# -- epsilon_spent ---------------------------------------------------------------


def test_epsilon_of_one_mechanism_equals_opacus_rdp():
    acc = RDPAccountant()
    for _ in range(JOB.steps):
        acc.step(noise_multiplier=JOB.noise_multiplier, sample_rate=JOB.sample_rate)
    assert epsilon_spent([JOB], DELTA) == acc.get_epsilon(DELTA)


def test_epsilon_of_a_history_equals_opacus_rdp_and_prv():
    history = [Mechanism(1.1, 0.01, 300), Mechanism(2.0, 0.02, 200), Mechanism(0.9, 0.01, 50)]
    for name, cls in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        acc = cls()
        acc.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history]
        assert epsilon_spent(history, DELTA, name) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-6)


def test_composition_is_sublinear_but_more_than_max():
    a, b = JOB, Mechanism(1.5, 0.02, 400)
    ea, eb = epsilon_spent([a], DELTA), epsilon_spent([b], DELTA)
    both = epsilon_spent([a, b], DELTA)
    assert max(ea, eb) < both < ea + eb


def test_composition_does_not_depend_on_order_or_splitting():
    a, b = JOB, Mechanism(1.5, 0.02, 400)
    halves = [Mechanism(1.1, 0.01, 250), b, Mechanism(1.1, 0.01, 250)]
    assert epsilon_spent([a, b], DELTA) == epsilon_spent([b, a], DELTA)
    assert epsilon_spent([a, b], DELTA) == epsilon_spent(halves, DELTA)
    # three runs whose float sum in Opacus depends on the order: the result must not
    three = [Mechanism(0.82, 0.043, 69), Mechanism(0.75, 0.006, 104), Mechanism(1.63, 0.027, 382)]
    results = {epsilon_spent(list(p), DELTA) for p in itertools.permutations(three)}
    assert len(results) == 1


def test_prv_is_tighter_than_rdp():
    assert epsilon_spent([JOB], DELTA, "prv") < epsilon_spent([JOB], DELTA, "rdp")


def test_empty_history_spends_nothing():
    assert epsilon_spent([], DELTA) == 0.0
    assert epsilon_spent([Mechanism(1.0, 0.1, 0)], DELTA, "prv") == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"delta": 0.0}, {"delta": 1.0}, {"delta": math.nan}, {"accountant": "gdp"}],
)
def test_epsilon_spent_rejects_invalid_arguments(kwargs):
    args = {"mechanisms": [JOB], "delta": DELTA, **kwargs}
    with pytest.raises(ConfigError):
        epsilon_spent(**args)


def test_epsilon_spent_rejects_non_mechanisms():
    with pytest.raises(ConfigError):
        epsilon_spent([(1.1, 0.01, 500)], DELTA)


# -- calibrate_noise -------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_calibrate_noise_hits_the_target(accountant):
    sigma = calibrate_noise(2.0, DELTA, 0.01, 300, accountant)
    eps = epsilon_spent([Mechanism(sigma, 0.01, 300)], DELTA, accountant)
    assert 2.0 - 0.01 <= eps <= 2.0


def test_calibrate_noise_with_prior_needs_more_noise():
    prior = [Mechanism(2.0, 0.01, 500)]
    alone = calibrate_noise(3.0, DELTA, 0.01, 500)
    after = calibrate_noise(3.0, DELTA, 0.01, 500, prior=prior)
    assert after > alone
    eps = epsilon_spent(prior + [Mechanism(after, 0.01, 500)], DELTA)
    assert 3.0 - 0.01 <= eps <= 3.0
    # and it is the smallest: a bit less noise overshoots the target
    assert epsilon_spent(prior + [Mechanism(after * 0.99, 0.01, 500)], DELTA) > 3.0 - 0.01


def test_calibrate_noise_when_prior_already_spends_the_target():
    with pytest.raises(BudgetExceeded, match="already spends"):
        calibrate_noise(0.5, DELTA, 0.01, 100, prior=[Mechanism(0.8, 0.01, 1000)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_epsilon": 0.0},
        {"target_epsilon": -1.0},
        {"target_epsilon": math.nan},
        {"delta": 0.0},
        {"delta": 1.0},
        {"sample_rate": 0.0},
        {"sample_rate": 2.0},
        {"steps": 0},
        {"accountant": "moments"},
    ],
)
def test_calibrate_noise_rejects_invalid_arguments(kwargs):
    args = {"target_epsilon": 1.0, "delta": DELTA, "sample_rate": 0.01, "steps": 100, **kwargs}
    with pytest.raises(ConfigError):
        calibrate_noise(**args)


def test_calibrate_noise_unreachable_target_is_a_config_error():
    with pytest.raises(ConfigError, match="too low"):
        calibrate_noise(1e-9, DELTA, 1.0, 10_000)


# -- Accountant ------------------------------------------------------------------


def test_accountant_merges_consecutive_identical_steps():
    acc = Accountant()
    for _ in range(3):
        acc.step(1.1, 0.01)
    acc.step(1.1, 0.01, steps=7)
    acc.step(2.0, 0.01, steps=5)
    acc.step(1.1, 0.01)
    acc.step(1.1, 0.01, steps=0)
    assert acc.history == [
        Mechanism(1.1, 0.01, 10),
        Mechanism(2.0, 0.01, 5),
        Mechanism(1.1, 0.01, 1),
    ]
    assert len(acc) == 3
    assert acc.get_epsilon(DELTA) == epsilon_spent(acc.history, DELTA)


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_accountant_state_dict_round_trip(name):
    acc = Accountant(name)
    acc.step(1.1, 0.01, steps=200)
    acc.step(1.3, 0.02, steps=100)
    state = json.loads(json.dumps(acc.state_dict()))
    restored = Accountant(name)
    restored.load_state_dict(state)
    assert restored.history == acc.history
    assert restored.get_epsilon(DELTA) == acc.get_epsilon(DELTA)


def test_accountant_state_dict_is_compatible_with_opacus():
    opacus_acc = RDPAccountant()
    for _ in range(50):
        opacus_acc.step(noise_multiplier=1.1, sample_rate=0.01)
    ours = Accountant("rdp")
    ours.load_state_dict(opacus_acc.state_dict())
    assert ours.get_epsilon(DELTA) == pytest.approx(opacus_acc.get_epsilon(DELTA), rel=1e-12)
    back = RDPAccountant()
    back.load_state_dict(ours.state_dict())
    assert back.get_epsilon(DELTA) == pytest.approx(opacus_acc.get_epsilon(DELTA), rel=1e-12)


def test_accountant_rejects_bad_state_and_keeps_its_own():
    acc = Accountant("rdp")
    acc.step(1.1, 0.01, steps=10)
    before = acc.history
    for bad in (
        {},
        {"mechanism": "prv", "history": []},
        {"mechanism": "rdp", "history": [[1.1, 0.01]]},
        {"mechanism": "rdp", "history": [[1.1, 0.01, 5], [-1.0, 0.01, 5]]},
    ):
        with pytest.raises(ConfigError):
            acc.load_state_dict(bad)
        assert acc.history == before
    with pytest.raises(ConfigError):
        Accountant("gdp")


# -- PRV: the tight accountant jobs calibrate with ---------------------------------


def test_prv_states_opacus_upper_bound_with_its_error_bound():
    """The stated PRV ε is Opacus' certified upper bound (never its estimate) at the stated errors."""
    from fedsilo.privacy.accounting.compose import PRV_EPS_ERROR, prv_error_bound

    acc = PRVAccountant()
    acc.history = [(JOB.noise_multiplier, JOB.sample_rate, JOB.steps)]
    bound = prv_error_bound(DELTA)
    assert bound == {"eps_error": PRV_EPS_ERROR, "delta_error": DELTA / 1000}
    lower, estimate, upper = acc._get_dprv(**bound).compute_epsilon(DELTA, bound["delta_error"], PRV_EPS_ERROR)
    ours = epsilon_spent([JOB], DELTA, "prv")
    assert ours == pytest.approx(upper, abs=1e-4) and ours > estimate + PRV_EPS_ERROR / 2 > lower


def test_prv_domain_is_wider_than_opacus_and_fft_friendly():
    """The one deviation from Opacus: a truncation domain at least as wide (safe), of a fast length."""
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV
    from scipy.fft import next_fast_len

    from fedsilo.privacy.accounting.compose import _prv_accountant_class

    history = [(JOB.noise_multiplier, JOB.sample_rate, JOB.steps)]
    args = ([PoissonSubsampledGaussianPRV(JOB.sample_rate, JOB.noise_multiplier)], [JOB.steps], 0.01, DELTA / 1000)
    stock, ours = PRVAccountant(), _prv_accountant_class()()
    stock.history = ours.history = history
    theirs, mine = stock._get_domain(*args), ours._get_domain(*args)
    assert mine.dt == pytest.approx(theirs.dt, rel=1e-9)
    assert mine.t_min <= theirs.t_min and mine.t_max >= theirs.t_max
    assert mine.size % 2 == 0 and next_fast_len(mine.size, real=True) == mine.size
    assert mine.t_min == pytest.approx(-(mine.size // 2 - 1) * mine.dt)  # Opacus' layout, which its FFT roll needs


def test_prv_calibration_buys_less_noise_than_rdp_and_few_evaluations(monkeypatch, tmp_path):
    """Same ε, less noise; the RDP figure of the PRV-calibrated job is above the target (the card shows it).
    On an empty cache the search needs a handful of PRV computations, not Opacus' ~20."""
    from fedsilo.privacy.accounting import compose

    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path))
    compose._prv_epsilon.cache_clear()
    calls = []
    original = compose._prv_accountant_class().get_epsilon
    monkeypatch.setattr(
        compose._prv_accountant_class(), "get_epsilon", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    q, steps = 0.05, 200
    prv = calibrate_noise(3.0, DELTA, q, steps, "prv")
    rdp = calibrate_noise(3.0, DELTA, q, steps, "rdp")
    assert len(calls) <= 8
    assert prv < 0.97 * rdp
    assert 3.0 - 0.01 <= epsilon_spent([Mechanism(prv, q, steps)], DELTA, "prv") <= 3.0
    assert epsilon_spent([Mechanism(prv, q, steps)], DELTA, "rdp") > 3.0
    # the smallest: a bit less noise overshoots
    assert epsilon_spent([Mechanism(prv * 0.98, q, steps)], DELTA, "prv") > 3.0 - 0.01


def test_prv_values_are_kept_on_disk_exactly(monkeypatch, tmp_path):
    from fedsilo.privacy.accounting import compose, store

    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path))
    compose._prv_epsilon.cache_clear()
    first = epsilon_spent([JOB], DELTA, "prv")
    (stored,) = (tmp_path / compose.PRV_STORE_KIND).glob("*.json")
    assert json.loads(stored.read_text())["epsilon"] == first
    compose._prv_epsilon.cache_clear()
    monkeypatch.setattr(compose._prv_accountant_class(), "get_epsilon", lambda *a, **k: pytest.fail("recomputed"))
    assert epsilon_spent([JOB], DELTA, "prv") == first
    assert store.root() == tmp_path


def test_prv_calibration_with_prior_and_exhausted_prior():
    prior = [Mechanism(2.0, 0.01, 500)]
    after = calibrate_noise(3.0, DELTA, 0.01, 500, "prv", prior=prior)
    assert after > calibrate_noise(3.0, DELTA, 0.01, 500, "prv")
    assert 3.0 - 0.01 <= epsilon_spent(prior + [Mechanism(after, 0.01, 500)], DELTA, "prv") <= 3.0
    with pytest.raises(BudgetExceeded, match="already spends"):
        calibrate_noise(0.5, DELTA, 0.01, 100, "prv", prior=[Mechanism(0.8, 0.01, 1000)])
    with pytest.raises(ConfigError, match="too low"):
        calibrate_noise(1e-9, DELTA, 1.0, 10_000, "prv")


def test_full_batch_steps_are_accounted_exactly_as_one_gaussian_mechanism():
    """q = 1 (distributed DP): ε is the Gaussian mechanism's exact profile, within PRV's error and below RDP."""
    from scipy.stats import norm

    history = [Mechanism(2.0, 1.0, 3), Mechanism(4.0, 1.0, 4)]
    epsilon = epsilon_spent(history, 1e-5, "prv")
    mu = math.sqrt(3 / 2.0**2 + 4 / 4.0**2)

    def delta(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)

    assert delta(epsilon) <= 1e-5 < delta(epsilon - 1e-6)  # the smallest ε whose δ is within budget
    assert epsilon < epsilon_spent(history, 1e-5, "rdp")
    opacus = PRVAccountant()
    opacus.history = [(2.0, 1.0, 3), (4.0, 1.0, 4)]
    assert abs(opacus.get_epsilon(delta=1e-5, eps_error=0.01) - epsilon) < 0.011
    assert epsilon_spent([Mechanism(1e6, 1.0, 1)], 1e-5, "prv") == 0.0  # δ(0) below the budget already
