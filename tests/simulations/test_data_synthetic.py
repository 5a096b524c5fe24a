"""The embedded synthetic consortium: deterministic, skewed as promised, learnable."""

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import ConfigError
from fedsilo.simulations.data.synthetic import (
    COLUMNS,
    LABEL,
    MIN_BANK_SIZE,
    SIMULATE_RATE_RANGE,
    SIMULATE_TOTAL_CUSTOMERS,
    BankProfile,
    consortium_profiles,
    generate_bank,
    generate_consortium,
    simulate_total_customers,
)


@pytest.fixture(scope="module")
def five() -> list[pd.DataFrame]:
    return generate_consortium(5, seed=0)


def test_default_run_size_and_schema(five):
    total = sum(len(f) for f in five)
    assert 15_000 <= total <= 25_000
    for frame in five:
        assert list(frame.columns) == COLUMNS
        assert frame.notna().all().all()
        assert set(frame[LABEL].unique()) == {0, 1}
        assert frame["pay_0"].between(-2, 8).all() and frame["age"].between(21, 79).all()
        assert (frame["limit_bal"] % 10_000 == 0).all()


def test_deterministic_under_seed(five):
    again = generate_consortium(5, seed=0)
    for a, b in zip(five, again):
        pd.testing.assert_frame_equal(a, b)


def test_different_seeds_differ(five):
    other = generate_consortium(5, seed=1)
    assert [len(f) for f in other] != [len(f) for f in five]
    assert not five[0].head(50).equals(other[0].head(50))


def test_generate_bank_alone_equals_consortium_member(five):
    profiles = consortium_profiles(5, seed=0)
    pd.testing.assert_frame_equal(generate_bank(profiles[3], 0, 3), five[3])


def test_bank_traits_do_not_depend_on_consortium_size():
    small, large = consortium_profiles(5, seed=7), consortium_profiles(40, seed=7, total_customers=40_000)
    assert small[2].default_rate == large[2].default_rate
    assert small[2].education_mix == large[2].education_mix


def test_quantity_skew_sizes_heavy_tailed():
    sizes = np.array([p.size for p in consortium_profiles(50, seed=0)])
    assert sizes.sum() == 20_000
    assert sizes.min() >= MIN_BANK_SIZE
    assert sizes.max() / sizes.min() > 10


def test_label_skew_default_rates_differ(five):
    rates = [f[LABEL].mean() for f in five]
    assert max(rates) - min(rates) > 0.08
    # the realised rates follow the banks' targets
    for profile, rate in zip(consortium_profiles(5, seed=0), rates):
        assert abs(rate - profile.default_rate) < 0.05


def test_feature_skew_means_differ(five):
    ages = [f["age"].mean() for f in five]
    limits = [f["limit_bal"].median() for f in five]
    assert max(ages) - min(ages) > 3
    assert max(limits) / min(limits) > 1.3


def test_label_is_learnable_but_not_trivial(five):
    pooled = pd.concat(five, ignore_index=True)
    corr = pooled[["pay_0", "limit_bal", LABEL]].corr()[LABEL]
    assert corr["pay_0"] > 0.1
    assert corr["limit_bal"] < -0.05
    # late payers default far more often, but not always
    late = pooled.loc[pooled["pay_0"] >= 1, LABEL].mean()
    on_time = pooled.loc[pooled["pay_0"] <= 0, LABEL].mean()
    assert late > on_time + 0.15 and late < 0.9


def test_profiles_round_trip():
    profile = consortium_profiles(3, seed=0)[1]
    assert BankProfile.from_dict(profile.to_dict()) == profile


def test_tiny_bank_has_both_classes():
    profile = BankProfile(
        size=8,
        default_rate=0.05,
        risk_shift=-3.0,
        age_shift=0.0,
        limit_scale=1.0,
        female_share=0.6,
        education_mix=(0, 0.4, 0.4, 0.2, 0, 0, 0),
    )
    labels = generate_bank(profile, 0, 0)[LABEL]
    assert labels.sum() >= 2 and (1 - labels).sum() >= 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_banks=0, seed=0), "positive integer"),
        (dict(n_banks=5, seed=-1), "non-negative"),
        (dict(n_banks=50, seed=0, total_customers=1000), "at least 5000"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        consortium_profiles(**kwargs)


def test_default_total_grows_with_many_banks():
    profiles = consortium_profiles(1000, seed=0)
    assert sum(p.size for p in profiles) == 200_000
    assert min(p.size for p in profiles) >= MIN_BANK_SIZE


def test_simulate_default_is_small_banks_with_few_defaults(tmp_path):
    from fedsilo.simulations.banks import build_population
    from fedsilo.simulations.config import SimulationConfig

    population = build_population(SimulationConfig(), tmp_path)
    assert population.sizes().sum() == SIMULATE_TOTAL_CUSTOMERS == simulate_total_customers(5)
    assert simulate_total_customers(100) == 20_000  # 200 per bank when that is more
    wide = consortium_profiles(5, seed=0, total_customers=SIMULATE_TOTAL_CUSTOMERS)
    for small, usual in zip(population.profiles, wide):
        assert SIMULATE_RATE_RANGE[0] <= small.default_rate <= SIMULATE_RATE_RANGE[1]
        assert small.size == usual.size and small.education_mix == usual.education_mix  # only the rates differ
    defaults = [int(population.frame(i)[LABEL].sum()) for i in range(5)]
    assert max(defaults) < 200 and sum(defaults) < 0.1 * SIMULATE_TOTAL_CUSTOMERS
