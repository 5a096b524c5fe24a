"""Fixed-point encoding of float vectors into the group Z_M, M = 2**k.

What a peer encodes
-------------------
A peer contributes a vector ``x`` (length d) with a weight ``w`` in ``[0, max_weight]``.
With ``w~ = w / max_weight`` in ``[0, 1]`` it encodes the d + 1 values

    value slots:  q_j = round((w~ * clip(x_j) + c) * scale),      scale   = (2**bits - 1) / (2c)
    weight slot:  q_w = round(w~ * weight_scale),                 weight_scale = 2**bits - 1

``clip`` clips to ``[-c, c]``; since ``w~ <= 1`` the product stays in ``[-c, c]``, so
every encoded value lies in ``[0, 2**bits - 1]`` (``max_encoded = 2c * scale``).
The server learns only the sums ``A = sum w~_i clip(x_i)`` and ``B = sum w~_i`` and
returns ``A / B``, the weighted average, without learning any single ``w_i``.

Modulus
-------
``M = 2**k`` with the smallest ``k`` such that ``n * max_encoded + 2 * headroom < M``
(``headroom`` is the noise allowance of the distributed-DP option, 0 without it), and
``k <= 62``. The sum of at most n encoded values, each ``<= 2c * scale``, is then
``<= n * 2c * scale < M`` and cannot wrap; with noise the true integer sum lies in
``[-headroom, n * max_encoded + headroom]`` (with probability ``>= 1 - 2**-correctness``,
see ``noise.py``), an interval shorter than M, and is recovered exactly from its
residue. Arithmetic is uint64: numpy wraps modulo 2**64 and ``& (M - 1)`` reduces
modulo M because M divides 2**64.

Rounding and the error bound
----------------------------
Rounding is DETERMINISTIC (``numpy.rint``, round half to even): each encoded value is
within 1/2 of its real value, i.e. the error is ``<= 1/(2*scale)`` per coordinate per
peer (and ``<= 1/(2*weight_scale)`` on the weight). Summing n peers:
``|A' - A| <= n/(2 scale)`` and ``|B' - B| <= n/(2 weight_scale)``, and since
``|A/B| <= c`` (a weighted average of values clipped to [-c, c]):

    |A'/B' - A/B| = |(A' - A) - (A/B)(B' - B)| / B'
                  <= (n/(2 scale) + c n/(2 weight_scale)) / B'  =  (3n / (4 scale)) / B'

because ``c / weight_scale = 1 / (2 scale)``. With equal weights (``w~ = 1``, B = n) the
averaged error is ``<= 3/(4*scale)``: 1/(2 scale) from the values plus 1/(4 scale)
from the quantized denominator. :meth:`FixedPointEncoder.average_error_bound` returns
this bound with ``B' >= W - n/(2 weight_scale)`` so it holds whether W is the true or
the decoded weight sum, plus a floating-point allowance of ``2**-44 * n * c / B'``.
Deterministic rounding is exact-bounded but not unbiased; see ``noise.py`` for what it
costs in DP sensitivity (at most ``sqrt(d)`` extra in integer units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError, DataError

__all__ = ["FixedPointEncoder", "MAX_MODULUS_BITS"]

#: Largest modulus exponent: the sum of two residues < 2**62 never overflows int64 views.
MAX_MODULUS_BITS = 62


@dataclass(frozen=True)
class FixedPointEncoder:
    """Quantizer for one round: clip ``c``, ``bits`` of precision, ``n_peers`` summands.

    ``headroom`` (integer units) is reserved on both sides of the sum for additive noise.
    """

    clip: float
    bits: int
    n_peers: int
    headroom: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"secagg clip range must be a finite number > 0, got {self.clip!r}")
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 52:
            raise ConfigError(f"secagg bits must be an integer in [1, 52] (float64 precision), got {self.bits!r}")
        if not isinstance(self.n_peers, int) or self.n_peers < 1:
            raise ConfigError(f"secagg n_peers must be a positive integer, got {self.n_peers!r}")
        if not isinstance(self.headroom, int) or self.headroom < 0:
            raise ConfigError(f"secagg headroom must be an integer >= 0, got {self.headroom!r}")
        if self.modulus_bits > MAX_MODULUS_BITS:
            raise ConfigError(
                f"secagg needs a modulus of 2**{self.modulus_bits} for {self.n_peers} peers at "
                f"{self.bits} bits (noise headroom {self.headroom}); the limit is "
                f"2**{MAX_MODULUS_BITS}: lower `bits` or the noise"
            )

    # ------------------------------------------------------------------ parameters
    @property
    def max_encoded(self) -> int:
        """Largest encoded value of one peer: ``2**bits - 1 = 2c * scale``."""
        return (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """Value-slot scale: ``(2**bits - 1) / (2c)`` integer steps per unit."""
        return self.max_encoded / (2.0 * self.clip)

    @property
    def weight_scale(self) -> float:
        """Weight-slot scale: ``2**bits - 1`` steps for the normalized weight range [0, 1]."""
        return float(self.max_encoded)

    @property
    def modulus_bits(self) -> int:
        """k, the smallest exponent with ``n * max_encoded + 2 * headroom < 2**k``."""
        return max(1, (self.n_peers * self.max_encoded + 2 * self.headroom).bit_length())

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def mask(self) -> np.uint64:
        """``M - 1`` as uint64: ``a & mask`` is ``a mod M``."""
        return np.uint64(self.modulus - 1)

    # ------------------------------------------------------------------ encode
    def encode(self, vector: np.ndarray, weight_fraction: float) -> np.ndarray:
        """Encode ``[w~ * clip(x), w~]`` as a fresh uint64 array of length ``d + 1``.

        ``weight_fraction`` is ``w~ = w / max_weight`` in [0, 1].
        """
        x = np.asarray(vector)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"secagg input must be a 1-D float array, got shape {x.shape} dtype {x.dtype}")
        if not (0.0 <= weight_fraction <= 1.0) or not math.isfinite(weight_fraction):
            raise DataError(f"secagg normalized weight must lie in [0, 1], got {weight_fraction!r}")
        if not np.isfinite(x).all():
            raise DataError("secagg input contains NaN or infinity; it cannot be encoded")
        c = float(self.clip)
        work = np.empty(x.shape[0], dtype=np.float64)
        np.clip(x, -c, c, out=work)
        work *= weight_fraction
        work += c
        work *= self.scale
        np.rint(work, out=work)
        np.clip(work, 0.0, float(self.max_encoded), out=work)
        out = np.empty(x.shape[0] + 1, dtype=np.uint64)
        out[:-1] = work
        out[-1] = np.uint64(min(self.max_encoded, round(weight_fraction * self.weight_scale)))
        return out

    # ------------------------------------------------------------------ decode
    def centered_integers(self, summed: np.ndarray) -> np.ndarray:
        """Map residues mod M back to the integers in ``[-headroom, M - headroom)`` (int64)."""
        s = np.asarray(summed, dtype=np.uint64)
        if self.headroom:
            s = (s + np.uint64(self.headroom)) & self.mask
            return s.astype(np.int64) - np.int64(self.headroom)
        return (s & self.mask).astype(np.int64)

    def decode_sum(self, summed: np.ndarray, n_summed: int) -> tuple[np.ndarray, float]:
        """Decode the modular sum of ``n_summed`` encodings.

        Returns ``(A, B)``: ``A = sum w~_i clip(x_i)`` (float64, length d) and the
        normalized weight sum ``B = sum w~_i``. The value slots subtract ``n_summed * c``.
        ValueError if some slot lies outside ``[-headroom, n_summed * max_encoded + headroom]``
        (the weight slot outside ``[0, n_summed * max_encoded]``): then the masks did not
        cancel and the residue is not a sum of encodings (with random residues this is
        detected with overwhelming probability once d is more than a few dozen).
        """
        if not 1 <= n_summed <= self.n_peers:
            raise DataError(f"cannot decode a sum of {n_summed} encodings with an encoder for {self.n_peers} peers")
        ints = self.centered_integers(summed)
        top = n_summed * self.max_encoded
        if (
            not 0 <= int(ints[-1]) <= top
            or int(ints[:-1].min()) < -self.headroom
            or int(ints[:-1].max()) > top + self.headroom
        ):
            raise ValueError(f"the decoded sum lies outside the range a sum of {n_summed} encodings can take")
        values = ints[:-1].astype(np.float64)
        values /= self.scale
        values -= n_summed * float(self.clip)
        weight_sum = float(ints[-1]) / self.weight_scale
        return values, weight_sum

    def average_error_bound(self, n_summed: int, weight_sum: float) -> float:
        """Bound on ``|secure average - exact weighted average of clipped inputs|`` (no noise).

        ``weight_sum`` is the normalized weight sum (``sum w_i / max_weight``), true or
        decoded; the bound uses ``B' >= weight_sum - n/(2 weight_scale)``.
        """
        slack = n_summed / (2.0 * self.weight_scale)
        denom = weight_sum - slack
        if denom <= 0:
            return math.inf
        num = n_summed / (2.0 * self.scale) + self.clip * slack + 2.0**-44 * n_summed * self.clip
        return num / denom
