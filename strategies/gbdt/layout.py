"""Where each (feature group, bin) sits in a histogram vector, and how rows fall into bins.

A *feature group* is one column of the bank's table as the encoder saw it:

* a numeric column: its standardized encoded value, cut at ``edges`` (bin ``k`` holds
  ``edges[k-1] <= x < edges[k]``; ``len(edges) + 1`` bins);
* a one-hot block (a categorical column): bin ``k`` is category ``k`` (in the
  encoder's sorted order) and one extra last bin holds a row whose block is all zeros
  (a category the encoder never saw);
* a 0/1 missing-value indicator: two bins.

A split is "bin <= t goes left", so numeric splits are thresholds and categorical
splits cut the sorted categories (ordinal for integer-coded columns such as PAY_*).
Each row sits in exactly one bin per group, which is what the DP sensitivity in
`fedsilo.privacy.gbdt` counts on.

The layout is public (everyone derives it from the encoder and the job's bin count);
building it from an encoder is `fedsilo.peers.gbdt.bins`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError

NUMERIC, ONE_HOT, INDICATOR = "numeric", "one_hot", "indicator"
KINDS = (NUMERIC, ONE_HOT, INDICATOR)


@dataclass(frozen=True)
class FeatureGroup:
    """One group: its name, kind, the encoded columns it reads, and (numeric) its bin edges."""

    name: str
    kind: str
    columns: tuple[int, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"feature group {self.name!r}: unknown kind {self.kind!r}")
        if not self.columns or (self.kind != ONE_HOT and len(self.columns) != 1):
            raise ConfigError(f"feature group {self.name!r}: wrong columns {self.columns!r} for kind {self.kind}")
        if self.kind == NUMERIC and (not self.edges or list(self.edges) != sorted(set(self.edges))):
            raise ConfigError(f"feature group {self.name!r}: numeric edges must be strictly increasing")

    @property
    def n_bins(self) -> int:
        if self.kind == NUMERIC:
            return len(self.edges) + 1
        if self.kind == ONE_HOT:
            return len(self.columns) + 1
        return 2

    def bin(self, x: np.ndarray) -> np.ndarray:
        """The bin of every row of the encoded matrix ``x`` (int32)."""
        if self.kind == NUMERIC:
            return np.searchsorted(np.asarray(self.edges), x[:, self.columns[0]], side="right").astype(np.int32)
        if self.kind == INDICATOR:
            return (x[:, self.columns[0]] > 0.5).astype(np.int32)
        block = x[:, list(self.columns)]
        hot = block > 0.5
        return np.where(hot.any(axis=1), hot.argmax(axis=1), len(self.columns)).astype(np.int32)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "columns": list(self.columns), "edges": list(self.edges)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureGroup:
        return cls(
            str(data["name"]),
            str(data["kind"]),
            tuple(int(c) for c in data["columns"]),
            tuple(float(e) for e in data.get("edges", ())),
        )


@dataclass(frozen=True)
class BinLayout:
    """The groups in order; group ``j``'s bins occupy ``offsets[j] .. offsets[j] + n_bins - 1``."""

    groups: tuple[FeatureGroup, ...]
    n_features: int  # width of the encoded matrix the groups read

    def __post_init__(self) -> None:
        if not self.groups:
            raise ConfigError("a bin layout needs at least one feature group")
        used = [c for g in self.groups for c in g.columns]
        if len(used) != len(set(used)) or max(used) >= self.n_features or min(used) < 0:
            raise ConfigError("feature groups must read distinct encoded columns within the encoded width")

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([g.n_bins for g in self.groups])[:-1]]).astype(np.int64)

    @property
    def total_bins(self) -> int:
        return int(sum(g.n_bins for g in self.groups))

    def slots(self, groups: tuple[int, ...] | None) -> np.ndarray:
        """Positions on the bins axis of the given groups' bins, in group order (None: every bin)."""
        if groups is None:
            return np.arange(self.total_bins)
        offsets = self.offsets
        return np.concatenate([offsets[j] + np.arange(self.groups[j].n_bins) for j in sorted(groups)])

    def widest_slots(self, k: int) -> int:
        """The most bins any ``k`` groups can have together (the longest subsampled histogram)."""
        return int(sum(sorted((g.n_bins for g in self.groups), reverse=True)[:k]))

    def bin_rows(self, x: np.ndarray) -> np.ndarray:
        """(rows, groups) int32 matrix of per-group bins; refuses a matrix of the wrong width."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ConfigError(f"encoded rows have shape {x.shape}, the layout reads {self.n_features} columns")
        return np.stack([g.bin(x) for g in self.groups], axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinLayout:
        return cls(tuple(FeatureGroup.from_dict(g) for g in data["groups"]), int(data["n_features"]))


def side_by_side(left: BinLayout, right: BinLayout) -> BinLayout:
    """One layout over ``[left's encoded columns, right's]``: ``right``'s groups read columns shifted by its width.

    Vertical boosting: the label holder's columns next to a feature party's (or its released code),
    with group ``j < len(left.groups)`` the left party's and the rest the right party's.
    """
    shift = left.n_features
    moved = tuple(FeatureGroup(g.name, g.kind, tuple(c + shift for c in g.columns), g.edges) for g in right.groups)
    return BinLayout(left.groups + moved, shift + right.n_features)
