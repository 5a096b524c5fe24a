"""The ClientApp called as Flower calls it: weights out, ε reported, refusals."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from peers.client import app as client
from peers.data.encoding import TabularEncoder
from peers.job import DPSpec, JobConfig, TrainSpec
from peers.models import ModelSpec, build_model, get_weights
from simulations.data.synthetic import generate_consortium


@pytest.fixture(scope="module")
def bank_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("banks")
    frames = generate_consortium(2, seed=3, total_customers=3000)
    for i, frame in enumerate(frames):
        frame.to_parquet(root / f"bank-{i:05d}.parquet")
    encoder = TabularEncoder.fit_frames(frames, "default")
    (root / "encoder.json").write_text(encoder.to_json())
    return root, encoder


def _job(root, rounds=2, epsilon=2.0, mode="local"):
    return JobConfig(label="default", encoder_path=str(root / "encoder.json"), banks_dir=str(root),
                     job_id="t", peers=2, model=ModelSpec("mlp", (16,)),
                     train=TrainSpec(rounds=rounds, batch_size=64, lr=0.3),
                     dp=DPSpec(mode=mode, epsilon=epsilon, delta=1e-5))


def _context(job, partition=0):
    return Context(run_id=1, node_id=partition + 10, node_config={"partition-id": partition, "num-partitions": 2},
                   state=RecordDict(), run_config=job.to_run_config())


def _train_message(weights, server_round):
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 1
    arrays = ArrayRecord({k: Array(v) for k, v in weights.items()})
    return Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})}),
                   dst_node_id=10, message_type="train")


def test_train_reply_carries_inner_weights_and_spent_epsilon(bank_files):
    root, encoder = bank_files
    job = _job(root)
    context = _context(job)
    initial = get_weights(build_model(job.model, encoder.n_features))
    reply = client.train(_train_message(initial, 1), context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    names = set(reply.content["arrays"].keys())
    assert names == set(initial) and not any(n.startswith("_module.") for n in names)
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] > 0
    first_eps = metrics["epsilon"]
    assert 0 < first_eps < job.dp.epsilon
    # The accountant history persists in context.state and composes across rounds.
    history = json.loads(context.state[client.PRIVACY_STATE_KEY]["history"])
    assert len(history) == 1 and history[0]["steps"] == metrics["dp-steps"]
    reply2 = client.train(_train_message(initial, 2), context)
    assert reply2.content["metrics"]["epsilon"] == pytest.approx(job.dp.epsilon, rel=0.02)
    assert reply2.content["metrics"]["epsilon"] > first_eps
    # The update actually moved the weights.
    delta = sum(float(np.abs(reply.content["arrays"][k].numpy() - v).sum()) for k, v in initial.items())
    assert delta > 0


def test_peer_refuses_a_round_beyond_its_budget(bank_files):
    root, encoder = bank_files
    job = _job(root, rounds=1)
    context = _context(job)
    initial = get_weights(build_model(job.model, encoder.n_features))
    assert not client.train(_train_message(initial, 1), context).has_error()
    refused = client.train(_train_message(initial, 2), context)
    assert refused.has_error()
    assert "BudgetExceeded" in refused.error.reason and "over the job's ε" in refused.error.reason


def test_non_private_round_spends_nothing(bank_files):
    root, encoder = bank_files
    job = _job(root, mode="off")
    initial = get_weights(build_model(job.model, encoder.n_features))
    reply = client.train(_train_message(initial, 1), _context(job, partition=1))
    assert reply.content["metrics"]["epsilon"] == 0.0 and reply.content["metrics"]["bank"] == 1


def test_evaluate_reports_auc_on_held_out_rows(bank_files):
    root, encoder = bank_files
    job = _job(root)
    initial = get_weights(build_model(job.model, encoder.n_features))
    message = _train_message(initial, 1)
    reply = client.evaluate(message, _context(job))
    metrics = reply.content["metrics"]
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["num-examples"] > 0 and metrics["loss"] > 0


def test_missing_data_file_is_a_clear_refusal(bank_files, tmp_path):
    root, encoder = bank_files
    job = _job(root)
    job = JobConfig(**{**job.__dict__, "banks_dir": str(tmp_path)})
    reply = client.train(_train_message(get_weights(build_model(job.model, encoder.n_features)), 1), _context(job))
    assert reply.has_error() and "does not exist" in reply.error.reason
