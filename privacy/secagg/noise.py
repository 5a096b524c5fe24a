"""Distributed DP: every peer adds a share of discrete Gaussian noise before masking.

Mechanism
---------
Each peer adds, in the integer domain (after encoding, before masking), i.i.d.
discrete Gaussian noise ``N_Z(0, sigma_p^2)`` to every value slot, with

    sigma_p = noise_multiplier * l2_sensitivity * scale / sqrt(expected_peers)

(integer units; ``scale`` is the encoder's). If ``expected_peers`` peers contribute,
the sum carries variance ``expected_peers * sigma_p^2 = sigma^2`` with
``sigma = noise_multiplier * l2_sensitivity * scale``: central-DP noise without a
trusted aggregator. The weight slot gets no noise: the total weight is released
exactly (use equal or public weights when weights are sensitive).

Sampling
--------
Canonne, Kamath & Steinke (2020), Algorithm 3, vectorized with numpy: propose
``Y ~ DLap(t)``, ``t = floor(sigma) + 1``, as the difference of two geometric variables
``floor(-t ln U)``, and accept with probability ``exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))``.
The uniforms come from ChaCha20 keyed by 32 bytes of ``os.urandom`` (a CSPRNG), 53 bits
each. The acceptance test and the logarithm are evaluated in float64 rather than with
CKS's exact Bernoulli(exp(-gamma)) sampler, so the output is the discrete Gaussian only
up to float64 rounding of those probabilities and the 2**-53 grid of the uniforms
(which cuts the geometric proposals off at about 36.7 t). We do not claim bit-exact
sampling; the accounting below treats the samples as exact discrete Gaussians.

Accounting (what the functions below return)
--------------------------------------------
* :func:`integer_l2_sensitivity`: a peer's encoded contribution changes by at most
  ``scale * l2_sensitivity + sqrt(d) * (1 + FLOAT_ALLOWANCE)`` in L2 (deterministic
  rounding moves each of the d coordinates by < 1/2, so two roundings differ by < 1 per
  coordinate; ``FLOAT_ALLOWANCE`` = 2**-10 covers float64 error of up to 2**-12 integer
  units per coordinate in the vector each neighbour encodes, with room for the
  encoder's own float64 steps — the caller must keep its update's float error that
  small, as ``fedsilo.peers.client.local_training`` does in distributed DP).
* :func:`central_noise_multiplier`: assume at most ``max_missing`` of the expected peers
  drop out or collude (colluders know and subtract their own noise). The honest noise
  then has variance ``(expected_peers - max_missing) * sigma_p^2`` and the effective
  multiplier is ``sqrt(expected_peers - max_missing) * sigma_p / integer_l2_sensitivity``.
  Feed it to a Gaussian-mechanism RDP accountant (e.g. Opacus') as the noise multiplier.
  A natural choice is ``max_missing = D + C`` of the round's graph (tolerated dropouts
  plus colluders), see :meth:`SecAggConfig.max_missing`.
* :func:`rdp_epsilon`: the exact bound for a sum of ``m`` discrete Gaussians, Kairouz,
  Liu & Steinke, ICML 2021 ("The Distributed Discrete Gaussian Mechanism"), Prop. 14:
  ``eps(alpha) = min(alpha D2^2/(2 m s^2) + tau d,
  alpha/2 (D2^2/(m s^2) + 2 D1 tau/(sqrt(m) s) + tau^2 d), alpha/2 (D2/(sqrt(m) s) + tau sqrt(d))^2)``
  with ``tau = 10 sum_(k=1)^(m-1) exp(-2 pi^2 s^2 k/(k+1))`` (requires s >= 1/2); tau is
  negligible once ``s >= 1`` and then the first term is the Gaussian one.
* :func:`sum_headroom`: the noise sum of n peers is sub-Gaussian with variance proxy
  ``n sigma_p^2`` (a discrete Gaussian is sigma^2-sub-Gaussian, CKS Cor. 9), so
  ``|noise| <= sqrt(2 n sigma_p^2 (ln(2 * 2**32) + eta ln 2))`` on all of up to 2**32
  coordinates with probability ``>= 1 - 2**-eta``; the encoder reserves this much on
  both sides so the noisy sum never wraps modulo M.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError

from .prg import LABEL_NOISE, KeyStream

__all__ = [
    "DistributedNoise",
    "sample_discrete_gaussian",
    "sum_headroom",
    "integer_l2_sensitivity",
    "central_noise_multiplier",
    "rdp_epsilon",
]

_MAX_DIM_LOG2 = 32


@dataclass(frozen=True)
class DistributedNoise:
    """Distributed discrete Gaussian noise targets.

    ``noise_multiplier`` z and ``l2_sensitivity`` (the caller's bound on the L2 norm by
    which one peer's weighted contribution ``w~ * clip(x)`` can change, in value units;
    the caller clips its update to ensure it) give the central standard deviation
    ``z * l2_sensitivity`` of the noise on ``sum w~_i x_i`` when ``expected_peers`` add noise.
    """

    noise_multiplier: float
    l2_sensitivity: float
    expected_peers: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(f"noise_multiplier must be > 0, got {self.noise_multiplier!r}")
        if not (math.isfinite(self.l2_sensitivity) and self.l2_sensitivity > 0):
            raise ConfigError(f"l2_sensitivity must be > 0, got {self.l2_sensitivity!r}")
        if not isinstance(self.expected_peers, int) or self.expected_peers < 1:
            raise ConfigError(f"expected_peers must be a positive integer, got {self.expected_peers!r}")

    def central_stddev(self) -> float:
        """Standard deviation of the summed noise in value units: ``z * l2_sensitivity``."""
        return self.noise_multiplier * self.l2_sensitivity

    def peer_sigma(self, scale: float) -> float:
        """Per-peer discrete Gaussian sigma in integer units."""
        return self.central_stddev() * scale / math.sqrt(self.expected_peers)


def sample_discrete_gaussian(sigma: float, size: int, *, seed: bytes | None = None) -> np.ndarray:
    """``size`` i.i.d. samples of N_Z(0, sigma^2) as int64 (vectorized CKS Algorithm 3).

    ``seed`` (32 bytes) makes the draw reproducible for tests; by default it is fresh
    from ``os.urandom``.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"discrete Gaussian sigma must be >= 0, got {sigma!r}")
    out = np.zeros(size, dtype=np.int64)
    if sigma == 0 or size == 0:
        return out
    stream = KeyStream(seed if seed is not None else os.urandom(32), LABEL_NOISE)
    t = math.floor(sigma) + 1
    s2 = sigma * sigma
    filled = 0
    while filled < size:
        m = max(1024, int((size - filled) * 1.5))
        u = stream.words(3 * m)
        f = ((u >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # uniform on (0, 1]
        y = np.floor(-t * np.log(f[:m])) - np.floor(-t * np.log(f[m : 2 * m]))
        accept = (f[2 * m :] - 2.0**-53) < np.exp(-((np.abs(y) - s2 / t) ** 2) / (2.0 * s2))
        ys = y[accept]
        take = min(ys.shape[0], size - filled)
        out[filled : filled + take] = ys[:take]
        filled += take
    return out


def sum_headroom(peer_sigma: float, n_peers: int, correctness_bits: int) -> int:
    """Integer bound on the |noise sum| of n peers on all of <= 2**32 coordinates (w.p. 1 - 2**-eta)."""
    if peer_sigma <= 0:
        return 0
    log_term = math.log(2.0) * (1 + _MAX_DIM_LOG2 + correctness_bits)
    return math.ceil(math.sqrt(2.0 * n_peers * peer_sigma**2 * log_term)) + 1


FLOAT_ALLOWANCE = 2.0**-10


def integer_l2_sensitivity(l2_sensitivity: float, scale: float, dim: int) -> float:
    """L2 sensitivity of one peer's encoded contribution: ``scale * l2_sensitivity + sqrt(dim) * (1 + 2**-10)``."""
    return scale * l2_sensitivity + math.sqrt(dim) * (1.0 + FLOAT_ALLOWANCE)


def central_noise_multiplier(noise: DistributedNoise, scale: float, dim: int, max_missing: int) -> float:
    """Effective Gaussian noise multiplier when at most ``max_missing`` peers drop or collude."""
    honest = noise.expected_peers - max_missing
    if honest <= 0:
        return 0.0
    sigma_p = noise.peer_sigma(scale)
    return math.sqrt(honest) * sigma_p / integer_l2_sensitivity(noise.l2_sensitivity, scale, dim)


def rdp_epsilon(
    alpha: float,
    peer_sigma: float,
    n_honest: int,
    l2_int: float,
    dim: int,
    l1_int: float | None = None,
) -> float:
    """Renyi-DP epsilon of order ``alpha`` for the sum of ``n_honest`` N_Z(0, peer_sigma^2) (KLS21 Prop. 14).

    ``l2_int``/``l1_int`` are the L2/L1 sensitivities in integer units (L1 defaults to
    ``sqrt(dim) * l2_int``).
    """
    if peer_sigma < 0.5:
        raise ConfigError("the distributed discrete Gaussian bound needs peer sigma >= 1/2")
    if n_honest < 1 or alpha <= 1:
        raise ConfigError("rdp_epsilon needs n_honest >= 1 and alpha > 1")
    if l1_int is None:
        l1_int = math.sqrt(dim) * l2_int
    m, s = n_honest, peer_sigma
    tau = 10.0 * sum(math.exp(-2.0 * math.pi**2 * s * s * k / (k + 1)) for k in range(1, m))
    var = m * s * s
    b1 = alpha * l2_int**2 / (2.0 * var) + tau * dim
    b2 = alpha / 2.0 * (l2_int**2 / var + 2.0 * l1_int * tau / math.sqrt(var) + tau**2 * dim)
    b3 = alpha / 2.0 * (l2_int / math.sqrt(var) + tau * math.sqrt(dim)) ** 2
    return min(b1, b2, b3)
