"""The PSI worker processes: order, errors, early stops, dead workers, large batches, tail spans."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi import Workers, x25519
from fedsilo.privacy.psi.parallel import _spans, blind_identifiers, blind_tasks, exponentiate_tasks, run_streams

pytestmark = pytest.mark.slow  # spawns worker processes


@pytest.fixture(scope="module")
def workers():
    with Workers(2) as pool:
        pool.start()
        yield pool


@pytest.fixture(scope="module")
def rows():
    return blind_identifiers([f"c-{i}" for i in range(3000)], "id", x25519.random_scalar(), Workers(1))


def _exponentiate(rows, scalar, workers, batch=512):
    (parts,) = run_streams(workers, exponentiate_tasks(rows, scalar, workers.processes, batch))
    return np.frombuffer(b"".join(parts), np.uint8).reshape(-1, 32)


def test_results_come_back_in_order_and_equal_one_process(workers, rows):
    scalar = x25519.random_scalar()
    assert np.array_equal(_exponentiate(rows, scalar, workers), x25519.multiply(rows, scalar))


def test_a_refused_element_raises_with_its_position_and_the_workers_stay_usable(workers, rows):
    bad = rows.copy()
    bad[2100] = np.frombuffer((2).to_bytes(32, "little"), np.uint8)  # on the twist
    with pytest.raises(ProtocolError, match="position 2100 "):
        _exponentiate(bad, x25519.random_scalar(), workers)
    scalar = x25519.random_scalar()  # nothing stale is left in the pipes
    assert np.array_equal(_exponentiate(rows, scalar, workers), x25519.multiply(rows, scalar))


def test_a_consumer_that_stops_early_leaves_the_pipes_in_step(workers, rows):
    scalar = x25519.random_scalar()
    results = workers.run(exponentiate_tasks(rows, scalar, workers.processes, 256))
    next(results)
    results.close()  # four batches were still in flight
    assert np.array_equal(_exponentiate(rows, scalar, workers), x25519.multiply(rows, scalar))


def test_streams_run_back_to_back_keep_their_own_results(workers, rows):
    scalar, other = x25519.random_scalar(), x25519.random_scalar()
    values = [f"c-{i}" for i in range(1500)]
    blinded, powers = run_streams(
        workers, blind_tasks(values, "id", other, 2, 700), exponentiate_tasks(rows, scalar, 2, 700)
    )
    as_rows = [np.frombuffer(b"".join(parts), np.uint8).reshape(-1, 32) for parts in (blinded, powers)]
    assert np.array_equal(as_rows[0], blind_identifiers(values, "id", other, Workers(1)))
    assert np.array_equal(as_rows[1], x25519.multiply(rows, scalar))


def test_batches_larger_than_a_pipe_buffer_do_not_deadlock(workers):
    big = blind_identifiers([f"c-{i}" for i in range(40_000)], "id", x25519.random_scalar(), workers, batch=20_000)
    assert big.shape == (40_000, 32)  # 640 KiB each way per task


def test_a_worker_that_dies_gives_a_clear_error():
    with Workers(2) as pool:
        pool.start()
        os.kill(pool.pids[0], signal.SIGKILL)
        with pytest.raises(ProtocolError, match="worker process died"):
            blind_identifiers([f"c-{i}" for i in range(5000)], "id", x25519.random_scalar(), pool, batch=500)
        assert pool.pids == []  # closed: the next run starts fresh workers
        assert len(blind_identifiers(["a", "b"], "id", x25519.random_scalar(), pool)) == 2


@pytest.mark.parametrize("n", [0, 1, 255, 2048, 10_000, 100_000])
def test_spans_cover_every_row_once_and_shrink_at_the_end(n):
    spans = list(_spans(n, 2048, 2))
    assert [start for start, _ in spans] == [0, *[stop for _, stop in spans[:-1]]][: len(spans)]
    assert (spans[-1][1] if spans else 0) == n
    sizes = [stop - start for start, stop in spans]
    assert all(size <= 2048 for size in sizes)
    if n >= 100_000:
        assert sizes[0] == 2048 and sizes[-2] == 256  # the tail is made of small batches
