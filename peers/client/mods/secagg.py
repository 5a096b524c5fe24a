"""`secagg_mod`: gives any ClientApp SecAgg+ secure aggregation by being in its `mods`.

It answers the five stage messages of `fedsilo.strategies.secagg.SecureAggregation` and lets
every other message through untouched, except that a `train` message without
secure aggregation is refused when the job declares it (a peer never answers a
SecAgg+ job in plaintext, whatever the host sends). At the `mask` stage it lets the app train,
then replaces the reply's plaintext weights by the masked update (trained − global
weights, clipped to ±`secagg.clip` per coordinate) with the weight (`num-examples`)
inside the masked vector; `num-examples` and the training loss are removed from the
reply's metrics, so the host learns neither per peer.

An `evaluate` message may carry the next round's `advertise` stage (see
`fedsilo.strategies.secagg.strategy`): the app evaluates the message without that record,
exactly as any evaluation, and this mod adds the peer's fresh keys for the next round
to the app's reply. If the evaluation fails, the error is the reply and no keys are
sent (the host then drops the peer from the next round).

The peer's SecAgg+ state (its round keys and the shares it holds) lives between
messages in the node's own `context.state`, which never leaves the peer; a request
for another round or an earlier stage is refused (replay), with an error reply, and
a mask request is checked before the app trains, so a replay spends no budget.

Identity. The peer signs its round keys and the survivor list with its consortium
key and checks its neighbours' against the CA-signed manifest
(`fedsilo.peers.identity.round_keys`). A deployed peer reads them from the files its node
config names (`identity-key`, `identity-cert`, `ca-cert`, `manifest`, and in a gm
consortium `signing-key`: set by `fedsilo.peers.deployment.join` from the peer's own
identity directory), and the job it accepted from `job-id` and `secagg`, which the host
cannot change. Under the Simulation Engine each bank reads its key from the simulated
consortium that the run config's `simulation.identity-dir` names (`fedsilo.simulations.federation` writes it).

Suite. The round runs under the crypto suite of the peer's own manifest (never one the
host names): in a gm consortium its keys, shares, commitments and masks are the gm
suite's and its advertisement is SM2-signed (`fedsilo.privacy.secagg.keys`).
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedsilo.errors import ConfigError, FedsiloError, ProtocolError
from fedsilo.peers.client import node_state
from fedsilo.peers.identity.round_keys import (
    SIMULATED_IDENTITY_KEY,
    ManifestVerifier,
    load_round_identity,
    simulated_identity,
)
from fedsilo.peers.job import JobConfig, parameter_count, secagg_config
from fedsilo.privacy.secagg import (
    ConsistencyRequest,
    MaskInputRequest,
    RoundSetup,
    SecAggClient,
    ShareKeysRequest,
    Signer,
    UnmaskRequest,
)
from fedsilo.privacy.secagg.messages import encrypted_shares_to_dict
from fedsilo.strategies.secagg.wire import (
    MASKED_ARRAY_KEY,
    SECAGG_CONFIG_KEY,
    flatten,
    masked_array_record,
    read_stage,
    stage_record,
)

STATE_KEY = "fedsilo.secagg.client"
ERROR_CODE_SECAGG = 4002
HIDDEN_METRICS = ("num-examples", "train-loss")
IDENTITY_KEYS = ("identity-key", "identity-cert", "ca-cert", "manifest")
SIGNING_KEY = "signing-key"  # the member's suite signing key, in a consortium of another suite (gm)


def round_identity(context: Context) -> tuple[Signer, ManifestVerifier]:
    """This peer's signer and the consortium's verifier (see the module docstring)."""
    node = context.node_config
    named = [k for k in IDENTITY_KEYS if node.get(k)]
    if named:
        if len(named) != len(IDENTITY_KEYS):
            raise ConfigError(f"this SuperNode's node config names {named} but not all of {list(IDENTITY_KEYS)}")
        signing = Path(str(node[SIGNING_KEY])) if node.get(SIGNING_KEY) else None
        return load_round_identity(*(Path(str(node[k])) for k in IDENTITY_KEYS), signing)
    directory = context.run_config.get(SIMULATED_IDENTITY_KEY)
    if directory and "partition-id" in node and not node.get("state-dir"):
        return simulated_identity(Path(str(directory)), int(node["partition-id"]))
    raise ConfigError(
        "secure aggregation needs this peer's consortium identity: start its SuperNode with "
        "fedsilo.peers.deployment.join_training, which names the identity files in its node config"
    )


def accepted_job(context: Context) -> JobConfig:
    """The job from the run config, refused if it is not the one this peer accepted (node config)."""
    job = JobConfig.from_run_config(context.run_config)
    accepted = context.node_config.get("job-id")
    if accepted and str(accepted) != job.job_id:
        raise ConfigError(f"the host runs job {job.job_id!r} on a SuperNode started for job {accepted!r}")
    return node_state.with_node_encoder(job, context.node_config)


def declares_secure(context: Context, job: JobConfig) -> bool:
    """Whether the job this peer accepted aggregates securely (node config first, then the run config)."""
    declared = context.node_config.get("secagg")
    return job.secagg.enabled if declared in (None, "") else str(declared) == "on"


def _load(context: Context, job: JobConfig, node_id: int) -> SecAggClient:
    n_params = parameter_count(job) if job.dp.mode == "distributed" else None
    signer, verifier = round_identity(context)
    config = secagg_config(job, n_params, suite=verifier.suite)
    client = SecAggClient(node_id, config, signer=signer, verifier=verifier)
    record = context.state.get(STATE_KEY)
    if isinstance(record, ConfigRecord) and record.get("job") == job.job_id:
        client.load_state_dict(json.loads(str(record["state"])))
    return client


def _save(context: Context, job: JobConfig, client: SecAggClient) -> None:
    context.state[STATE_KEY] = ConfigRecord({"job": job.job_id, "state": json.dumps(client.state_dict())})


def _evaluate_and_advertise(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """An evaluation carrying the next round's `advertise` stage: the app's evaluation, plus this peer's keys."""
    carried = RecordDict({SECAGG_CONFIG_KEY: msg.content.config_records[SECAGG_CONFIG_KEY]})
    msg.content = RecordDict({k: v for k, v in msg.content.items() if k != SECAGG_CONFIG_KEY})
    evaluated = call_next(msg, context)
    if evaluated.has_error():
        return evaluated
    client = None
    try:
        job = accepted_job(context)
        stage, server_round, payload = read_stage(carried)
        if stage != "advertise":
            raise ProtocolError(f"an evaluation can carry only the advertise stage, not {stage}")
        client = _load(context, job, msg.metadata.dst_node_id)
        setup = RoundSetup.from_dict(payload)
        out = client.advertise_keys(setup.round_id, setup.participants, setup.round_seed).to_dict()
        _save(context, job, client)
    except FedsiloError as error:
        if client is not None:
            _save(context, job, client)
        return Message(Error(code=ERROR_CODE_SECAGG, reason=f"{error.__class__.__name__}: {error}"), reply_to=msg)
    evaluated.content[SECAGG_CONFIG_KEY] = stage_record(stage, server_round, out)
    return evaluated


