"""`fedsilo simulate` refuses bad input with one line, before training or writing anything."""

import numpy as np
import pandas as pd
import pytest

from fedsilo.cli import main


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "ID": np.arange(400),
            "x": rng.normal(size=400),
            "kind": rng.choice(["a", "b"], 400),
            "y": rng.integers(0, 2, 400),
        }
    )
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def run(args, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["simulate", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    leftovers = list(out.iterdir()) if out.exists() else []
    return code, err, leftovers


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--label", "missing"], "label column 'missing' is not in"),
        (
            ["--label", "kind"],
            "holds the text values 'a' and 'b': say which one is the event to predict (e.g. "
            "default) with --positive 'a' or --positive 'b'",
        ),
        (["--label", "kind", "--positive", "c"], "--positive 'c' is not a value of label column 'kind'"),
        (["--label", "y", "--keep-column", "id"], "kept column 'id' is not in table.csv"),
        (["--label", "y", "--banks", "401"], "400 rows for 401 banks"),
        (["--label", "y", "--epsilon", "0"], "dp.epsilon must be > 0"),
        (["--label", "y", "--epsilon", "-2"], "dp.epsilon must be > 0"),
        (["--label", "y", "--delta", "1.5"], "dp.delta must be in (0, 1)"),
        (["--label", "y", "--partition", "dirichlet:0"], "alpha"),
        (["--label", "y", "--partition", "zipf:2"], "dirichlet:ALPHA"),
        (["--label", "y", "--banks", "30"], "use at most 20 banks"),
        (["--label", "y", "--id-column", "nope"], "id column 'nope'"),
        (["--label", "y", "--compare", "central"], "unknown yardstick"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(args, fragment, table, tmp_path, capsys):
    code, err, leftovers = run(["--data", str(table), *args], tmp_path, capsys)
    assert code == 2
    assert err.startswith("fedsilo: error: ") and "\n" not in err
    assert fragment in err
    assert leftovers == []


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    code, err, leftovers = run(["--data", str(bad), "--label", "y"], tmp_path, capsys)
    assert code == 2 and "cannot read" in err and leftovers == []
    code, err, _ = run(["--data", str(tmp_path / "absent.csv"), "--label", "y"], tmp_path, capsys)
    assert code == 2 and "does not exist" in err


def test_one_class_bank(tmp_path, capsys):
    frame = pd.DataFrame({"x": np.arange(200.0), "y": [0] * 190 + [1] * 10})
    path = tmp_path / "skewed.csv"
    frame.to_csv(path, index=False)
    code, err, leftovers = run(["--data", str(path), "--label", "y", "--banks", "9"], tmp_path, capsys)
    assert code == 2 and "no feature columns besides label 'y' (left out: 'x'" in err and "--keep-column" in err
    code, err, leftovers = run(
        ["--data", str(path), "--label", "y", "--banks", "9", "--keep-column", "x"], tmp_path, capsys
    )
    assert code == 2 and "bank 2 with only class 0" in err and leftovers == []


def test_data_without_label_flag(table, tmp_path, capsys):
    code, err, _ = run(["--data", str(table)], tmp_path, capsys)
    assert code == 2 and "needs --label" in err


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("[simulation]\nbankz = 3\n", "unknown key 'bankz' in [simulation]"),
        ("[privacy]\nepsilon = 1\n", "unknown section [privacy]"),
        ('[dp]\nepsilon = "three"\n', "[dp] epsilon must be float"),
        ("[simulation\nbanks = 3\n", "not valid TOML"),
    ],
)
def test_bad_toml(toml, fragment, tmp_path, capsys):
    config = tmp_path / "sim.toml"
    config.write_text(toml)
    code, err, leftovers = run(["--config", str(config)], tmp_path, capsys)
    assert code == 2 and fragment in err and leftovers == []
