"""A peer's decision on a job: its policy, its data source, the mechanism it reserves.

`check_policy` applies peer.toml's [policy] to a verified job and raises `Refused`
(403) with the first rule the job breaks: owner, DP on, the DP mechanism (`dp`), the
setup (`setups`), a vertical job's label holder and scheme (`vertical-schemes`), ε, participants, model family,
strategy, and the bounds (`check_bounds`: rounds, batch size, and the declared model's
parameters with one input feature, counted without building it). `check_model_size`
weighs the model again with the width of this peer's own table once it is read (every
column encodes to at least one input). `check_trainable` then declines a job the policy allows but this release
cannot train over the network (gbdt jobs other than horizontal; vertical jobs
with distributed DP or other than two participants), saying what is missing. A vertical job's own
acceptance (its plan and its source's checks) is `roles.vertical`'s.
`source_facts` reads the peer's own table (on this machine) for what a decision and the
training need: the training row count (which fixes the DP plan) and a fingerprint of
the file (both go into the model card). `planned_mechanisms` is the whole job's
mechanism, which is what the ledger reserves and what the peer's accountant then
spends: DP-SGD's `fedsilo.peers.job.plan_dp` on the source's training rows under local
DP, `fedsilo.peers.job.distributed_dp_reservation` (the noisy sum's plan) under
distributed DP, and a gbdt job's whole release plan (`fedsilo.privacy.gbdt.plan_releases`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.daemon.config import DataSource, Policy
from fedsilo.peers.daemon.signed_job import SignedJob
from fedsilo.peers.data.bank import read_table, split_rows
from fedsilo.peers.errors import Refused
from fedsilo.peers.job import distributed_dp_reservation, plan_dp
from fedsilo.peers.provenance import file_hash
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, HASH_LABELS


def check_policy(job: SignedJob, policy: Policy) -> None:
    """Refused (403) naming the first policy rule the job breaks."""
    config = job.config
    if job.owner not in policy.model_owners:
        allowed = ", ".join(policy.model_owners) or "nobody"
        raise Refused(f"policy: model owner {job.owner} may not propose jobs here (allowed: {allowed})", 403)
    if not config.dp.private:
        raise Refused("policy: the job trains without differential privacy (dp.mode = off)", 403)
    if config.dp.mode not in policy.dp:
        raise Refused(
            f"policy: the job uses {config.dp.mode} DP; this peer allows {', '.join(policy.dp) or 'none'} "
            "(peer.toml [policy] dp)",
            403,
        )
    if job.setup not in policy.setups:
        raise Refused(
            f"policy: {job.setup} jobs are not allowed here (allowed setups: {', '.join(policy.setups) or 'none'})",
            403,
        )
    if job.setup == "vertical" and job.host not in policy.vertical_label_holders:
        raise Refused(
            f"policy: a vertical job's label holder is its host, {job.host}, who may not hold the labels of "
            f"vertical jobs here (allowed: {', '.join(policy.vertical_label_holders) or 'nobody'})",
            403,
        )
    if job.setup == "vertical" and job.vertical_scheme not in policy.vertical_schemes:
        raise Refused(
            f"policy: the vertical job runs the {job.vertical_scheme} scheme; this peer allows "
            f"{', '.join(policy.vertical_schemes) or 'none'} (peer.toml [policy] vertical-schemes)",
            403,
        )
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
    check_bounds(job, policy)


def check_bounds(job: SignedJob, policy: Policy) -> None:
    """Refused (403) if the job's rounds, batch size or declared model exceed this peer's bounds.

    A gbdt job's rounds are its histogram releases, `trees * (depth + 1)` (each is one aggregate of
    this peer's data, like a round); it has no batch.
    """
    train = job.config.train
    model = job.config.model
    if model.kind == "gbdt":
        if model.releases > policy.max_rounds:
            raise Refused(
                f"policy: the job's {model.trees} trees of depth {model.depth} make {model.releases} histogram "
                f"releases, above this peer's bound of {policy.max_rounds} rounds (peer.toml [policy] max-rounds)",
                403,
            )
        check_model_size(job, policy, 1)
        return
    if train.rounds > policy.max_rounds:
        raise Refused(
            f"policy: the job asks {train.rounds} rounds, above this peer's bound of {policy.max_rounds} "
            "(peer.toml [policy] max-rounds)",
            403,
        )
    if train.batch_size > policy.max_batch_size:
        raise Refused(
            f"policy: the job asks a batch size of {train.batch_size}, above this peer's bound of "
            f"{policy.max_batch_size} (peer.toml [policy] max-batch-size)",
            403,
        )
    check_model_size(job, policy, 1)


def check_model_size(job: SignedJob, policy: Policy, n_features: int) -> None:
    """Refused (403) if the declared model has more than `policy.max_model_parameters` with `n_features` inputs."""
    model = job.config.model
    count = model.parameter_count(n_features)
    if count > policy.max_model_parameters:
        shape = {"mlp": f"hidden layers {list(model.hidden)}", "gbdt": f"{model.trees} trees of depth {model.depth}"}
        shape = shape.get(model.kind, model.kind)
        raise Refused(
            f"policy: the job's model ({shape}) has at least {count:,} parameters with {n_features} input "
            f"feature(s), above this peer's bound of {policy.max_model_parameters:,} "
            "(peer.toml [policy] max-model-parameters)",
            403,
        )


def check_trainable(job: SignedJob) -> None:
    """Refused (403) when this release cannot run a job its policy allows, saying what is missing.

    Called after `check_policy` and before any budget is reserved, so such a job is
    declined with nothing spent or held.
    """
    if job.config.model.kind == "gbdt" and job.setup != "horizontal":
        raise Refused(f"not yet supported: gbdt jobs train horizontally only, this one is {job.setup}", 403)
    if job.setup == "vertical" and job.config.dp.mode != "local":
        raise Refused(
            "not yet supported: vertical jobs run with local DP at each party (the coded scheme's randomized "
            "response, the split scheme's noised embeddings and gradients); the job asks dp.mode = "
            + job.config.dp.mode,
            403,
        )
    if job.setup == "vertical" and len(job.participants) != 2:
        raise Refused(
            f"a vertical job runs between its label holder (the host) and one feature party; it names "
            f"{len(job.participants)} participants",
            403,
        )


@dataclass(frozen=True)
class SourceFacts:
    """What a peer tells the host about its source when it accepts: counts and a hash, no rows."""

    rows: int
    n_train: int
    fingerprint: str
    features: int = 1  # columns besides the label and the id: each is at least one model input


def file_fingerprint(path: Path, suite: str = DEFAULT_SUITE) -> str:
    """``label:hex`` of the file's hash under `suite`: ``sha256:…`` (standard), ``sm3:…`` (gm)."""
    return f"{HASH_LABELS[suite]}:{file_hash(path, suite)}"


