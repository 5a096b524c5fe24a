from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.privacy.secagg import FixedPointEncoder


def test_modulus_bound_no_wrap():
    for n, bits in [(1, 8), (10, 24), (1000, 30), (7, 52)]:
        enc = FixedPointEncoder(1.0, bits, n)
        assert n * enc.max_encoded < enc.modulus
        assert (n * enc.max_encoded) >= enc.modulus // 2  # the smallest such k
        assert enc.max_encoded == pytest.approx(2 * enc.clip * enc.scale)
    with pytest.raises(ConfigError, match="2\\*\\*62"):
        FixedPointEncoder(1.0, 52, 2**11)


def test_extreme_values_sum_exactly_without_wrapping():
    n = 9
    enc = FixedPointEncoder(0.5, 20, n)
    top = enc.encode(np.full(10, 0.5), 1.0)
    assert int(top.max()) == enc.max_encoded
    total = np.zeros(11, dtype=np.uint64)
    for _ in range(n):
        total = (total + top) & enc.mask
    values, w = enc.decode_sum(total, n)
    assert np.allclose(values, n * 0.5, atol=0) and w == n


def test_deterministic_rounding_error_per_coordinate():
    enc = FixedPointEncoder(1.0, 10, 1)
    x = np.random.default_rng(0).uniform(-1, 1, 10_000)
    values, w = enc.decode_sum(enc.encode(x, 1.0), 1)
    err = np.abs(values - x)
    assert err.max() <= 1 / (2 * enc.scale) + 1e-12
    assert err.max() > 0.9 / (2 * enc.scale)  # the bound is attained, not loose
    assert w == 1.0


def test_clipping_and_bad_inputs():
    enc = FixedPointEncoder(1.0, 16, 2)
    values, _ = enc.decode_sum(enc.encode(np.array([5.0, -5.0]), 1.0), 1)
    assert np.allclose(values, [1.0, -1.0], atol=1e-4)
    with pytest.raises(DataError, match="NaN"):
        enc.encode(np.array([np.nan]), 1.0)
    with pytest.raises(DataError, match="infinity"):
        enc.encode(np.array([0.0, np.inf]), 1.0)
    assert enc.encode(np.array([0.5], dtype=np.float32), 1.0).dtype == np.uint64
    with pytest.raises(DataError):
        enc.encode(np.array([1, 2]), 1.0)  # ints are not silently accepted
    with pytest.raises(DataError):
        enc.encode(np.zeros(3), 1.5)
    with pytest.raises(ConfigError):
        FixedPointEncoder(0.0, 16, 2)


def test_headroom_recovers_negative_noisy_sums():
    enc = FixedPointEncoder(1.0, 8, 3, headroom=1000)
    assert 3 * enc.max_encoded + 2000 < enc.modulus
    residues = np.array([(-700) % enc.modulus, 3 * enc.max_encoded + 900], dtype=np.uint64)
    assert enc.centered_integers(residues).tolist() == [-700, 3 * enc.max_encoded + 900]
