"""The embedded default data: seeded, realistic credit-card data for a consortium of banks.

Columns follow the UCI "default of credit card clients" data (Yeh and Lien, 2009):
`limit_bal, sex, education, marriage, age, pay_0, pay_2 … pay_6, bill_amt1 … bill_amt6,
pay_amt1 … pay_amt6` and the label `default` (1 = defaults next month). Month 1 / `pay_0`
is the most recent, month 6 / `pay_6` the oldest, as in UCI.

The generative model, per customer of bank b:

- demographics from the bank's mix: sex ~ Bernoulli(female share), education from the
  bank's Dirichlet-drawn mix, age = 21 + Gamma(2.5, 5.8) + the bank's age shift,
  marriage more likely with age;
- a latent risk z = μ_b + d(age, sex, education) + N(0, 1), where the bank's risk
  shift μ_b is set so that the bank's default rate comes out near its target;
- the credit limit is spread widely on a log scale around the bank's limit scale,
  higher with education and age, lower with z (rounded to 10,000, in [10k, 1M]);
- repayment status per month is an ordinal cut of λ·z + an AR(1) month-to-month
  noise, with a dormant ("-2", no use) state and delinquency that deepens month
  after month while it is not cured (values -2 … 8);
- bills = limit × utilisation, utilisation rising with z and with delinquency;
  payments follow the status: ≈ the previous bill when paid in full, a small
  fraction when revolving, mostly nothing when late, plus occasional large
  repayments (so payment amounts are heavy-tailed);
- the label: default ~ Bernoulli(sigmoid(A + B·z)), the same link at every bank, so
  what differs between banks is who their customers are, not what default means.

Banks differ as real ones do: their sizes are log-normal (heavy-tailed quantity
skew), their customer mix differs (age, limits, education, sex: feature skew) and
their default rates are drawn uniformly in a range (label skew): [5%, 35%] by
default, [3%, 10%] in `fedsilo simulate`'s default consortium (`SIMULATE_*` below:
small banks, 5,000 customers in all, with few defaults, as retail card portfolios
have, so that each bank alone has only tens of defaults to learn from).

Everything is deterministic in `seed`. A bank's profile traits and its rows are drawn
from random streams keyed by (seed, bank index) alone, so one bank can be generated
without materialising the others (10,000 banks are generated one at a time); only
the sizes need the whole consortium, to share out `total_customers`. A centralized
logistic regression on the 5-bank default data reaches a test ROC-AUC of about 0.75
(gradient-boosted trees barely more: the signal is mostly linear in the latent risk).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError

LABEL = "default"
MONTHS = 6
PAY_COLUMNS = ["pay_0", "pay_2", "pay_3", "pay_4", "pay_5", "pay_6"]
BILL_COLUMNS = [f"bill_amt{m}" for m in range(1, MONTHS + 1)]
PAY_AMT_COLUMNS = [f"pay_amt{m}" for m in range(1, MONTHS + 1)]
FEATURES = ["limit_bal", "sex", "education", "marriage", "age", *PAY_COLUMNS, *BILL_COLUMNS, *PAY_AMT_COLUMNS]
COLUMNS = [*FEATURES, LABEL]

DEFAULT_TOTAL_CUSTOMERS = 20_000
MIN_BANK_SIZE = 100
CUSTOMERS_PER_BANK_FLOOR = 200  # the default total grows with the number of banks
MIN_PER_CLASS = 2

# Education codes as in UCI: 1 graduate school, 2 university, 3 high school, 4 others,
# 0/5/6 undocumented. Base mix close to UCI's.
EDUCATION_CODES = np.array([0, 1, 2, 3, 4, 5, 6])
EDUCATION_BASE = np.array([0.0005, 0.35, 0.467, 0.164, 0.005, 0.0105, 0.003])
EDUCATION_CONCENTRATION = 25.0

SIZE_SIGMA = 1.0  # log-normal bank sizes
DEFAULT_RATE_RANGE = (0.05, 0.35)  # label skew
# `fedsilo simulate`'s synthetic consortium: small banks with few defaults.
SIMULATE_TOTAL_CUSTOMERS = 5_000  # (or CUSTOMERS_PER_BANK_FLOOR per bank, if that is more)
SIMULATE_RATE_RANGE = (0.03, 0.10)
AGE_SHIFT_SD = 3.0  # years
LIMIT_SCALE_SIGMA = 0.25  # log-scale spread of banks' limit levels
LIMIT_MEDIAN = 120_000.0

# The label link, shared by all banks: P(default) = sigmoid(LINK_A + LINK_B · z).
# LINK_A puts a bank with a 22% default rate (UCI's) at risk shift μ_b = 0.
LINK_B = 1.4
_PROBIT = math.sqrt(1.0 + math.pi * LINK_B**2 * 1.04 / 8.0)  # var(z) ≈ 1.04
LINK_A = math.log(0.22 / 0.78) * _PROBIT
# Loading of the repayment status on z, oldest (pay_6) → most recent (pay_0).
STATUS_LOADING = np.array([0.45, 0.48, 0.52, 0.56, 0.60, 0.66])
STATUS_RHO = 0.75
# Cut points of the active-month ordinal status on a standard normal scale:
# ≤ c0 → -1 (paid in full), ≤ c1 → 0 (revolving), ≤ c2 → 1, above → 2 (months late).
STATUS_CUTS = np.array([-0.80, 0.67, 1.17])
DORMANT_SHARE = 0.10

_PROFILE_STREAM = 1
_ROWS_STREAM = 2


@dataclass(frozen=True)
class BankProfile:
    """What makes one bank's customers differ from another's.

    size: number of customers (rows). default_rate: the target share of defaulters.
    risk_shift: the mean latent risk μ_b (derived from default_rate). age_shift: years
    added to customers' ages. limit_scale: multiplier on the typical credit limit.
    female_share: share of sex = 2. education_mix: probabilities of education codes
    0 … 6.
    """

    size: int
    default_rate: float
    risk_shift: float
    age_shift: float
    limit_scale: float
    female_share: float
    education_mix: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BankProfile:
        return cls(**{**data, "education_mix": tuple(data["education_mix"])})


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (got {seed!r}): pass e.g. seed=0")


def _rng(seed: int, bank_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(bank_index), stream]))


def default_total_customers(n_banks: int) -> int:
    """The default consortium size: 20,000 customers, or 200 per bank if that is more."""
    return max(DEFAULT_TOTAL_CUSTOMERS, CUSTOMERS_PER_BANK_FLOOR * n_banks)


def _risk_shift(default_rate: float) -> float:
    """μ_b such that E[sigmoid(A + B·z)] ≈ default_rate for z ~ N(μ_b, ~1) (probit approximation)."""
    logit = math.log(default_rate / (1.0 - default_rate))
    return (logit * _PROBIT - LINK_A) / LINK_B


def _bank_traits(seed: int, bank_index: int, rates: tuple[float, float]) -> tuple[float, dict[str, Any]]:
    """A bank's size weight and its customer-mix traits (default rate in `rates`), from its own stream."""
    rng = _rng(seed, bank_index, _PROFILE_STREAM)
    weight = float(rng.lognormal(0.0, SIZE_SIGMA))
    default_rate = float(rng.uniform(*rates))
    mix = rng.dirichlet(EDUCATION_BASE * EDUCATION_CONCENTRATION)
    traits = dict(
        default_rate=default_rate,
        risk_shift=_risk_shift(default_rate),
        age_shift=float(rng.normal(0.0, AGE_SHIFT_SD)),
        limit_scale=float(rng.lognormal(0.0, LIMIT_SCALE_SIGMA)),
        female_share=float(rng.uniform(0.5, 0.7)),
        education_mix=tuple(float(p) for p in mix),
    )
    return weight, traits


