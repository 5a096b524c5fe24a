"""The model card's privacy section: what was guaranteed, under which assumption, and spent."""

from __future__ import annotations

from typing import Any

from fedsilo.peers.job import JobConfig
from fedsilo.peers.server.host import HostedRun
from fedsilo.privacy.accounting.compose import accounting_note
from fedsilo.strategies.secagg import SecureAggregation
from fedsilo.strategies.wrapper import find_wrapper

DP_MODE_TEXT = {
    "local": "local DP-SGD (Opacus) at every bank",
    "distributed": "distributed DP: discrete Gaussian noise shares inside secure aggregation",
    "off": "none (--dp off)",
}


PUBLIC_ROW_COUNTS = (
    "each bank's number of training rows is released exactly (rows_train here, its DP-SGD "
    "sampling rate batch/rows, and its weight in the average): the (ε, δ) protects what each "
    "record contains, not the fact that a bank holds one more or one fewer record"
)


def noise_statement(job: JobConfig) -> str:
    """Where the run's DP noise and Poisson sampling came from, in plain words."""
    if not job.dp.private:
        return "no DP noise"
    if job.dp.reproducible:
        return (
            f"REPRODUCIBLE (research mode, --reproducible): every bank's DP noise and sampling were seeded by "
            f"the run's public seed {job.train.seed}; anyone with this card can regenerate the noise and "
            "subtract it, so the ε figures below are bookkeeping, not a privacy guarantee"
        )
    if job.dp.mode == "distributed":
        return (
            "secret: each bank drew its discrete Gaussian noise share from its OS CSPRNG (ChaCha20 keyed by "
            "os.urandom); nothing in the job or this card reproduces it"
        )
    return (
        "secret: each bank drew its DP-SGD noise and Poisson sampling afresh in every round from its OS "
        "CSPRNG (AES-256-CTR keyed by os.urandom), with Opacus' secure-mode defence against floating-point "
        "attacks; nothing in the job or this card reproduces them. Data, partitions, train/test splits and "
        "initial weights follow the run's seed"
    )


def guarantee(job: JobConfig) -> str:
    """The guarantee the job's DP mode gives, in one sentence."""
    if job.dp.private and job.dp.reproducible:
        return (
            "none: the run's DP noise was seeded by its public seed (--reproducible), so it can be regenerated "
            "and removed; the accounted ε is not a privacy guarantee"
        )
    if job.dp.mode == "local":
        return (
            f"each bank's released updates are ({job.dp.epsilon:g}, {job.dp.delta:g})-DP with respect to each "
            "of its records (record-level, add/remove), over all rounds, whatever the host does"
        )
    if job.dp.mode == "distributed":
        return (
            f"every released aggregate is ({job.dp.epsilon:g}, {job.dp.delta:g})-DP with respect to each record "
            "of every bank, over all rounds, provided that in each round at most the tolerated dropouts and "
            "colluders (secagg dropout and collusion fractions) contribute no honest noise; the host refuses "
            "to unmask a round with fewer survivors"
        )
    return "no differential privacy"


def privacy_section(
    job: JobConfig,
    outcome: HostedRun,
    ledger_status: dict[str, Any],
    epsilon_max: float,
    epsilon_max_rdp: float | None = None,
) -> dict[str, Any]:
    secure = find_wrapper(outcome.strategy, SecureAggregation)
    return {
        "mode": DP_MODE_TEXT[job.dp.mode],
        "guarantee": guarantee(job),
        "epsilon_target": job.dp.epsilon if job.dp.private else None,
        "delta": job.dp.delta if job.dp.private else None,
        "accountant": job.dp.accountant if job.dp.private else None,
        "max_grad_norm": job.dp.max_grad_norm if job.dp.private else None,
        "accounting": accounting_note(job.dp.accountant, job.dp.delta) if job.dp.private else None,
        "epsilon_max_spent": epsilon_max,
        "noise": noise_statement(job),
        "public": PUBLIC_ROW_COUNTS,
        "epsilon_max_spent_rdp": epsilon_max_rdp if job.dp.private else None,
        "secure_aggregation": (
            {
                "protocol": "SecAgg+ (Bell et al. 2020): X25519 + HKDF-SHA256, ChaCha20 masks, Shamir over 2^521-1, "
                "AES-GCM share encryption; keys and survivor lists signed with the peers' consortium "
                "identities (Bonawitz et al. 2017, malicious-server variant)",
                "clip": job.secagg.clip,
                "bits": job.secagg.bits,
                "dropout_fraction": job.secagg.dropout_fraction,
                "collusion_fraction": job.secagg.collusion_fraction,
                "aborted_rounds": {str(k): v for k, v in secure.aborted_rounds.items()},
                "assumption": "a host colluding with at most the collusion fraction of peers; a host that deviates "
                "from the protocol can abort a round but not unmask one peer",
            }
            if secure is not None
            else "off: the host saw each bank's (DP-protected) update"
        ),
        "ledger": ledger_status,
    }
