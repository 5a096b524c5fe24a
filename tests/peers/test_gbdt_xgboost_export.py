"""The XGBoost export: `xgboost.Booster` loads the file and gives fedsilo's margins, for every kind of split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xgboost

from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.gbdt import layout_from_encoder
from fedsilo.peers.gbdt.bank import GBDTBank
from fedsilo.peers.gbdt.federation import BoostSettings, boost
from fedsilo.peers.gbdt.xgboost_export import booster_features, feature_names, to_xgboost, write_xgboost
from fedsilo.strategies.gbdt import TreeParams
from fedsilo.strategies.gbdt.tree import LEAF, OPEN, SPLIT, Tree


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 1, n)
    missing = rng.random(n) < 0.1
    income[missing] = np.nan
    grade = rng.integers(1, 6, n)
    logit = 1.2 * (grade - 3) + 1.5 * missing - 0.3 * np.log(np.nan_to_num(income, nan=20000.0) / 20000)
    late = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"income": income, "grade": grade, "age": rng.normal(40, 10, n), "late": late})


@pytest.fixture(scope="module")
def trained():
    frame = _frame(3000, 0)
    encoder = TabularEncoder.fit_frames([frame], "late")
    layout = layout_from_encoder(encoder, 16)
    x, y = encoder.transform(frame)
    bank = GBDTBank("bank-0", 1, layout.bin_rows(x.astype(np.float64)), y, layout, len(y))
    settings = BoostSettings(trees=8, params=TreeParams(depth=3), learning_rate=0.3, dp_mode="off", secure=False)
    model = boost([bank], layout, settings, None, len(y)).model
    model.base_margin = -0.7  # a non-zero intercept must map to XGBoost's base_score
    return encoder, model


def test_the_booster_gives_fedsilos_margins_on_new_rows(trained, tmp_path) -> None:
    encoder, model = trained
    kinds = {model.layout.groups[g].kind for t in model.trees for g in t.group[t.state == SPLIT]}
    assert kinds == {"numeric", "one_hot", "indicator"}  # every kind of split is exercised
    path = write_xgboost(model, tmp_path / "model.xgb.json")
    booster = xgboost.Booster(model_file=str(path))
    assert booster.feature_names == feature_names(model) == ["income", "income__missing", "grade", "age"]
    new = _frame(2000, 1)
    x = encoder.transform_features(new).astype(np.float64)
    matrix = xgboost.DMatrix(booster_features(model, x), feature_names=feature_names(model))
    margins = booster.predict(matrix, output_margin=True)
    np.testing.assert_allclose(margins, model.predict_margin(x), rtol=0, atol=2e-5)
    np.testing.assert_allclose(booster.predict(matrix), model.predict_proba(x), rtol=0, atol=5e-6)
    assert booster.num_boosted_rounds() == len(model.trees)


def test_a_tree_that_is_only_a_leaf_and_an_unfinished_tree(trained) -> None:
    _, model = trained
    stump = Tree(depth=2)
    stump.state[0], stump.value[0] = LEAF, 0.25
    document = to_xgboost(type(model)(model.layout, [stump], 2.0, 0.0))
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    assert tree["left_children"] == [-1] and tree["split_conditions"] == [0.5]  # the shrunk leaf value
    booster = xgboost.Booster(model_file=bytearray(json.dumps(document).encode()))
    x = np.zeros((3, len(model.layout.groups)), dtype=np.float32)
    np.testing.assert_allclose(
        booster.predict(xgboost.DMatrix(x, feature_names=feature_names(model)), output_margin=True), 0.5, atol=1e-7
    )
    unfinished = Tree(depth=2)
    assert unfinished.state[0] == OPEN
    with pytest.raises(ValueError, match="unfinished node 0"):
        to_xgboost(type(model)(model.layout, [unfinished], 1.0, 0.0))
