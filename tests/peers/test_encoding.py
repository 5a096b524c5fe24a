"""The tabular encoder, fitted from per-bank aggregates only."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.data.encoding import BankSummary, CategoricalColumn, NumericColumn, TabularEncoder, signed_log

UCI = Path(
    os.environ.get("FEDSILO_UCI_CSV", Path(__file__).resolve().parents[3] / "shared" / "data" / "UCI_Credit_Card.csv")
)


def _banks() -> list[pd.DataFrame]:
    rng = np.random.default_rng(0)
    frames = []
    for n, shift in [(300, 0.0), (120, 5.0), (57, -3.0)]:
        frames.append(
            pd.DataFrame(
                {
                    "income": rng.normal(50 + shift, 10, n),
                    "amount": rng.lognormal(8, 1.5, n),  # heavily skewed
                    "grade": rng.integers(1, 5, n) + (shift > 0),  # integer, few values
                    "region": rng.choice(["north", "south"], n),
                    "y": rng.integers(0, 2, n),
                }
            )
        )
    frames[2].loc[frames[2].index[:4], "grade"] = 9  # a value only bank 2 has
    frames[2]["region"] = rng.choice(["east", "north"], len(frames[2]))
    return frames


@pytest.fixture(scope="module")
def banks():
    return _banks()


@pytest.fixture(scope="module")
def encoder(banks):
    return TabularEncoder.fit([BankSummary.from_frame(f, "y") for f in banks], "y")


def _column(encoder, name):
    return next(c for c in encoder.columns if c.name == name)


def test_aggregated_fit_equals_pooled_statistics(banks, encoder):
    pooled = pd.concat(banks, ignore_index=True)
    income = _column(encoder, "income")
    assert isinstance(income, NumericColumn) and not income.log
    assert income.mean == pytest.approx(pooled["income"].mean(), rel=1e-12)
    assert income.std == pytest.approx(pooled["income"].to_numpy().std(ddof=0), rel=1e-10)
    # and the encoded pooled column is exactly standardized
    x, _ = encoder.transform(pooled)
    k = encoder.feature_names.index("income")
    assert x[:, k].mean() == pytest.approx(0.0, abs=1e-5)
    assert x[:, k].std() == pytest.approx(1.0, abs=1e-5)


def test_skewed_column_gets_signed_log(banks, encoder):
    pooled = pd.concat(banks, ignore_index=True)
    amount = _column(encoder, "amount")
    assert amount.log
    logged = signed_log(pooled["amount"].to_numpy())
    assert amount.mean == pytest.approx(logged.mean(), rel=1e-12)
    assert amount.std == pytest.approx(logged.std(), rel=1e-10)


def test_signed_log_keeps_sign():
    assert np.allclose(signed_log(np.array([-np.e + 1, 0.0, np.e - 1])), [-1.0, 0.0, 1.0])


def test_one_hot_over_union_sorted(encoder):
    grade = _column(encoder, "grade")
    assert isinstance(grade, CategoricalColumn) and not grade.text
    assert grade.categories == (1, 2, 3, 4, 5, 9)
    region = _column(encoder, "region")
    assert region.text and region.categories == ("east", "north", "south")
    assert encoder.feature_names == [
        "income",
        "amount",
        "grade=1",
        "grade=2",
        "grade=3",
        "grade=4",
        "grade=5",
        "grade=9",
        "region=east",
        "region=north",
        "region=south",
    ]
    assert encoder.n_features == 11


def test_transform_values(encoder):
    frame = pd.DataFrame({"income": [50.0], "amount": [100.0], "grade": [9], "region": ["south"], "y": [1]})
    x, y = encoder.transform(frame)
    assert x.dtype == np.float32 and y.dtype == np.float32 and x.shape == (1, 11)
    row = dict(zip(encoder.feature_names, x[0]))
    assert row["grade=9"] == 1 and row["region=south"] == 1
    assert sum(v for k, v in row.items() if k.startswith(("grade", "region"))) == 2
    amount = _column(encoder, "amount")
    assert row["amount"] == pytest.approx((np.log1p(100.0) - amount.mean) / amount.std, rel=1e-6)
    assert y.tolist() == [1.0]


def test_unseen_category_maps_to_zeros(encoder):
    frame = pd.DataFrame(
        {"income": [50.0, 50.0], "amount": [1.0, 1.0], "grade": [7, 2.5], "region": ["west", "north"], "y": [0, 1]}
    )
    x, _ = encoder.transform(frame)
    names = encoder.feature_names
    grade = [names.index(n) for n in names if n.startswith("grade=")]
    region = [names.index(n) for n in names if n.startswith("region=")]
    assert x[:, grade].sum() == 0
    assert x[0, region].sum() == 0 and x[1, names.index("region=north")] == 1


def test_missing_values():
    rng = np.random.default_rng(1)
    a = pd.DataFrame(
        {
            "v": rng.normal(10, 2, 50),
            "c": rng.integers(0, 3, 50).astype(float),
            "t": rng.choice(["a", "b"], 50),
            "y": rng.integers(0, 2, 50),
        }
    )
    b = a.copy()
    b.loc[:4, "v"] = np.nan
    b.loc[:2, "c"] = np.nan
    b["t"] = b["t"].astype(object)
    b.loc[:1, "t"] = None
    encoder = TabularEncoder.fit_frames([a, b], "y")
    names = encoder.feature_names
    assert "v__missing" in names and "c=__missing__" in names and "t=__missing__" in names
    assert names.count("c=0") == 1  # integer-valued floats are categories 0, 1, 2
    x, _ = encoder.transform(b)
    assert np.isfinite(x).all()
    rows = np.arange(5)
    assert (x[rows, names.index("v")] == 0).all() and (x[rows, names.index("v__missing")] == 1).all()
    assert x[5:, names.index("v__missing")].sum() == 0
    assert (x[:3, names.index("c=__missing__")] == 1).all()
    assert x[:3, [names.index(f"c={k}") for k in range(3)]].sum() == 0
    assert (x[:2, names.index("t=__missing__")] == 1).all()
    v = pd.concat([a["v"], b["v"]]).dropna().to_numpy()
    assert _column(encoder, "v").mean == pytest.approx(v.mean()) and _column(encoder, "v").std == pytest.approx(v.std())
    # no bank had missing values: no indicator, and a missing value at transform time is all zeros
    clean = TabularEncoder.fit_frames([a], "y")
    assert "v__missing" not in clean.feature_names and "t=__missing__" not in clean.feature_names
    x, _ = clean.transform(b)
    assert (
        np.isfinite(x).all() and x[:2, [clean.feature_names.index("t=a"), clean.feature_names.index("t=b")]].sum() == 0
    )


def test_constant_column_std_one():
    frame = pd.DataFrame({"k": [100000.5] * 30, "v": np.arange(30.0), "y": [0, 1] * 15})
    encoder = TabularEncoder.fit_frames([frame], "y")
    k = _column(encoder, "k")
    assert k.std == 1.0
    x, _ = encoder.transform(frame)
    assert np.allclose(x[:, 0], 0.0)


def test_many_integer_values_are_numeric():
    frame = pd.DataFrame({"age": np.arange(20, 60), "y": [0, 1] * 20})
    assert isinstance(_column(TabularEncoder.fit_frames([frame], "y"), "age"), NumericColumn)
    # ≤ 12 values locally at each bank but more in the union: numeric
    parts = [frame.iloc[:10], frame.iloc[10:20], frame.iloc[20:]]
    assert isinstance(_column(TabularEncoder.fit_frames(parts, "y"), "age"), NumericColumn)


def test_json_round_trip_identical(banks, encoder, tmp_path):
    summaries = [BankSummary.from_frame(f, "y") for f in banks]
    travelled = [BankSummary.from_dict(json.loads(json.dumps(s.to_dict()))) for s in summaries]
    assert TabularEncoder.fit(travelled, "y") == encoder
    again = TabularEncoder.from_json(encoder.to_json())
    assert again == encoder
    frame = pd.concat(banks, ignore_index=True)
    assert np.array_equal(again.transform(frame)[0], encoder.transform(frame)[0])
    loaded = TabularEncoder.load(encoder.save(tmp_path / "enc.json"))
    assert np.array_equal(loaded.transform(frame)[0], encoder.transform(frame)[0])


def test_summary_has_no_rows(banks):
    summary = BankSummary.from_frame(banks[0], "y").to_dict()
    text = json.dumps(summary)
    assert len(text) < 2_000
    income = next(c for c in summary["columns"] if c["name"] == "income")
    assert income["values"] is None and income["n"] == 300


def test_check_columns_names_missing(encoder, banks):
    with pytest.raises(DataError, match=r"lacks column\(s\) 'grade', 'y'"):
        encoder.check_columns(banks[0].drop(columns=["grade", "y"]))
    encoder.check_columns(banks[0].drop(columns=["y"]), require_label=False)
    assert encoder.transform_features(banks[0].drop(columns=["y"])).shape == (300, 11)


def test_bad_labels_and_values(encoder, banks):
    frame = banks[0].copy()
    frame["y"] = frame["y"] * 2
    with pytest.raises(DataError, match="other than 0/1"):
        encoder.transform(frame)
    frame = banks[0].copy()
    frame["income"] = frame["income"].astype(object)
    frame.loc[0, "income"] = "n/a"
    with pytest.raises(DataError, match="'income' has non-numeric values .*'n/a'"):
        encoder.transform(frame)


def test_fit_errors(banks):
    s = [BankSummary.from_frame(f, "y") for f in banks]
    with pytest.raises(DataError, match="no bank summaries"):
        TabularEncoder.fit([], "y")
    with pytest.raises(DataError, match="bank 1 has different columns .*lacks \\['region'\\]"):
        TabularEncoder.fit([s[0], BankSummary.from_frame(banks[1].drop(columns=["region"]), "y")], "y")
    with pytest.raises(DataError, match="label"):
        TabularEncoder.fit(s, "default")
    with pytest.raises(DataError, match="label column 'z' is not in the table"):
        BankSummary.from_frame(banks[0], "z")
    mixed = banks[1].copy()
    mixed["income"] = "high"
    with pytest.raises(DataError, match="numbers at some banks but text at bank"):
        TabularEncoder.fit_frames([banks[0], mixed], "y")
    wide = banks[0].copy()
    wide["region"] = [f"r{i}" for i in range(len(wide))]
    with pytest.raises(DataError, match="distinct text values: drop it"):
        TabularEncoder.fit_frames([wide], "y")


def test_from_json_errors():
    with pytest.raises(ConfigError, match="not valid JSON"):
        TabularEncoder.from_json("{")
    with pytest.raises(ConfigError, match="not a fedsilo tabular encoder"):
        TabularEncoder.from_json('{"a": 1}')
    with pytest.raises(ConfigError, match="malformed"):
        TabularEncoder.from_json(
            '{"format": "fedsilo.tabular-encoder", "version": 1, "label": "y", '
            '"columns": [{"name": "a", "type": "numeric"}]}'
        )


@pytest.mark.skipif(not UCI.is_file(), reason="UCI credit-card file not present")
def test_uci_encoding():
    frame = pd.read_csv(UCI).drop(columns=["ID"])
    banks = [frame.iloc[i::3] for i in range(3)]
    encoder = TabularEncoder.fit_frames(banks, "Y")
    assert isinstance(_column(encoder, "X6"), CategoricalColumn)  # PAY_0, -2 … 8
    assert isinstance(_column(encoder, "X1"), NumericColumn) and not _column(encoder, "X1").log
    assert _column(encoder, "X18").log  # PAY_AMT1 is very skewed
    x, y = encoder.transform(frame)
    assert np.isfinite(x).all() and y.mean() == pytest.approx(0.2212, abs=1e-3)
