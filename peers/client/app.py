"""The ClientApp every institution runs: local DP-SGD on its own rows (Flower Message API).

It reads where its data is from `context.node_config` (`data-path`, set by the
institution's SuperNode) or, under the Simulation Engine, from the job's `data.banks-dir`
and the node's `partition-id`; it reads the job from `context.run_config`. Nothing
comes from simulation-only globals, so the same app runs under both engines.

Under the Deployment Engine the node config also names `state-dir`, the peer's own
directory (`fedsilo.peers.client.node_state`): the job's encoder arrives from the host in a
`query.encoder` message (after the peer answered `query.summarize` with its
aggregates) and is kept there, and so is the peer's accountant history: its durable
record of the job (`node_state`), which the peer's daemon opens with the job's ε cap
before the SuperNode starts. Each round reads the history and the cap from that file,
refuses a round that would pass the cap, and appends the round before its update
leaves, so that losing the ClientApp's memory (a restart mid-job) neither resets the
cap nor drops earlier rounds from what the peer commits to its ledger.

Replies carry the *inner* model's weights (never Opacus' `_module.` names), the
number of training rows as `num-examples` (FedAvg's weight), and the ε this peer has
spent so far in the job. Under the Simulation Engine (no `state-dir`) the accountant
history is kept in `context.state` between rounds.

In transfer setups a bank's private weights (those outside the job's shared set) are
kept on disk, never in memory between rounds: in its node's `state-dir` under the
Deployment Engine, in the job's `data.private-dir` (one safetensors file per bank)
under the Simulation Engine. A deployed transfer job (`model.shared-vocabulary` in its
run config) summarizes only the vocabulary columns for the host, and completes the
host's shared-vocabulary encoder with an own-columns encoder fitted here.

torch and Opacus (`local_training`, `fedsilo.peers.models`, the bank's tensors) are imported
by the handlers that train, evaluate or hold private weights, not by this module: a
deployed ClientApp is a new process per message, and a message that needs neither (a
summary, the encoder, a boosting job's `query.gbdt`) starts without them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.peers.client import node_state
from fedsilo.peers.client.mods.secagg import secagg_mod
from fedsilo.peers.data.bank import read_table
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.data.vocabulary import institution_encoder, shared_frame
from fedsilo.peers.errors import Refused
from fedsilo.peers.job import JobConfig, encoder_path_for
from fedsilo.peers.packed_content import packed_content_mod
from fedsilo.privacy.accounting import Mechanism

if TYPE_CHECKING:  # torch: imported where a round trains (see the module docstring)
    from fedsilo.peers.client.local_training import RoundResult
    from fedsilo.peers.data.bank import BankTensors

PRIVACY_STATE_KEY = "fedsilo.privacy"
ERROR_CODE_REFUSED = 4001


def bank_index(context: Context) -> int:
    """The bank's index: `bank-index` in node config, else the simulation partition id."""
    return int(context.node_config.get("bank-index", context.node_config.get("partition-id", 0)))


def bank_paths(job: JobConfig, context: Context) -> tuple[str, str]:
    """Where this peer's table and the job's encoder are (its own data path; the encoder its host sent)."""
    name = f"bank-{bank_index(context):05d}"
    data_path = context.node_config.get("data-path") or str(Path(job.banks_dir) / f"{name}.parquet")
    encoder_path = context.node_config.get("encoder-path") or encoder_path_for(job, name)
    if not encoder_path:
        encoder_path = str(node_state.encoder_file(_state_dir(context), job.job_id))
        if not Path(encoder_path).exists():
            raise ConfigError(
                f"job {job.job_id} has no encoder at this peer yet: the host must send it "
                f"(query.encoder) before training"
            )
    return str(data_path), str(encoder_path)


def bank_data(job: JobConfig, context: Context) -> BankTensors:
    """This peer's encoded rows, from its own data path, with its encoder."""
    from fedsilo.peers.data.bank import load_bank

    data_path, encoder_path = bank_paths(job, context)
    return load_bank(data_path, encoder_path, job.train.test_fraction, job.train.seed)


