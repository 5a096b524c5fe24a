"""One round of a peer's local work, free of Flower: train with DP-SGD, or evaluate.

DP-SGD's randomness is secret and fresh in every round (`fedsilo.privacy.noise_source`) unless
the job asks for the research mode (`dp.reproducible`, see `reproducible_seed`).

The privacy state a peer carries between rounds is its accountant history
(a list of `Mechanism`s); `train_round` refuses to run a round that would push the
peer's spent ε past the job's target, so a host that asks for more rounds than the job
declared cannot make a peer overspend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsilo.errors import BudgetExceeded, ConfigError
from fedsilo.peers.data.bank import BankTensors
from fedsilo.peers.evaluation import evaluate
from fedsilo.peers.job import JobConfig, parameter_count, plan_distributed_dp, plan_dp
from fedsilo.peers.models import build_model, freeze, get_weights, set_weights
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.clipped_gradients import clipped_gradient_sum
from fedsilo.privacy.dpsgd import DPSGDConfig, DPSGDTrainer

EPSILON_TOLERANCE = 1e-6
# Distributed DP: largest |global weight| a peer encodes from, in units of secagg.clip (see _distributed_round).
WEIGHT_BOUND = 2**10


@dataclass(frozen=True)
class RoundResult:
    weights: dict[str, np.ndarray]
    num_examples: int
    train_loss: float
    mechanism: Mechanism | None
    epsilon: float


def train_round(
    job: JobConfig,
    data: BankTensors,
    weights: dict[str, np.ndarray],
    history: list[Mechanism],
    server_round: int,
    bank_seed: int,
) -> RoundResult:
    """Train the global `weights` on the bank's rows for one round.

    `history` is the mechanisms this peer already ran in this job; the returned ε
    composes it with this round's mechanism (at the job's δ).
    """
    if job.dp.mode == "distributed":
        return _distributed_round(job, data, weights, history, server_round)
    plan = plan_dp(job, data.n_train)
    projected = 0.0
    if job.dp.private:
        projected = epsilon_spent([*history, plan.per_round], job.dp.delta, job.dp.accountant)
        if projected > job.dp.epsilon * (1 + EPSILON_TOLERANCE):
            raise BudgetExceeded(
                f"round {server_round} would bring this peer's ε to {projected:.3f}, over the job's "
                f"ε = {job.dp.epsilon}: the job declared {job.train.rounds} rounds"
            )
    model = build_model(job.model, data.x_train.shape[1])
    set_weights(model, weights)
    freeze(model, job.freeze)
    config = DPSGDConfig(
        lr=job.train.lr,
        max_grad_norm=job.dp.max_grad_norm,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        private=job.dp.private,
    )
    trainer = DPSGDTrainer(model, config, reproducible_seed=reproducible_seed(job, bank_seed, server_round))
    mechanism, loss = trainer.train(data.x_train, data.y_train, epochs=job.train.local_epochs)
    # The trainer ran exactly plan.per_round, so the ε it spent is the one projected above.
    assert mechanism == (plan.per_round if job.dp.private else None)
    return RoundResult(get_weights(model), data.n_train, loss, mechanism, projected)


def reproducible_seed(job: JobConfig, bank_seed: int, server_round: int) -> int | None:
    """The seed of a round's DP-SGD randomness in the research mode; None (secret noise) otherwise.

    Only a job with `dp.reproducible` gets a seed, derived from public values (the
    job's seed, the bank's index, the round): such a run's noise is not secret.
    """
    if not job.dp.reproducible:
        return None
    return (job.train.seed * 1_000_003 + bank_seed * 7919 + server_round) % (2**31)


def _distributed_round(
    job: JobConfig, data: BankTensors, weights: dict[str, np.ndarray], history: list[Mechanism], server_round: int
) -> RoundResult:
    """One full-batch step: −lr·Σ clip(∇ℓ_r)/public_rows, with weight 1 (public).

    No noise is added here: the peer's share of the distributed noise is added inside
    secure aggregation (`secagg_mod`), and the accounting is that of the whole round's
    noisy sum (`plan_distributed_dp`), assumed by every peer.

    The new weights stay float64 and are encoded as they are: a cast to float32 would
    move each coordinate by up to half a float32 ulp of the weight, a data-dependent
    shift of hundreds of integer units at 32 bits that no sensitivity bound covers. The
    step is clipped to the encoder's range [−clip, clip] here (the encoder clips the
    same way), and a global weight beyond `WEIGHT_BOUND`·clip is refused (the host's
    weights are public: refusing leaks nothing). Then the update the secagg mod
    recomputes, new − global in float64, is within 2**-53·(|w| + 2·clip)·(1 + 2**-52)
    of the exact step: at most 2**-12 integer units per coordinate at 32 bits, inside
    the float allowance of `fedsilo.privacy.secagg.noise.integer_l2_sensitivity`.
    """
    plan = plan_distributed_dp(job, parameter_count(job))
    projected = epsilon_spent([*history, plan.per_round], job.dp.delta, job.dp.accountant)
    if projected > job.dp.epsilon * (1 + EPSILON_TOLERANCE):
        raise BudgetExceeded(
            f"round {server_round} would bring this peer's ε to {projected:.3f}, over the job's "
            f"ε = {job.dp.epsilon}: the job declared {job.train.rounds} rounds"
        )
    model = build_model(job.model, data.x_train.shape[1])
    set_weights(model, weights)
    freeze(model, job.freeze)
    clip = job.secagg.clip
    largest = max((float(np.abs(weights[name]).max(initial=0.0)) for name in weights), default=0.0)
    if not largest <= WEIGHT_BOUND * clip:
        raise ConfigError(
            f"a global weight of magnitude {largest:.3g} exceeds {WEIGHT_BOUND}·secagg.clip = "
            f"{WEIGHT_BOUND * clip:g}: distributed DP's float allowance does not cover it; "
            f"the job needs a larger secagg.clip"
        )
    gradient = clipped_gradient_sum(model, data.x_train, data.y_train, job.dp.max_grad_norm)
    step = job.train.lr / job.public_rows
    new = {
        name: value.astype(np.float64) - np.clip(step * gradient[name].double().numpy(), -clip, clip)
        if name in gradient
        else value
        for name, value in weights.items()
    }
    return RoundResult(new, 1, float("nan"), plan.per_round, projected)


def evaluate_weights(job: JobConfig, data: BankTensors, weights: dict[str, np.ndarray]) -> dict[str, float]:
    """Loss and ROC-AUC of the global `weights` on the bank's held-out rows."""
    model = build_model(job.model, data.x_test.shape[1])
    set_weights(model, weights)
    return evaluate(model, data.x_test, data.y_test)


def limit_threads() -> None:
    """One intra-op thread per worker: the engine already runs one worker per core."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
