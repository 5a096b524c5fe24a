"""DP planning: the noise that makes a job spend exactly its (ε, δ), from public numbers.

The job host and every peer compute the same plan from the same public numbers (the
job's ε, δ, accountant and training shape, a peer's row count), so the ledger
reservation a peer makes before a job matches what its training then spends. Two
plans:

- local DP (`plan_dp`): each peer's DP-SGD, Poisson sampling at a rate on a coarse
  grid (`grid_sample_rate`) so that a few calibrations serve thousands of bank sizes;
- distributed DP (`plan_distributed_dp`): each round one full-batch step whose noise
  every peer adds a share of inside secure aggregation.

Calibrations go through the on-disk cache (`fedsilo.privacy.accounting.cache`);
`dp_plan_is_cached` says whether a plan would need one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting.cache import cached_calibration, is_cached
from fedsilo.privacy.accounting.mechanism import Mechanism
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon
from fedsilo.privacy.sampling import steps_per_epoch
from fedsilo.privacy.secagg import DistributedNoise, SecAggConfig, central_noise_multiplier
from fedsilo.privacy.secagg.noise import integer_l2_sensitivity

#: Bits of the fixed-point encoding in distributed DP: room for the noise shares' sum.
DISTRIBUTED_BITS = 32
#: Smallest standard deviation of a peer's noise share, in integer units of the encoding.
MIN_PEER_SIGMA = 10.0
#: Grid points per doubling of the sampling rate (`grid_sample_rate`).
SAMPLE_RATE_STEPS_PER_OCTAVE = 4


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


def grid_sample_rate(batch_size: int, n_train: int) -> float:
    """B/n rounded up to the grid 2^(k/4) (at most 1): the expected batch is B to 1.19·B.

    Few distinct rates mean few distinct noise calibrations, each seconds long: with
    thousands of banks of heavy-tailed sizes every size would otherwise need its own.
    """
    exact = batch_size / n_train
    if exact >= 1.0:
        return 1.0
    k = math.ceil(SAMPLE_RATE_STEPS_PER_OCTAVE * math.log2(exact) - 1e-9)
    return min(1.0, 2.0 ** (k / SAMPLE_RATE_STEPS_PER_OCTAVE))


def rate_and_steps(n_train: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """The sampling rate and the DP-SGD steps per round of a bank with `n_train` rows.

    Raises ConfigError for a bank without rows, or a batch size or epoch count below 1.
    """
    if n_train < 1:
        raise ConfigError("a bank needs at least one training row")
    if batch_size < 1 or local_epochs < 1:
        raise ConfigError(f"batch size and local epochs must be ≥ 1 (got {batch_size} and {local_epochs})")
    q = grid_sample_rate(batch_size, n_train)
    return q, local_epochs * steps_per_epoch(q)


def plan_dp(
    epsilon: float | None,
    delta: float,
    accountant: str,
    *,
    n_train: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
) -> DPPlan:
    """Noise multiplier that spends exactly (`epsilon`, `delta`) over all `rounds` (RDP/PRV).

    `epsilon` None is a non-private job: the same sampling, noise multiplier 0. The plan
    covers `rounds` participations: a peer sampled in fewer rounds spends less (its
    ledger commits what it ran). Raises ConfigError for an invalid ε, δ, accountant or
    shape, or a target no noise level reaches.
    """
    q, steps = rate_and_steps(n_train, batch_size, local_epochs)
    if epsilon is None:
        return DPPlan(0.0, q, steps, rounds)
    target = _checked(epsilon, delta, accountant, rounds)
    return DPPlan(cached_calibration(target, delta, q, steps * rounds, accountant), q, steps, rounds)


def dp_plan_is_cached(
    epsilon: float | None,
    delta: float,
    accountant: str,
    *,
    n_train: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
) -> bool:
    """Whether `plan_dp` with the same arguments needs no calibration (a disk-cache hit, or no DP)."""
    q, steps = rate_and_steps(n_train, batch_size, local_epochs)
    return epsilon is None or is_cached(epsilon, delta, q, steps * rounds, accountant)


@dataclass(frozen=True)
class DistributedDPPlan:
    """Distributed DP of a job: every round is one full-batch DP-GD step on all peers' rows.

    Each peer adds `noise` (its discrete Gaussian share) to its clipped, scaled gradient
    sum; the host can unmask only the sum. If at least `min_survivors` peers upload and
    at most the collusion fraction collude, the honest noise in the sum is that of a
    Gaussian mechanism with multiplier `effective_multiplier` on the stated sensitivity
    (rounding included), so each round is a `Mechanism` (`effective_multiplier`, q = 1,
    1 step) for every peer's records.
    """

    noise: DistributedNoise
    effective_multiplier: float
    min_survivors: int

    @property
    def per_round(self) -> Mechanism:
        return Mechanism(self.effective_multiplier, 1.0, 1)


def plan_distributed_dp(
    epsilon: float,
    delta: float,
    accountant: str,
    *,
    rounds: int,
    l2_sensitivity: float,
    peers: int,
    n_params: int,
    secagg: SecAggConfig,
) -> DistributedDPPlan:
    """Noise shares such that `rounds` rounds spend exactly (ε, δ), under the stated assumption.

    `l2_sensitivity` bounds the change one record makes to the sum of the `peers` peers'
    `n_params`-long updates (lr·C/public rows in a job); `secagg` is the rounds' secure
    aggregation before noise (its encoding and its dropout and collusion targets).

    Assumption: in each round at most `max_missing` = tolerated dropouts D + colluders C
    of the round's `peers` contribute no honest noise; the host refuses to unmask a
    round with fewer than peers − D survivors (`min_survivors`), so dropouts alone can
    never lower the noise below the accounted level. Raises ConfigError when no honest
    noise remains or a share would fall below `MIN_PEER_SIGMA` integer units.
    """
    target = _checked(epsilon, delta, accountant, rounds)
    if secagg.noise is not None:
        raise ConfigError("plan_distributed_dp takes the secure aggregation before noise (noise=None)")
    params = secagg.graph_parameters_for(peers)
    missing = params.dropped + params.corrupt
    if peers - missing < 1:
        raise ConfigError(
            f"with {peers} peers the tolerated dropouts ({params.dropped}) and colluders "
            f"({params.corrupt}) leave no honest noise: use more peers or lower the fractions"
        )
    z_target = cached_calibration(target, delta, 1.0, rounds, accountant)
    scale = secagg.encoder(peers).scale
    integer_sensitivity = integer_l2_sensitivity(l2_sensitivity, scale, n_params)
    # sqrt(peers - missing) · σ_p / integer_sensitivity = z_target, σ_p = z · sensitivity · scale / sqrt(peers)
    peer_sigma = z_target * integer_sensitivity / math.sqrt(peers - missing)
    if peer_sigma < MIN_PEER_SIGMA:
        raise ConfigError(
            "distributed noise share below 10 integer units: lower secagg.clip to make the fixed-point grid finer"
        )
    z = peer_sigma * math.sqrt(peers) / (l2_sensitivity * scale)
    noise = DistributedNoise(noise_multiplier=z, l2_sensitivity=l2_sensitivity, expected_peers=peers)
    effective = central_noise_multiplier(noise, scale, n_params, missing)
    return DistributedDPPlan(noise, effective, max(1, peers - params.dropped))


def _checked(epsilon: float, delta: float, accountant: str, rounds: int) -> float:
    """The validated target ε; ConfigError for a bad ε, δ, accountant or round count."""
    check_delta(delta)
    check_accountant(accountant)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an integer ≥ 1 (got {rounds!r})")
    return check_epsilon(epsilon)
