"""Check the DP mechanism itself at a peer: is its noise fresh, of the planned scale, and unknown to the host?

An audit of the finished model cannot see a flaw in the randomness: a run whose noise
the host can regenerate passes a canary audit as well as a private one. This check
replays the peer's noisy step instead, with the code its ClientApp runs
(`train_round`'s choice of randomness, `DPSGDTrainer`):

1. replay: the same step, from the same weights and rows, twice. With the full batch
   (q = 1, one step) both replays compute the same clipped sum, so their difference
   is the difference of two noise draws: per coordinate N(0, 2·s²) with
   s = lr·σ·C/n, σ the job's planned noise multiplier for the peer's n rows. The
   measured standard deviation must lie in the two-sided χ² interval of level
   `confidence` around √2·s (too small: the noise repeats, or is weaker than planned;
   too large: it is not the planned noise).
2. host: the same step as a host recomputes it from every value it knows — the job, its
   seed, the peer's index or the index 0 that the Deployment Engine gives every peer,
   the round, and (granted) the peer's rows. The peer's replay must differ from each
   guess by the same full noise scale: a host that reproduces it leaves a difference
   near zero.
3. sampling: two fresh trainers' Poisson masks at the job's sampling rate must differ.

The check draws on the peer's own rows but releases only its verdict and the measured
scales (no update), and spends no privacy budget: nothing it computes leaves the peer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import chi2

from fedsilo.peers.client.local_training import reproducible_seed
from fedsilo.peers.job import JobConfig, plan_dp
from fedsilo.peers.models import build_model, freeze, get_weights, set_weights
from fedsilo.privacy.dpsgd import DPSGDConfig, DPSGDTrainer, expected_batch_size

HOST_BANK_SEEDS = (0,)  # the Deployment Engine's bank index of every peer; the peer's own is added


@dataclass(frozen=True)
class MechanismCheck:
    """The verdict and the figures behind it; `passed` needs all three checks."""

    passed: bool
    coordinates: int
    expected_sd: float  # √2·lr·σ·C/n: sd of the difference of two independent noise draws
    interval: tuple[float, float]  # acceptance interval for a measured sd at `confidence`
    replay_sd: float  # sd of (replay 1 − replay 2)
    host_sd: float  # smallest sd of (replay 1 − a host's recomputation)
    sampling_differs: bool
    confidence: float
    verdict: str

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["interval"] = list(self.interval)
        return out


def check_mechanism(
    job: JobConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    weights: dict[str, np.ndarray],
    bank_seed: int,
    server_round: int = 1,
    confidence: float = 0.9999,
) -> MechanismCheck | None:
    """Replay one noisy step at a peer (see the module docstring); None when the job adds no DP-SGD noise."""
    if job.dp.mode != "local":
        return None
    n = x.shape[0]
    plan = plan_dp(job, n)
    config = DPSGDConfig(
        lr=job.train.lr, max_grad_norm=job.dp.max_grad_norm, noise_multiplier=plan.noise_multiplier, sample_rate=1.0
    )

    def step(seed: int | None) -> np.ndarray:
        model = build_model(job.model, x.shape[1])
        set_weights(model, weights)
        freeze(model, job.freeze)
        DPSGDTrainer(model, config, reproducible_seed=seed).train(x, y, epochs=1)
        return np.concatenate([v.ravel().astype(np.float64) for v in get_weights(model).values()])

    def peer_seed() -> int | None:
        return reproducible_seed(job, bank_seed, server_round)  # what train_round uses at this peer

    first, second = step(peer_seed()), step(peer_seed())
    host_guesses = [step(_host_seed(job, index, server_round)) for index in sorted({*HOST_BANK_SEEDS, bank_seed})]
    trained = sum(p.numel() for p in _trained_parameters(job, x.shape[1]))
    expected = (
        math.sqrt(2.0) * job.train.lr * plan.noise_multiplier * job.dp.max_grad_norm / expected_batch_size(1.0, n)
    )
    low, high = _sd_interval(expected, trained, confidence)
    replay_sd = _sd(first - second, trained)
    host_sd = min(_sd(first - guess, trained) for guess in host_guesses)
    sampling_differs = _sampling_differs(job, n, bank_seed, server_round, plan.sample_rate)
    failures = []
    if not low <= replay_sd <= high:
        failures.append(
            f"two replays differ by sd {replay_sd:.3g}, outside [{low:.3g}, {high:.3g}] around the "
            f"planned √2·lr·σ·C/n = {expected:.3g}"
        )
    if not low <= host_sd <= high:
        failures.append(
            f"a host's recomputation from the job's public values comes within sd {host_sd:.3g} of "
            f"the released step (the noise alone would leave {expected:.3g})"
        )
    if not sampling_differs:
        failures.append("two trainers drew the same Poisson batch: the sampling is not secret")
    verdict = (
        "passed: fresh noise of the planned scale, not reproducible from the job"
        if not failures
        else "FAILED: " + "; ".join(failures)
    )
    return MechanismCheck(
        not failures, trained, expected, (low, high), replay_sd, host_sd, sampling_differs, confidence, verdict
    )


def _host_seed(job: JobConfig, bank_seed: int, server_round: int) -> int:
    """The seed a host derives from public values (the job's research-mode formula, whatever the job's mode)."""
    return (job.train.seed * 1_000_003 + bank_seed * 7919 + server_round) % (2**31)


def _trained_parameters(job: JobConfig, n_features: int) -> list[torch.Tensor]:
    model = build_model(job.model, n_features)
    freeze(model, job.freeze)
    return [p for p in model.parameters() if p.requires_grad]


def _sd(difference: np.ndarray, trained: int) -> float:
    """Root mean square over the trained coordinates (frozen ones do not move: they are exact zeros)."""
    return float(math.sqrt(np.sum(difference**2) / trained))


def _sd_interval(expected: float, k: int, confidence: float) -> tuple[float, float]:
    """Two-sided interval for the RMS of k i.i.d. N(0, expected²): k·RMS²/expected² ~ χ²_k."""
    tail = (1.0 - confidence) / 2.0
    return expected * math.sqrt(chi2.ppf(tail, k) / k), expected * math.sqrt(chi2.ppf(1.0 - tail, k) / k)


def _sampling_differs(job: JobConfig, n: int, bank_seed: int, server_round: int, sample_rate: float) -> bool:
    """Whether two fresh trainers at this peer draw different Poisson batches (vacuous at q = 1)."""
    if sample_rate >= 1.0:
        return True
    seed = reproducible_seed(job, bank_seed, server_round)
    model = build_model(job.model, 1)
    config = DPSGDConfig(lr=1.0, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=sample_rate)
    draws = [DPSGDTrainer(model, config, reproducible_seed=seed).noise.poisson_rows(n, sample_rate) for _ in range(2)]
    return not torch.equal(draws[0], draws[1])
