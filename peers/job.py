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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fedsilo.errors import ConfigError
from fedsilo.peers.model_spec import ModelSpec
from fedsilo.privacy.accounting.mechanism import Mechanism
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE
from fedsilo.privacy.secagg.config import SecAggConfig

# `planning` brings numpy and Opacus' accountants: imported by the functions that plan, so reading
# a job's settings (and `fedsilo simulate --help`, which shows them) stays light.
if TYPE_CHECKING:
    from fedsilo.privacy.accounting.planning import DistributedDPPlan, DPPlan

DP_MODES = ("local", "distributed", "off")
SETUPS = ("horizontal", "transfer", "vertical")  # how a job's data is split between its peers
VERTICAL_SCHEMES = ("coded", "split")  # how a vertical job trains (`[vertical] scheme` of a signed job)
DEFAULT_VERTICAL_SCHEME = "coded"
NETWORK_DP = ("local", "distributed")  # the DP mechanisms a peer's policy may allow (never "off")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DPSpec:
    """Local differential privacy of each peer's released updates, over the whole job.

    `reproducible` is the research mode: DP-SGD's Poisson masks and noise come from
    torch generators seeded by the job's public seed (`train.seed`), so the run can be
    replayed — and so can its noise, by anyone holding the job: its ε is then not a
    privacy guarantee. Off (the default), every peer draws them from its OS CSPRNG. A
    deployed peer refuses a job that asks for it.
    """

    mode: str = "local"
    epsilon: float = 3.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    reproducible: bool = False

    def __post_init__(self) -> None:
        _require(self.mode in DP_MODES, f"dp.mode '{self.mode}' is unknown: use one of {', '.join(DP_MODES)}")
        check_epsilon(self.epsilon, "dp.epsilon", hint="use --no-dp for a non-private run")
        check_delta(self.delta, "dp.delta")
        _require(self.max_grad_norm > 0, f"dp.max-grad-norm must be > 0 (got {self.max_grad_norm})")
        check_accountant(self.accountant, "dp.accountant")
        _require(
            isinstance(self.reproducible, bool), f"dp.reproducible must be true or false (got {self.reproducible!r})"
        )

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
    """Secure aggregation of the job's training rounds (see `fedsilo.strategies.secagg`).

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
        _require(
            0 <= self.dropout_fraction < 1, f"secagg.dropout-fraction must be in [0, 1) (got {self.dropout_fraction})"
        )
        _require(
            0 <= self.collusion_fraction < 1,
            f"secagg.collusion-fraction must be in [0, 1) (got {self.collusion_fraction})",
        )

    @property
    def enabled(self) -> bool:
        return self.mode == "on"


@dataclass(frozen=True)
class JobConfig:
    """Everything a peer needs to take part in one training job."""

    label: str
    encoder_path: str
    banks_dir: str = ""
    private_dir: str = ""  # simulation: where each bank keeps its private (transfer) weights
    job_id: str = "job"
    strategy: str = "fedavg"
    peers: int = 1
    sample: int = 0  # peers sampled per round; 0: all of them
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    dp: DPSpec = field(default_factory=DPSpec)
    secagg: SecAggSpec = field(default_factory=SecAggSpec)
    public_rows: int = 0
    shared: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = ()  # deployed transfer: the shared-vocabulary columns, in order
    freeze: tuple[str, ...] = ()
    base_model: str = ""

    def __post_init__(self) -> None:
        _require(self.peers >= 1, f"a job needs at least one peer (got {self.peers})")
        _require(
            0 <= self.sample <= self.peers,
            f"job.sample must be between 1 and the {self.peers} peers (got {self.sample})",
        )
        if self.dp.mode == "distributed":
            _require(
                self.secagg.enabled,
                "dp.mode 'distributed' needs secure aggregation: "
                "only the masked sum may carry the noise (use --secure-aggregation on)",
            )
            _require(
                self.public_rows >= 1,
                "dp.mode 'distributed' needs the job's public total of training rows "
                "(job.public-rows), the gradient normaliser every peer uses",
            )
            # Distributed DP bounds one round's noisy sum by the clip only if the gradients it sums are taken
            # at weights that are a function of earlier releases. A private block (model.shared: transfer)
            # would train on the bank's rows without noise, and every row's gradient would then depend on
            # every other row: the sensitivity, and the job's ε, would not hold. DP-SGD (dp.mode local) noises
            # both blocks under one accountant.
            _require(
                not self.shared,
                "dp.mode 'distributed' cannot train a private block (model.shared names the aggregated "
                f"parameters {list(self.shared)}; the rest would train on each bank's rows without noise, so "
                "the noisy sum's sensitivity and the job's ε would not hold): use dp.mode 'local' (--dp local) for transfer",
            )
        if self.model.kind == "gbdt":
            _require(
                self.public_rows >= 1,
                "a gbdt job needs job.public-rows: the public bound on each bank's training rows, by which every "
                "bank divides its histograms (a bank with more rows refuses the job)",
            )
            _require(self.secagg.enabled, "a gbdt job releases its histograms through secure aggregation only")

    @property
    def per_round(self) -> int:
        """Peers asked to train in each round (all of them unless the job samples)."""
        return self.sample or self.peers

    def to_run_config(self) -> dict[str, Any]:
        """Flatten into Flower run-config scalars."""
        flat: dict[str, Any] = {
            "job.id": self.job_id,
            "job.strategy": self.strategy,
            "job.peers": self.peers,
            "job.sample": self.sample,
            "job.public-rows": self.public_rows,
            "model.shared": ",".join(self.shared),
            "model.shared-vocabulary": ",".join(self.vocabulary),
            "model.freeze": ",".join(self.freeze),
            "model.base": self.base_model,
            "data.label": self.label,
            "data.encoder": self.encoder_path,
            "data.banks-dir": self.banks_dir,
            "data.private-dir": self.private_dir,
            "model.kind": self.model.kind,
            "model.hidden": ",".join(str(h) for h in self.model.hidden),
            "model.shared-features": self.model.shared_features,
        }
        for prefix, spec in (("train", self.train), ("dp", self.dp), ("secagg", self.secagg)):
            for key, value in asdict(spec).items():
                flat[f"{prefix}.{key.replace('_', '-')}"] = value
        if self.model.kind == "gbdt":
            model = self.model
            flat.update({"model.trees": model.trees, "model.depth": model.depth, "model.bins": model.bins})
            flat.update(
                {"model.learning-rate": model.learning_rate, "model.features-per-tree": model.features_per_tree}
            )
            flat["model.splits"] = model.splits
            flat.update(self.boost_run_config())
        return flat

    def boost_run_config(self) -> dict[str, Any]:
        """A gbdt job's model as the `gbdt.*` keys `fedsilo.peers.gbdt.job.GBDTJob` reads (the ServerApp
        boosts when it finds them): its session is the job id, its banks the job's peers, its row bound
        the job's public rows, its DP and dropout terms the job's."""
        model = self.model
        return {
            "gbdt.session": self.job_id,
            "gbdt.banks": self.peers,
            "gbdt.row-bound": self.public_rows,
            "gbdt.trees": model.trees,
            "gbdt.depth": model.depth,
            "gbdt.bins": model.bins,
            "gbdt.learning-rate": float(model.learning_rate),
            "gbdt.features-per-tree": model.features_per_tree,
            "gbdt.splits": model.splits,
            "gbdt.dp-mode": self.dp.mode,
            "gbdt.epsilon": float(self.dp.epsilon),
            "gbdt.delta": float(self.dp.delta),
            "gbdt.accountant": self.dp.accountant,
            "gbdt.dropout-fraction": float(self.secagg.dropout_fraction),
            "gbdt.collusion-fraction": float(self.secagg.collusion_fraction),
        }

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> JobConfig:
        """Rebuild from a run config; unknown keys are ignored, missing ones refused."""
        try:

            def section(prefix: str, spec_cls: type) -> Any:
                names = spec_cls.__dataclass_fields__
                return spec_cls(
                    **{
                        name: type(getattr(spec_cls(), name))(config[f"{prefix}.{name.replace('_', '-')}"])
                        for name in names
                        if f"{prefix}.{name.replace('_', '-')}" in config
                    }
                )

            return cls(
                job_id=str(config.get("job.id", "job")),
                strategy=str(config.get("job.strategy", "fedavg")),
                peers=int(config.get("job.peers", 1)),
                sample=int(config.get("job.sample", 0)),
                public_rows=int(config.get("job.public-rows", 0)),
                shared=_names(config.get("model.shared", "")),
                vocabulary=_names(config.get("model.shared-vocabulary", "")),
                freeze=_names(config.get("model.freeze", "")),
                base_model=str(config.get("model.base", "")),
                label=str(config["data.label"]),
                encoder_path=str(config["data.encoder"]),
                banks_dir=str(config.get("data.banks-dir", "")),
                private_dir=str(config.get("data.private-dir", "")),
                model=ModelSpec(
                    kind=str(config.get("model.kind", "mlp")),
                    hidden=ModelSpec.parse_hidden(str(config.get("model.hidden", "64,32"))),
                    shared_features=int(config.get("model.shared-features", 0)),
                    **_boost_fields(config),
                ),
                train=section("train", TrainSpec),
                dp=section("dp", DPSpec),
                secagg=section("secagg", SecAggSpec),
            )
        except KeyError as missing:
            raise ConfigError(f"run config lacks {missing}: the job host must send it") from None


def _boost_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The gbdt fields of `ModelSpec` a run config states (`model.trees`, ...), as they are: `ModelSpec` checks them."""
    names = ("trees", "depth", "bins", "learning_rate", "features_per_tree", "splits")
    return {name: config[key] for name in names if (key := f"model.{name.replace('_', '-')}") in config}


