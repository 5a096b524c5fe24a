"""Tests of privacy.accounting: Mechanism, epsilon_spent, calibrate_noise, Accountant, the validator, DP planning."""

import itertools
import json
import math
import sys
from dataclasses import replace

import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedsilo.errors import BudgetExceeded, ConfigError
from fedsilo.privacy.accounting import ACCOUNTANTS, Accountant, Mechanism, calibrate_noise, epsilon_spent
from fedsilo.privacy.accounting.planning import (
    DISTRIBUTED_BITS,
    DPPlan,
    dp_plan_is_cached,
    grid_sample_rate,
    plan_distributed_dp,
    plan_dp,
    rate_and_steps,
)
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon
from fedsilo.privacy.secagg import DistributedNoise, SecAggConfig
from fedsilo.privacy.secagg.graph import graph_parameters
from fedsilo.privacy.secagg.noise import integer_l2_sensitivity

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


# -- validate: the one check of ε, δ and accountant names -------------------------


@pytest.mark.parametrize(
    "value, shown",
    [
        (0.0, "0.0"),
        (0, "0.0"),
        (-1.0, "-1.0"),
        (-0.0, "-0.0"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (True, "True"),
        ("3", "'3'"),
        (None, "None"),
    ],
)
def test_check_epsilon_refuses_with_its_message(value, shown):
    with pytest.raises(ConfigError) as error:
        check_epsilon(value, "dp.epsilon")
    assert str(error.value) == f"dp.epsilon must be > 0 and finite (got {shown})"


def test_check_epsilon_appends_the_hint_and_names_the_key():
    with pytest.raises(ConfigError) as error:
        check_epsilon(-2, "sources.retail.epsilon", hint="use --no-dp for a non-private run")
    assert (
        str(error.value)
        == "sources.retail.epsilon must be > 0 and finite (got -2.0); use --no-dp for a non-private run"
    )
    with pytest.raises(ConfigError, match=r"^epsilon must be > 0 and finite \(got 0\.0\)$"):
        check_epsilon(0.0)


@pytest.mark.parametrize("value", [5e-324, 1e-12, 1, 3.0, sys.float_info.max, np.float64(0.5), np.float32(2.0)])
def test_check_epsilon_accepts_every_finite_positive_number_as_a_float(value):
    assert check_epsilon(value) == float(value) and type(check_epsilon(value)) is float


@pytest.mark.parametrize(
    "value, shown",
    [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (1, "1.0"),
        (-1e-5, "-1e-05"),
        (1.5, "1.5"),
        (math.nan, "nan"),
        (True, "True"),
        ("1e-5", "'1e-5'"),
    ],
)
def test_check_delta_refuses_with_its_message(value, shown):
    with pytest.raises(ConfigError) as error:
        check_delta(value, "dp.delta")
    assert str(error.value) == f"dp.delta must be in (0, 1) (got {shown}); 1e-5 or 1/(10·rows) are usual"


@pytest.mark.parametrize("value", [5e-324, 1e-5, 0.5, math.nextafter(1.0, 0.0), np.float32(1e-5)])
def test_check_delta_accepts_the_open_interval_up_to_its_ends(value):
    assert check_delta(value) == float(value) and type(check_delta(value)) is float


@pytest.mark.parametrize("value", ["gdp", "PRV", " rdp", "", None, 1, ("prv",)])
def test_check_accountant_refuses_unknown_names(value):
    with pytest.raises(ConfigError) as error:
        check_accountant(value, "sources.retail.accountant")
    assert str(error.value) == f"sources.retail.accountant {value!r} is unknown: valid choices are prv, rdp"


def test_check_accountant_accepts_exactly_the_supported_accountants():
    assert ACCOUNTANTS == ("prv", "rdp")
    assert [check_accountant(name) for name in ACCOUNTANTS] == ["prv", "rdp"]


def test_the_accounting_functions_refuse_through_the_validator():
    with pytest.raises(ConfigError, match=r"^target_epsilon must be > 0 and finite \(got inf\)$"):
        calibrate_noise(math.inf, DELTA, 0.01, 10)
    with pytest.raises(ConfigError, match=r"^delta must be in \(0, 1\) \(got 1\.0\)"):
        epsilon_spent([JOB], 1.0)
    with pytest.raises(ConfigError, match=r"^accountant 'moments' is unknown: valid choices are prv, rdp$"):
        Accountant("moments")


# -- planning: a job's noise from plain numbers ----------------------------------


@pytest.mark.parametrize(
    "batch_size, n_train, rate",
    [
        (128, 1000, 2**-2.75),  # 0.128 rounded up to the grid
        (1, 2, 0.5),  # on the grid: unchanged, despite log2's rounding
        (1, 4096, 2**-12),
        (3, 4096, 2**-10.25),
        (128, 129, 1.0),  # 0.992 rounds up to 1
        (128, 128, 1.0),
        (500, 100, 1.0),  # a batch larger than the bank: every row, every step
    ],
)
def test_grid_sample_rate_rounds_up_to_quarter_octaves(batch_size, n_train, rate):
    assert grid_sample_rate(batch_size, n_train) == rate


def test_grid_sample_rate_never_shrinks_the_batch_nor_grows_it_past_a_quarter_octave():
    for n in range(129, 20_000, 7):
        q = grid_sample_rate(128, n)
        assert 128 / n <= q < 128 / n * 2**0.25 + 1e-12
    assert len({grid_sample_rate(128, n) for n in range(200, 20_000)}) <= 4 * 7 + 1


def test_rate_and_steps_of_a_bank():
    assert rate_and_steps(1000, 128, 2) == (2**-2.75, 14)  # ceil(1/0.1487) = 7 steps an epoch
    assert rate_and_steps(100, 500, 3) == (1.0, 3)
    with pytest.raises(ConfigError, match="^a bank needs at least one training row$"):
        rate_and_steps(0, 128, 1)
    with pytest.raises(ConfigError, match=r"batch size and local epochs must be ≥ 1 \(got 0 and 1\)"):
        rate_and_steps(10, 0, 1)


SHAPE = {"n_train": 1000, "batch_size": 128, "local_epochs": 2, "rounds": 5}


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A fresh calibration cache: nothing on disk, nothing in this process' memo."""
    from fedsilo.privacy.accounting.cache import cached_calibration

    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path))
    cached_calibration.cache_clear()
    yield tmp_path
    cached_calibration.cache_clear()


