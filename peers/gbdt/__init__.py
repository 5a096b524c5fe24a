"""Histogram gradient-boosted trees, the bank's side: bins from the encoder, histograms, the model file.

See `fedsilo.privacy.gbdt` (accounting) and `fedsilo.strategies.gbdt` (the host).
"""

from .bank import GBDTBank
from .bins import layout_from_encoder, normal_edges
from .model_file import GBDTModel

__all__ = ["GBDTBank", "GBDTModel", "layout_from_encoder", "normal_edges"]
