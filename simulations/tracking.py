"""Experiment tracking: a finished run folder logged to MLflow (`--mlflow [URI]`).

MLflow is an optional extra (`pip install 'fedsilo[mlflow]'`, the `mlflow-skinny`
client); nothing else in fedsilo imports it. `check_available` is called before a run
starts, so a missing MLflow is refused before any training.

Where: `--mlflow` alone is a local store in `./mlruns` (an SQLite database
`mlruns/mlflow.db` and the artefacts under `mlruns/artifacts`; MLflow 3 keeps its
file-system store in maintenance mode), no server needed; view it with
`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db` (the UI needs the full
`mlflow` package). A directory path is such a store in that directory; a URI with a
scheme (`sqlite:///...`, `http://host:5000`, `databricks`) is passed to MLflow as is.

What: one MLflow run per fedsilo run, in experiment "fedsilo", named after the run
folder: parameters (the run's settings, `SimulationConfig` fields), per-round metrics
(`auc`, `loss` of the global model on the pooled held-out rows, `epsilon_max` and
`epsilon.BANK` per round, the ε each bank had spent by then), the final figures
(`final_auc`, `centralized_auc`, `local_auc_mean`, `epsilon_spent.BANK`), and every
file of the run folder as artefacts. It is read from the run folder after the run, so
it logs exactly what the folder holds.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError

EXPERIMENT = "fedsilo"
DEFAULT_STORE = "mlruns"
DATABASE = "mlflow.db"
BATCH = 1000


def check_available() -> None:
    """Raise ConfigError with the install command when the MLflow client is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "--mlflow needs MLflow's client: pip install 'fedsilo[mlflow]' (or pip install "
            "mlflow-skinny), or leave out --mlflow"
        )


def store(uri: str | None) -> tuple[str, str | None]:
    """(tracking URI, artefact location or None) for `--mlflow [URI]` (see the module docstring)."""
    if uri and "://" in uri or uri == "databricks":
        return str(uri), None
    directory = Path(uri or DEFAULT_STORE).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / DATABASE}", (directory / "artifacts").as_uri()


def log_run(run_dir: str | Path, uri: str | None = None) -> str:
    """Log the run folder `run_dir` to MLflow; returns the MLflow run id."""
    check_available()
    import mlflow
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    card = json.loads((run_dir / "model_card.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tracking_uri, artifact_location = store(uri)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    )
    config = (card.get("job") or {}).get("config") or {}
    run = client.create_run(
        experiment_id,
        run_name=run_dir.name,
        tags={"fedsilo.run_dir": str(run_dir.resolve()), "fedsilo.setup": str(config.get("setup"))},
    )
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[mlflow.entities.Param(k, _param(v)) for k, v in sorted(config.items())])
        logged = _metrics(card, metrics, int(time.time() * 1000))
        for start in range(0, len(logged), BATCH):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(run_id, metrics=logged[start : start + BATCH])
        client.log_artifacts(run_id, str(run_dir))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _param(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _metrics(card: dict[str, Any], metrics: dict[str, Any], now: int) -> list[Any]:
    """Per-round AUC, loss and ε (max and per bank, cumulative), then the run's final figures."""
    from mlflow.entities import Metric

    names = {str(p.get("peer") or p["name"]): str(p["name"]) for p in card.get("participants", [])}
    # A transfer run's card names each institution and its peer (bank-00000); a horizontal run's names the peer.
    out, spent = [], {}
    for entry in metrics.get("rounds", []):
        step = int(entry["round"])
        pooled = entry.get("pooled_test") or {}
        for key in ("auc", "loss"):
            if isinstance(pooled.get(key), (int, float)):
                out.append(Metric(key, float(pooled[key]), now, step))
        for reply in entry.get("train", []):
            if "epsilon" in reply and "bank" in reply:
                spent[int(reply["bank"])] = float(reply["epsilon"])
        for bank, epsilon in spent.items():
            out.append(Metric(f"epsilon.{_bank_name(bank, names)}", epsilon, now, step))
        epsilon_max = entry.get("epsilon_max", max(spent.values(), default=None))
        if epsilon_max is not None:
            out.append(Metric("epsilon_max", float(epsilon_max), now, step))
    final = card.get("metrics") or {}
    for key, name in (
        ("final_auc_pooled_test", "final_auc"),
        ("centralized_auc", "centralized_auc"),
        ("local_only_auc_mean", "local_auc_mean"),
    ):
        if isinstance(final.get(key), (int, float)):
            out.append(Metric(name, float(final[key]), now, 0))
    for participant in card.get("participants", []):
        if isinstance(participant.get("epsilon_spent"), (int, float)):
            out.append(
                Metric(f"epsilon_spent.{_safe(str(participant['name']))}", float(participant["epsilon_spent"]), now, 0)
            )
    return out


def _bank_name(index: int, names: dict[str, str]) -> str:
    name = f"bank-{index:05d}"  # simulations.population.bank_name
    return _safe(names.get(name, name))


def _safe(name: str) -> str:
    """A metric name MLflow accepts: letters, digits, _ - . / and spaces."""
    return re.sub(r"[^\w\-./ ]", "_", name)