@pytest.mark.parametrize("accountant, sigma", [("rdp", 2.94921875), ("prv", 2.745891177887968)])
def test_plan_dp_from_plain_numbers(empty_cache, accountant, sigma):
    """The values the plan had in `peers/job.py` before it moved (Opacus 1.6): the same calibration."""
    assert not dp_plan_is_cached(2.0, DELTA, accountant, **SHAPE)
    plan = plan_dp(2.0, DELTA, accountant, **SHAPE)
    assert plan == DPPlan(pytest.approx(sigma, rel=1e-9), 2**-2.75, 14, 5)
    assert plan.whole_job == Mechanism(plan.noise_multiplier, 2**-2.75, 70)
    assert plan.per_round == Mechanism(plan.noise_multiplier, 2**-2.75, 14)
    assert 2.0 - 0.01 <= epsilon_spent([plan.per_round] * 5, DELTA, accountant) <= 2.0
    assert dp_plan_is_cached(2.0, DELTA, accountant, **SHAPE)  # the calibration is now on disk


def test_plan_dp_without_privacy_samples_alike_and_adds_no_noise(empty_cache):
    assert plan_dp(None, DELTA, "prv", **SHAPE) == DPPlan(0.0, 2**-2.75, 14, 5)
    assert dp_plan_is_cached(None, DELTA, "prv", **SHAPE)
    assert not list(empty_cache.iterdir())  # nothing calibrated


@pytest.mark.parametrize(
    "args, message",
    [
        ((0.0, DELTA, "rdp"), r"^epsilon must be > 0 and finite \(got 0\.0\)$"),
        ((2.0, 0.0, "rdp"), r"^delta must be in \(0, 1\) \(got 0\.0\)"),
        ((2.0, DELTA, "gdp"), r"^accountant 'gdp' is unknown"),
    ],
)
def test_plan_dp_refuses_a_bad_target(args, message):
    with pytest.raises(ConfigError, match=message):
        plan_dp(*args, **SHAPE)
    with pytest.raises(ConfigError, match=r"^rounds must be an integer ≥ 1 \(got 0\)$"):
        plan_dp(2.0, DELTA, "rdp", **{**SHAPE, "rounds": 0})


def _secagg(clip=1.0, **kwargs):
    return SecAggConfig(clip=clip, bits=DISTRIBUTED_BITS, max_weight=1.0, **kwargs)


