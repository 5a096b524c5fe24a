"""How fast the `fedsilo` command answers when it has nothing heavy to do.

Measures the wall time of, each in a fresh process:

- baseline: `python -c pass` (the interpreter's own start, with site-packages);
- `fedsilo --help`;
- a refused input: `fedsilo simulate --data MISSING.csv --label y` (exit status 2, one line);
- a refused input to `fedsilo score` (a folder without a model card).

The commands run as `python -m simulations.cli` with the interpreter running this
script, so the code measured is the one on PYTHONPATH (run it against another checkout
with PYTHONPATH=/path/to/checkout). The runs take turns (baseline, then each command)
so that load changes hit them alike; the median of `--reps` is shown, and each
command's median as a ratio to the baseline's, and the seconds above it.

    python bench/cli_latency.py [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(argv: list[str], expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expect}: {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "python -c pass (baseline)": ([python, "-c", "pass"], 0),
            "fedsilo --help": ([python, "-m", "simulations.cli", "--help"], 0),
            "simulate, missing data file": ([python, "-m", "simulations.cli", "simulate", "--data",
                                             str(Path(tmp) / "missing.csv"), "--label", "y"], 2),
            "score, not a model folder": ([python, "-m", "simulations.cli", "score", tmp, "--data",
                                           str(Path(tmp) / "missing.csv"), "--out", str(Path(tmp) / "s.csv")], 2),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for argv, expect in cases.values():  # warm the file cache once
            wall(argv, expect)
        for _ in range(args.reps):
            for name, (argv, expect) in cases.items():
                times[name].append(wall(argv, expect))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'command':<32}{'median s':>10}{'× baseline':>12}{'above baseline s':>18}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<32}{median:>10.3f}{median / base:>12.2f}{median - base:>18.3f}")
    worst = max(statistics.median(v) for k, v in times.items() if "baseline" not in k)
    print(f"slowest command: {worst:.3f} s, ×{worst / base:.2f} the interpreter's start ({args.reps} runs each)")


if __name__ == "__main__":
    main()
