"""The transfer setup's data: institutions with different customers and different columns."""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.simulations.data.schemas import (
    MIN_INSTITUTION_ROWS,
    ColumnSpec,
    InstitutionSpec,
    TransferScenario,
    check_schema,
    load_scenario_toml,
    synthetic_scenario,
    synthetic_transfer_table,
    uci_scenario,
    uci_transfer_table,
)
from fedsilo.simulations.data.synthetic import FEATURES, LABEL

UCI = Path(
    os.environ.get("FEDSILO_UCI_CSV", Path(__file__).resolve().parents[3] / "shared" / "data" / "UCI_Credit_Card.csv")
)


@pytest.fixture(scope="module")
def table():
    return synthetic_transfer_table(seed=3, customers=3_000)


@pytest.fixture(scope="module")
def scenario():
    return synthetic_scenario()


def _toy(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.integers(0, 5, n), "c": rng.normal(size=n), "y": np.arange(n) % 2}
    )


def _scenario(*institutions, label="y"):
    return TransferScenario(label, tuple(institutions))


# splitting -----------------------------------------------------------------------


def test_synthetic_table_is_pooled_and_deterministic(table):
    assert list(table.columns) == [*FEATURES, LABEL]
    assert len(table) == 3_000 and table.index.is_unique
    pd.testing.assert_frame_equal(table, synthetic_transfer_table(seed=3, customers=3_000))
    assert not table.equals(synthetic_transfer_table(seed=4, customers=3_000))


def test_split_rows_are_disjoint_cover_the_table_and_follow_shares(table, scenario):
    parts = scenario.split_rows(table, seed=0)
    every = np.concatenate(parts)
    assert len(every) == len(table) and len(np.unique(every)) == len(table)
    for part, share in zip(parts, scenario.shares):
        assert abs(len(part) - share * len(table)) <= 1
    assert [round(s, 2) for s in scenario.shares] == [0.55, 0.35, 0.10]
    # the broker is a small institution
    assert len(parts[2]) < 0.15 * len(table)


def test_shares_are_relative_weights():
    toy = _toy()
    a = _scenario(InstitutionSpec("p", ("a",), 3), InstitutionSpec("q", ("b",), 1))
    b = _scenario(InstitutionSpec("p", ("a",), 0.75), InstitutionSpec("q", ("b",), 0.25))
    sizes = [len(r) for r in a.split_rows(toy, 5)]
    assert sizes == [300, 100] == [len(r) for r in b.split_rows(toy, 5)]


def test_split_rows_are_drawn_at_random(table, scenario):
    parts = scenario.split_rows(table, seed=0)
    # not consecutive blocks of the pooled table (which is grouped by source bank)
    assert parts[0].max() - parts[0].min() > len(parts[0])
    assert parts[2].min() < len(table) // 2 < parts[2].max()


def test_each_frame_has_exactly_its_own_columns_renamed_and_rescaled(table, scenario):
    parts = scenario.split_rows(table, seed=1)
    frames = scenario.split(table, seed=1)
    assert len(frames) == len(scenario.institutions)
    for inst, rows, frame in zip(scenario.institutions, parts, frames):
        assert list(frame.columns) == [*inst.column_names, LABEL]
        check_schema(frame, inst, LABEL)
        source = table.iloc[rows]
        assert len(frame) == len(rows)
        np.testing.assert_array_equal(frame[LABEL].to_numpy(), source[LABEL].to_numpy())
        for col in inst.columns:
            expected = source[col.source].to_numpy() * col.scale
            np.testing.assert_allclose(frame[col.name].to_numpy(), expected, rtol=1e-12)
            if col.scale == 1.0:
                assert frame[col.name].dtype == source[col.source].dtype
    card = frames[1]
    assert "credit_line" in card and "limit_bal" not in card
    assert card["credit_line"].max() <= 1_000 and table["limit_bal"].max() > 10_000  # thousands
    assert "pay_0" not in frames[0] and "bill_amt1" not in frames[1] and "sex" not in frames[0]


def test_split_is_deterministic_in_seed(table, scenario):
    first, again = scenario.split(table, seed=7), scenario.split(table, seed=7)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    other = scenario.split(table, seed=8)
    assert not first[0].equals(other[0])


def test_common_sources_are_those_every_institution_has(scenario):
    assert scenario.common_sources() == ["limit_bal", "age"]
    sets = [set(i.sources) for i in scenario.institutions]
    assert set(scenario.common_sources()) == set.intersection(*sets)
    # some sources are shared by a few, some private to one
    counts = pd.Series([s for i in scenario.institutions for s in i.sources]).value_counts()
    assert (counts == 2).any() and (counts == 1).any()
    # limit_bal is common under three different names
    names = {c.name for i in scenario.institutions for c in i.columns if c.source == "limit_bal"}
    assert len(names) == 3
    toy = _scenario(InstitutionSpec("p", ("a", "b"), 1), InstitutionSpec("q", ("c", ColumnSpec("b", "bee", 2.0)), 1))
    assert toy.common_sources() == ["b"]