def source_facts(source: DataSource, job: SignedJob, suite: str = DEFAULT_SUITE) -> SourceFacts:
    """Read the source and compute its facts (the fingerprint with `suite`'s hash); Refused (403) if it
    cannot serve the job."""
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
    columns = {c for c in frame.columns if c not in (job.label, source.id_column)}
    if job.config.vocabulary:  # transfer: the shared-vocabulary columns are inputs even where this table lacks them
        if not columns & set(job.config.vocabulary):
            raise Refused(
                f"data source {source.name} holds none of the transfer job's shared-vocabulary columns "
                f"({', '.join(job.config.vocabulary)})",
                403,
            )
        columns |= set(job.config.vocabulary)
    features = len(columns)
    return SourceFacts(
        rows=len(frame), n_train=len(train), fingerprint=file_fingerprint(source.path, suite), features=max(1, features)
    )


def planned_mechanisms(job: SignedJob, facts: SourceFacts) -> list[Mechanism]:
    """The whole job's mechanism on this source (the ledger reservation): DP-SGD's plan on its
    training rows under local DP, the noisy sum's plan under distributed DP; a gbdt job's
    `trees * (depth + 1)` histogram releases (`fedsilo.privacy.gbdt.plan_releases`, either DP mode:
    each release has the same multiplier, from the bank's own noise or the noisy sum's)."""
    config = job.config
    if config.model.kind == "gbdt":
        if facts.n_train > config.public_rows:
            raise Refused(
                f"this peer has {facts.n_train} training rows, above the gbdt job's public bound of "
                f"{config.public_rows} per bank (job.public-rows)",
                403,
            )
        from fedsilo.privacy.gbdt import plan_releases

        model, dp = config.model, config.dp
        random = model.splits == "random"
        return [plan_releases(dp.epsilon, dp.delta, model.trees, model.depth, dp.accountant, random).whole_job]
    if job.config.dp.mode == "distributed":
        try:
            return [distributed_dp_reservation(job.config)]
        except ConfigError as error:
            raise Refused(f"the job's distributed-DP plan is not feasible: {error}", 403) from None
    return [plan_dp(job.config, facts.n_train).whole_job]
