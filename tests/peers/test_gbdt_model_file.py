"""The JSON model file: it round-trips to identical scores, and a malformed file is refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import DataError
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.gbdt import GBDTModel, layout_from_encoder, normal_edges
from fedsilo.peers.gbdt.bank import GBDTBank
from fedsilo.peers.gbdt.federation import BoostSettings, boost
from fedsilo.strategies.gbdt import TreeParams
from fedsilo.strategies.gbdt.layout import INDICATOR, NUMERIC, ONE_HOT


def _table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 1, n)
    income[rng.random(n) < 0.05] = np.nan
    grade = rng.integers(1, 5, n)
    late = (rng.random(n) < 1 / (1 + np.exp(-(grade - 2.5 - 0.00001 * np.nan_to_num(income))))).astype(int)
    return pd.DataFrame({"income": income, "grade": grade, "age": rng.normal(40, 10, n), "late": late})


def test_layout_from_the_encoder_bins_every_column() -> None:
    frame = _table()
    encoder = TabularEncoder.fit_frames([frame.iloc[:200], frame.iloc[200:]], "late")
    layout = layout_from_encoder(encoder, 8)
    kinds = {g.name: g.kind for g in layout.groups}
    assert kinds == {"income": NUMERIC, "income__missing": INDICATOR, "grade": ONE_HOT, "age": NUMERIC}
    assert layout.groups[0].edges == normal_edges(8) and len(normal_edges(8)) == 7
    bins = layout.bin_rows(encoder.transform_features(frame))
    assert bins.shape == (400, 4) and bins.min() >= 0
    assert all(bins[:, j].max() < g.n_bins for j, g in enumerate(layout.groups))


def test_the_json_model_round_trips_and_scores_identically(tmp_path) -> None:
    frame = _table()
    encoder = TabularEncoder.fit_frames([frame], "late")
    layout = layout_from_encoder(encoder, 16)
    x, y = encoder.transform(frame)
    bank = GBDTBank("bank-0", 1, layout.bin_rows(x.astype(np.float64)), y, layout, len(y))
    settings = BoostSettings(trees=4, params=TreeParams(depth=3), learning_rate=0.3, dp_mode="off", secure=False)
    model = boost([bank], layout, settings, None, len(y)).model
    path = model.save(tmp_path / "model.json")
    loaded = GBDTModel.load(path)
    assert np.array_equal(loaded.predict_margin(x), model.predict_margin(x))
    assert np.array_equal(loaded.predict_margin(x), bank.margin)  # what the bank trained on
    assert json.loads(path.read_text())["format"] == "fedsilo.gbdt"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="xgboost"), "not a fedsilo.gbdt model"),
        (lambda d: d.update(version=9), "version 9"),
        (lambda d: d["trees"][0]["nodes"].pop(), "lacks a child|does not end in a leaf"),
        (lambda d: d["trees"][0]["nodes"][0].update(group=99), "group 99"),
        (lambda d: d.pop("layout"), "malformed"),
    ],
)
def test_a_malformed_model_file_is_refused(tmp_path, change, message) -> None:
    frame = _table()
    encoder = TabularEncoder.fit_frames([frame], "late")
    layout = layout_from_encoder(encoder, 4)
    x, y = encoder.transform(frame)
    bank = GBDTBank("bank-0", 1, layout.bin_rows(x.astype(np.float64)), y, layout, len(y))
    settings = BoostSettings(trees=1, params=TreeParams(depth=2), dp_mode="off", secure=False)
    document = boost([bank], layout, settings, None, len(y)).model.to_dict()
    assert document["trees"][0]["nodes"][0].get("group") is not None  # the root splits
    change(document)
    (tmp_path / "model.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match=message):
        GBDTModel.load(tmp_path / "model.json")