def _names(text: object) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


def encoder_path_for(job: JobConfig, bank: str) -> str:
    """The encoder a bank uses: the job's, or its own when the path names `{bank}` (transfer)."""
    return job.encoder_path.replace("{bank}", bank)


def secagg_config(job: JobConfig, n_params: int | None = None, suite: str = DEFAULT_SUITE) -> SecAggConfig:
    """The SecAgg+ parameters both the host and every peer derive from the job, under the
    consortium's crypto `suite` (each side takes it from its own manifest, not from the job).

    In distributed-DP mode (`n_params` then required) the peers' updates carry equal,
    public weights and a share of discrete Gaussian noise each, the encoding uses 32
    bits, and a round is only released if enough peers survive for the accounted
    noise to be there (see `plan_distributed_dp`).
    """
    base = replace(_noiseless_config(job), suite=suite)
    if job.dp.mode != "distributed":
        return base
    if n_params is None:
        raise ConfigError("distributed DP needs the model's parameter count to set its noise")
    plan = plan_distributed_dp(job, n_params)
    return replace(base, noise=plan.noise, min_survivors=plan.min_survivors)


def _noiseless_config(job: JobConfig) -> SecAggConfig:
    """The job's SecAgg+ parameters before any noise: 32 bits and public weights in distributed DP."""
    from fedsilo.privacy.accounting import planning

    distributed = job.dp.mode == "distributed"
    return SecAggConfig(
        clip=job.secagg.clip,
        bits=planning.DISTRIBUTED_BITS if distributed else job.secagg.bits,
        max_weight=1.0 if distributed else job.secagg.max_weight,
        dropout_fraction=job.secagg.dropout_fraction,
        collusion_fraction=job.secagg.collusion_fraction,
        session_id=job.job_id.encode(),
    )


