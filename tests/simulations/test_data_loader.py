"""Loading a user's CSV or Parquet table, and its one-line errors."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privacy.errors import ConfigError, DataError
from simulations.data.loader import load_table

UCI = Path(os.environ.get("FEDSILO_UCI_CSV",
                          Path(__file__).resolve().parents[3] / "shared" / "data" / "UCI_Credit_Card.csv"))


def _write(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture
def table():
    return pd.DataFrame({"id": [10, 11, 12, 13], "a": [1.0, 2.0, np.nan, 4.0], "b": ["x", "y", "x", "z"],
                         "y": [0, 1, 1, 0]})


@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "t.csv.gz"])
def test_reads_csv_and_parquet(tmp_path, table, name):
    frame = load_table(_write(tmp_path, table, name), "y", id_column="id")
    assert list(frame.columns) == ["a", "b", "y"]
    assert frame["y"].dtype == np.int64 and frame["y"].tolist() == [0, 1, 1, 0]
    assert np.isnan(frame["a"][2])


def test_without_id_keeps_all_columns(tmp_path, table):
    assert list(load_table(_write(tmp_path, table), "y").columns) == ["id", "a", "b", "y"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist: check the path"):
        load_table(tmp_path / "nope.csv", "y")


def test_unknown_extension(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_text("a,y\n1,0\n")
    with pytest.raises(DataError, match="unknown extension '.xlsx'.*csv or .parquet"):
        load_table(path, "y")


def test_unreadable_file(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataError, match="cannot read .* as Parquet") as err:
        load_table(path, "y")
    assert "\n" not in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,y\n")
    with pytest.raises(DataError, match="no rows"):
        load_table(path, "y")


def test_missing_label_lists_columns(tmp_path, table):
    with pytest.raises(DataError, match=r"label column 'target' is not in t.csv \(columns: 'id', 'a', 'b', 'y'\)"):
        load_table(_write(tmp_path, table), "target")
    with pytest.raises(DataError, match="did you mean 'y'"):
        load_table(_write(tmp_path, table), "Y")


def test_missing_id_column(tmp_path, table):
    with pytest.raises(DataError, match="id column 'ID' .*did you mean 'id'"):
        load_table(_write(tmp_path, table), "y", id_column="ID")


def test_label_equal_to_id(tmp_path, table):
    with pytest.raises(ConfigError, match="two different columns"):
        load_table(_write(tmp_path, table), "y", id_column="y")


def test_text_label_refused(tmp_path, table):
    table["y"] = ["no", "yes", "yes", "no"]
    with pytest.raises(DataError, match="not numeric .*map it to 0/1"):
        load_table(_write(tmp_path, table), "y")


def test_multiclass_label_refused(tmp_path, table):
    table["y"] = [0, 1, 2, 1]
    with pytest.raises(DataError, match="3 distinct values, not 2"):
        load_table(_write(tmp_path, table), "y")


def test_constant_label_refused(tmp_path, table):
    table["y"] = [1, 1, 1, 1]
    with pytest.raises(DataError, match="only the value 1"):
        load_table(_write(tmp_path, table), "y")


def test_label_with_nans_refused(tmp_path, table):
    table["y"] = [0, 1, None, 0]
    with pytest.raises(DataError, match="1 missing values: drop or fill"):
        load_table(_write(tmp_path, table), "y")


@pytest.mark.parametrize("values, expected", [
    ([1, 2, 2, 1], [0, 1, 1, 0]),
    ([-1, 1, 1, -1], [0, 1, 1, 0]),
    ([0.0, 1.0, 1.0, 0.0], [0, 1, 1, 0]),
    ([True, False, True, False], [1, 0, 1, 0]),
])
def test_two_valued_label_mapped_in_sorted_order(tmp_path, table, values, expected):
    table["y"] = values
    assert load_table(_write(tmp_path, table, "t.parquet"), "y")["y"].tolist() == expected


def test_no_feature_columns(tmp_path, table):
    with pytest.raises(DataError, match="no feature columns"):
        load_table(_write(tmp_path, table[["id", "y"]]), "y", id_column="id")


@pytest.mark.skipif(not UCI.is_file(), reason="UCI credit-card file not present")
def test_real_uci_file():
    frame = load_table(UCI, "Y", id_column="ID")
    assert frame.shape == (30_000, 24)
    assert "ID" not in frame.columns and frame.columns[-1] == "Y"
    assert abs(frame["Y"].mean() - 0.2212) < 1e-3