def _state_dir(context: Context) -> Path:
    state_dir = context.node_config.get("state-dir")
    if not state_dir:
        raise ConfigError("this SuperNode has no state-dir in its node config: start it with peers.deployment")
    return Path(str(state_dir))


def _private_weights_path(job: JobConfig, context: Context) -> Path:
    """Where this bank keeps its private weights (see the module docstring)."""
    if context.node_config.get("state-dir"):
        return node_state.private_weights_file(_state_dir(context), job.job_id)
    if job.private_dir:
        return Path(job.private_dir) / f"bank-{bank_index(context):05d}.private.safetensors"
    raise ConfigError(
        "this transfer job has nowhere to keep the banks' private weights: set data.private-dir "
        "(the simulation harness does) or the node's state-dir"
    )


def _full_weights(
    job: JobConfig, data: BankTensors, context: Context, received: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The received shared weights completed with this peer's private ones (transfer setups).

    Private weights (its own encoder, its own head) are initialised per bank on first
    use and then read from disk; the host must send exactly the shared set.
    """
    if not job.shared:
        return received
    from fedsilo.peers.models import build_model, get_weights, select

    initial = get_weights(
        build_model(job.model, data.x_train.shape[1], seed=job.train.seed * 7919 + bank_index(context))
    )
    shared = set(select(initial, job.shared))
    if set(received) != shared:
        raise ConfigError(f"the host sent {sorted(received)}; this job shares exactly {sorted(shared)}")
    private = node_state.read_private_weights(_private_weights_path(job, context), job.job_id)
    if private is None:
        private = {k: v for k, v in initial.items() if k not in shared}
    elif set(private) | shared != set(initial) or any(private[k].shape != initial[k].shape for k in private):
        raise ConfigError(
            f"the private weights kept for job {job.job_id} do not fit this model: "
            f"{sorted(private)} against {sorted(set(initial) - shared)}"
        )
    return {k: (received[k] if k in shared else private[k]) for k in initial}


def _keep_private(job: JobConfig, context: Context, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write the private part to this bank's file; return the shared part (all when horizontal)."""
    if not job.shared:
        return weights
    from fedsilo.peers.models import select

    shared = select(weights, job.shared)
    node_state.write_private_weights(
        _private_weights_path(job, context), job.job_id, {k: v for k, v in weights.items() if k not in shared}
    )
    return shared


def _history(context: Context, job: JobConfig) -> list[Mechanism]:
    record = context.state.get(PRIVACY_STATE_KEY)
    if not isinstance(record, ConfigRecord) or record.get("job") != job.job_id:
        return []
    return [Mechanism.from_dict(m) for m in json.loads(str(record["history"]))]


def _store_history(context: Context, job: JobConfig, history: list[Mechanism]) -> None:
    context.state[PRIVACY_STATE_KEY] = ConfigRecord(
        {"job": job.job_id, "history": json.dumps([m.to_dict() for m in history])}
    )


def _refuse(msg: Message, error: FedsiloError) -> Message:
    return Message(Error(code=ERROR_CODE_REFUSED, reason=f"{error.__class__.__name__}: {error}"), reply_to=msg)


def refuse_public_noise(job: JobConfig, context: Context) -> None:
    """A deployed peer (one with a state-dir) never trains with noise that a seed in the job determines.

    The job's run config comes from the host; a host that sets `dp.reproducible`
    could regenerate and subtract this peer's noise, so the peer refuses the round.
    """
    if job.dp.reproducible and context.node_config.get("state-dir"):
        raise Refused(
            f"job {job.job_id} asks for reproducible DP noise (dp.reproducible): its noise would follow "
            f"from the job's public seed and protect nothing; a deployed peer only trains with secret "
            f"noise — the job owner must drop dp.reproducible"
        )


def run_job(context: Context) -> JobConfig:
    """The job from the host's run config, refused if its sharing is not what this peer accepted.

    A deployed peer's daemon puts the accepted job's `shared` parameters and shared
    `vocabulary` in its node config; a host whose run config shares more (the own-columns
    block, an own column as vocabulary) or differently is refused, so the peer never
    releases a private tensor nor summarizes an own column because the host said so.
    """
    job = JobConfig.from_run_config(context.run_config)
    for key, value in (("shared", job.shared), ("vocabulary", job.vocabulary)):
        accepted = context.node_config.get(key)
        if accepted is not None and tuple(n for n in str(accepted).split(",") if n) != value:
            raise Refused(
                f"the host's run config for job {job.job_id} has {key} {list(value)}; this peer accepted "
                f"{[n for n in str(accepted).split(',') if n]}: refused"
            )
    return job


def _received_model(msg: Message, context: Context) -> tuple[JobConfig, BankTensors, dict[str, np.ndarray]]:
    """The job, this bank's rows, and the full model: the received weights plus private ones."""
    sent = run_job(context)
    data = bank_data(sent, context)
    job = node_state.with_node_encoder(sent, context.node_config)  # its encoder now exists at this node
    received = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    return job, data, _full_weights(job, data, context, received)


def _train_with_durable_record(
    job: JobConfig, data: BankTensors, weights: dict[str, np.ndarray], server_round: int, context: Context
) -> RoundResult:
    """A round under the Deployment Engine: history and cap from the peer's record, the round appended
    to it (under the record's lock) before the update is returned, hence before it is released."""
    state_dir = _state_dir(context)
    with node_state.job_lock(state_dir, job.job_id):
        record = node_state.read_privacy(state_dir, job.job_id)
        if record is None or record.cap is None:
            raise ConfigError(
                f"this peer has no privacy record with the ε cap of job {job.job_id} in its "
                "state-dir: its daemon opens one before joining (peers.deployment.join_training)"
            )
        if record.finished:
            raise ConfigError(f"job {job.job_id} has ended at this peer: it trains no further round")
        accepted = node_state.PrivacyCap(job.dp.epsilon, job.dp.delta, job.dp.accountant)
        if job.dp.private and accepted != record.cap:
            raise ConfigError(
                f"the run config's privacy terms {accepted} differ from the ones this peer accepted "
                f"for job {job.job_id} ({record.cap}): refused"
            )
        from fedsilo.peers.client.local_training import train_round

        result = train_round(job, data, weights, list(record.spent), server_round, bank_index(context))
        if result.mechanism is not None:
            node_state.write_privacy(state_dir, replace(record, spent=(*record.spent, result.mechanism)))
    return result


def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this bank's rows with DP-SGD."""
    from fedsilo.peers.client.local_training import limit_threads, train_round

    limit_threads()
    try:
        job, data, weights = _received_model(msg, context)
        refuse_public_noise(job, context)
        server_round = int(msg.content["config"]["server-round"])
        if context.node_config.get("state-dir"):
            result = _train_with_durable_record(job, data, weights, server_round, context)
        else:
            history = _history(context, job)
            result = train_round(job, data, weights, history, server_round, bank_index(context))
            if result.mechanism is not None:
                _store_history(context, job, [*history, result.mechanism])
    except FedsiloError as error:
        return _refuse(msg, error)
    released = _keep_private(job, context, result.weights)
    metrics = {
        "num-examples": result.num_examples,
        "train-loss": result.train_loss,
        "epsilon": result.epsilon,
        "bank": bank_index(context),
        "dp-noise": result.mechanism.noise_multiplier if result.mechanism else 0.0,
        "dp-sample-rate": result.mechanism.sample_rate if result.mechanism else 0.0,
        "dp-steps": result.mechanism.steps if result.mechanism else 0,
    }
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in released.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """Score the received global model on this bank's held-out rows."""
    from fedsilo.peers.client.local_training import evaluate_weights, limit_threads

    limit_threads()
    try:
        job, data, weights = _received_model(msg, context)
        scores = evaluate_weights(job, data, weights)
    except FedsiloError as error:
        return _refuse(msg, error)
    metrics = {"num-examples": data.n_test, "loss": scores["loss"], "auc": scores["auc"], "bank": bank_index(context)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def _job_query(msg: Message, context: Context) -> tuple[JobConfig, ConfigRecord]:
    job = run_job(context)
    config = msg.content["config"]
    if str(config["job-id"]) != job.job_id:
        raise ConfigError(f"a message for job {config['job-id']} arrived in job {job.job_id}")
    return job, config


def summarize(msg: Message, context: Context) -> Message:
    """Reply with this peer's per-column aggregates (never rows) for the job's encoder."""
    try:
        job, _ = _job_query(msg, context)
        data_path = context.node_config.get("data-path")
        if not data_path:
            raise ConfigError("this SuperNode has no data-path in its node config")
        frame = read_table(str(data_path))
        if job.vocabulary:  # transfer: aggregates of the shared vocabulary only, never of the own columns
            frame = shared_frame(frame, job.vocabulary, job.label)
        summary = BankSummary.from_frame(frame, job.label)
    except FedsiloError as error:
        return _refuse(msg, error)
    return Message(RecordDict({"config": ConfigRecord({"summary": json.dumps(summary.to_dict())})}), reply_to=msg)


def keep_encoder(msg: Message, context: Context) -> Message:
    """Keep the job's fitted encoder, sent by the host, in this peer's state directory.

    In a transfer job the host sends the shared-vocabulary encoder; this peer checks it
    encodes exactly the signed vocabulary and appends its own-columns encoder, fitted
    here from its own rows (`fedsilo.peers.data.vocabulary.institution_encoder`).
    """
    try:
        job, config = _job_query(msg, context)
        text = str(config["encoder"])
        if job.vocabulary:
            data_path = context.node_config.get("data-path")
            if not data_path:
                raise ConfigError("this SuperNode has no data-path in its node config")
            shared = TabularEncoder.from_json(text)
            text = institution_encoder(shared, read_table(str(data_path)), job.vocabulary, job.label).to_json()
        node_state.write_atomic(node_state.encoder_file(_state_dir(context), job.job_id), text)
    except FedsiloError as error:
        return _refuse(msg, error)
    return Message(RecordDict({"config": ConfigRecord({"ok": True})}), reply_to=msg)


def finish(msg: Message, context: Context) -> Message:
    """Mark the job over in this peer's own privacy record (what it spent stays as its accountant wrote it)."""
    try:
        job, _ = _job_query(msg, context)
        state_dir = _state_dir(context)
        with node_state.job_lock(state_dir, job.job_id):
            record = node_state.read_privacy(state_dir, job.job_id) or node_state.JobPrivacy(job.job_id, ())
            node_state.write_privacy(state_dir, replace(record, finished=True))
    except FedsiloError as error:
        return _refuse(msg, error)
    return Message(RecordDict({"config": ConfigRecord({"ok": True})}), reply_to=msg)


def gbdt(msg: Message, context: Context) -> Message:
    """A boosting job's session call (`fedsilo.peers.gbdt.client_app`), on this peer's rows."""
    from fedsilo.peers.gbdt.client_app import answer

    return answer(msg, context, bank_paths)


def build_client_app(mods: Sequence[Mod] = ()) -> ClientApp:
    """The fedsilo ClientApp with `secagg_mod` innermost and any `mods` around it.

    The simulation harness adds its fault-injection mod; a real peer runs `app`.
    """
    client_app = ClientApp(mods=[packed_content_mod, *mods, secagg_mod])
    client_app.train()(train)
    client_app.evaluate()(evaluate)
    client_app.query("summarize")(summarize)
    client_app.query("encoder")(keep_encoder)
    client_app.query("finish")(finish)
    client_app.query("gbdt")(gbdt)
    return client_app


app = build_client_app()