# The job's DP plans: `fedsilo.privacy.accounting.planning` on the job's public numbers.


def plan_distributed_dp(job: JobConfig, n_params: int) -> DistributedDPPlan:
    """The job's distributed-DP noise shares: each round one full-batch step of its `per_round` peers.

    The sensitivity is lr·C/public_rows: every peer divides its clipped gradient sum by
    the job's public total of training rows.
    """
    from fedsilo.privacy.accounting import planning

    return planning.plan_distributed_dp(
        job.dp.epsilon,
        job.dp.delta,
        job.dp.accountant,
        rounds=job.train.rounds,
        l2_sensitivity=job.train.lr * job.dp.max_grad_norm / job.public_rows,
        peers=job.per_round,
        n_params=n_params,
        secagg=_noiseless_config(job),
    )


def distributed_dp_reservation(job: JobConfig) -> Mechanism:
    """The whole job's distributed-DP mechanism, known at acceptance from the job alone.

    `plan_distributed_dp` calibrates the peers' noise shares so that the noisy sum's
    effective multiplier is the one that spends exactly (ε, δ) over the rounds, whatever
    the parameter count: the count (which waits for the consortium encoder, fitted when
    training starts) changes each share, not the mechanism. The plan is computed here
    with the model's parameter count at one input feature, the fewest parameters the
    model spec allows, which is also the strictest case of its minimum-share check.
    """
    return Mechanism(plan_distributed_dp(job, spec_parameter_count(job)).effective_multiplier, 1.0, job.train.rounds)


