"""Shared fixtures: one real tiny run folder (Flower's Simulation Engine, Ray) for the scoring and tracking tests."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

LOANS_ROWS = 1200


def write_loans(path, rows: int = LOANS_ROWS, seed: int = 0) -> pd.DataFrame:
    """A small credit table: an id, a text category, a skewed amount, an integer, the 0/1 label."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], rows)
    income = rng.lognormal(10, 0.5, rows)
    age = rng.integers(20, 70, rows)
    logit = -1 + 0.8 * (region == "south") - 0.00003 * (income - 22000) + 0.02 * (age - 45)
    frame = pd.DataFrame({"customer_id": [f"c{i:05d}" for i in range(rows)], "region": region, "income": income,
                          "age": age, "default": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)})
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(SimulationResult, the loans CSV it trained on): 2 banks, 1 round, ε = 3, through the public API.

    With MLflow installed the run is also logged to `<root>/mlruns` (`tracking_store`).
    """
    import fedsilo
    root = tmp_path_factory.mktemp("tiny-run")
    data = root / "loans.csv"
    write_loans(data)
    store = str(root / "mlruns") if importlib.util.find_spec("mlflow") else None
    result = fedsilo.simulate(data=str(data), label="default", id_column="customer_id", banks=2, rounds=1,
                              batch_size=64, compare="none", out=str(root / "runs"), mlflow=store)
    return result, data
