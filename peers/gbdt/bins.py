"""Histogram bins from the fitted encoder's aggregates: no row is pooled to place them.

The encoder (`fedsilo.peers.data.encoding`) was fitted from per-bank sums and
standardizes every numeric column (after a signed log when the pooled skewness is
large) with the pooled mean and standard deviation. A numeric column's ``bins`` bins
are cut at the standard normal quantiles ``Φ⁻¹(k / bins)``, ``k = 1 .. bins - 1``, of
that standardized value: equal-mass bins if the column were normal after the
encoder's transform, uneven (some nearly empty) for discrete or heavy-tailed columns.

What a bin edge reveals: mapped back to raw units an edge is ``mean + std · Φ⁻¹(k/B)``
(through the inverse signed log for logged columns), a function of the pooled mean
and standard deviation the encoder already publishes and of the public bin count;
it reveals nothing about any bank beyond the encoder's own aggregates. (Edges from
true quantiles would need a DP quantile sketch; not done here.)

Categorical (one-hot) columns get one bin per category of the encoder's union of
values, in its sorted order, plus one for an unseen category; missing-value indicator
columns get two bins.
"""

from __future__ import annotations

from statistics import NormalDist

from fedsilo.errors import ConfigError
from fedsilo.peers.data.encoding import CategoricalColumn, TabularEncoder
from fedsilo.strategies.gbdt.layout import INDICATOR, NUMERIC, ONE_HOT, BinLayout, FeatureGroup

MIN_BINS, MAX_BINS = 2, 256


def normal_edges(bins: int) -> tuple[float, ...]:
    """``Φ⁻¹(k / bins)`` for ``k = 1 .. bins - 1``."""
    if not isinstance(bins, int) or not MIN_BINS <= bins <= MAX_BINS:
        raise ConfigError(f"--bins must be an integer in [{MIN_BINS}, {MAX_BINS}], got {bins!r}")
    unit = NormalDist()
    return tuple(unit.inv_cdf(k / bins) for k in range(1, bins))


def layout_from_encoder(encoder: TabularEncoder, bins: int) -> BinLayout:
    """The public bin layout of every encoded column (see the module docstring)."""
    edges = normal_edges(bins)
    groups: list[FeatureGroup] = []
    start = 0
    for column in encoder.columns:
        if isinstance(column, CategoricalColumn):
            groups.append(FeatureGroup(column.name, ONE_HOT, tuple(range(start, start + column.width))))
        else:
            groups.append(FeatureGroup(column.name, NUMERIC, (start,), edges))
            if column.missing_indicator:
                groups.append(FeatureGroup(f"{column.name}__missing", INDICATOR, (start + 1,)))
        start += column.width
    return BinLayout(tuple(groups), encoder.n_features)