def spec_parameter_count(job: JobConfig) -> int:
    """Parameters the job aggregates with one input feature (the model spec's lower bound)."""
    return sum(math.prod(shape) for shape in global_shapes(job, job.model.shared_features + 1).values())


def plan_dp(job: JobConfig, n_train: int) -> DPPlan:
    """How a bank with `n_train` rows spends exactly the job's ε over all its rounds (noise 0 without DP)."""
    from fedsilo.privacy.accounting import planning

    return planning.plan_dp(*_budget(job), **_shape(job, n_train))


def dp_plan_is_cached(job: JobConfig, n_train: int) -> bool:
    """Whether `plan_dp(job, n_train)` needs no calibration (a disk-cache hit, or no DP)."""
    from fedsilo.privacy.accounting import planning

    return planning.dp_plan_is_cached(*_budget(job), **_shape(job, n_train))


def _budget(job: JobConfig) -> tuple[float | None, float, str]:
    return (job.dp.epsilon if job.dp.private else None), job.dp.delta, job.dp.accountant


def _shape(job: JobConfig, n_train: int) -> dict[str, int]:
    train = job.train
    return {
        "n_train": n_train,
        "batch_size": train.batch_size,
        "local_epochs": train.local_epochs,
        "rounds": train.rounds,
    }


def global_shapes(job: JobConfig, n_features: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the parameters the job aggregates (its shared part).

    Raises ConfigError when the shared declaration names no parameter of the model.
    """
    from fedsilo.peers.models import build_model, select

    weights = {k: tuple(v.shape) for k, v in build_model(job.model, n_features).state_dict().items()}
    shared = {k: v for k, v in weights.items() if k in select(weights, job.shared)}
    if not shared:
        raise ConfigError(
            f"model.shared {list(job.shared)} names no parameter of the model "
            f"(its parameters: {', '.join(weights)}); use prefixes such as hidden,head"
        )
    return shared


def host_feature_count(job: JobConfig) -> int:
    """Input width of the model as the host sees it.

    With one encoder for all peers, its width. With one encoder per peer (transfer: a
    simulation's `{bank}` path, or a deployed job's shared vocabulary), peers differ only
    in their private inputs, which the host never holds: any width past the shared block
    gives the host the same shared parameters.
    """
    if "{bank}" in job.encoder_path or job.vocabulary:
        return job.model.shared_features + 1
    from pathlib import Path

    from fedsilo.peers.data.encoding import TabularEncoder

    return TabularEncoder.from_json(Path(job.encoder_path).read_text()).n_features


@lru_cache(maxsize=32)
def _parameter_count(job: JobConfig) -> int:
    return sum(math.prod(shape) for shape in global_shapes(job, host_feature_count(job)).values())


def parameter_count(job: JobConfig) -> int:
    """Number of parameters the job aggregates (the shared part; all of them if horizontal)."""
    return _parameter_count(job)
