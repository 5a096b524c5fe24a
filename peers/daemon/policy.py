"""A peer's decision on a job: its policy, its data source, the mechanism it reserves.

`check_policy` applies peer.toml's [policy] to a verified job and raises `Refused`
(403) with the first rule the job breaks. `source_facts` reads the peer's own table
(on this machine) for what a decision and the training need: the training row count
(which fixes the DP plan) and a fingerprint of the file (both go into the model card). `planned_mechanisms` is the whole
job's DP-SGD mechanism from `fedsilo.peers.job.plan_dp`, which is what the ledger reserves and
what the peer's accountant then spends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import DataError
from fedsilo.peers.daemon.config import DataSource, Policy
from fedsilo.peers.daemon.signed_job import SignedJob
from fedsilo.peers.data.bank import read_table, split_rows
from fedsilo.peers.errors import Refused
from fedsilo.peers.job import plan_dp
from fedsilo.privacy.accounting import Mechanism


def check_policy(job: SignedJob, policy: Policy) -> None:
    """Refused (403) naming the first policy rule the job breaks."""
    config = job.config
    if job.owner not in policy.model_owners:
        allowed = ", ".join(policy.model_owners) or "nobody"
        raise Refused(f"policy: model owner {job.owner} may not propose jobs here (allowed: {allowed})", 403)
    if not config.dp.private:
        raise Refused("policy: the job trains without differential privacy (dp.mode = off)", 403)
    if config.dp.mode == "distributed":
        raise Refused("policy: distributed-DP jobs cannot be planned before the encoder exists; use dp.mode local", 403)
    if config.dp.epsilon > policy.max_epsilon_per_job:
        raise Refused(
            f"policy: the job asks ε = {config.dp.epsilon:g}, above this peer's maximum of "
            f"{policy.max_epsilon_per_job:g} per job",
            403,
        )
    if job.min_participants < policy.min_participants:
        raise Refused(
            f"policy: the job may run with {job.min_participants} participant(s); this peer requires at "
            f"least {policy.min_participants}, so that an aggregate cannot single one institution out",
            403,
        )
    if config.model.kind not in policy.model_families:
        raise Refused(
            f"policy: model family {config.model.kind} is not allowed here "
            f"(allowed: {', '.join(policy.model_families)})",
            403,
        )
    if config.strategy not in policy.strategies:
        raise Refused(
            f"policy: strategy {config.strategy} is not allowed here (allowed: {', '.join(policy.strategies)})", 403
        )


@dataclass(frozen=True)
class SourceFacts:
    """What a peer tells the host about its source when it accepts: counts and a hash, no rows."""

    rows: int
    n_train: int
    fingerprint: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def source_facts(source: DataSource, job: SignedJob) -> SourceFacts:
    """Read the source and compute its facts; Refused (403) if it cannot serve the job."""
    if source.label != job.label:
        raise Refused(
            f"data source {source.name}'s label column is {source.label!r}, the job trains on {job.label!r}", 403
        )
    try:
        frame = read_table(source.path)
    except DataError as error:
        raise Refused(f"data source {source.name} cannot serve the job: {error}", 403) from None
    if job.label not in frame.columns:
        raise Refused(f"data source {source.name} has no column {job.label!r}", 403)
    train, _ = split_rows(frame, job.label, job.config.train.test_fraction, job.config.train.seed)
    return SourceFacts(rows=len(frame), n_train=len(train), fingerprint=file_sha256(source.path))


def planned_mechanisms(job: SignedJob, facts: SourceFacts) -> list[Mechanism]:
    """The whole job's DP-SGD mechanism on this source (the ledger reservation)."""
    return [plan_dp(job.config, facts.n_train).whole_job]