def test_plan_distributed_dp_from_plain_numbers():
    """10 peers, 20 rounds, lr·C/public rows = 2·1/20000, 4000 parameters: the values of before the move."""
    plan = plan_distributed_dp(
        3.0, DELTA, "rdp", rounds=20, l2_sensitivity=1e-4, peers=10, n_params=4000, secagg=_secagg()
    )
    assert plan.noise.noise_multiplier == pytest.approx(8.625981651611367, rel=1e-9)
    assert (plan.noise.l2_sensitivity, plan.noise.expected_peers) == (1e-4, 10)
    assert plan.effective_multiplier == pytest.approx(6.6796875, rel=1e-9)
    # 10 peers at 30 % dropouts and 10 % collusion: D = 3, C = 1; the host needs 7 survivors.
    assert plan.min_survivors == 7
    graph = graph_parameters(10, 0.3, 0.1, 40, 30, 30)
    assert (graph.dropped, graph.corrupt) == (3, 1)
    # The accounted round is the Gaussian mechanism of the 10 − 3 − 1 honest shares only.
    scale = _secagg().encoder(10).scale
    honest = math.sqrt(6) * plan.noise.peer_sigma(scale) / integer_l2_sensitivity(1e-4, scale, 4000)
    assert plan.effective_multiplier == pytest.approx(honest, rel=1e-12)
    assert plan.per_round == Mechanism(plan.effective_multiplier, 1.0, 1)
    assert 3.0 - 0.01 <= epsilon_spent([plan.per_round] * 20, DELTA, "rdp") <= 3.0


def test_plan_distributed_dp_refuses_what_it_cannot_account():
    with pytest.raises(ConfigError, match=r"^distributed noise share below 10 integer units: lower secagg\.clip"):
        plan_distributed_dp(3.0, DELTA, "rdp", rounds=1, l2_sensitivity=1e-6, peers=10, n_params=1, secagg=_secagg(1e6))
    noisy = replace(_secagg(), noise=DistributedNoise(1.0, 1e-4, 10))
    with pytest.raises(ConfigError, match=r"before noise \(noise=None\)"):
        plan_distributed_dp(3.0, DELTA, "rdp", rounds=1, l2_sensitivity=1e-4, peers=10, n_params=1, secagg=noisy)
    with pytest.raises(ConfigError, match="cannot tolerate 1 dropouts"):
        plan_distributed_dp(
            3.0,
            DELTA,
            "rdp",
            rounds=1,
            l2_sensitivity=1e-4,
            peers=2,
            n_params=1,
            secagg=_secagg(dropout_fraction=0.5, collusion_fraction=0.5),
        )
    with pytest.raises(ConfigError, match=r"^delta must be in \(0, 1\)"):
        plan_distributed_dp(3.0, 1.0, "rdp", rounds=1, l2_sensitivity=1e-4, peers=10, n_params=1, secagg=_secagg())


def test_a_pure_mechanism_round_trips_and_refuses_what_is_not_one():
    from fedsilo.privacy.accounting import PureMechanism

    pure = PureMechanism(2.5, 1)
    assert Mechanism.from_dict(pure.to_dict()) == pure  # the ledger's JSON reader dispatches on the keys
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ConfigError):
            PureMechanism(bad, 1)
    with pytest.raises(ConfigError):
        PureMechanism.from_dict({"pure_epsilon": 1.0})
    assert epsilon_spent([pure, PureMechanism(0.5, 2)], 1e-5, "rdp") == pytest.approx(3.5)
    # a calibration on top of a pure history refuses rather than silently ignoring it
    with pytest.raises(ConfigError, match="PureMechanism"):
        calibrate_noise(5.0, 1e-5, 0.01, 10, "rdp", prior=[pure])


def test_a_calibration_cached_by_another_search_is_not_reused(empty_cache, monkeypatch):
    """A σ another version of the search left on disk (the stale entry seen on a peer) is recomputed, not read."""
    from fedsilo.privacy.accounting import cache

    fresh = cache.cached_calibration(1.0, DELTA, 1.0, 2, "prv")
    stale_name = cache._key(1.0, DELTA, 1.0, 2, "prv")
    cache.store.save(cache.KIND, stale_name, {"noise_multiplier": fresh * 1.01})  # what the older search wrote
    cache.cached_calibration.cache_clear()
    assert cache.cached_calibration(1.0, DELTA, 1.0, 2, "prv") == fresh * 1.01  # same search: the file is the answer
    monkeypatch.setattr(cache, "search_fingerprint", lambda: "a-changed-search")  # the search code changed
    cache.cached_calibration.cache_clear()
    assert cache.cached_calibration(1.0, DELTA, 1.0, 2, "prv") == fresh
