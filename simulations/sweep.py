"""`fedsilo sweep CONFIG`: a grid of simulations on one Ray runtime, one table, one plot.

The config file is a simulate config (any of its sections: the base of every point)
plus a `[sweep]` table of lists:

    [sweep]
    banks = [50, 500]          # institutions (horizontal setup)
    epsilon = [1.0, 3.0, 8.0]
    dropout = [0.0, 0.3]
    setup = ["horizontal"]     # or "transfer" (its institutions come from the scenario)
    out = "sweeps"             # where the sweep folder goes (default: runs)
    ray-address = "HOST:PORT"  # an existing cluster; default: a local one for the sweep

Every point is checked before anything runs (a bad value stops the sweep with the
point it breaks). Without `ray-address` a local Ray cluster (`LocalRayCluster`, Ray's
own CLI, all ports explicit) is started once, every point connects to it, and it is
stopped at the end, so the 20–30 s of starting Ray is paid once. The sweep folder
holds `results.csv`, `results.json`, `utility.png` (federated ROC-AUC against ε, one
line per population size, one panel per setup and dropout) and `runs/`, one run
folder per point.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from privacy.errors import ConfigError
from simulations.config import SimulationConfig, config_values
from simulations.progress import Progress
from simulations.run_folder import RunFolder, new_run_name
from peers.toml_file import read_toml

# [sweep] key -> (section, key) of the simulate config it varies
GRID_KEYS = {"banks": ("simulation", "banks"), "epsilon": ("dp", "epsilon"), "dropout": ("simulation", "dropout"),
             "setup": ("simulation", "setup")}
OTHER_KEYS = ("out", "ray-address")
COLUMNS = ("setup", "banks", "epsilon", "dropout", "final_auc", "centralized_auc", "local_auc_mean",
           "epsilon_max", "seconds", "run_dir")


@dataclass(frozen=True)
class SweepPlan:
    """The grid's points (validated configs), where results go, and the Ray cluster to use."""

    points: list[SimulationConfig]
    out: str
    ray_address: str | None


def load_sweep(path: str | Path) -> SweepPlan:
    """Read and validate a sweep file; ConfigError names the key or the point that is wrong."""
    document = dict(read_toml(path, "sweep file"))
    table = document.pop("sweep", None)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: a sweep file needs a [sweep] table with lists, e.g. banks = [50, 500] "
                          "and epsilon = [1.0, 3.0]")
    unknown = sorted(set(table) - set(GRID_KEYS) - set(OTHER_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' in [sweep]; valid keys: "
                          f"{', '.join([*GRID_KEYS, *OTHER_KEYS])}")
    base_values = config_values(document, str(path))
    axes: dict[str, list[Any]] = {}
    for key in GRID_KEYS:
        values = table.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: [sweep] {key} must be a non-empty list, e.g. {key} = "
                              f"{'[50, 500]' if key == 'banks' else '[1.0, 3.0]'}")
        axes[key] = values
    if not axes:
        raise ConfigError(f"{path}: [sweep] lists no axis: give at least one of {', '.join(GRID_KEYS)}")
    out = table.get("out", base_values.get("out", SimulationConfig.out))
    address = table.get("ray-address")
    for key, value in (("out", out), ("ray-address", address)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: [sweep] {key} must be a string, got {value!r}")
    points = []
    names = list(axes)
    for combination in itertools.product(*(axes[n] for n in names)):
        point = dict(zip(names, combination))
        try:
            varied = config_values(_sections(point), f"{path} [sweep]")
            values = {**base_values, **varied}
            points.append(replace(SimulationConfig(), **values))
        except ConfigError as error:
            raise ConfigError(f"{path}: sweep point {point} is invalid: {error}") from None
    return SweepPlan(points, out, address)


def _sections(point: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A grid point as a simulate TOML document ({"dp": {"epsilon": 3.0}, ...})."""
    document: dict[str, dict[str, Any]] = {}
    for name, value in point.items():
        section, key = GRID_KEYS[name]
        document.setdefault(section, {})[key] = value
    return document


def run_sweep(plan: SweepPlan, progress: Progress) -> tuple[Path, list[dict[str, Any]]]:
    """Run every point on one Ray runtime; write the table and the plot; return them."""
    from simulations.ray_cluster import LocalRayCluster
    from simulations.report.plots import plot_sweep
    from simulations.runner import simulate
    from simulations.transfer import simulate_transfer

    rows: list[dict[str, Any]] = []
    cluster = nullcontext(None) if plan.ray_address else LocalRayCluster(cpus=os.cpu_count() or 1)
    with RunFolder(plan.out, name=new_run_name("sweep")) as folder:
        folder_path = folder.path
        with cluster as started:
            address = plan.ray_address or started.address
            if started is not None:
                progress.stage(f"Started a local Ray cluster for the sweep at {address}")
            for i, point in enumerate(plan.points, 1):
                config = replace(point, ray_address=address, out=str(folder_path / "runs"))
                progress.stage(f"Sweep point {i}/{len(plan.points)}: {config.setup}, {config.banks} banks, "
                               f"ε = {config.epsilon:g}, dropout {config.dropout:g}")
                started_at = time.perf_counter()
                run = simulate_transfer if config.setup == "transfer" else simulate
                summary = run(config, progress)
                rows.append({"setup": config.setup, "banks": summary.banks, "epsilon": config.epsilon,
                             "dropout": config.dropout, "final_auc": summary.final_auc,
                             "centralized_auc": summary.centralized_auc, "local_auc_mean": summary.local_auc_mean,
                             "epsilon_max": summary.epsilon_max,
                             "seconds": round(time.perf_counter() - started_at, 1),
                             "run_dir": str(Path("runs") / Path(summary.run_dir).name)})
        with (folder_path / "results.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        (folder_path / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        plot_sweep(folder_path / "utility.png", rows)
    return folder.final, rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results as aligned text, one line per point."""
    head = f"{'setup':<11}{'banks':>7}{'ε':>7}{'dropout':>9}{'federated':>11}{'central':>9}{'local':>8}{'ε spent':>9}{'s':>7}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['setup']:<11}{r['banks']:>7}{r['epsilon']:>7g}{r['dropout']:>9g}{r['final_auc']:>11.4f}"
                     f"{_f(r['centralized_auc']):>9}{_f(r['local_auc_mean']):>8}{r['epsilon_max']:>9.3f}"
                     f"{r['seconds']:>7.0f}")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of simulations (banks × ε × dropout × setup) on one Ray runtime",
                       description="Run every point of a grid of simulations on one Ray runtime and write one "
                                   "table (CSV, JSON) and one plot (federated ROC-AUC against ε, one line per "
                                   "population size).",
                       epilog="CONFIG is a simulate config plus [sweep] banks, epsilon, dropout, setup (lists), "
                              "out, ray-address; see README, section Sweeps.")
    p.add_argument("config", metavar="CONFIG", help="TOML file with a [sweep] table")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--json", action="store_true", help="print the results as JSON as the last line of stdout")
    p.set_defaults(handler=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    plan = load_sweep(args.config)
    folder, rows = run_sweep(plan, Progress(quiet=args.quiet))
    print(f"sweep folder: {folder}")
    print(format_table(rows))
    print(f"table: {folder / 'results.csv'}   plot: {folder / 'utility.png'}")
    if args.json:
        print(json.dumps(rows))
    return 0
