"""`secagg_mod`: gives any ClientApp SecAgg+ secure aggregation by being in its `mods`.

It answers the four stage messages of `strategies.secagg.SecureAggregation` and lets
every other message through untouched. At the `mask` stage it lets the app train,
then replaces the reply's plaintext weights by the masked update (trained − global
weights, clipped to ±`secagg.clip` per coordinate) with the weight (`num-examples`)
inside the masked vector; `num-examples` and the training loss are removed from the
reply's metrics, so the host learns neither per peer.

An `evaluate` message may carry the next round's `advertise` stage (see
`strategies.secagg.strategy`): the app evaluates the message without that record,
exactly as any evaluation, and this mod adds the peer's fresh keys for the next round
to the app's reply. If the evaluation fails, the error is the reply and no keys are
sent (the host then drops the peer from the next round).

The peer's SecAgg+ state (its round keys and the shares it holds) lives between
messages in the node's own `context.state`, which never leaves the peer; a request
for another round or an earlier stage is refused (replay), with an error reply.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from peers.job import JobConfig, parameter_count, secagg_config
from privacy.errors import FedsiloError, ProtocolError
from privacy.secagg import MaskInputRequest, RoundSetup, SecAggClient, ShareKeysRequest, UnmaskRequest
from privacy.secagg.messages import encrypted_shares_to_dict
from strategies.secagg.wire import (
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


def _load(context: Context, job: JobConfig, node_id: int) -> SecAggClient:
    n_params = parameter_count(job) if job.dp.mode == "distributed" else None
    client = SecAggClient(node_id, secagg_config(job, n_params))
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
        job = JobConfig.from_run_config(context.run_config)
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
    if msg.metadata.message_type != MessageType.TRAIN or SECAGG_CONFIG_KEY not in msg.content.config_records:
        return call_next(msg, context)
    client = None
    try:
        job = JobConfig.from_run_config(context.run_config)
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
        else:
            request = UnmaskRequest.from_dict(payload)
            out = client.unmask(request.round_id, request.survivors, request.dropped).to_dict()
        content[SECAGG_CONFIG_KEY] = stage_record(stage, server_round, out)
        _save(context, job, client)
        return Message(content, reply_to=msg)
    except FedsiloError as error:
        if client is not None:
            _save(context, job, client)
        return Message(Error(code=ERROR_CODE_SECAGG, reason=f"{error.__class__.__name__}: {error}"), reply_to=msg)
