"""`fedsilo sweep CONFIG`: a grid of simulations on one Ray runtime, one table, one plot.

The config file is a simulate config (any of its sections: the base of every point)
plus a `[sweep]` table of lists:

    [sweep]
    banks = [50, 500]          # institutions (horizontal setup)
    epsilon = [1.0, 3.0, 8.0]
    dropout = [0.0, 0.3]
    lr = [0.1, 0.5]            # also: rounds, partition ("iid", "dirichlet:0.5"), model ("mlp", "logreg")
    setup = ["horizontal"]     # or "transfer" (its institutions come from the scenario)
    seeds = [0, 1, 2]          # or repeats = 3 (seeds base, base + 1, base + 2): every point once per seed
    out = "sweeps"             # where the sweep folder goes (default: runs)
    ray-address = "HOST:PORT"  # an existing cluster; default: a local one for the sweep

A grid point is one combination of the axes; it runs once per seed (the seed of the
data, its partition, the model's initial weights and the training's row order), and the
table reports, per grid point, the mean and the sample standard deviation (n − 1) over
its seeds (no standard deviation with one seed).

Yardsticks are trained once per data split, not once per point: the centralized model
depends on the data (setup, population, partition, seed) and the model only, so a
sweep over ε or dropout trains it once per seed; the local-only models also depend on
the training and the DP target (they spend the same ε), so they are trained once per ε,
learning rate and rounds, and are shared across dropout rates. Later points reuse
the value and run without that yardstick. (Transfer points keep their own yardsticks.)

Every point is checked before anything runs (a bad value stops the sweep with the
point it breaks). Without `ray-address` a local Ray cluster (`LocalRayCluster`, Ray's
own CLI, all ports explicit) is started once, every point connects to it, and it is
stopped at the end, so the 20–30 s of starting Ray is paid once. The sweep folder
holds `results.csv` and `results.json` (one row per run), `summary.csv` and
`summary.json` (one row per grid point: mean ± standard deviation over seeds),
`utility.png` (federated ROC-AUC with error bars, the yardsticks as lines) and `runs/`,
one run folder per run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.errors import ConfigError
from fedsilo.peers.toml_file import read_toml
from fedsilo.simulations.run_folder import RunFolder, new_run_name
from fedsilo.simulations.settings import BY_NAME

if TYPE_CHECKING:  # the config imports torch: only `load_sweep` needs it, not `fedsilo --help`
    from fedsilo.simulations.config import SimulationConfig
    from fedsilo.simulations.progress import Progress

# [sweep] key -> (section, key) of the simulate config it varies (each key is the setting's name)
GRID_KEYS = {
    name: (BY_NAME[name].section, str(BY_NAME[name].key))
    for name in ("banks", "epsilon", "dropout", "setup", "lr", "rounds", "partition", "model")
}
SEED_KEYS = ("seeds", "repeats")
OTHER_KEYS = ("out", "ray-address")
# A run's grid coordinates, named as in [sweep] (model: the model kind; partition: None is iid).
GRID_COLUMNS = ("setup", "banks", "epsilon", "dropout", "lr", "rounds", "partition", "model")
COLUMNS = (
    "setup",
    "banks",
    "epsilon",
    "dropout",
    "final_auc",
    "centralized_auc",
    "local_auc_mean",
    "epsilon_max",
    "seconds",
    "lr",
    "rounds",
    "partition",
    "model",
    "seed",
    "run_dir",
)
MEASURED = ("final_auc", "centralized_auc", "local_auc_mean")
SUMMARY_COLUMNS = (
    *GRID_COLUMNS,
    "runs",
    "seeds",
    *(f"{m}_{s}" for m in MEASURED for s in ("mean", "std")),
    "epsilon_max",
)


@dataclass(frozen=True)
class SweepPlan:
    """The runs (validated configs, grid point by grid point, each once per seed), where
    results go, the Ray cluster to use, and the grid's varied axes (names as in [sweep])."""

    points: list[SimulationConfig]
    out: str
    ray_address: str | None
    axes: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)


def load_sweep(path: str | Path) -> SweepPlan:
    """Read and validate a sweep file; ConfigError names the key or the point that is wrong."""
    from fedsilo.simulations.config import SimulationConfig, config_values

    document = dict(read_toml(path, "sweep file"))
    table = document.pop("sweep", None)
    if not isinstance(table, dict):
        raise ConfigError(
            f"{path}: a sweep file needs a [sweep] table with lists, e.g. banks = [50, 500] and epsilon = [1.0, 3.0]"
        )
    unknown = sorted(set(table) - set(GRID_KEYS) - set(SEED_KEYS) - set(OTHER_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key '{unknown[0]}' in [sweep]; valid keys: "
            f"{', '.join([*GRID_KEYS, *SEED_KEYS, *OTHER_KEYS])}"
        )
    base_values = config_values(document, str(path))
    axes: dict[str, list[Any]] = {}
    for key in GRID_KEYS:
        values = table.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{path}: [sweep] {key} must be a non-empty list, e.g. {key} = "
                f"{'[50, 500]' if key == 'banks' else '[1.0, 3.0]'}"
            )
        axes[key] = values
    seeds = _seeds(table, base_values.get("seed", SimulationConfig.seed), path)
    if not axes and len(seeds) < 2:
        raise ConfigError(
            f"{path}: [sweep] lists no axis: give at least one of {', '.join(GRID_KEYS)}, or seeds / repeats"
        )
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
            config = replace(SimulationConfig(), **{**base_values, **varied})
        except ConfigError as error:
            raise ConfigError(f"{path}: sweep point {point} is invalid: {error}") from None
        points.extend(replace(config, seed=seed) for seed in seeds)
    from fedsilo.simulations.api import check_inputs

    for data in {p.data for p in points}:
        check_inputs(data)  # before any cluster starts
    return SweepPlan(points, out, address, tuple(names), seeds)


