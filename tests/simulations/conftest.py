"""Shared fixtures: one real tiny run folder (Flower's Simulation Engine, Ray) for the scoring and tracking tests."""

from __future__ import annotations

import importlib.util

import pytest
from _loans import write_loans


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(SimulationResult, the loans CSV it trained on): 2 banks, 1 round, ε = 3, through the public API.

    With MLflow installed the run is also logged to `<root>/mlruns` (read back by test_tracking.py).
    """
    import fedsilo

    root = tmp_path_factory.mktemp("tiny-run")
    data = root / "loans.csv"
    write_loans(data)
    store = str(root / "mlruns") if importlib.util.find_spec("mlflow") else None
    result = fedsilo.simulate(
        data=str(data),
        label="default",
        id_column="customer_id",
        banks=2,
        rounds=1,
        batch_size=64,
        compare="none",
        out=str(root / "runs"),
        mlflow=store,
    )
    return result, data
