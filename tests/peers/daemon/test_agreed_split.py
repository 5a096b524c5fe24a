"""A daemon keeps a transfer job's agreed split and its SuperNode's table carries it (fast, no engine).

Three institutions agree their shared customers' sides (`agree_holdout`, sides from the
OS CSPRNG), each daemon stores its own sides for the job, and the table each SuperNode
reads then puts every shared customer on the same side at all her holders, through the
ClientApp's own split (`split_rows`).
"""

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import DataError
from fedsilo.peers.daemon.config import DataSource
from fedsilo.peers.daemon.training import agreed_sides, store_agreed_sides, working_table
from fedsilo.peers.data.bank import TEST, TRAIN, read_table, split_rows
from fedsilo.peers.data.encoding import SPLIT_COLUMN
from fedsilo.peers.job import JobConfig
from fedsilo.peers.shared_holdout import agree_holdout

VOCABULARY = ("limit", "age")


def _tables(tmp_path):
    """Three institutions over 600 customers (100..199 at all three, 300..349 at two), with their own ids."""
    rng = np.random.default_rng(0)
    default = rng.random(600) < 0.3
    holders = [list(range(0, 250)), list(range(100, 400)), list(range(100, 200)) + list(range(300, 600))]
    sources = []
    for i, rows in enumerate(holders):
        rows = list(rng.permutation(rows))
        frame = pd.DataFrame(
            {
                "customer": [f"C{r:04d}" for r in rows],
                "limit": rng.normal(size=len(rows)),
                "age": rng.integers(20, 70, len(rows)),
                f"own{i}": rng.normal(size=len(rows)),
                "default": default[rows].astype(int),
            }
        )
        path = tmp_path / f"inst{i}.parquet"
        frame.to_parquet(path, index=False)
        sources.append(DataSource("loans", path, "default", 5.0, 1e-5, id_column="customer"))
    return sources


def test_every_daemons_supernode_table_puts_a_shared_customer_on_one_side(tmp_path):
    sources = _tables(tmp_path)
    frames = [read_table(s.path) for s in sources]
    agreement = agree_holdout(
        [f["customer"].tolist() for f in frames], [f["default"].to_numpy() for f in frames], 0.2, seed=None
    )
    job = JobConfig(label="default", encoder_path="", job_id="tl-shared", vocabulary=VOCABULARY)
    seen: dict[str, set[int]] = {}
    for i, (source, frame, sides) in enumerate(zip(sources, frames, agreement.sides)):
        state = tmp_path / f"state{i}"
        store_agreed_sides(state, job.job_id, sides, len(frame))
        table = read_table(working_table(job, state, source))
        assert "customer" not in table.columns and list(table.columns[:2]) == list(VOCABULARY)
        assert np.array_equal(table[SPLIT_COLUMN].to_numpy(), sides)
        _, test = split_rows(table, "default", 0.2, seed=0)  # the ClientApp's split, with the job's public seed
        held = np.zeros(len(frame), dtype=bool)
        held[test] = True
        for customer, out in zip(frame["customer"], held):
            seen.setdefault(customer, set()).add(int(out))
    shared = [f"C{r:04d}" for r in [*range(100, 250), *range(300, 400)]]
    assert all(len(seen[c]) == 1 for c in shared)
    assert 0.1 < np.mean([next(iter(seen[c])) for c in shared]) < 0.3  # the test fraction among them too


def test_a_bad_agreed_split_is_refused_and_nothing_is_stored(tmp_path):
    with pytest.raises(DataError, match="each of the source's 5 rows a side"):
        store_agreed_sides(tmp_path, "job", np.array([TRAIN, TEST, TRAIN]), 5)
    with pytest.raises(DataError, match="each of the source's 3 rows a side"):
        store_agreed_sides(tmp_path, "job", np.array([TRAIN, 7, TRAIN]), 3)
    assert agreed_sides(tmp_path, "job") is None


def test_a_table_that_changed_since_the_agreement_is_refused(tmp_path):
    source = _tables(tmp_path)[0]
    job = JobConfig(label="default", encoder_path="", job_id="tl-changed", vocabulary=VOCABULARY)
    store_agreed_sides(tmp_path / "state", job.job_id, np.full(249, TRAIN), 249)
    with pytest.raises(DataError, match="covers 249 rows, but data source loans now has 250"):
        working_table(job, tmp_path / "state", source)
