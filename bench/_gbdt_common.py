"""What bench/gbdt.py and bench/gbdt_profile.py share: the data default, the arguments and the run's settings."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "UCI_Credit_Card.csv"


def arguments(parser: argparse.ArgumentParser, **defaults: Any) -> argparse.ArgumentParser:
    """Add the arguments of a boosting run (``defaults`` overrides any of them by its dest name)."""
    base = {"trees": 20, "depth": 3, "bins": 16, "lr": 0.3, "banks": 10, "features_per_tree": 0, "epsilon": 3.0}
    base.update(defaults)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="UCI_Credit_Card.csv (label Y, id ID)")
    parser.add_argument("--epsilon", type=float, default=base["epsilon"])
    parser.add_argument("--trees", type=int, default=base["trees"])
    parser.add_argument("--depth", type=int, default=base["depth"])
    parser.add_argument("--bins", type=int, default=base["bins"])
    parser.add_argument("--lr", type=float, default=base["lr"])
    parser.add_argument("--banks", type=int, default=base["banks"])
    parser.add_argument("--features-per-tree", type=int, default=base["features_per_tree"])
    parser.add_argument("--splits", choices=("histogram", "random"), default="histogram", help="as fedsilo simulate")
    return parser


def simulate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `fedsilo.simulate` that every arm of a benchmark shares."""
    return {
        "data": args.data,
        "label": "Y",
        "id_column": "ID",
        "banks": args.banks,
        "partition": "dirichlet:0.5",
        "model": "gbdt",
        "trees": args.trees,
        "depth": args.depth,
        "bins": args.bins,
        "lr": args.lr,
        "features_per_tree": args.features_per_tree,
        "splits": args.splits,
    }


def centralized_seconds(args: argparse.Namespace, seed: int) -> float:
    """Wall-clock seconds of scikit-learn's HistGradientBoostingClassifier (one thread), same trees, depth, bins, all rows."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    frame = pd.read_csv(args.data)
    y = frame.pop("Y").to_numpy()
    x = frame.drop(columns=["ID"]).to_numpy()
    model = HistGradientBoostingClassifier(
        max_iter=args.trees,
        max_depth=args.depth,
        max_bins=max(2, min(args.bins, 255)),
        learning_rate=args.lr,
        early_stopping=False,
        random_state=seed,
    )
    with threadpool_limits(limits=1):  # one thread, as the simulated federation; OpenMP spins on a busy machine
        start = time.perf_counter()
        model.fit(x, y)
        return time.perf_counter() - start
