"""Distributed discrete Gaussian noise: sampler, split across peers, accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from fedsilo.privacy.secagg import DistributedNoise, SecAggConfig, central_noise_multiplier
from fedsilo.privacy.secagg.noise import rdp_epsilon, sample_discrete_gaussian, sum_headroom

from ._harness import Harness


def test_sampler_matches_the_discrete_gaussian():
    sigma = 2.5
    x = sample_discrete_gaussian(sigma, 200_000, seed=bytes(32))
    assert x.dtype == np.int64
    support = np.arange(-12, 13)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    counts = np.array([(x == k).sum() for k in support])
    assert counts.sum() > 200_000 * (1 - 1e-6)
    assert chisquare(counts, pmf * counts.sum()).pvalue > 1e-3
    assert abs(x.mean()) < 5 * sigma / math.sqrt(x.size)
    assert x.var() == pytest.approx(sigma**2, rel=0.02)


def test_sampler_small_sigma_and_fresh_randomness():
    x = sample_discrete_gaussian(0.6, 10_000)
    assert set(np.unique(x)) <= set(range(-6, 7)) and abs(x.mean()) < 0.05
    assert not np.array_equal(sample_discrete_gaussian(3.0, 100), sample_discrete_gaussian(3.0, 100))


def test_noise_sum_has_the_target_spread_and_drops_reduce_it():
    """End to end: each of n peers adds sigma^2/n; the aggregate's noise has std z * l2."""
    n, dim = 5, 4000
    noise = DistributedNoise(noise_multiplier=1.0, l2_sensitivity=0.01, expected_peers=n)
    cfg = SecAggConfig(clip=1.0, bits=24, max_weight=1.0, noise=noise)
    for dropped, share in ((0, 1.0), (1, 4 / 5)):
        h = Harness(n, dim=dim, config=cfg, seed=31 + dropped)
        h.weights = {u: 1.0 for u in h.nodes}
        result = h.run({"mask": h.nodes[:dropped]})
        plain, total = h.plaintext(result.survivors)
        noise_on_sum = (result.average - plain) * total
        assert np.std(noise_on_sum) == pytest.approx(noise.central_stddev() * math.sqrt(share), rel=0.06)
        assert abs(np.mean(noise_on_sum)) < 5 * noise.central_stddev() / math.sqrt(dim)
    # headroom was reserved in the modulus
    assert h.server.encoder.headroom > 0


def test_central_noise_multiplier_formula():
    noise = DistributedNoise(noise_multiplier=1.2, l2_sensitivity=0.5, expected_peers=10)
    scale, dim = 2**20, 1000
    z = central_noise_multiplier(noise, scale, dim, max_missing=3)
    sens = scale * 0.5 + math.sqrt(dim)
    assert z == pytest.approx(math.sqrt(7) * noise.peer_sigma(scale) / sens)
    assert z < 1.2 * math.sqrt(7 / 10)  # drops/colluders and rounding both cost privacy
    assert central_noise_multiplier(noise, scale, dim, max_missing=10) == 0.0
    cfg = SecAggConfig(noise=noise)
    assert cfg.max_missing(10) == 3 + 1  # floor(0.3 * 10) dropouts + floor(0.1 * 10) colluders


def test_rdp_bound_approaches_the_gaussian_one():
    sigma_p, m, l2, dim = 50.0, 10, 100.0, 10_000
    eps = rdp_epsilon(8.0, sigma_p, m, l2, dim)
    gaussian = 8.0 * l2**2 / (2 * m * sigma_p**2)
    assert eps == pytest.approx(gaussian, rel=1e-9)
    assert rdp_epsilon(8.0, 0.5, m, 1.0, dim) > 8.0 / (2 * m * 0.25)  # tau matters at tiny sigma


def test_headroom_bound():
    h = sum_headroom(10.0, 100, 30)
    assert h > 10 * 10 * 8  # > 8 standard deviations of the sum
    assert sum_headroom(0.0, 100, 30) == 0
