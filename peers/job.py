"""A training job's configuration, as it travels in Flower's run config.

One `JobConfig` describes what every peer does in a job: the model, the local training,
the differential-privacy target and where the job's shared artefacts (the feature
encoder) are. It is flattened into Flower's run config (`"dp.epsilon"`, ...) so that
the same ClientApp and ServerApp read it unchanged under the Simulation Engine and the
Deployment Engine. Every value is checked on construction; a bad one raises
`ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from peers.models import ModelSpec
from privacy.accounting import Mechanism, calibrate_noise
from privacy.dpsgd import steps_per_epoch
from privacy.errors import ConfigError
from privacy.secagg import SecAggConfig

DP_MODES = ("local", "off")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DPSpec:
    """Local differential privacy of each peer's released updates, over the whole job."""

    mode: str = "local"
    epsilon: float = 3.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        _require(self.mode in DP_MODES, f"dp.mode '{self.mode}' is unknown: use one of {', '.join(DP_MODES)}")
        _require(math.isfinite(self.epsilon) and self.epsilon > 0,
                 f"dp.epsilon must be > 0 (got {self.epsilon}); use --no-dp for a non-private run")
        _require(math.isfinite(self.delta) and 0 < self.delta < 1,
                 f"dp.delta must be in (0, 1) (got {self.delta}); 1e-5 or 1/(10·rows) are usual")
        _require(self.max_grad_norm > 0, f"dp.max-grad-norm must be > 0 (got {self.max_grad_norm})")
        _require(self.accountant in ("rdp", "prv"), f"dp.accountant '{self.accountant}' is unknown: use rdp or prv")

    @property
    def private(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class TrainSpec:
    """Rounds and local optimisation; `batch_size` is the expected Poisson batch."""

    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 128
    lr: float = 0.5
    seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        _require(self.rounds >= 1, f"rounds must be ≥ 1 (got {self.rounds})")
        _require(self.local_epochs >= 1, f"local epochs must be ≥ 1 (got {self.local_epochs})")
        _require(self.batch_size >= 1, f"batch size must be ≥ 1 (got {self.batch_size})")
        _require(math.isfinite(self.lr) and self.lr > 0, f"learning rate must be > 0 (got {self.lr})")
        _require(0 < self.test_fraction < 1, f"test fraction must be in (0, 1) (got {self.test_fraction})")


@dataclass(frozen=True)
class SecAggSpec:
    """Secure aggregation of the job's training rounds (see `strategies.secagg`).

    `clip` bounds each coordinate of a peer's update (trained − global weights) before
    fixed-point encoding with `bits` of precision; `max_weight` is a public upper bound
    on a peer's weight (its training rows); `dropout_fraction` and
    `collusion_fraction` are the targets from which the graph degree and threshold
    are derived.
    """

    mode: str = "on"
    clip: float = 8.0
    bits: int = 24
    max_weight: float = 1_000_000.0
    dropout_fraction: float = 0.3
    collusion_fraction: float = 0.1

    def __post_init__(self) -> None:
        _require(self.mode in ("on", "off"), f"secure-aggregation '{self.mode}' is unknown: use on or off")
        _require(math.isfinite(self.clip) and self.clip > 0, f"secagg.clip must be > 0 (got {self.clip})")
        _require(self.max_weight > 0, f"secagg.max-weight must be > 0 (got {self.max_weight})")
        _require(0 <= self.dropout_fraction < 1, f"secagg.dropout-fraction must be in [0, 1) (got {self.dropout_fraction})")
        _require(0 <= self.collusion_fraction < 1,
                 f"secagg.collusion-fraction must be in [0, 1) (got {self.collusion_fraction})")

    @property
    def enabled(self) -> bool:
        return self.mode == "on"


@dataclass(frozen=True)
class JobConfig:
    """Everything a peer needs to take part in one training job."""

    label: str
    encoder_path: str
    banks_dir: str = ""
    job_id: str = "job"
    strategy: str = "fedavg"
    peers: int = 1
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    dp: DPSpec = field(default_factory=DPSpec)
    secagg: SecAggSpec = field(default_factory=SecAggSpec)

    def __post_init__(self) -> None:
        _require(self.peers >= 1, f"a job needs at least one peer (got {self.peers})")

    def to_run_config(self) -> dict[str, Any]:
        """Flatten into Flower run-config scalars."""
        flat: dict[str, Any] = {
            "job.id": self.job_id,
            "job.strategy": self.strategy,
            "job.peers": self.peers,
            "data.label": self.label,
            "data.encoder": self.encoder_path,
            "data.banks-dir": self.banks_dir,
            "model.kind": self.model.kind,
            "model.hidden": ",".join(str(h) for h in self.model.hidden),
        }
        for prefix, spec in (("train", self.train), ("dp", self.dp), ("secagg", self.secagg)):
            for key, value in asdict(spec).items():
                flat[f"{prefix}.{key.replace('_', '-')}"] = value
        return flat

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "JobConfig":
        """Rebuild from a run config; unknown keys are ignored, missing ones refused."""
        try:
            def section(prefix: str, spec_cls: type) -> Any:
                names = spec_cls.__dataclass_fields__
                return spec_cls(**{
                    name: type(getattr(spec_cls(), name))(config[f"{prefix}.{name.replace('_', '-')}"])
                    for name in names if f"{prefix}.{name.replace('_', '-')}" in config
                })
            return cls(
                job_id=str(config.get("job.id", "job")),
                strategy=str(config.get("job.strategy", "fedavg")),
                peers=int(config.get("job.peers", 1)),
                label=str(config["data.label"]),
                encoder_path=str(config["data.encoder"]),
                banks_dir=str(config.get("data.banks-dir", "")),
                model=ModelSpec(kind=str(config.get("model.kind", "mlp")),
                                hidden=ModelSpec.parse_hidden(str(config.get("model.hidden", "64,32")))),
                train=section("train", TrainSpec),
                dp=section("dp", DPSpec),
                secagg=section("secagg", SecAggSpec),
            )
        except KeyError as missing:
            raise ConfigError(f"run config lacks {missing}: the job host must send it") from None


def secagg_config(job: JobConfig) -> SecAggConfig:
    """The SecAgg+ parameters both the host and every peer derive from the job."""
    return SecAggConfig(clip=job.secagg.clip, bits=job.secagg.bits, max_weight=job.secagg.max_weight,
                        dropout_fraction=job.secagg.dropout_fraction,
                        collusion_fraction=job.secagg.collusion_fraction, session_id=job.job_id.encode())


@dataclass(frozen=True)
class DPPlan:
    """How a peer with `n_train` rows meets the job's (ε, δ) over all rounds."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int

    @property
    def per_round(self) -> Mechanism:
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps_per_round)

    @property
    def whole_job(self) -> Mechanism:
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps_per_round * self.rounds)


def plan_dp(job: JobConfig, n_train: int) -> DPPlan:
    """Noise multiplier that spends exactly the job's ε over all its rounds (RDP/PRV).

    The peer and the job host compute the same plan from public numbers (the job and
    the row count), so the ledger reservation made before the job matches what the
    peer's DP-SGD then spends.
    """
    if n_train < 1:
        raise ConfigError("a bank needs at least one training row")
    q = min(1.0, job.train.batch_size / n_train)
    steps = job.train.local_epochs * steps_per_epoch(q)
    noise = _calibrated_noise(job.dp.epsilon, job.dp.delta, q, steps * job.train.rounds, job.dp.accountant) \
        if job.dp.private else 0.0
    return DPPlan(noise, q, steps, job.train.rounds)


@lru_cache(maxsize=256)
def _calibrated_noise(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> float:
    return calibrate_noise(epsilon, delta, q, steps, accountant=accountant)
