"""The trained ensemble as a plain JSON file, and its loader.

Format ``fedsilo.gbdt`` version 1 (``model.json``)::

    {"format": "fedsilo.gbdt", "version": 1,
     "objective": "binary:logistic", "base_margin": 0.0, "learning_rate": 0.3,
     "layout": {"n_features": W, "groups": [{"name", "kind", "columns", "edges"}, ...]},
     "trees": [{"depth": D, "nodes": [{"id": 0, "group": 3, "cut": 7}, {"id": 1, "leaf": -0.12}, ...]}]}

It reads rows *encoded* by the run's ``encoder.json`` (`TabularEncoder.transform_features`):
each group maps its encoded column(s) to a bin (`fedsilo.strategies.gbdt.layout`), a
split node sends a row left when its group's bin is ``<= cut``, children of node ``i``
are ``2i + 1`` (left) and ``2i + 2`` (right). The margin of a row is ``base_margin +
learning_rate * Σ leaf values``; the probability of the event is its sigmoid. Numeric
edges are in the encoder's standardized units, so the file plus the encoder is the
whole model. The loader checks the structure and refuses a malformed file (DataError).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.errors import DataError
from fedsilo.strategies.gbdt.layout import BinLayout
from fedsilo.strategies.gbdt.tree import Tree

FORMAT = "fedsilo.gbdt"
VERSION = 1


@dataclass
class GBDTModel:
    """An ensemble over a bin layout; ``predict_margin(x)`` on encoded rows."""

    layout: BinLayout
    trees: list[Tree]
    learning_rate: float
    base_margin: float = 0.0

    def margin_from_bins(self, bins: np.ndarray) -> np.ndarray:
        margin = np.full(bins.shape[0], self.base_margin, dtype=np.float64)
        for tree in self.trees:
            margin += self.learning_rate * tree.predict(bins)
        return margin

    def predict_margin(self, x: np.ndarray) -> np.ndarray:
        """The logit of every encoded row (float64)."""
        return self.margin_from_bins(self.layout.bin_rows(np.asarray(x)))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.predict_margin(x)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "objective": "binary:logistic",
            "base_margin": self.base_margin,
            "learning_rate": self.learning_rate,
            "layout": self.layout.to_dict(),
            "trees": [t.to_dict() for t in self.trees],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), allow_nan=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any) -> GBDTModel:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f'not a {FORMAT} model file (no "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise DataError(f"{FORMAT} model version {data.get('version')!r}; this fedsilo reads version {VERSION}")
        try:
            layout = BinLayout.from_dict(data["layout"])
            trees = [Tree.from_dict(t, len(layout.groups)) for t in data["trees"]]
            lr, base = float(data["learning_rate"]), float(data["base_margin"])
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"malformed {FORMAT} model file ({error.__class__.__name__}: {error})") from None
        if not (math.isfinite(lr) and math.isfinite(base)):
            raise DataError(f"{FORMAT} model file with a non-finite learning rate or base margin")
        for tree in trees:
            if not np.isfinite(tree.value).all():
                raise DataError(f"{FORMAT} model file with a non-finite leaf value")
        return cls(layout, trees, lr, base)

    @classmethod
    def load(cls, path: str | Path) -> GBDTModel:
        try:
            data = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path} is not valid JSON: the model file was altered or truncated") from None
        return cls.from_dict(data)
