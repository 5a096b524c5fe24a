"""A real sweep with a seed axis: two learning rates × two seeds on one local Ray cluster.

Checks the mean ± standard deviation per grid point against the runs, and that the
centralized yardstick is trained once per seed (shared by both learning rates) while
the local-only one, which depends on the learning rate, is trained at every point.
"""

from __future__ import annotations

import csv
import json
import statistics

import pytest

import fedsilo

pytestmark = pytest.mark.slow


def test_seeds_give_mean_and_std_and_yardsticks_are_trained_once_per_data_split(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'[sweep]\nlr = [0.3, 0.5]\nseeds = [0, 1]\nout = "{tmp_path / "sweeps"}"\n'
        "[simulation]\nbanks = 2\nrounds = 1\n[data]\ncustomers = 1200\n[train]\nbatch-size = 64\n"
    )
    result = fedsilo.sweep(config)
    assert [(r["lr"], r["seed"]) for r in result.runs] == [(0.3, 0), (0.3, 1), (0.5, 0), (0.5, 1)]
    assert result.axes == ("lr",) and len(result.points) == 2
    for point in result.points:
        runs = [r for r in result.runs if r["lr"] == point["lr"]]
        aucs = [r["final_auc"] for r in runs]
        assert point["runs"] == 2 and point["seeds"] == [0, 1]
        assert point["final_auc_mean"] == pytest.approx(statistics.mean(aucs), abs=1e-6)
        assert point["final_auc_std"] == pytest.approx(statistics.stdev(aucs), abs=1e-6)
    cards = {
        (r["lr"], r["seed"]): json.loads((result.folder / r["run_dir"] / "model_card.json").read_text())["metrics"]
        for r in result.runs
    }
    for seed in (0, 1):
        first, second = cards[(0.3, seed)], cards[(0.5, seed)]
        assert first["centralized_auc"] is not None and second["centralized_auc"] is None  # trained once, reused
        assert first["local_only_auc_mean"] is not None and second["local_only_auc_mean"] is not None
        rows = {r["lr"]: r for r in result.runs if r["seed"] == seed}
        assert (
            rows[0.3]["centralized_auc"]
            == rows[0.5]["centralized_auc"]
            == pytest.approx(first["centralized_auc"], abs=1e-4)
        )
    with (result.folder / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert [float(p["lr"]) for p in summary] == [0.3, 0.5] and all(p["final_auc_std"] for p in summary)
    assert (result.folder / "utility.png").stat().st_size > 0
