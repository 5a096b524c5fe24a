"""Federated transfer learning on the UCI scenario: what each institution gains.

The UCI credit-card file (never copied into the project: pass its path) is split into
a bank (limits, bills, payments), a card issuer (repayment status) and a small broker
(demographics, two payment columns) by `simulations.data.schemas.uci_scenario`. For
each seed the real command runs:

    fedsilo simulate --setup transfer --data PATH --id-column ID --scenario uci --epsilon 3 --json

which trains the federated transfer model and, as yardsticks in the same run, each
institution alone (same model, same DP) and a horizontal federation on the columns
all three share. Printed last: the smallest institution's federated-transfer AUC
minus its local-only AUC (goal ≥ 0.03), and federated transfer minus horizontal on
common columns for every institution.

    python bench/transfer.py [--data ../shared/data/UCI_Credit_Card.csv] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "UCI_Credit_Card.csv"


def run(data: Path, seed: int, epsilon: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "simulations.cli", "simulate", "--setup", "transfer", "--data", str(data),
                   "--id-column", "ID", "--scenario", "uci", "--epsilon", str(epsilon), "--seed", str(seed),
                   "--json", "--quiet", "--out", out]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"fedsilo failed (seed {seed}): {done.stderr.strip().splitlines()[-1]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epsilon", type=float, default=3.0)
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data} not found: pass --data PATH to the UCI credit-card CSV")
    rows = []
    for seed in args.seeds:
        summary = run(args.data, seed, args.epsilon)
        for name, aucs in summary["institutions"].items():
            rows.append({"seed": seed, "institution": name, **aucs})
            print(f"seed {seed}  {name:<12} federated transfer {aucs['federated']:.4f}  "
                  f"alone {aucs['local_only']:.4f}  horizontal on common columns {aucs['horizontal_common']:.4f}")
    names = list(dict.fromkeys(r["institution"] for r in rows))
    smallest = names[-1]  # the scenario lists the broker (smallest share) last
    print()
    for name in names:
        mine = [r for r in rows if r["institution"] == name]
        fed = np.mean([r["federated"] for r in mine])
        alone = np.mean([r["local_only"] for r in mine])
        common = np.mean([r["horizontal_common"] for r in mine])
        print(f"{name:<12} mean over seeds: federated {fed:.4f}  alone {alone:.4f}  common {common:.4f}  "
              f"transfer − alone {fed - alone:+.4f}  transfer − common {fed - common:+.4f}")
    mine = [r for r in rows if r["institution"] == smallest]
    gain = np.mean([r["federated"] - r["local_only"] for r in mine])
    print(f"\nsmallest institution ({smallest}): federated transfer − local-only AUC = {gain:+.4f} (goal ≥ +0.03)")
    for name in names:
        mine = [r for r in rows if r["institution"] == name]
        print(f"{name}: federated transfer − horizontal on common columns = "
              f"{np.mean([r['federated'] - r['horizontal_common'] for r in mine]):+.4f}")


if __name__ == "__main__":
    main()
