"""fedsilo's Python API: what the command line does, a notebook can do.

    import fedsilo
    result = fedsilo.simulate(banks=3, rounds=2, epsilon=2.0)   # as `fedsilo simulate --banks 3 ...`
    result.final_auc, result.epsilon, result.rounds, result.paths.model
    model = fedsilo.load_run(result.run_dir)                     # or a `fedsilo model pull` folder
    scores = model.score(df)                                     # as `fedsilo score`
    sweep = fedsilo.sweep("sweep.toml")                          # as `fedsilo sweep`

These names are stable: the CLI (`simulations/cli.py`, `simulations/sweep.py`,
`simulations/score_cli.py`) is built on them. `simulate` takes the settings of
`fedsilo simulate` as keyword arguments named like the flags (`banks`, `rounds`,
`epsilon`, `data`, `label`, `id_column`, `dp_mode`, ...: the fields of
`SimulationConfig`, listed in `fedsilo.simulations.settings`), or a `SimulationConfig`, or a TOML file's path, with keywords
overriding the file. Bad input raises the project's own exceptions
(`fedsilo.errors.FedsiloError`) before anything is trained or written.

This module imports nothing heavy at import time (torch, Flower and Ray are imported
by the functions that use them), so that `import fedsilo` and `fedsilo --help` are quick.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.errors import ConfigError, DataError
from fedsilo.process import set_process_defaults

if TYPE_CHECKING:
    from fedsilo.simulations.config import SimulationConfig
    from fedsilo.simulations.progress import Progress
    from fedsilo.simulations.runner import RunSummary
    from fedsilo.simulations.scoring import ScoringModel

__all__ = ["RoundMetrics", "RunPaths", "SimulationResult", "SweepResult", "load_run", "simulate", "sweep"]


@dataclass(frozen=True)
class RoundMetrics:
    """One round of a horizontal run: the global model on the pooled held-out rows, ε spent so far (max over banks)."""

    round: int
    auc: float | None
    loss: float | None
    epsilon_max: float | None


@dataclass(frozen=True)
class RunPaths:
    """The files of a run folder."""

    folder: Path
    card: Path
    model: Path
    encoder: Path | None  # None for a transfer run: each institution keeps its own
    metrics: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class SimulationResult:
    """What `simulate` returns: the CLI's summary, ε per bank, the per-round metrics, the paths."""

    config: SimulationConfig
    summary: RunSummary
    epsilon: dict[str, float]  # ε each bank (institution) spent, by name, as its ledger committed it
    rounds: tuple[RoundMetrics, ...]
    paths: RunPaths
    card: dict[str, Any]
    privacy_audit: dict[str, Any] | None = None  # with audit=True: the card's measured_privacy section

    @property
    def run_dir(self) -> Path:
        return self.paths.folder

    @property
    def final_auc(self) -> float:
        return self.summary.final_auc

    @property
    def centralized_auc(self) -> float | None:
        return self.summary.centralized_auc

    @property
    def local_auc_mean(self) -> float | None:
        return self.summary.local_auc_mean

    def load(self, identity: str | Path | None = None) -> ScoringModel:
        """The run's model, verified, ready to `.score(df)` (as `load_run(result.run_dir)`)."""
        return load_run(self.paths.folder, identity)


@dataclass(frozen=True)
class SweepResult:
    """What `sweep` returns: the sweep folder, one row per run, one row per grid point (mean ± std over seeds)."""

    folder: Path
    runs: list[dict[str, Any]]
    points: list[dict[str, Any]]
    axes: tuple[str, ...]