def test_common_frames_align_with_split_rows(table, scenario):
    parts = scenario.split_rows(table, seed=2)
    frames = scenario.split(table, seed=2)
    common = scenario.common_frames(table, seed=2)
    assert [len(c) for c in common] == [len(f) for f in frames]
    for rows, frame, shared in zip(parts, frames, common):
        assert list(shared.columns) == ["limit_bal", "age", LABEL]
        pd.testing.assert_frame_equal(shared, table.iloc[rows][["limit_bal", "age", LABEL]].reset_index(drop=True))
        np.testing.assert_array_equal(shared[LABEL].to_numpy(), frame[LABEL].to_numpy())
    np.testing.assert_allclose(common[1]["limit_bal"].to_numpy() * 0.001, frames[1]["credit_line"].to_numpy())
    np.testing.assert_array_equal(common[1]["age"].to_numpy(), frames[1]["holder_age"].to_numpy())
    np.testing.assert_allclose(common[2]["limit_bal"].to_numpy() * 1e-4, frames[2]["limit_10k"].to_numpy())


def test_common_frames_refuse_when_nothing_is_shared():
    toy = _scenario(InstitutionSpec("p", ("a",), 1), InstitutionSpec("q", ("b",), 1))
    assert toy.common_sources() == []
    with pytest.raises(ConfigError, match="share no source column"):
        toy.common_frames(_toy(), 0)


def test_split_refuses_a_too_small_institution():
    toy = _scenario(InstitutionSpec("big", ("a",), 0.9), InstitutionSpec("tiny", ("b",), 0.1))
    assert [len(r) for r in toy.split_rows(_toy(500), 0)] == [450, 50]
    with pytest.raises(DataError, match=r"institution 'tiny' gets 39 of 390 rows .*raise its share.*at least 500 rows"):
        toy.split(_toy(390), 0)


def test_split_refuses_an_institution_with_one_class():
    frame = _toy(400)
    frame["y"] = 0
    frame.loc[:2, "y"] = 1
    toy = _scenario(InstitutionSpec("big", ("a",), 0.8), InstitutionSpec("small", ("b",), 0.2))
    with pytest.raises(DataError, match=r"gets only class 0 of 'y'"):
        for seed in range(20):  # 3 positives in 400 rows: some seed leaves one institution without any
            toy.split(frame, seed)


def test_split_refuses_a_bad_seed_and_rescaling_text():
    toy = _scenario(InstitutionSpec("p", ("a",), 1))
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        toy.split(_toy(), -1)
    text = _toy().assign(a="x")
    with pytest.raises(DataError, match="rescales column 'a', which is not numeric"):
        _scenario(InstitutionSpec("p", (ColumnSpec("a", "a", 2.0),), 1)).split(text, 0)


# validation -------------------------------------------------------------------------