def _seeds(table: dict[str, Any], base_seed: int, path: str | Path) -> tuple[int, ...]:
    """`seeds = [0, 1, 2]`, or `repeats = N` (the base seed and the N − 1 after it), or the base seed."""
    if "seeds" in table and "repeats" in table:
        raise ConfigError(f"{path}: [sweep] gives both seeds and repeats: give one (seeds = [0, 1, 2] or repeats = 3)")
    if "seeds" in table:
        seeds = table["seeds"]
        if (
            not isinstance(seeds, list)
            or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise ConfigError(
                f"{path}: [sweep] seeds must be a non-empty list of distinct integers, e.g. "
                f"seeds = [0, 1, 2] (got {seeds!r})"
            )
        return tuple(seeds)
    if "repeats" in table:
        repeats = table["repeats"]
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ConfigError(f"{path}: [sweep] repeats must be a whole number ≥ 1, e.g. repeats = 3 (got {repeats!r})")
        return tuple(base_seed + i for i in range(repeats))
    return (base_seed,)


def _sections(point: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A grid point as a simulate TOML document ({"dp": {"epsilon": 3.0}, ...})."""
    document: dict[str, dict[str, Any]] = {}
    for name, value in point.items():
        section, key = GRID_KEYS[name]
        document.setdefault(section, {})[key] = value
    return document


def yardstick_keys(config: SimulationConfig) -> dict[str, tuple[Any, ...]]:
    """What each yardstick of `config` depends on: equal keys, equal yardstick (see the module docstring).

    Only the horizontal setup's centralized and local-only yardsticks are shared.
    """
    if config.setup != "horizontal":
        return {}
    data = (
        config.data,
        config.label,
        config.id_column,
        config.partition,
        config.customers,
        config.banks,
        config.seed,
        config.test_fraction,
        config.yardstick_banks,
        config.model,
        config.hidden,
    )
    training = (
        config.rounds,
        config.local_epochs,
        config.batch_size,
        config.lr,
        config.dp_mode,
        config.epsilon,
        config.delta,
        config.max_grad_norm,
        config.accountant,
    )
    keys = {"centralized": data, "local": data + training}
    return {name: key for name, key in keys.items() if name in config.yardsticks}


def run_sweep(plan: SweepPlan, progress: Progress, mlflow: str | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Run every point on one Ray runtime; write the tables and the plot; return the folder and the runs."""
    from fedsilo.simulations.api import simulate
    from fedsilo.simulations.ray_cluster import LocalRayCluster
    from fedsilo.simulations.report.plots import plot_sweep

    rows: list[dict[str, Any]] = []
    known: dict[tuple[str, tuple[Any, ...]], float | None] = {}  # (yardstick, its key) -> AUC
    cluster = nullcontext(None) if plan.ray_address else LocalRayCluster(cpus=os.cpu_count() or 1)
    with RunFolder(plan.out, name=new_run_name("sweep")) as folder:
        folder_path = folder.path
        with cluster as started:
            address = plan.ray_address or started.address
            if started is not None:
                progress.stage(f"Started a local Ray cluster for the sweep at {address}")
            for i, point in enumerate(plan.points, 1):
                keys = yardstick_keys(point)
                missing = tuple(name for name, key in keys.items() if (name, key) not in known)
                compare = point.yardsticks if not keys else missing
                config = replace(point, ray_address=address, out=str(folder_path / "runs"), compare=compare)
                progress.stage(
                    f"Sweep run {i}/{len(plan.points)}: {config.setup}, {config.banks} banks, "
                    f"ε = {config.epsilon:g}, dropout {config.dropout:g}, seed {config.seed}"
                    + (f" (yardsticks {', '.join(compare)})" if compare else "")
                )
                started_at = time.perf_counter()
                summary = simulate(config, progress=progress, mlflow=mlflow).summary
                found = {"centralized": summary.centralized_auc, "local": summary.local_auc_mean}
                for name in missing:
                    known[(name, keys[name])] = found[name]
                yardstick = (
                    {name: known[(name, key)] if (name, key) in known else found[name] for name, key in keys.items()}
                    if keys
                    else found
                )
                rows.append(
                    {
                        "setup": config.setup,
                        "banks": summary.banks,
                        "epsilon": config.epsilon,
                        "dropout": config.dropout,
                        "final_auc": summary.final_auc,
                        "centralized_auc": yardstick.get("centralized"),
                        "local_auc_mean": yardstick.get("local"),
                        "epsilon_max": summary.epsilon_max,
                        "seconds": round(time.perf_counter() - started_at, 1),
                        "lr": config.lr,
                        "rounds": config.rounds,
                        "partition": config.partition or "iid",
                        "model": config.model,
                        "seed": config.seed,
                        "run_dir": str(Path("runs") / Path(summary.run_dir).name),
                    }
                )
        points = summarize(rows)
        _write_table(folder_path / "results.csv", COLUMNS, rows)
        (folder_path / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        _write_table(folder_path / "summary.csv", SUMMARY_COLUMNS, points)
        (folder_path / "summary.json").write_text(json.dumps(points, indent=2) + "\n")
        plot_sweep(folder_path / "utility.png", points, plan.axes)
    return folder.final, rows


def _write_table(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per grid point, in first-run order: mean and sample standard deviation over its seeds.

    A measure missing from every run of a point (a yardstick not asked for) is None; the
    standard deviation is None with fewer than two values. `epsilon_max` is the largest
    ε any bank spent in any of the point's runs.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[c] for c in GRID_COLUMNS), []).append(row)
    points = []
    for key, runs in groups.items():
        point: dict[str, Any] = dict(zip(GRID_COLUMNS, key))
        point["runs"] = len(runs)
        point["seeds"] = [r["seed"] for r in runs]
        for measure in MEASURED:
            values = [float(r[measure]) for r in runs if r[measure] is not None and math.isfinite(r[measure])]
            point[f"{measure}_mean"] = round(sum(values) / len(values), 6) if values else None
            point[f"{measure}_std"] = round(_sample_std(values), 6) if len(values) > 1 else None
        point["epsilon_max"] = max(r["epsilon_max"] for r in runs)
        points.append(point)
    return points


def _sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_table(points: list[dict[str, Any]], axes: tuple[str, ...] = ()) -> str:
    """The grid points as aligned text, one line each: mean ± standard deviation over seeds.

    Columns: setup, banks, ε, dropout, and any other varied axis (lr, rounds, partition, model).
    """
    extra = [a for a in ("lr", "rounds", "partition", "model") if a in axes]
    head = (
        f"{'setup':<11}{'banks':>7}{'ε':>7}{'dropout':>9}"
        + "".join(f"{a:>15}" for a in extra)
        + f"{'seeds':>7}{'federated':>18}{'central':>18}{'local':>18}{'ε spent':>9}"
    )
    lines = [head]
    for p in points:
        lines.append(
            f"{p['setup']:<11}{p['banks']:>7}{p['epsilon']:>7g}{p['dropout']:>9g}"
            + "".join(f"{str(p[a]):>15}" for a in extra)
            + f"{p['runs']:>7}{_pm(p, 'final_auc'):>18}{_pm(p, 'centralized_auc'):>18}"
            f"{_pm(p, 'local_auc_mean'):>18}{p['epsilon_max']:>9.3f}"
        )
    return "\n".join(lines)


def _pm(point: dict[str, Any], measure: str) -> str:
    mean, std = point[f"{measure}_mean"], point[f"{measure}_std"]
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of simulations (banks × ε × dropout × lr × … × seeds) on one Ray runtime",
        description="Run every point of a grid of simulations, once per seed, on one Ray runtime and "
        "write the runs' table, the grid points' mean ± standard deviation (CSV, JSON) "
        "and one plot (federated ROC-AUC against ε with error bars, yardsticks as lines).",
        epilog="CONFIG is a simulate config plus [sweep] banks, epsilon, dropout, setup, lr, rounds, "
        "partition, model (lists), seeds (a list) or repeats (a count), out, ray-address; "
        "see docs/scale.md, section Sweeps.",
    )
    p.add_argument("config", metavar="CONFIG", help="TOML file with a [sweep] table")
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="log every run to MLflow (default store: ./mlruns; needs pip install 'fedsilo[mlflow]')",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--json", action="store_true", help='print {"runs": [...], "points": [...]} as JSON as the last line of stdout'
    )
    p.set_defaults(handler=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from fedsilo.simulations.progress import Progress

    plan = load_sweep(args.config)
    if args.mlflow is not None:
        from fedsilo.simulations.tracking import check_available

        check_available()
    folder, rows = run_sweep(plan, Progress(quiet=args.quiet), mlflow=args.mlflow)
    points = summarize(rows)
    print(f"sweep folder: {folder}")
    print(format_table(points, plan.axes))
    print(f"runs: {folder / 'results.csv'}   points: {folder / 'summary.csv'}   plot: {folder / 'utility.png'}")
    if args.json:
        print(json.dumps({"runs": rows, "points": points}))
    return 0