def simulate(
    config: SimulationConfig | str | Path | None = None,
    *,
    progress: bool | Progress = False,
    mlflow: str | None = None,
    **options: Any,
) -> SimulationResult:
    """Run one simulation, as `fedsilo simulate`; `options` are `SimulationConfig` fields (None: unset).

    `progress=True` shows the progress display on stderr. `audit=True` runs the privacy
    self-audit on the run folder afterwards (`result.privacy_audit`; `PrivacyAuditFailed`,
    carrying the run as `.result`, when it fails). `mlflow` logs the run to an MLflow
    store (`""`: ./mlruns; see `fedsilo.simulations.tracking`). Raises `FedsiloError` on bad
    input before anything is trained or written.
    """
    set_process_defaults()  # before Flower is first imported: it reads its telemetry switch then
    if config is None or isinstance(config, (str, Path)):
        check_inputs(options.get("data"), config)  # a wrong path is refused before the slow imports
    from fedsilo.simulations.config import SimulationConfig

    names = {f.name for f in fields(SimulationConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(
            f"fedsilo.simulate() got unknown setting(s) {', '.join(unknown)}; valid settings: "
            f"{', '.join(sorted(names))}"
        )
    if mlflow is not None:
        from fedsilo.simulations.tracking import check_available

        check_available()
    from fedsilo.simulations.config import build_config

    if isinstance(config, SimulationConfig):
        given = {k: v for k, v in options.items() if v is not None}
        config = build_config(None, {**config.to_dict(), **given}) if given else config
    else:
        config = build_config(config, options)
    check_inputs(config.data)
    progress = _progress(progress)
    if config.reproducible and config.dp_mode != "off":
        print(
            f"warning: --reproducible seeds the DP noise with --seed {config.seed}: this run's noise can be "
            "regenerated by anyone with the seed, so it is NOT private (research use only)",
            file=sys.stderr,
        )
    if config.setup == "transfer":
        from fedsilo.simulations.transfer import simulate_transfer as run
    elif config.setup == "vertical":
        from fedsilo.simulations.vertical import simulate_vertical as run
    elif config.model == "gbdt":
        from fedsilo.simulations.gbdt_runner import simulate_gbdt as run
    else:
        from fedsilo.simulations.runner import simulate as run
    summary = run(config, progress)
    result = _result(config, summary)
    try:
        if config.audit:
            result = _audited(result, progress)
    finally:  # a FAILED audit is logged too: the card holds the failed measurement
        if mlflow is not None:
            from fedsilo.simulations.tracking import log_run

            log_run(result.run_dir, mlflow)
    return result


def _audited(result: SimulationResult, progress: Progress) -> SimulationResult:
    """`audit=True`: the privacy self-audit on the fresh run folder (as `fedsilo audit-privacy`).

    On a FAILED audit the `PrivacyAuditFailed` carries the run as `.result` (its card
    holds the failed measurement) and is raised.
    """
    from dataclasses import replace

    from fedsilo.errors import PrivacyAuditFailed
    from fedsilo.simulations.privacy_audit import audit_run

    try:
        section = audit_run(result.run_dir, progress=progress)
    except PrivacyAuditFailed as failed:
        failed.result = replace(result, card=_card(result.run_dir))
        raise
    return replace(result, card=_card(result.run_dir), privacy_audit=section)


def _card(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "model_card.json").read_text())


def check_inputs(data: str | Path | None, config_file: str | Path | None = None) -> None:
    """The cheap checks that need no engine: the config file and the data file exist (raises before imports).

    With only `config_file`, its `[data] path` is checked too.
    """
    if config_file is not None:
        from fedsilo.peers.toml_file import read_toml

        document = read_toml(Path(config_file), "config file")
        table = document.get("data")
        if data is None and isinstance(table, dict) and isinstance(table.get("path"), str):
            data = table["path"]
    if data is None:
        return
    path = Path(data)
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a file: give the path of a .csv or .parquet file")


def load_run(path: str | Path, identity: str | Path | None = None) -> ScoringModel:
    """A run folder's (or a pulled model folder's) model and encoder, checked against the card's SHA-256.

    `.score(df)` gives one probability per row; see `fedsilo.simulations.scoring`. `identity`
    (your identity directory) also checks a pulled model's card signature.
    """
    from fedsilo.simulations.scoring import load_run as load

    return load(path, identity)


def sweep(config_file: str | Path, *, progress: bool | Progress = False, mlflow: str | None = None) -> SweepResult:
    """Run a sweep file, as `fedsilo sweep` (see `fedsilo.simulations.sweep`)."""
    set_process_defaults()
    from fedsilo.simulations.sweep import load_sweep, run_sweep, summarize

    plan = load_sweep(config_file)
    if mlflow is not None:
        from fedsilo.simulations.tracking import check_available

        check_available()
    folder, runs = run_sweep(plan, _progress(progress), mlflow=mlflow)
    return SweepResult(folder, runs, summarize(runs), plan.axes)


def _progress(progress: bool | Progress) -> Progress:
    if isinstance(progress, bool):
        from fedsilo.simulations.progress import Progress

        return Progress(quiet=not progress)
    return progress


def _result(config: SimulationConfig, summary: RunSummary) -> SimulationResult:
    folder = Path(summary.run_dir)
    card = _card(folder)
    epsilon = {str(p["name"]): float(p.get("epsilon_spent") or 0.0) for p in card.get("participants", [])}
    metrics = json.loads((folder / "metrics.json").read_text())
    rounds = tuple(
        RoundMetrics(
            round=int(r["round"]),
            auc=(r.get("pooled_test") or {}).get("auc"),
            loss=(r.get("pooled_test") or {}).get("loss"),
            epsilon_max=r.get("epsilon_max"),
        )
        for r in metrics.get("rounds", [])
    )
    encoder = folder / "encoder.json"
    paths = RunPaths(
        folder=folder,
        card=folder / "model_card.json",
        model=folder / str(((card.get("artifacts") or {}).get("model") or {}).get("file", "model.safetensors")),
        encoder=encoder if encoder.is_file() else None,
        metrics=folder / "metrics.json",
        plots=tuple(sorted(folder.glob("*.png"))),
    )
    return SimulationResult(config, summary, epsilon, rounds, paths, card)
