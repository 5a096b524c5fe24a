"""Histogram gradient-boosted trees, the host's side: bin layout, tree growth, secure sums.

See `fedsilo.privacy.gbdt` for the DP accounting and `fedsilo.peers.gbdt` for the banks.
"""

from .layout import BinLayout, FeatureGroup, side_by_side
from .secure_session import SecureSession, SessionPeer
from .secure_sum import HistogramPeer, SumOutcome, secure_sum
from .tree import MIN_CHILD_NOISE_SDS, HistogramRefused, Tree, TreeParams, best_split, check_histogram, noise_aware

__all__ = [
    "MIN_CHILD_NOISE_SDS",
    "BinLayout",
    "FeatureGroup",
    "HistogramPeer",
    "HistogramRefused",
    "SecureSession",
    "SessionPeer",
    "SumOutcome",
    "Tree",
    "TreeParams",
    "best_split",
    "check_histogram",
    "noise_aware",
    "secure_sum",
    "side_by_side",
]
