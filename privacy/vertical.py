"""DP for split (vertical) learning: per-example vectors released between parties, and their accounting.

In a split model each party releases, for the rows of a batch, one vector per example:
a feature party its bottom model's outputs (the embeddings), the label holder the
gradients of the loss with respect to those outputs. :class:`RowRelease` is the
mechanism for both: clip every row to L2 norm ``clip``, then add N(0, sd²) to every
coordinate, with sd = ``noise_multiplier`` · 2 · ``clip``.

Neighbouring datasets: the same customers (the PSI intersection is known to both
parties), one customer's row replaced (a feature party's columns for her, or the label
holder's columns and label). Two clipped vectors differ by at most 2·clip, so a
release of one example's vector is a Gaussian mechanism with noise multiplier
``noise_multiplier``; other examples' vectors do not depend on her row at all (the
party's model parameters do, which is why each party also trains its own part by
DP-SGD at the same noise multiplier: the model is then a DP function of the rows and
every later release is a Gaussian mechanism on one row given a private model).

No amplification by sampling: the label holder chooses the batches and every party
sees them, so a release is accounted at sample rate 1. Every release of a row is one
Gaussian mechanism; a row's guarantee is the composition of its releases
(μ = sqrt(k)/σ for k releases, computed exactly by :mod:`fedsilo.privacy.accounting`),
and since distinct rows' releases touch disjoint data, the party's ε is that of its
most-released row (:class:`RowAccountant`).

Noise comes from a :class:`~fedsilo.privacy.noise_source.NoiseSource`: ``SecureNoise``
(OS CSPRNG) in every private run; ``SeededNoise`` only for ``--reproducible``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedsilo.errors import BudgetExceeded, ConfigError, DataError
from fedsilo.privacy.accounting import Mechanism, calibrate_noise, epsilon_spent
from fedsilo.privacy.noise_source import NoiseSource

_WORDS = 1 << 64

__all__ = ["SENSITIVITY_FACTOR", "CodeRelease", "RowAccountant", "RowRelease", "clip_rows", "plan_noise"]

#: Replacing one row moves its clipped vector by at most 2·clip.
SENSITIVITY_FACTOR = 2.0


def clip_rows(values: np.ndarray, bound: float) -> np.ndarray:
    """Each row scaled by min(1, bound/‖row‖₂): every row's norm is at most ``bound``."""
    values = np.asarray(values, dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


@dataclass(frozen=True)
class RowRelease:
    """Clip every row to ``clip`` and add Gaussian noise of sd ``noise_multiplier · 2 · clip``.

    ``noise_multiplier == 0`` is the non-private release (clipped, no noise); the
    accountant refuses to account it.
    """

    clip: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"the clipping bound of a released vector must be a finite number > 0, got {self.clip}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(f"a noise multiplier must be a finite number ≥ 0, got {self.noise_multiplier}")

    @property
    def sd(self) -> float:
        """Standard deviation of the noise on every coordinate."""
        return self.noise_multiplier * SENSITIVITY_FACTOR * self.clip

    def noise(self, shape: tuple[int, ...], source: NoiseSource) -> np.ndarray:
        """The noise for an array of ``shape`` (float64), from ``source``."""
        return source.standard_normal_(torch.empty(shape, dtype=torch.float64)).numpy() * self.sd

    def apply(self, values: np.ndarray, source: NoiseSource | None) -> np.ndarray:
        """The released rows (float64): clipped, plus noise unless the multiplier is 0."""
        clipped = clip_rows(values, self.clip)
        if self.noise_multiplier == 0:
            return clipped
        if source is None:
            raise ConfigError("a private release needs a noise source (SecureNoise)")
        return clipped + self.noise(clipped.shape, source)


def plan_noise(epsilon: float, delta: float, releases_per_row: int, accountant: str = "prv") -> float:
    """The noise multiplier at which ``releases_per_row`` Gaussian releases of a row spend ≤ ``epsilon``."""
    return calibrate_noise(epsilon, delta, 1.0, releases_per_row, accountant)


class RowAccountant:
    """Counts the releases of each of a party's ``rows`` rows and refuses one past the budget.

    Releases run at the party's ``noise_multiplier`` unless :meth:`charge` names
    another (e.g. the single scoring release of a held-out customer, calibrated for one
    release). A row's ε composes all its releases; the party's ε is its worst row's.
    ``party`` names the owner in every refusal. ``epsilon`` is the budget for the whole
    job; a release that would take any row past it raises
    :class:`~fedsilo.errors.BudgetExceeded` before anything is counted or released.
    """

    def __init__(
        self, party: str, rows: int, noise_multiplier: float, epsilon: float, delta: float, accountant: str = "prv"
    ) -> None:
        if noise_multiplier <= 0:
            raise ConfigError(f"{party}: a private release needs a noise multiplier > 0")
        self.party, self.noise_multiplier = party, float(noise_multiplier)
        self.epsilon, self.delta, self.accountant = float(epsilon), float(delta), accountant
        self.counts = np.zeros(rows, dtype=np.int64)  # releases at the party's noise multiplier
        self.other: dict[float, np.ndarray] = {}  # releases at any other multiplier
        self._cache: dict[tuple, float] = {}

    def _multipliers(self) -> list[float]:
        return [self.noise_multiplier, *self.other]

    def _table(self, rows: np.ndarray | slice) -> np.ndarray:
        return np.column_stack([self.counts[rows], *(c[rows] for c in self.other.values())])

    def _mechanisms(self, pattern: tuple[int, ...]) -> list[Mechanism]:
        return [Mechanism(z, 1.0, int(k)) for z, k in zip(self._multipliers(), pattern) if k]

    def _epsilon(self, pattern: tuple[int, ...]) -> float:
        if pattern not in self._cache:
            mechanisms = self._mechanisms(pattern)
            self._cache[pattern] = epsilon_spent(mechanisms, self.delta, self.accountant) if mechanisms else 0.0
        return self._cache[pattern]

    def _worst(self, table: np.ndarray) -> tuple[tuple[int, ...], float]:
        patterns = [tuple(int(k) for k in row) for row in np.unique(table, axis=0)] if len(table) else []
        scored = [(p, self._epsilon(p)) for p in patterns]
        return max(scored, key=lambda item: item[1], default=((0,) * table.shape[1], 0.0))

    def charge(self, rows: np.ndarray, noise_multiplier: float | None = None) -> None:
        """Count one release of each of ``rows`` (distinct positions) at ``noise_multiplier``, or refuse it whole."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.counts)):
            raise DataError(f"{self.party}: rows outside 0 … {len(self.counts) - 1} cannot be released")
        if len(np.unique(rows)) != len(rows):
            raise DataError(f"{self.party}: a release lists a row twice")
        z = self.noise_multiplier if noise_multiplier is None else float(noise_multiplier)
        if not (math.isfinite(z) and z > 0):
            raise ConfigError(f"{self.party}: a private release needs a noise multiplier > 0, got {z}")
        if z != self.noise_multiplier and z not in self.other:
            self.other[z] = np.zeros(len(self.counts), dtype=np.int64)
        column = self._multipliers().index(z)
        table = self._table(rows)
        table[:, column] += 1
        _, epsilon = self._worst(table)
        if epsilon > self.epsilon:
            raise BudgetExceeded(
                f"{self.party}: releasing these rows again would spend ε = {epsilon:.3f} > its budget "
                f"ε = {self.epsilon:g} (δ = {self.delta:g}); nothing was released"
            )
        (self.counts if column == 0 else self.other[z])[rows] += 1

    @property
    def max_releases(self) -> int:
        """The most releases of one row at the party's noise multiplier."""
        return int(self.counts.max(initial=0))

    def spent(self) -> float:
        """ε of the worst row (every other row's is at most that)."""
        return self._worst(self._table(slice(None)))[1]

    def mechanisms(self) -> list[Mechanism]:
        """What the party's ledger commits: its worst row's Gaussian releases."""
        return self._mechanisms(self._worst(self._table(slice(None)))[0])


def noisy_clipped_mean(
    per_example: dict[str, torch.Tensor], clip: float, noise_multiplier: float, batch: int, source: NoiseSource | None
) -> dict[str, torch.Tensor]:
    """DP-SGD's update direction over a batch the caller chose (no sampling).

    Each example's gradient (over all tensors of ``per_example`` together, leading
    dimension = example) is scaled to norm ≤ ``clip``; the clipped gradients are summed,
    Gaussian noise of sd ``noise_multiplier · 2 · clip`` (replace-one sensitivity) is
    added to every coordinate, and the sum is divided by ``batch``. One Gaussian
    mechanism, at ``noise_multiplier``, for each example of the batch.
    """
    noise_source: NoiseSource | None = None
    if noise_multiplier > 0:
        if source is None:
            raise ConfigError("a private update needs a noise source (SecureNoise)")
        noise_source = source
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in per_example.values()], dim=1)
    scale = torch.clamp(clip / torch.clamp(flat.norm(dim=1), min=1e-12), max=1.0)
    out = {}
    for name, g in per_example.items():
        summed = torch.einsum("b,b...->...", scale.to(g.dtype), g)
        if noise_source is not None:
            noise = noise_source.standard_normal_(torch.empty(summed.shape, dtype=torch.float64))
            summed = summed + (noise * (noise_multiplier * SENSITIVITY_FACTOR * clip)).to(summed.dtype)
        out[name] = summed / batch
    return out


