"""The configuration of one simulation, from defaults, a TOML file and CLI flags.

Precedence: defaults < `--config FILE` < flags. Every setting, its TOML section and key
and its flag are declared once, in `fedsilo.simulations.settings` (`python -m
fedsilo.simulations.settings` prints them as a table). The defaults are
`SimulationConfig`'s; those of the job's settings (rounds, training, DP, secure
aggregation, model) are the job's specs' (`TrainSpec`, `DPSpec`, `SecAggSpec`,
`ModelSpec`), not restated here.

With no file and no flags the defaults describe a small run on the embedded synthetic
generator. Unknown sections or keys, and values of the wrong type, raise
`ConfigError` naming the key and listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.peers.job import DPSpec, JobConfig, SecAggSpec, TrainSpec
from fedsilo.peers.model_spec import MODEL_KINDS, ModelSpec
from fedsilo.peers.toml_file import read_toml
from fedsilo.simulations.settings import BY_NAME, toml_keys

COMPARISONS = ("centralized", "local", "common")
SETUPS = ("horizontal", "transfer", "vertical")
# The network job's model kinds, and gbdt, which trains in simulation only so far.
SIMULATION_MODELS = (*MODEL_KINDS, "gbdt")

# TOML (section, key) -> SimulationConfig field
TOML_KEYS: dict[tuple[str, str], str] = toml_keys()

SYNTHETIC_LABEL = "default"


@dataclass(frozen=True)
class SimulationConfig:
    """All settings of a `fedsilo simulate` run, validated on construction.

    Each field is a row of `fedsilo.simulations.settings.SETTINGS` (its TOML key, flag,
    kind and help); a job setting's default is its spec's.
    """

    banks: int = 5
    rounds: int = TrainSpec.rounds
    seed: int = TrainSpec.seed
    out: str = "runs"
    strategy: str = JobConfig.strategy
    compare: tuple[str, ...] | None = None  # None: the setup's default yardsticks
    data: str | None = None
    label: str | None = None
    id_column: str | None = None
    positive: str | None = None  # the label value that means the event to predict
    keep_columns: tuple[str, ...] = ()  # id-like columns to keep as features
    partition: str | None = None
    customers: int | None = None  # None: small banks, max(5,000, 200 per bank) (synthetic.simulate_total_customers)
    model: str = ModelSpec.kind
    hidden: tuple[int, ...] = ModelSpec.hidden
    embedding_width: int = 4  # vertical: width of each party's bottom-model output
    frozen_bottoms: bool = False  # vertical: feature parties keep their data-independent bottoms, release once
    vertical_scheme: str = "coded"  # vertical: "split" (embeddings/gradients every step) or "coded" (one code per row)
    trees: int = 30  # --model gbdt: trees, their depth, histogram bins per numeric column
    depth: int = 2
    bins: int = 16
    features_per_tree: int = 6  # 0: every column; else each tree splits on this many columns drawn by the host
    splits: str = "histogram"  # --model gbdt: "histogram" (chosen from noisy histograms) or "random" (public draws)
    local_epochs: int = TrainSpec.local_epochs
    batch_size: int = TrainSpec.batch_size
    lr: float = TrainSpec.lr
    test_fraction: float = TrainSpec.test_fraction
    dp_mode: str = DPSpec.mode
    epsilon: float = DPSpec.epsilon
    delta: float = DPSpec.delta
    max_grad_norm: float = DPSpec.max_grad_norm
    accountant: str = DPSpec.accountant
    secure_aggregation: str = SecAggSpec.mode
    secagg_clip: float = SecAggSpec.clip
    secagg_dropout_fraction: float = SecAggSpec.dropout_fraction
    secagg_collusion_fraction: float = SecAggSpec.collusion_fraction
    dropout: float = 0.0
    setup: str = "horizontal"
    scenario: str | None = None
    overlap: float | None = None  # None: the scenario's own (0 for the ready ones)
    shared: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    base_model: str | None = None
    audit: bool = False  # run `fedsilo audit-privacy` on the run folder at the end
    # research mode: DP-SGD's sampling and noise seeded by `seed` (replayable, so not private);
    # data, partitions, splits and initial weights follow `seed` either way
    reproducible: bool = DPSpec.reproducible
    sample: int | float | None = None  # None: every bank in every round
    ray_address: str | None = None
    cpus_per_bank: float = 1.0
    engine: str | None = None  # flower (Simulation Engine) or in-process; None: `runs_on`'s default
    dropout_concentration: float = 0.0
    yardstick_banks: int = 100

    def __post_init__(self) -> None:
        if self.setup not in SETUPS:
            raise ConfigError(f"--setup '{self.setup}' is unknown: use {' or '.join(SETUPS)}")
        if self.setup == "transfer" and "centralized" in self.yardsticks:
            raise ConfigError(
                "--compare centralized needs one schema for all banks: with --setup transfer use local,common"
            )
        if self.setup == "horizontal" and "common" in self.yardsticks:
            raise ConfigError("--compare common is the transfer setup's yardstick: use centralized,local here")
        if self.setup == "transfer" and self.model != "mlp":
            raise ConfigError(
                "--setup transfer needs --model mlp: its first layer is each institution's private encoder"
            )
        if self.setup == "transfer" and self.data is not None and not self.scenario:
            raise ConfigError(
                "--setup transfer with --data needs --scenario FILE.toml (or 'uci' for the UCI "
                "credit-card file) declaring each institution's columns"
            )
        if self.banks < 1:
            raise ConfigError(f"--banks must be ≥ 1 (got {self.banks})")
        if self.customers is not None and self.customers < 1:
            raise ConfigError(f"data.customers must be ≥ 1 (got {self.customers})")
        unknown = [c for c in self.yardsticks if c not in COMPARISONS]
        if unknown:
            raise ConfigError(f"--compare: unknown yardstick {unknown[0]!r}; use {','.join(COMPARISONS)}")
        if self.data is not None and not self.label and self.setup not in ("transfer", "vertical"):
            raise ConfigError(f"--data {self.data} needs --label COLUMN naming the 0/1 target column")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"--dropout must be in [0, 1) (got {self.dropout}): the share of banks vanishing per round"
            )
        if self.audit and self.setup == "transfer":
            raise ConfigError("--audit supports the horizontal and vertical setups (not transfer: one model per bank)")
        if self.sample is not None:
            if isinstance(self.sample, float) and not 0.0 < self.sample <= 1.0:
                raise ConfigError(
                    f"--sample {self.sample}: a fraction of the banks must be in (0, 1]; "
                    "give a whole number for a count of banks"
                )
            if isinstance(self.sample, int) and not 1 <= self.sample <= self.banks:
                raise ConfigError(f"--sample {self.sample}: sample between 1 and the {self.banks} banks per round")
        if not (self.cpus_per_bank > 0):
            raise ConfigError(f"--cpus-per-bank must be > 0 (got {self.cpus_per_bank}), e.g. 1 or 0.5")
        if self.dropout_concentration < 0:
            raise ConfigError(
                f"--dropout-concentration must be ≥ 0 (got {self.dropout_concentration}); "
                "0 gives every bank the same dropout probability"
            )
        if self.yardstick_banks < 1:
            raise ConfigError(f"--yardstick-banks must be ≥ 1 (got {self.yardstick_banks})")
        if self.overlap is not None and (self.setup == "horizontal" or not 0.0 <= self.overlap < 1.0):
            raise ConfigError(
                f"--overlap {self.overlap}: customers shared between institutions apply to "
                "--setup transfer, as a probability in [0, 1) (and to --setup vertical)"
            )
        if self.splits not in ("histogram", "random"):
            raise ConfigError(f"--splits is histogram or random, got {self.splits!r}")
        if self.vertical_scheme not in ("split", "coded"):
            raise ConfigError(f"--vertical-scheme is split or coded, got {self.vertical_scheme!r}")
        if self.engine not in (None, "flower", "in-process"):
            raise ConfigError(f"--engine {self.engine!r} is unknown: use flower or in-process")
        if self.engine == "in-process" and self.setup != "vertical" and self.model != "gbdt":
            raise ConfigError(
                "--engine in-process applies to --setup vertical and --model gbdt; the neural horizontal and "
                "transfer setups run on flower"
            )
        if self.embedding_width < 1:
            raise ConfigError(f"--embedding-width must be ≥ 1 (got {self.embedding_width})")
        if self.data is None and self.id_column:
            raise ConfigError("--id-column applies to --data files only")
        if self.data is None and (self.positive is not None or self.keep_columns):
            raise ConfigError("--positive and --keep-column apply to --data files only")
        if self.model == "gbdt":
            _check_gbdt(self)
        elif self.splits != "histogram":
            raise ConfigError("--splits applies to --model gbdt only")
        self.job()  # validates model, training and DP settings

    @property
    def runs_on(self) -> str:
        """Where the parties run: `engine` as given, else in-process for horizontal gbdt (its Flower
        app pair is slower, docs/gbdt.md) and flower for everything else."""
        if self.engine is not None:
            return self.engine
        return "in-process" if self.model == "gbdt" and self.setup == "horizontal" else "flower"

    @property
    def per_round(self) -> int:
        """Banks sampled per round: `sample` as a count, a fraction of `banks`, or all."""
        if self.sample is None:
            return self.banks
        if isinstance(self.sample, float):
            return max(1, round(self.sample * self.banks))
        return self.sample

    @property
    def yardsticks(self) -> tuple[str, ...]:
        """What to compare against: `compare`, or centralized,local (horizontal) / local,common (transfer)."""
        if self.compare is not None:
            return self.compare
        return ("local", "common") if self.setup == "transfer" else ("centralized", "local")

    @property
    def shared_parameters(self) -> tuple[str, ...]:
        """Prefixes of the aggregated parameters: all (horizontal) or all but the encoder (transfer)."""
        if self.shared:
            return tuple(self.shared)
        return ("shared_input", "hidden", "head") if self.setup == "transfer" else ()

    @property
    def label_column(self) -> str:
        return self.label if self.data is not None else (self.label or SYNTHETIC_LABEL)

    def job(
        self,
        encoder_path: str = "",
        banks_dir: str = "",
        job_id: str = "simulation",
        max_weight: float = SecAggSpec.max_weight,
        public_rows: int = 1,
        shared_features: int = 0,
    ) -> JobConfig:
        """The job every simulated bank runs; `max_weight` bounds a bank's training rows."""
        return JobConfig(
            label=self.label_column,
            encoder_path=encoder_path,
            banks_dir=banks_dir,
            job_id=job_id,
            strategy=self.strategy,
            peers=self.banks,
            sample=self.per_round,
            public_rows=public_rows,
            shared=self.shared_parameters,
            freeze=tuple(self.freeze),
            base_model=self.base_model or "",
            # gbdt runs outside the network job (simulations/gbdt_runner.py): the job only carries its DP settings
            model=ModelSpec(
                kind="logreg" if self.model == "gbdt" else self.model,
                hidden=tuple(self.hidden),
                shared_features=shared_features,
            ),
            train=TrainSpec(
                rounds=self.rounds,
                local_epochs=self.local_epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                seed=self.seed,
                test_fraction=self.test_fraction,
            ),
            dp=DPSpec(
                mode=self.dp_mode,
                epsilon=self.epsilon,
                delta=self.delta,
                max_grad_norm=self.max_grad_norm,
                accountant=self.accountant,
                reproducible=self.reproducible,
            ),
            secagg=SecAggSpec(
                mode=self.secure_aggregation,
                clip=self.secagg_clip,
                max_weight=max_weight,
                dropout_fraction=self.secagg_dropout_fraction,
                collusion_fraction=self.secagg_collusion_fraction,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def _check_gbdt(config: SimulationConfig) -> None:
    """--model gbdt: horizontal, or vertical with the coded scheme; sane trees/depth/bins."""
    if config.setup == "transfer":
        raise ConfigError("--model gbdt supports the horizontal and vertical setups (not transfer)")
    if config.setup == "vertical" and config.vertical_scheme != "coded":
        raise ConfigError(
            "--setup vertical --model gbdt boosts on the bank's ε-DP codes: use --vertical-scheme coded "
            "(the split scheme trains neural bottoms; SecureBoost's comparison is bench/vertical_gbdt.py)"
        )
    if config.setup == "vertical" and config.splits != "histogram":
        raise ConfigError("--splits random is the horizontal setup's: the vertical boosting chooses its splits")
    if config.audit:
        raise ConfigError("--audit supports the neural models only; a gbdt run has no membership split")
    if not 1 <= config.trees <= 1000:
        raise ConfigError(f"--trees must be in [1, 1000] (got {config.trees})")
    if not 1 <= config.depth <= 8:
        raise ConfigError(f"--depth must be in [1, 8] (got {config.depth})")
    if not 2 <= config.bins <= 256:
        raise ConfigError(f"--bins must be in [2, 256] (got {config.bins})")
    if config.features_per_tree < 0:
        raise ConfigError(f"--features-per-tree must be ≥ 0, 0 for every column (got {config.features_per_tree})")


def _coerce(name: str, value: Any, where: str) -> Any:
    """Convert a TOML or flag value to the kind of setting `name` (see settings.KINDS), or say what is wrong."""
    kind = BY_NAME[name].kind
    if kind == "sample":
        return _sample(value, where)
    if kind == "label":
        if isinstance(value, (dict, list)):
            raise ConfigError(f'{where} must be one label value, e.g. "bad" or 1, got {value!r}')
        return str(value).lower() if isinstance(value, bool) else str(value)
    if kind in ("names", "widths"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        try:
            if kind == "widths":
                return tuple(int(i) for i in items)
            return tuple(str(i).strip() for i in items if str(i).strip() and str(i).strip() != "none")
        except ValueError:
            raise ConfigError(f"{where} must list integers, got {value!r}") from None
    if kind == "text":
        if value is not None and not isinstance(value, (str, Path)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return None if value is None else str(value)
    expected = {"int": int, "float": float, "bool": bool, "str": str}[kind]
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ConfigError(f"{where} must be {expected.__name__}, got {value!r}")
    return value


def _sample(value: Any, where: str) -> int | float:
    """A count of banks (a whole number) or a fraction of them (a number with a point)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise ConfigError(
                f"{where} must be a count of banks (e.g. 100) or a fraction (e.g. 0.1), got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a count of banks (e.g. 100) or a fraction (e.g. 0.1), got {value!r}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into SimulationConfig field values."""
    return config_values(read_toml(Path(path), "config file"), str(path))


def config_values(document: Mapping[str, Any], where: str) -> dict[str, Any]:
    """SimulationConfig field values from a parsed TOML document (`where` names it in errors)."""
    sections = sorted({s for s, _ in TOML_KEYS})
    values: dict[str, Any] = {}
    for section, table in document.items():
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(f"{where}: unknown section [{section}]; valid sections: {', '.join(sections)}")
        for key, value in table.items():
            name = TOML_KEYS.get((section, key))
            if name is None:
                valid = ", ".join(k for s, k in TOML_KEYS if s == section)
                raise ConfigError(f"{where}: unknown key '{key}' in [{section}]; valid keys: {valid}")
            values[name] = _coerce(name, value, f"[{section}] {key}")
    return values


def build_config(toml_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SimulationConfig:
    """Defaults, then the TOML file, then `overrides` (flags that were given)."""
    values: dict[str, Any] = load_toml(toml_path) if toml_path else {}
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return replace(SimulationConfig(), **values) if values else SimulationConfig()