def _share_out(total: int, weights: np.ndarray, floor: int) -> np.ndarray:
    """Integer sizes ≥ floor summing to total, proportional to weights above the floor."""
    extra = total - floor * len(weights)
    raw = extra * weights / weights.sum()
    sizes = np.floor(raw).astype(np.int64)
    remainder = extra - int(sizes.sum())
    if remainder:
        order = np.argsort(-(raw - sizes), kind="stable")
        sizes[order[:remainder]] += 1
    return sizes + floor


def consortium_profiles(
    n_banks: int, seed: int = 0, total_customers: int | None = None, rates: tuple[float, float] = DEFAULT_RATE_RANGE
) -> list[BankProfile]:
    """Profiles of `n_banks` banks sharing `total_customers` customers, default rates drawn in `rates`.

    `total_customers` defaults to `default_total_customers(n_banks)` (20,000 for up to
    100 banks). Every bank gets at least 100 customers; bank i's traits other than its
    size depend on (seed, i) only, so adding banks does not change existing banks' mix.
    """
    _check_seed(seed)
    if not isinstance(n_banks, (int, np.integer)) or n_banks < 1:
        raise ConfigError(f"the number of banks must be a positive integer (got {n_banks!r})")
    total = default_total_customers(n_banks) if total_customers is None else int(total_customers)
    if total < MIN_BANK_SIZE * n_banks:
        raise ConfigError(
            f"total_customers={total} is too few for {n_banks} banks: give at least "
            f"{MIN_BANK_SIZE * n_banks} ({MIN_BANK_SIZE} per bank) or use fewer banks"
        )
    drawn = [_bank_traits(seed, i, rates) for i in range(n_banks)]
    sizes = _share_out(total, np.array([w for w, _ in drawn]), MIN_BANK_SIZE)
    return [BankProfile(size=int(size), **traits) for size, (_, traits) in zip(sizes, drawn)]