@dataclass(frozen=True)
class CodeRelease:
    """k-ary randomized response: each row's code in 0 … k−1, kept or replaced by one of the k − 1 others.

    The coded vertical scheme (:mod:`fedsilo.peers.vertical.coded`): a feature party
    releases each shared customer's information **once**, as a low-cardinality code
    ``c_i = q(f(x_i))`` (``f`` a model of its own columns, ``q`` a quantizer), through
    this mechanism. For one row, k-RR is pure ``epsilon``-DP (local DP): every output has
    probability ``keep`` under its own code and ``m`` under any other, ``keep / m ≤
    e^epsilon``.

    Why the codes of all rows together are DP for each row (the crux). Let ``f`` be an
    (ε₁, δ)-DP function of the party's rows (ε₁ = 0 when ``f`` is fixed before any data
    is seen, as the delinquency rule of the coded scheme is). Replace customer i's row:
    ``f`` moves within (ε₁, δ); given ``f``, every other customer's code is a function of
    ``f`` and of *her own* row only, so it does not depend on row i; customer i's own
    code is one k-RR release, ε₂-DP in row i given ``f``. By adaptive composition the
    release (f, all codes) is (ε₁ + ε₂, δ)-DP for row i, and the codes alone are a
    post-processing of it. Each row is released once: a repeated request gets the stored
    code (post-processing, no further ε; the receiver cannot average repeats away). A
    held-out or newly scored customer is not in ``f``'s data either, so her loss is ε₂
    only; she is charged ε₁ + ε₂ all the same (:func:`fedsilo.privacy.accounting.epsilon_spent`
    composes the :class:`~fedsilo.privacy.accounting.mechanism.PureMechanism` with ``f``'s).

    Coins are uint64 words from a :class:`~fedsilo.privacy.noise_source.NoiseSource`
    (``SecureNoise``: the OS CSPRNG). A word below ``keep_words`` keeps the code; the
    rest of [0, 2⁶⁴) is cut into k − 1 intervals of ``other_words`` each, one per other
    code. ``other_words = ⌈2⁶⁴ / (e^ε + k − 1)⌉ + 1`` and ``keep_words = 2⁶⁴ − (k − 1) ·
    other_words``, so keep/m ≤ e^ε holds exactly in integers (the flip probability is
    at most 2⁻⁶³ above the ideal 1 − e^ε/(e^ε + k − 1): on the private side).
    """

    k: int
    epsilon: float

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(f"randomized response needs k ≥ 2 codes, got {self.k!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"randomized response needs a finite ε > 0, got {self.epsilon}")

    @property
    def other_words(self) -> int:
        return math.ceil(_WORDS / (math.exp(self.epsilon) + self.k - 1)) + 1

    @property
    def keep_words(self) -> int:
        return _WORDS - (self.k - 1) * self.other_words

    @property
    def keep_probability(self) -> float:
        """The probability that a code is released unchanged (e^ε / (e^ε + k − 1), to 2⁻⁶³)."""
        return self.keep_words / _WORDS

    def apply(self, codes: np.ndarray, source: NoiseSource) -> np.ndarray:
        """The released codes (int64), one k-RR draw per row; DataError for a code outside 0 … k−1."""
        codes = np.asarray(codes)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise DataError(f"randomized response takes a 1-D array of integer codes, got {codes.dtype} {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.k):
            raise DataError(f"a code outside 0 … {self.k - 1} cannot be released")
        words = np.asarray(source.words(len(codes)), dtype=np.uint64)
        keep = words < np.uint64(self.keep_words)
        other = ((words - np.uint64(self.keep_words)) // np.uint64(self.other_words)).astype(np.int64)
        other = np.minimum(other, self.k - 2)  # the last interval ends exactly at 2⁶⁴; guard the edge
        return np.where(keep, codes.astype(np.int64), (codes.astype(np.int64) + 1 + other) % self.k)
