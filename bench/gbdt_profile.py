"""Where a secure GBDT run spends its time: every bank and server step timed, and a plain run in the same process.

Wraps the SecAgg+ answers of `GBDTBank`, two `SecAggClient` steps and the
`SecAggServer` stages with wall-clock timers (a measurement only, nothing is
replaced), runs one small federated DP boosting job and the same job as a plain
federation, and prints the seconds per step and the ratio of training times. The
machine is shared, so the times are provisional (docs/gbdt.md, "Where the time goes").

    python bench/gbdt_profile.py                 # 5 banks, 5 trees of depth 3
    python bench/gbdt_profile.py --banks 10 --trees 50 --depth 4 --features-per-tree 6
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "UCI_Credit_Card.csv"
BANK_STEPS = ("exact", "advertise", "share", "mask", "sign", "unmask")
CLIENT_STEPS = ("_open", "mask_input")
SERVER_STEPS = (
    "receive_advertise",
    "end_advertise",
    "receive_shares",
    "end_share_keys",
    "receive_masked_input",
    "end_mask_input",
    "receive_consistency",
    "end_consistency",
    "receive_unmask",
    "aggregate",
)


def _timed(cls: type, name: str, key: str, seconds: dict[str, float]) -> None:
    """Replace ``cls.name`` by the same method that adds its wall-clock time to ``seconds[key]``."""
    method = getattr(cls, name)

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start

    setattr(cls, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--trees", type=int, default=5)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--bins", type=int, default=16)
    parser.add_argument("--features-per-tree", type=int, default=0)
    args = parser.parse_args()

    import fedsilo
    from fedsilo.peers.gbdt.bank import GBDTBank
    from fedsilo.privacy.secagg.client import SecAggClient
    from fedsilo.privacy.secagg.server import SecAggServer

    seconds: dict[str, float] = collections.defaultdict(float)
    for name in BANK_STEPS:
        _timed(GBDTBank, name, f"bank.{name}", seconds)
    for name in CLIENT_STEPS:
        _timed(SecAggClient, name, f"client.{name}", seconds)
    for name in SERVER_STEPS:
        _timed(SecAggServer, name, "server (all stages)", seconds)
    common = {
        "data": args.data,
        "label": "Y",
        "id_column": "ID",
        "banks": args.banks,
        "partition": "dirichlet:0.5",
        "model": "gbdt",
        "trees": args.trees,
        "depth": args.depth,
        "bins": args.bins,
        "lr": 0.3,
        "features_per_tree": args.features_per_tree,
        "seed": args.seed,
        "compare": "none",
    }
    train = {}
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-gbdt-profile-") as out:
        for arm, extra in (("secure", {"dp_mode": "distributed", "epsilon": 3.0}), ("plain", {"dp_mode": "off"})):
            seconds.clear()
            if arm == "plain":
                extra["secure_aggregation"] = "off"
            run = fedsilo.simulate(**common, **extra, out=out)
            train[arm] = json.loads((run.run_dir / "model_card.json").read_text())["metrics"]["train_seconds"]
            print(f"{arm}: training {train[arm]:.2f} s, ROC-AUC {run.summary.final_auc:.4f}")
            for key, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
                print(f"  {key:<24} {value:7.3f} s")
    print(f"ratio secure / plain (provisional, shared machine): {train['secure'] / train['plain']:.1f}x")


if __name__ == "__main__":
    main()
