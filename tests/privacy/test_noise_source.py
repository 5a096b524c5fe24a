"""Where the noise that protects data comes from: the OS CSPRNG, and nothing else."""

import numpy as np
import torch

import fedsilo.privacy.noise_source as noise_source
import fedsilo.privacy.secagg.noise as secagg_noise
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.secagg.noise import sample_discrete_gaussian


def test_secure_noise_ignores_every_seed_a_job_could_set():
    torch.manual_seed(0)
    np.random.seed(0)
    a = SecureNoise().gaussian(64)
    torch.manual_seed(0)
    np.random.seed(0)
    b = SecureNoise().gaussian(64)
    assert not np.array_equal(a, b)


def test_secure_noise_is_keyed_by_os_urandom_alone(monkeypatch):
    """With os.urandom pinned, two sources agree: no other input (time, pid, seed) enters the stream."""
    monkeypatch.setattr(noise_source.os, "urandom", lambda n: bytes(range(n)))
    a, b = SecureNoise(), SecureNoise()
    assert np.array_equal(a.gaussian(32), b.gaussian(32))
    assert torch.equal(a.poisson_rows(500, 0.1), b.poisson_rows(500, 0.1))


def test_distributed_noise_shares_are_fresh_and_keyed_by_os_urandom(monkeypatch):
    first, second = sample_discrete_gaussian(50.0, 256), sample_discrete_gaussian(50.0, 256)
    assert not np.array_equal(first, second)
    monkeypatch.setattr(secagg_noise.os, "urandom", lambda n: b"\x07" * n)
    assert np.array_equal(sample_discrete_gaussian(50.0, 256), sample_discrete_gaussian(50.0, 256, seed=b"\x07" * 32))
