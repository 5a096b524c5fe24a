"""Federated transfer learning on the UCI scenario: what each institution gains, over several seeds.

The UCI credit-card file (never copied into the project: pass its path) is split into
a bank (limits, bills, payments), a card issuer (repayment status) and a small broker
(demographics, two payment columns) by `fedsilo.simulations.data.schemas.uci_scenario`, or
by a scenario TOML file (`--scenario FILE`). For each seed the real command runs:

    fedsilo simulate --setup transfer --data PATH --id-column ID --scenario uci --epsilon 3 --json

which trains the federated transfer model and, as yardsticks in the same run, each
institution alone (same model, same DP) and a horizontal federation on the columns
all institutions share. Each seed draws another split of the customers, another
held-out set and other DP noise, so the seeds are independent repetitions; figures
are the mean ± standard error over seeds, and differences are paired by seed.

A ceiling for the smallest institution, computed here in the benchmark from the pooled
table (a yardstick no consortium could run): a non-private MLP on that institution's
own columns, trained on its own training rows only, and on those rows plus every
other customer of the table with the same columns (as if every institution held
them), both scored on its held-out rows. No federation of these schemas can give the
smallest institution more information than the pooled model has, so
pooled − alone (non-private) bounds, up to estimation noise, what transfer can add on
top of what the institution can learn alone without privacy.

Printed last: per institution federated transfer / alone / horizontal on common
columns (mean ± s.e.), the smallest institution's federated-transfer − local-only
AUC against the goal (≥ +0.03), and its ceiling.

    python bench/transfer.py [--data ../shared/data/UCI_Credit_Card.csv] [--seeds 0 1 2] [--jobs 3] [--scenario uci|FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsilo.peers.data.bank import BankTensors, split_train_test  # noqa: E402
from fedsilo.peers.data.encoding import TabularEncoder  # noqa: E402
from fedsilo.peers.job import JobConfig, TrainSpec  # noqa: E402
from fedsilo.peers.models import ModelSpec  # noqa: E402
from fedsilo.simulations.baselines import centralized  # noqa: E402
from fedsilo.simulations.config import SimulationConfig  # noqa: E402
from fedsilo.simulations.data.schemas import (  # noqa: E402  (after the sys.path set-up above)
    TransferScenario,
    load_scenario_toml,
    uci_scenario,
    uci_transfer_table,
)

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "UCI_Credit_Card.csv"
TEST_FRACTION = SimulationConfig.test_fraction


def run(data: Path, seed: int, epsilon: float, scenario: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "fedsilo.cli",
            "simulate",
            "--setup",
            "transfer",
            "--data",
            str(data),
            "--id-column",
            "ID",
            "--scenario",
            scenario,
            "--epsilon",
            str(epsilon),
            "--seed",
            str(seed),
            "--json",
            "--quiet",
            "--out",
            out,
        ]
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": path}
        )
        if done.returncode != 0:
            sys.exit(f"fedsilo failed (seed {seed}): {done.stderr.strip().splitlines()[-1]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def ceiling(scenario: TransferScenario, table, institution: int, seed: int) -> tuple[float, float]:
    """(non-private AUC alone, non-private AUC pooled over every customer) on the institution's held-out rows.

    The held-out rows are those of the simulation: the scenario's split of the
    customers, then the stratified test split of `encode_bank` with the same seed.
    """
    parts = scenario.split_rows(table, seed)
    sources = scenario.institutions[institution].sources
    frame = table[[*sources, scenario.label]]
    x, y = (torch.from_numpy(a) for a in TabularEncoder.fit_frames([frame], scenario.label).transform(frame))
    own = parts[institution]
    train, test = split_train_test(y[own].numpy(), TEST_FRACTION, seed)
    others = np.concatenate([p for i, p in enumerate(parts) if i != institution])
    job = JobConfig(
        label=scenario.label,
        encoder_path="",
        model=ModelSpec("mlp", SimulationConfig.hidden),
        train=TrainSpec(seed=seed),
    )
    x_test, y_test = x[own][test], y[own][test]

    def auc(x_train: torch.Tensor, y_train: torch.Tensor) -> float:
        return centralized(job, BankTensors(x_train, y_train, x_test, y_test), x_test, y_test)["auc"]

    return (
        auc(x[own][train], y[own][train]),
        auc(torch.cat([x[others], x[own][train]]), torch.cat([y[others], y[own][train]])),
    )


def mean_se(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return f"{a.mean():.4f} ± {se:.4f}"


def signed(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return f"{a.mean():+.4f} ± {se:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--jobs", type=int, default=1, help="seeds simulated at the same time (default 1)")
    parser.add_argument("--scenario", default="uci", help="uci (default) or a scenario TOML file over X1 … X23, Y")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data} not found: pass --data PATH to the UCI credit-card CSV")
    scenario = uci_scenario() if args.scenario == "uci" else load_scenario_toml(args.scenario)
    table = uci_transfer_table(args.data)
    smallest = int(np.argmin(scenario.shares))
    torch.set_num_threads(1)  # the ceiling's small MLPs; more threads only contend on a shared CPU
    rows, bounds = [], []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        summaries = list(pool.map(lambda seed: run(args.data, seed, args.epsilon, args.scenario), args.seeds))
    for seed, summary in zip(args.seeds, summaries):
        for name, aucs in summary["institutions"].items():
            rows.append({"seed": seed, "institution": name, **aucs})
            print(
                f"seed {seed}  {name:<12} federated transfer {aucs['federated']:.4f}  "
                f"alone {aucs['local_only']:.4f}  horizontal on common columns {aucs['horizontal_common']:.4f}",
                flush=True,
            )
        bounds.append(ceiling(scenario, table, smallest, seed))
        print(
            f"seed {seed}  {scenario.names[smallest]:<12} ceiling (non-private, own columns): "
            f"alone {bounds[-1][0]:.4f}  every customer pooled {bounds[-1][1]:.4f}",
            flush=True,
        )

    print(f"\n{len(args.seeds)} seeds {args.seeds}, ε = {args.epsilon}; mean ± standard error over seeds")
    for name in scenario.names:
        mine = [r for r in rows if r["institution"] == name]
        print(
            f"{name:<12} federated transfer {mean_se([r['federated'] for r in mine])}  "
            f"alone {mean_se([r['local_only'] for r in mine])}  "
            f"horizontal on common columns {mean_se([r['horizontal_common'] for r in mine])}"
        )
    for name in scenario.names:
        mine = [r for r in rows if r["institution"] == name]
        print(
            f"{name:<12} transfer − alone {signed([r['federated'] - r['local_only'] for r in mine])}  "
            f"transfer − common {signed([r['federated'] - r['horizontal_common'] for r in mine])}"
        )
    name = scenario.names[smallest]
    mine = [r for r in rows if r["institution"] == name]
    print(
        f"\nceiling for {name} (non-private, its own columns): alone {mean_se([b[0] for b in bounds])}  "
        f"every customer pooled {mean_se([b[1] for b in bounds])}  "
        f"pooled − alone {signed([b[1] - b[0] for b in bounds])}"
    )
    print(
        f"smallest institution ({name}): federated transfer − local-only AUC = "
        f"{signed([r['federated'] - r['local_only'] for r in mine])} (goal ≥ +0.03)"
    )


if __name__ == "__main__":
    main()
