"""How fast the `fedsilo` command answers when it has nothing heavy to do.

Measures the wall time of, each in a fresh process:

- baseline: `python -c pass` (the interpreter's own start, with site-packages);
- `fedsilo --help`;
- `fedsilo simulate --help` (shows the job specs' defaults);
- a refused input: `fedsilo simulate --data MISSING.csv --label y` (exit status 2, one line);
- a refused value: `fedsilo simulate --epsilon -1` (exit status 2, refused by the configuration);
- a refused input to `fedsilo score` (a folder without a model card).

The commands run as `python -m fedsilo.cli` with the interpreter running this
script, in an empty temporary directory, so the code measured is the one on PYTHONPATH
(run it against another checkout with PYTHONPATH=/path/to/checkout; `-m` would put the
current directory first). The runs take turns (baseline, then each command)
so that load changes hit them alike; the median of `--reps` is shown, and each
command's median as a ratio to the baseline's, and the seconds above it.

    python bench/cli_latency.py [--reps 7] [--checkout /work/main --checkout .]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(argv: list[str], expect: int, cwd: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expect}: {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--checkout",
        action="append",
        type=Path,
        metavar="DIR",
        help="a fedsilo checkout to measure (repeat it to compare checkouts in the same run); "
        "default: the one on PYTHONPATH",
    )
    args = parser.parse_args()
    python = sys.executable
    checkouts = [c.resolve() for c in args.checkout] if args.checkout else [None]
    with tempfile.TemporaryDirectory() as tmp:
        missing = str(Path(tmp) / "missing.csv")
        commands = {
            "fedsilo --help": (["--help"], 0),
            "fedsilo simulate --help": (["simulate", "--help"], 0),
            "simulate, missing data file": (["simulate", "--data", missing, "--label", "y"], 2),
            "simulate, refused value --epsilon -1": (["simulate", "--epsilon", "-1"], 2),
            # a checkout without `fedsilo score` refuses the unknown command (argparse, status 2) after the same imports
            "score, not a model folder": (["score", tmp, "--data", missing, "--out", str(Path(tmp) / "s.csv")], 2),
        }
        cases = {"python -c pass (baseline)": ([python, "-c", "pass"], 0, dict(os.environ))}
        for checkout in checkouts:
            env = dict(os.environ, **({"PYTHONPATH": str(checkout)} if checkout else {}))
            where = f" [{checkout}]" if len(checkouts) > 1 else ""
            for name, (argv, expect) in commands.items():
                cases[name + where] = ([python, "-m", "fedsilo.cli", *argv], expect, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for argv, expect, env in cases.values():  # warm the file cache once
            wall(argv, expect, tmp, env)
        for _ in range(args.reps):
            for name, (argv, expect, env) in cases.items():
                times[name].append(wall(argv, expect, tmp, env))
    base = statistics.median(times["python -c pass (baseline)"])
    width = max(len(name) for name in times) + 2
    print(f"{'command':<{width}}{'median s':>10}{'× baseline':>12}{'above baseline s':>18}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<{width}}{median:>10.3f}{median / base:>12.2f}{median - base:>18.3f}")
    for checkout in checkouts:
        tag = f" [{checkout}]" if len(checkouts) > 1 else ""
        worst = max(statistics.median(times[name + tag]) for name in commands)
        print(
            f"slowest command{tag}: {worst:.3f} s, ×{worst / base:.2f} the interpreter's start ({args.reps} runs each)"
        )


if __name__ == "__main__":
    main()