def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: handle secure-aggregation stages, pass anything else to the app."""
    if msg.metadata.message_type == MessageType.EVALUATE and SECAGG_CONFIG_KEY in msg.content.config_records:
        return _evaluate_and_advertise(msg, context, call_next)
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if SECAGG_CONFIG_KEY not in msg.content.config_records:
        return _plaintext_train(msg, context, call_next)
    client = None
    try:
        job = accepted_job(context)
        stage, server_round, payload = read_stage(msg.content)
        client = _load(context, job, msg.metadata.dst_node_id)
        content = RecordDict()
        if stage == "advertise":
            setup = RoundSetup.from_dict(payload)
            out = client.advertise_keys(setup.round_id, setup.participants, setup.round_seed).to_dict()
        elif stage == "share":
            request = ShareKeysRequest.from_dict(payload)
            out = encrypted_shares_to_dict(client.share_keys(request.round_id, request.peer_keys), key_by="dst")
        elif stage == "mask":
            request = MaskInputRequest.from_dict(payload)
            client.expect_mask_input(request.round_id)  # a replay is refused before any training
            trained = call_next(msg, context)
            if trained.has_error():
                _save(context, job, client)
                return trained
            update = flatten(trained.content["arrays"]) - flatten(msg.content["arrays"])
            metrics = trained.content["metrics"]
            masked = client.mask_input(request.round_id, update, float(metrics["num-examples"]), request.shares)
            out = masked.to_dict()
            content[MASKED_ARRAY_KEY] = masked_array_record(out.pop("masked"))
            content["metrics"] = MetricRecord({k: v for k, v in metrics.items() if k not in HIDDEN_METRICS})
        elif stage == "check":
            check = ConsistencyRequest.from_dict(payload)
            out = client.sign_survivors(check.round_id, check.survivors, check.dropped).to_dict()
        else:
            request = UnmaskRequest.from_dict(payload)
            out = client.unmask(request.round_id, request.survivors, request.dropped, request.signatures).to_dict()
        content[SECAGG_CONFIG_KEY] = stage_record(stage, server_round, out)
        _save(context, job, client)
        return Message(content, reply_to=msg)
    except FedsiloError as error:
        if client is not None:
            _save(context, job, client)
        return Message(Error(code=ERROR_CODE_SECAGG, reason=f"{error.__class__.__name__}: {error}"), reply_to=msg)


def _plaintext_train(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A training request without secure aggregation: refused in a job that declares it."""
    try:
        job = accepted_job(context)
    except FedsiloError:
        return call_next(msg, context)  # no readable job: the app refuses it itself
    if declares_secure(context, job):
        return Message(
            Error(
                code=ERROR_CODE_SECAGG,
                reason=(
                    f"ProtocolError: job {job.job_id} declares secure aggregation; this peer does not answer a "
                    f"plaintext training request in it"
                ),
            ),
            reply_to=msg,
        )
    return call_next(msg, context)
