"""Where DP-SGD's randomness comes from: Poisson sampling masks and Gaussian noise.

`SecureNoise` (the default, and the only source a deployed peer uses) draws every bit
from AES-256 in counter mode (AES-NI: a few times faster than ChaCha20 here) keyed by
32 fresh bytes of `os.urandom`, one key per instance: nothing a job, a host or a model
card holds determines it, and two instances never share a stream. Its Gaussians defend against the floating-point attack on Gaussian samplers
(Mironov, CCS 2012, for the Laplace case; Jin et al., "Are we there yet?", 2021, and
Holohan & Braghin, 2021, for Gaussians) the way Opacus' `secure_mode` does
(`opacus.optimizers.optimizer._generate_noise`): each released value is the sum of four
independent N(0, 1) samples divided by 2 — the 2n-sample construction of Holohan &
Braghin §5.1 with n = 2 — so that the set of float values an output can take no longer
reveals the one sample that produced it. The samples themselves are Box–Muller in
float64 on 53-bit uniforms; the sum is rounded to the caller's dtype once, at the end.
Opacus also throws away one sample of torch's generator first; with a fresh key per
instance there is no generator state to protect, so `SecureNoise` does not.

`SeededNoise` is the research mode: torch's seeded generators (Poisson masks from
`Generator(seed)`, noise from `Generator(seed + 1)`), so that a run can be replayed bit
for bit. Anyone who knows the seed can regenerate its noise and subtract it: an ε
computed for such a run is not a privacy guarantee. It is only built when a caller asks
for it by name (`DPSGDTrainer(..., reproducible_seed=...)`).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

if TYPE_CHECKING:  # torch is imported by the methods that make tensors: a numpy caller (boosting) never loads it
    import torch

KEY_BYTES = 32
# Holohan & Braghin (2021) §5.1 / Opacus secure_mode: 2n samples summed, n = 2, divided by sqrt(2n).
SECURE_SUMMANDS = 4


class NoiseSource(Protocol):
    """The randomness of one DP mechanism: Poisson batches, standard Gaussian noise, uniform words."""

    reproducible: bool

    def words(self, count: int) -> np.ndarray:
        """`count` uniformly random uint64 words (randomized response draws from them)."""

    def poisson_rows(self, n: int, sample_rate: float) -> torch.Tensor:
        """Indices of a Poisson sample of range(n): each row independently with probability q."""

    def standard_normal_(self, out: torch.Tensor) -> torch.Tensor:
        """Fill `out` in place with i.i.d. N(0, 1) and return it."""


class SecureNoise:
    """DP-SGD randomness from the OS CSPRNG (AES-256-CTR keyed by `os.urandom`); see the module docstring."""

    reproducible = False

    def __init__(self) -> None:
        # A fresh key per instance makes a counter starting at 0 safe.
        self._stream = Cipher(algorithms.AES(os.urandom(KEY_BYTES)), modes.CTR(bytes(16))).encryptor()

    def words(self, count: int) -> np.ndarray:
        """`count` uniformly random uint64 words (a writable array of its own)."""
        # The keystream is written straight into the array's buffer (`update_into` needs
        # block_size - 1 bytes of slack): no copy of tens of MB per draw.
        out = bytearray(8 * count + 15)
        written = self._stream.update_into(bytes(8 * count), out)
        return np.frombuffer(out, dtype=np.uint64, count=written // 8)

    def poisson_rows(self, n: int, sample_rate: float) -> torch.Tensor:
        """Each row joins when a 32-bit word falls below floor(q·2**32): with probability q − (< 2**-32).

        Never above q, so the accountant's bound for q stays valid (a lower rate leaks less).
        """
        import torch

        if sample_rate >= 1.0:
            return torch.arange(n)
        words = np.frombuffer(self._stream.update(bytes(4 * n)), dtype=np.uint32)
        return torch.from_numpy(np.flatnonzero(words < np.uint32(math.floor(sample_rate * 2.0**32))))

    def gaussian(self, count: int) -> torch.Tensor:
        """`count` N(0, 1) samples, float64: each the sum of four Box–Muller samples over 2."""
        import torch

        pairs = count * SECURE_SUMMANDS // 2  # SECURE_SUMMANDS is even
        bits = torch.from_numpy((self.words(2 * pairs) >> np.uint64(11)).view(np.int64))  # 53 bits, ≥ 0
        uniform = bits.to(torch.float64).mul_(2.0**-53)  # [0, 1) on the 2**-53 grid
        radius = uniform[:pairs].neg_().add_(1.0).log_().mul_(-2.0).sqrt_()  # from 1 − u in (0, 1]: finite
        angle = uniform[pairs:].mul_(2.0 * math.pi)
        samples = torch.cat((radius * torch.cos(angle), radius.mul_(torch.sin(angle))))
        return samples.view(SECURE_SUMMANDS, count).sum(dim=0).div_(math.sqrt(SECURE_SUMMANDS))

    def standard_normal_(self, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(self.gaussian(out.numel()).view(out.shape))


class SeededNoise:
    """Research mode: torch's generators seeded by `seed`; replayable, therefore not private."""

    reproducible = True

    def __init__(self, seed: int) -> None:
        import torch

        self.seed = seed
        self._sampling = torch.Generator().manual_seed(seed)
        self._noise = torch.Generator().manual_seed(seed + 1)

    def poisson_rows(self, n: int, sample_rate: float) -> torch.Tensor:
        import torch

        return (torch.rand(n, generator=self._sampling) < sample_rate).nonzero().squeeze(1)

    def words(self, count: int) -> np.ndarray:
        """`count` uint64 words from numpy's PCG64 seeded by `seed` + 2 (randomized response's coins)."""
        if not hasattr(self, "_words"):
            self._words = np.random.default_rng(self.seed + 2)
        return self._words.integers(0, 2**64, size=count, dtype=np.uint64, endpoint=False)

    def standard_normal_(self, out: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.randn(out.shape, generator=self._noise, out=out)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The generators' positions (sampling, noise), to continue the same streams elsewhere (`restore`)."""
        return self._sampling.get_state().numpy().copy(), self._noise.get_state().numpy().copy()

    def restore(self, sampling: np.ndarray, noise: np.ndarray) -> None:
        """Continue the streams from positions `state` returned."""
        import torch

        self._sampling.set_state(torch.as_tensor(sampling, dtype=torch.uint8))
        self._noise.set_state(torch.as_tensor(noise, dtype=torch.uint8))
