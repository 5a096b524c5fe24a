"""Privacy–utility on real data: federated DP model vs. its two yardsticks, through the CLI.

For each seed, runs the real command

    fedsilo simulate --data PATH --label Y --id-column ID --banks 10 \\
        --partition dirichlet:0.5 --epsilon 3 --compare centralized,local --json --out TMP --seed S

(plus any extra flags given after `--`), reads the JSON summary on its last line and
prints, per seed: the federated model's ROC-AUC on the pooled held-out rows (each bank
(3, 1e-5)-DP), the centralized non-private model's and the mean of the local-only
models' (each bank alone, same schedule and same ε). Then the means over the seeds,
and last the goal checks: federated ≥ 0.72, and federated ≥ local-only mean + 0.03,
printed as margins (a measurement, not a pass/fail test).

    python bench/utility.py                                   # ../shared/data/UCI_Credit_Card.csv
    python bench/utility.py --data PATH --seeds 0,1,2
    python bench/utility.py -- --lr 0.3 --rounds 20           # try other training settings

One run takes about a minute on 2 cores. The data file is read where it is; run folders
go to a temporary directory that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "UCI_Credit_Card.csv"
FEDERATED_FLOOR = 0.72
MARGIN_OVER_LOCAL = 0.03


def fedsilo_command() -> list[str]:
    """The installed `fedsilo` next to this interpreter, else `python -m fedsilo.cli`."""
    script = Path(sys.executable).with_name("fedsilo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedsilo.cli"]


def run_once(args: argparse.Namespace, seed: int, out: Path, extra: list[str]) -> dict:
    command = [
        *fedsilo_command(),
        "simulate",
        "--data",
        str(args.data),
        "--label",
        args.label,
        "--id-column",
        args.id_column,
        "--banks",
        str(args.banks),
        "--partition",
        args.partition,
        "--epsilon",
        str(args.epsilon),
        "--compare",
        "centralized,local",
        "--json",
        "--quiet",
        "--out",
        str(out),
        "--seed",
        str(seed),
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"fedsilo simulate failed for seed {seed} (exit {done.returncode}): {' '.join(command)}")
    summary = json.loads(lines[-1])
    summary["seconds"] = elapsed
    return summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Flags after `--` are passed to fedsilo simulate unchanged."
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"credit table (default {DEFAULT_DATA})")
    parser.add_argument("--label", default="Y")
    parser.add_argument("--id-column", default="ID")
    parser.add_argument("--banks", type=int, default=10)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data} does not exist: pass --data PATH to the UCI credit-card CSV")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    print(
        f"data: {args.data} ({args.banks} banks, {args.partition}, ε = {args.epsilon:g} per bank)"
        + (f"; extra flags: {' '.join(extra)}" if extra else "")
    )
    print(f"{'seed':>4}  {'federated':>9}  {'centralized':>11}  {'local mean':>10}  {'ε max':>6}  {'time':>6}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="fedsilo-utility-"))
    try:
        for seed in seeds:
            s = run_once(args, seed, work / f"seed{seed}", extra)
            rows.append(s)
            print(
                f"{seed:>4}  {s['final_auc']:>9.4f}  {s['centralized_auc']:>11.4f}  {s['local_auc_mean']:>10.4f}"
                f"  {s['epsilon_max']:>6.3f}  {s['seconds']:>5.0f}s",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    federated = statistics.mean(r["final_auc"] for r in rows)
    central = statistics.mean(r["centralized_auc"] for r in rows)
    local = statistics.mean(r["local_auc_mean"] for r in rows)
    spread = statistics.stdev(r["final_auc"] for r in rows) if len(rows) > 1 else 0.0
    print(f"{'mean':>4}  {federated:>9.4f}  {central:>11.4f}  {local:>10.4f}   (federated sd {spread:.4f})")
    print(f"federated_over_centralized={federated / central:.3f}")
    print(f"federated_minus_floor={federated - FEDERATED_FLOOR:+.4f}  (goal: federated ≥ {FEDERATED_FLOOR})")
    print(f"federated_minus_local={federated - local:+.4f}  (goal: ≥ +{MARGIN_OVER_LOCAL})")
    met = federated >= FEDERATED_FLOOR and federated - local >= MARGIN_OVER_LOCAL
    print(f"utility_goal={'met' if met else 'missed'}")


if __name__ == "__main__":
    main()
