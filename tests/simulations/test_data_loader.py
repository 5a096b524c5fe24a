"""Loading a user's CSV or Parquet table, and its one-line errors."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.simulations.data.loader import load_table, read_table_for_training

UCI = Path(
    os.environ.get("FEDSILO_UCI_CSV", Path(__file__).resolve().parents[3] / "shared" / "data" / "UCI_Credit_Card.csv")
)


def _write(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture
def table():
    return pd.DataFrame(
        {"id": [10, 11, 12, 13], "a": [1.0, 2.0, np.nan, 4.0], "b": ["x", "y", "x", "z"], "y": [0, 1, 1, 0]}
    )


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


def test_two_text_values_without_positive_refused_naming_both_and_the_flag(tmp_path, table):
    table["y"] = ["good", "bad", "bad", "good"]
    with pytest.raises(DataError) as err:
        load_table(_write(tmp_path, table), "y")
    message = str(err.value)
    assert "'bad' and 'good'" in message and "--positive 'bad'" in message and "--positive 'good'" in message


@pytest.mark.parametrize(
    "values, positive, expected, negative",
    [
        (["good", "bad", "bad", "good"], "bad", [0, 1, 1, 0], "good"),
        (["paid", "default", "default", "paid"], "default", [0, 1, 1, 0], "paid"),
        (["N", "Y ", "Y", " N"], "Y", [0, 1, 1, 0], "N"),  # spaces around a value are ignored
        (["N", "Y", "Y", "N"], "N", [1, 0, 0, 1], "Y"),  # the user decides which word is the event
        ([1, 2, 2, 1], "1", [1, 0, 0, 1], "2"),  # a numeric label with --positive: matched as a number
        ([0.0, 1.0, 1.0, 0.0], "1", [0, 1, 1, 0], "0"),
        ([True, False, True, False], "true", [1, 0, 1, 0], "False"),
    ],
)
def test_positive_names_the_event(tmp_path, table, values, positive, expected, negative):
    table["y"] = values
    loaded = read_table_for_training(_write(tmp_path, table, "t.parquet"), "y", id_column="id", positive=positive)
    assert loaded.frame["y"].tolist() == expected and loaded.frame["y"].dtype == np.int64
    assert loaded.label_mapping["0"] == negative and loaded.label_mapping["rule"] == f"--positive {positive}"


def test_positive_not_among_the_values_refused(tmp_path, table):
    table["y"] = ["good", "bad", "bad", "good"]
    with pytest.raises(
        DataError,
        match=r"--positive 'default' is not a value of label column 'y' \(its values: "
        r"'bad', 'good'\)",
    ):
        load_table(_write(tmp_path, table), "y", positive="default")


def test_numeric_label_mapping_recorded(tmp_path, table):
    table["y"] = [1, 2, 2, 1]
    assert read_table_for_training(_write(tmp_path, table), "y").label_mapping == {
        "column": "y",
        "1": "2",
        "0": "1",
        "rule": "the larger value is 1",
    }


def _with_ids(rows=200):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "rownames": np.arange(1, rows + 1),
            "ref": [f"C{i:06d}" for i in rng.permutation(rows)],
            "income": rng.normal(5e4, 1e4, rows),  # fractional: never an id
            "age": rng.integers(21, 70, rows),
            "y": rng.integers(0, 2, rows),
        }
    )


def test_id_like_columns_dropped_with_a_warning_naming_them_and_the_flags(tmp_path):
    loaded = read_table_for_training(_write(tmp_path, _with_ids()), "y")
    assert list(loaded.frame.columns) == ["income", "age", "y"]
    assert set(loaded.dropped_columns) == {"rownames", "ref"}
    assert len(loaded.warnings) == 2
    assert (
        "'rownames'" in loaded.warnings[0]
        and "--id-column rownames" in loaded.warnings[0]
        and "--keep-column rownames" in loaded.warnings[0]
    )


def test_keep_column_keeps_an_id_like_column(tmp_path):
    loaded = read_table_for_training(_write(tmp_path, _with_ids()), "y", id_column="ref", keep_columns=["rownames"])
    assert list(loaded.frame.columns) == ["rownames", "income", "age", "y"]
    assert loaded.warnings == () and loaded.dropped_columns == {"ref": "the id column (--id-column)"}


def test_keep_column_must_exist(tmp_path):
    with pytest.raises(DataError, match="kept column 'rowname' is not in"):
        load_table(_write(tmp_path, _with_ids()), "y", keep_columns=["rowname"])


def test_a_column_with_repeats_or_missing_values_is_not_id_like(tmp_path):
    frame = _with_ids()
    frame.loc[3, "rownames"] = 1
    frame["ref"] = frame["ref"].astype(object)
    frame.loc[5, "ref"] = None
    dropped = read_table_for_training(_write(tmp_path, frame), "y").dropped_columns
    assert "rownames" not in dropped and "id-like" not in dropped["ref"]  # (200 text values: left out for that)


def test_multiclass_label_refused(tmp_path, table):
    table["y"] = [0, 1, 2, 1]
    with pytest.raises(DataError, match=r"3 distinct values \('0', '1', '2'\), not 2"):
        load_table(_write(tmp_path, table), "y")


def test_constant_label_refused(tmp_path, table):
    table["y"] = [1, 1, 1, 1]
    with pytest.raises(DataError, match="only the value '1'"):
        load_table(_write(tmp_path, table), "y")


def test_label_with_nans_refused(tmp_path, table):
    table["y"] = [0, 1, None, 0]
    with pytest.raises(DataError, match="1 missing values: drop or fill"):
        load_table(_write(tmp_path, table), "y")


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1, 2, 2, 1], [0, 1, 1, 0]),
        ([-1, 1, 1, -1], [0, 1, 1, 0]),
        ([0.0, 1.0, 1.0, 0.0], [0, 1, 1, 0]),
        ([True, False, True, False], [1, 0, 1, 0]),
    ],
)
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


def test_free_text_column_left_out_with_a_warning(tmp_path):
    frame = _with_ids()
    frame["employer"] = [f"firm {i % 90}" for i in range(len(frame))]  # 90 values: more than one-hot takes
    frame["grade"] = [f"{'ABCDEFG'[i % 7]}" for i in range(len(frame))]
    loaded = read_table_for_training(_write(tmp_path, frame), "y", keep_columns=["rownames", "ref"])
    assert list(loaded.frame.columns) == ["rownames", "ref", "income", "age", "y", "grade"]
    assert "more than the 64 one-hot encoded" in loaded.dropped_columns["employer"]
    assert loaded.warnings == (
        "column 'employer' has 90 distinct text values (more than 64): it is left out of "
        "the features (encode it as numbers, or group its values, to use it)",
    )