def test_validate_unknown_source_column(scenario, table):
    scenario.validate(table.columns)
    bad = _scenario(InstitutionSpec("p", ("a", "bb"), 1))
    with pytest.raises(DataError, match=r"institution 'p' reads column 'bb', which the table lacks.*did you mean 'b'"):
        bad.validate(_toy().columns)
    with pytest.raises(DataError, match="which the table lacks"):
        bad.split(_toy(), 0)
    with pytest.raises(DataError, match="label column 'default' is not in the table"):
        synthetic_scenario().validate(["limit_bal", "age"])


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: _scenario(InstitutionSpec("p", ("a",), 1), InstitutionSpec("p", ("b",), 1)),
            "institution name.*'p'.*more than once",
        ),
        (lambda: InstitutionSpec("p", ("a", ColumnSpec("b", "a")), 1), "column name.*'a'.*more than once"),
        (lambda: InstitutionSpec("p", ("a", ColumnSpec("a", "a2")), 1), "source column.*'a'.*more than once"),
        (lambda: InstitutionSpec("p", (), 1), "institution 'p' has no columns"),
        (lambda: InstitutionSpec("p", ("a",), 0), "share of institution 'p' must be a finite number > 0"),
        (lambda: InstitutionSpec("p", ("a",), -0.5), "share of institution 'p'"),
        (lambda: InstitutionSpec("p", ("a",), math.nan), "share of institution 'p'"),
        (lambda: InstitutionSpec("p", ("a",), True), "share of institution 'p' must be a number"),
        (lambda: InstitutionSpec("p", ("a",), "0.5"), "share of institution 'p' must be a number"),
        (lambda: ColumnSpec("a", "a", 0.0), "scale of column 'a'"),
        (lambda: ColumnSpec("a", ""), "name of column 'a' must be a non-empty string"),
        (lambda: _scenario(), "no institutions"),
        (lambda: _scenario(InstitutionSpec("p", ("a", "y"), 1)), "reads the label column 'y' as a feature"),
        (lambda: _scenario(InstitutionSpec("p", ("a", ColumnSpec("b", "y")), 1)), "names a column 'y', like the label"),
    ],
)
def test_bad_scenarios_are_refused(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_validate_rechecks_the_structure():
    ok = _scenario(InstitutionSpec("p", ("a",), 1))
    object.__setattr__(ok, "institutions", (ok.institutions[0], ok.institutions[0]))  # tampered after building
    with pytest.raises(ConfigError, match="more than once"):
        ok.validate(_toy().columns)


def test_check_schema_names_missing_and_unexpected_columns(table, scenario):
    bank_spec, card_spec = scenario.institutions[0], scenario.institutions[1]
    frames = scenario.split(table, seed=0)
    check_schema(frames[1], card_spec, LABEL)
    renamed = frames[0].rename(columns={"limit_bal": "credit_line"})
    with pytest.raises(
        DataError,
        match=r"^institution 'bank''s table does not match its declared columns "
        r"\(missing 'limit_bal'; unexpected 'credit_line'\)",
    ):
        check_schema(renamed, bank_spec, LABEL)
    with pytest.raises(DataError, match=r"'bank'.*missing 'limit_bal', 'age'.*unexpected 'pay_0'"):
        check_schema(frames[1], bank_spec, LABEL)  # another institution's frame
    with pytest.raises(DataError, match=r"missing 'default'"):
        check_schema(frames[1].drop(columns=[LABEL]), card_spec, LABEL)
    with pytest.raises(DataError, match=r"unexpected 'extra'"):
        check_schema(frames[1].assign(extra=1), card_spec, LABEL)


# TOML -----------------------------------------------------------------------------

EXAMPLE = """
label = "default"

[[institution]]
name = "bank"
share = 0.6
columns = ["limit_bal", "bill_amt1", {source = "pay_amt1", name = "repaid_last_month", scale = 0.001}]

[[institution]]
name = "broker"
share = 0.4
columns = ["age", {source = "limit_bal", name = "line"}]
"""


def test_toml_example_parses(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(EXAMPLE)
    s = load_scenario_toml(path)
    assert s.label == "default" and s.names == ["bank", "broker"]
    assert s.institutions[0].columns == (
        ColumnSpec("limit_bal", "limit_bal", 1.0),
        ColumnSpec("bill_amt1", "bill_amt1"),
        ColumnSpec("pay_amt1", "repaid_last_month", 0.001),
    )
    assert s.institutions[0].share == 0.6 and s.institutions[1].columns[1] == ColumnSpec("limit_bal", "line")
    assert s.common_sources() == ["limit_bal"]


@pytest.mark.parametrize("make", [synthetic_scenario, uci_scenario])
def test_toml_round_trip(tmp_path, make):
    s = make()
    path = tmp_path / "s.toml"
    path.write_text(s.to_toml())
    assert load_scenario_toml(path) == s
    assert TransferScenario.from_dict(s.to_dict()) == s
    for inst in s.institutions:
        assert InstitutionSpec.from_dict(inst.to_dict()) == inst
    # a column neither renamed nor rescaled is written as a plain string, any other as a table
    written = s.institutions[1].to_dict()["columns"]
    assert written[6] == {"source": s.institutions[1].sources[6], "name": "credit_line", "scale": 0.001}
    assert written[0] == ("pay_0" if make is synthetic_scenario else {"source": "X6", "name": "pay_0"})


def test_overlap_shares_customers_between_institutions(table, scenario):
    shared = TransferScenario(scenario.label, scenario.institutions, overlap=0.3)
    apart, parts = scenario.split_rows(table, seed=0), shared.split_rows(table, seed=0)
    for own, with_others in zip(apart, parts):  # each keeps its own customers and gains others' clients
        assert set(own) <= set(with_others) and list(with_others) == sorted(set(with_others))
    holders = np.bincount(np.concatenate(parts), minlength=len(table))
    assert holders.min() == 1 and holders.max() == 3
    assert abs((holders >= 2).mean() - 0.3) < 0.03 and abs((holders == 3).mean() - 0.09) < 0.02
    assert all(np.array_equal(a, b) for a, b in zip(parts, shared.split_rows(table, seed=0)))
    frames = shared.split(table, seed=0)  # a shared customer: her own row, each institution's own columns
    row = int(np.intersect1d(parts[0], parts[2])[0])
    at_bank, at_broker = (
        frames[0].iloc[int(np.searchsorted(parts[0], row))],
        frames[2].iloc[int(np.searchsorted(parts[2], row))],
    )
    assert at_bank["age"] == at_broker["age"] == table.iloc[row]["age"]
    assert at_bank[LABEL] == at_broker[LABEL] == table.iloc[row][LABEL]
    assert [len(f) for f in shared.common_frames(table, seed=0)] == [len(p) for p in parts]


def test_overlap_round_trips_through_toml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("overlap = 0.25\n" + EXAMPLE)
    s = load_scenario_toml(path)
    assert s.overlap == 0.25 and s.to_toml().startswith('label = "default"\noverlap = 0.25\n')
    assert TransferScenario.from_dict(s.to_dict()) == s
    assert "overlap" not in synthetic_scenario().to_toml() and "overlap" not in synthetic_scenario().to_dict()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "seed = 3\n" + EXAMPLE,
            r"unknown key\(s\) 'seed' in the scenario \(top level\): valid keys are label, overlap, institution",
        ),
        ("overlap = 1.0\n" + EXAMPLE, r"the scenario's overlap must be a number in \[0, 1\) \(got 1.0\)"),
        ('overlap = "a lot"\n' + EXAMPLE, r"overlap must be a number in \[0, 1\) \(got 'a lot'\)"),
        (EXAMPLE.replace("share = 0.6", "share = 0.6\nsize = 3"), r"unknown key\(s\) 'size' in institution 'bank'"),
        (
            EXAMPLE.replace("scale = 0.001", "scael = 0.001"),
            r"unknown key\(s\) 'scael' in a column of institution 'bank'",
        ),
        (EXAMPLE.replace('{source = "limit_bal", name = "line"}', '{name = "line"}'), r"has no 'source'"),
        (EXAMPLE.replace("share = 0.4\n", ""), r"institution 'broker' lacks share"),
        (EXAMPLE.replace('label = "default"', ""), r"the scenario has no label"),
        (
            'label = "y"\n[institution]\nname = "p"\nshare = 1\ncolumns = ["a"]\n',
            r"array of tables.*\[\[institution\]\]",
        ),
        ('label = "y"\n', r"no institutions"),
        (EXAMPLE.replace("share = 0.4", "share = 0"), r"share of institution 'broker'"),
        (EXAMPLE.replace('name = "broker"', 'name = "bank"'), r"institution name.*'bank'.*more than once"),
        ("label = \n", r"is not valid TOML"),
    ],
)
def test_toml_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario_toml(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_toml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario_toml(tmp_path / "nope.toml")


# the ready scenarios ----------------------------------------------------------------


def test_uci_scenario_mirrors_the_synthetic_one():
    syn, uci = synthetic_scenario(), uci_scenario()
    assert uci.label == "Y" and uci.names == syn.names
    assert uci.common_sources() == ["X1", "X5"]  # LIMIT_BAL and AGE
    for a, b in zip(syn.institutions, uci.institutions):
        assert a.column_names == b.column_names and a.share == b.share
        assert [c.scale for c in a.columns] == [c.scale for c in b.columns]
    card = uci.institutions[1]
    assert card.sources[:6] == ["X6", "X7", "X8", "X9", "X10", "X11"]
    assert card.columns[6] == ColumnSpec("X1", "credit_line", 0.001)


@pytest.mark.skipif(not UCI.is_file(), reason=f"{UCI} is absent")
def test_uci_scenario_on_the_real_file():
    table = uci_transfer_table(UCI)
    scenario = uci_scenario()
    frames = scenario.split(table, seed=0)
    assert sum(len(f) for f in frames) == len(table) == 30_000
    for inst, frame in zip(scenario.institutions, frames):
        check_schema(frame, inst, "Y")
        assert len(frame) >= MIN_INSTITUTION_ROWS and set(frame["Y"].unique()) == {0, 1}
    assert min(len(f) for f in frames) <= 0.15 * len(table)
    common = scenario.common_frames(table, seed=0)
    assert [list(c.columns) for c in common] == [["X1", "X5", "Y"]] * 3
    np.testing.assert_allclose(frames[1]["credit_line"].to_numpy(), common[1]["X1"].to_numpy() / 1_000)
    assert frames[2]["paid_prev_month"].sum() > 0 and (frames[0]["limit_bal"] >= 10_000).all()
