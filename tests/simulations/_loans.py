"""A small credit table for the scoring, tracking and API tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

LOANS_ROWS = 1200


def write_loans(path, rows: int = LOANS_ROWS, seed: int = 0) -> pd.DataFrame:
    """A small credit table: an id, a text category, a skewed amount, an integer, the 0/1 label."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], rows)
    income = rng.lognormal(10, 0.5, rows)
    age = rng.integers(20, 70, rows)
    logit = -1 + 0.8 * (region == "south") - 0.00003 * (income - 22000) + 0.02 * (age - 45)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in range(rows)],
            "region": region,
            "income": income,
            "age": age,
            "default": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )
    frame.to_csv(path, index=False)
    return frame