def _status_history(rng: np.random.Generator, z: np.ndarray) -> np.ndarray:
    """Repayment status, shape (n, 6), columns oldest → most recent month."""
    n = len(z)
    status = np.empty((n, MONTHS), dtype=np.int64)
    noise = rng.standard_normal(n)
    # a fifth of customers leave the card unused in about half of their good months
    dormant_type = rng.random(n) < 2 * DORMANT_SHARE
    previous = np.zeros(n, dtype=np.int64)
    for t in range(MONTHS):
        if t:
            noise = STATUS_RHO * noise + math.sqrt(1 - STATUS_RHO**2) * rng.standard_normal(n)
        lam = STATUS_LOADING[t]
        u = lam * z + math.sqrt(1 - lam**2) * noise
        s = np.searchsorted(STATUS_CUTS, u) - 1  # -1, 0, 1, 2
        # delinquency deepens while not cured: late last month and badly late again
        deepen = (previous >= 1) & (s >= 2) & (rng.random(n) < 0.5)
        s = np.where(deepen, np.minimum(previous + 1, 8), s)
        dormant = dormant_type & (rng.random(n) < 0.5) & (s <= 0)
        s = np.where(dormant, -2, s)
        status[:, t] = s
        previous = s
    return status


def generate_bank(profile: BankProfile, seed: int, bank_index: int) -> pd.DataFrame:
    """One bank's customers, deterministic in (seed, bank_index) and the profile.

    At least two customers of each class are guaranteed: in a tiny bank with fewer
    (rare), the highest-risk non-defaulters (or lowest-risk defaulters) are relabelled.
    """
    _check_seed(seed)
    rng = _rng(seed, bank_index, _ROWS_STREAM)
    n = int(profile.size)

    sex = np.where(rng.random(n) < profile.female_share, 2, 1)
    education = rng.choice(EDUCATION_CODES, size=n, p=np.asarray(profile.education_mix) / sum(profile.education_mix))
    age = np.clip(np.round(21 + rng.gamma(2.5, 5.8, n) + profile.age_shift), 21, 79).astype(np.int64)
    married_p = 0.85 / (1 + np.exp(-(age - 34.0) / 5.0))
    u = rng.random(n)
    marriage = np.where(u < married_p, 1, np.where(u < 0.985, 2, np.where(u < 0.998, 3, 0)))

    demographic = (
        -0.012 * (np.minimum(age, 60) - 35)
        + 0.08 * (sex == 1)
        + np.select([education == 1, education == 3, education == 4], [-0.12, 0.12, 0.1], 0.0)
        + 0.05 * (marriage == 2)
    )
    z = profile.risk_shift + demographic + rng.standard_normal(n)

    log_limit = (
        math.log(LIMIT_MEDIAN * profile.limit_scale)
        + 0.25 * (education == 1)
        - 0.2 * (education >= 3)
        + 0.015 * (np.minimum(age, 55) - 35)
        - 0.3 * (z - profile.risk_shift)
        - 0.15 * profile.risk_shift
        + rng.uniform(-0.9, 0.9, n)
        + 0.2 * rng.standard_normal(n)
    )
    limit = np.clip(np.round(np.exp(log_limit) / 10_000) * 10_000, 10_000, 1_000_000)

    status = _status_history(rng, z)  # oldest → most recent

    base_util = 1 / (1 + np.exp(-(-0.7 + 0.7 * z + 0.9 * rng.standard_normal(n))))
    util = base_util[:, None] * np.exp(0.15 * rng.standard_normal((n, MONTHS))) + 0.12 * (status >= 1)
    util = np.clip(util, 0.0, 1.1)
    bill = limit[:, None] * util
    bill = np.where((status == -2) & (rng.random((n, MONTHS)) < 0.7), 0.0, bill)
    credit = rng.random((n, MONTHS)) < 0.015
    bill = np.where(credit, -rng.uniform(0, 5_000, (n, MONTHS)), bill)
    bill = np.round(bill)

    # Payment in month t settles the previous month's bill (t-1; oldest month: its own).
    prev_bill = np.maximum(np.concatenate([bill[:, :1], bill[:, :-1]], axis=1), 0.0)
    revolving_frac = rng.beta(1.3, 9.0, (n, MONTHS))
    late_pay = np.where(rng.random((n, MONTHS)) < 0.55, 0.0, prev_bill * rng.beta(1.0, 20.0, (n, MONTHS)))
    pay = np.select(
        [status == -2, status == -1, status == 0],
        [
            np.where(rng.random((n, MONTHS)) < 0.6, 0.0, prev_bill),
            prev_bill * rng.uniform(0.9, 1.0, (n, MONTHS)),
            np.maximum(prev_bill * revolving_frac, np.minimum(prev_bill, 1_000.0)),
        ],
        late_pay,
    )
    extra = rng.random((n, MONTHS)) < 0.04
    pay = pay + np.where(extra, rng.lognormal(9.5, 1.2, (n, MONTHS)), 0.0)
    pay = np.round(pay)

    p_default = 1 / (1 + np.exp(-(LINK_A + LINK_B * z)))
    y = (rng.random(n) < p_default).astype(np.int64)
    y = _ensure_both_classes(y, p_default)

    # columns: month 1 = most recent; status/bill/pay arrays are oldest → most recent.
    frame = {
        "limit_bal": limit.astype(np.int64),
        "sex": sex.astype(np.int64),
        "education": education.astype(np.int64),
        "marriage": marriage.astype(np.int64),
        "age": age,
    }
    for m, name in enumerate(PAY_COLUMNS):
        frame[name] = status[:, MONTHS - 1 - m]
    for m, name in enumerate(BILL_COLUMNS):
        frame[name] = bill[:, MONTHS - 1 - m].astype(np.int64)
    for m, name in enumerate(PAY_AMT_COLUMNS):
        frame[name] = pay[:, MONTHS - 1 - m].astype(np.int64)
    frame[LABEL] = y
    return pd.DataFrame(frame, columns=COLUMNS)


