"""Public constants of Poisson-sampled DP-SGD, without torch.

A job's step count and the denominator of its noisy average follow from the sample
rate alone; the job's configuration needs them before any model exists, so they live
here rather than in `fedsilo.privacy.dpsgd` (which re-exports both).
"""

from __future__ import annotations

import math


def steps_per_epoch(sample_rate: float) -> int:
    """Number of Poisson-sampled steps that make one expected pass over the data."""
    return max(1, math.ceil(1.0 / sample_rate))


def expected_batch_size(sample_rate: float, n: int) -> int:
    """The public denominator of the noisy average: round(q·n), at least 1."""
    return max(1, round(sample_rate * n))