def _ensure_both_classes(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    if len(y) < 2 * MIN_PER_CLASS:
        return y
    y = y.copy()
    positives = int(y.sum())
    if positives < MIN_PER_CLASS:
        candidates = np.flatnonzero(y == 0)
        y[candidates[np.argsort(-p[candidates], kind="stable")[: MIN_PER_CLASS - positives]]] = 1
    negatives = len(y) - int(y.sum())
    if negatives < MIN_PER_CLASS:
        candidates = np.flatnonzero(y == 1)
        y[candidates[np.argsort(p[candidates], kind="stable")[: MIN_PER_CLASS - negatives]]] = 0
    return y


def iter_consortium(
    n_banks: int, seed: int = 0, total_customers: int | None = None, rates: tuple[float, float] = DEFAULT_RATE_RANGE
) -> Iterator[pd.DataFrame]:
    """Yield the banks' frames one at a time (for consortia too large to hold at once)."""
    for index, profile in enumerate(consortium_profiles(n_banks, seed, total_customers, rates)):
        yield generate_bank(profile, seed, index)


def generate_consortium(
    n_banks: int, seed: int = 0, total_customers: int | None = None, rates: tuple[float, float] = DEFAULT_RATE_RANGE
) -> list[pd.DataFrame]:
    """All banks' frames: `[generate_bank(p, seed, i) for i, p in enumerate(consortium_profiles(...))]`."""
    return list(iter_consortium(n_banks, seed, total_customers, rates))


def simulate_total_customers(n_banks: int) -> int:
    """`fedsilo simulate`'s default consortium size: 5,000 customers, or 200 per bank if that is more."""
    return max(SIMULATE_TOTAL_CUSTOMERS, CUSTOMERS_PER_BANK_FLOOR * n_banks)
