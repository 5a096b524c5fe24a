"""The ClientApp called as Flower calls it: weights out, ε reported, refusals."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.errors import ConfigError
from fedsilo.peers.client import app as client
from fedsilo.peers.client import node_state
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec
from fedsilo.peers.models import ModelSpec, build_model, get_weights
from fedsilo.privacy.accounting import Mechanism
from fedsilo.simulations.data.synthetic import generate_consortium


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
    return JobConfig(
        label="default",
        encoder_path=str(root / "encoder.json"),
        banks_dir=str(root),
        job_id="t",
        peers=2,
        model=ModelSpec("mlp", (16,)),
        train=TrainSpec(rounds=rounds, batch_size=64, lr=0.3),
        dp=DPSpec(mode=mode, epsilon=epsilon, delta=1e-5),
    )


def _context(job, partition=0):
    return Context(
        run_id=1,
        node_id=partition + 10,
        node_config={"partition-id": partition, "num-partitions": 2},
        state=RecordDict(),
        run_config=job.to_run_config(),
    )


def _train_message(weights, server_round):
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 1
    arrays = ArrayRecord({k: Array(v) for k, v in weights.items()})
    return Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})}),
        dst_node_id=10,
        message_type="train",
    )


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


# -- the durable ε cap (deployment: the ClientApp's memory may be lost mid-job) ------------------------


def _deployed_context(job, root, state_dir):
    """A deployed peer's context: its own data and state directory, and nothing in memory."""
    return Context(
        run_id=1,
        node_id=10,
        state=RecordDict(),
        run_config=job.to_run_config(),
        node_config={
            "data-path": str(root / "bank-00000.parquet"),
            "encoder-path": str(root / "encoder.json"),
            "state-dir": str(state_dir),
        },
    )


def _open(job, state_dir):
    return node_state.open_record(
        state_dir, job.job_id, node_state.PrivacyCap(job.dp.epsilon, job.dp.delta, job.dp.accountant)
    )


def test_a_restarted_client_app_keeps_the_cap_and_every_released_round(bank_files, tmp_path):
    """The host restarts the peer's ClientApp before each round (its memory is lost) and asks for one
    round more than the job declared: the cap comes from the peer's record on disk, so the extra round
    is refused, and the record still holds both released rounds for the ledger commit."""
    root, encoder = bank_files
    job = _job(root, rounds=2)
    _open(job, tmp_path)
    initial = get_weights(build_model(job.model, encoder.n_features))
    first = client.train(_train_message(initial, 1), _deployed_context(job, root, tmp_path))
    second = client.train(_train_message(initial, 2), _deployed_context(job, root, tmp_path))
    assert not first.has_error() and not second.has_error()
    assert second.content["metrics"]["epsilon"] == pytest.approx(job.dp.epsilon, rel=0.01)
    assert second.content["metrics"]["epsilon"] <= job.dp.epsilon
    refused = client.train(_train_message(initial, 3), _deployed_context(job, root, tmp_path))
    assert refused.has_error() and "BudgetExceeded" in refused.error.reason
    record = node_state.read_privacy(tmp_path, job.job_id)
    assert len(record.spent) == 2 and record.spent[0] == record.spent[1]
    assert record.spent[0].steps == first.content["metrics"]["dp-steps"]


def test_a_host_cannot_raise_the_cap_through_the_run_config(bank_files, tmp_path):
    """The host sends a run config with a larger ε than the job the peer accepted: refused, nothing spent."""
    root, encoder = bank_files
    job = _job(root, rounds=2)
    _open(job, tmp_path)
    inflated = _job(root, rounds=2, epsilon=20.0)
    initial = get_weights(build_model(job.model, encoder.n_features))
    refused = client.train(_train_message(initial, 1), _deployed_context(inflated, root, tmp_path))
    assert refused.has_error() and "differ from the ones this peer accepted" in refused.error.reason
    assert node_state.read_privacy(tmp_path, job.job_id).spent == ()


def test_a_deployed_peer_without_a_record_or_after_the_end_refuses(bank_files, tmp_path):
    root, encoder = bank_files
    job = _job(root, rounds=2)
    initial = get_weights(build_model(job.model, encoder.n_features))
    missing = client.train(_train_message(initial, 1), _deployed_context(job, root, tmp_path))
    assert missing.has_error() and "no privacy record" in missing.error.reason
    _open(job, tmp_path)
    assert not client.train(_train_message(initial, 1), _deployed_context(job, root, tmp_path)).has_error()
    record = node_state.read_privacy(tmp_path, job.job_id)
    node_state.write_privacy(tmp_path, node_state.JobPrivacy(job.job_id, record.spent, True, record.cap))
    ended = client.train(_train_message(initial, 2), _deployed_context(job, root, tmp_path))
    assert ended.has_error() and "has ended" in ended.error.reason
    assert node_state.read_privacy(tmp_path, job.job_id).spent == record.spent


def test_reopening_a_record_keeps_its_rounds_and_refuses_other_terms(tmp_path):
    cap = node_state.PrivacyCap(3.0, 1e-5, "prv")
    node_state.open_record(tmp_path, "j", cap)
    spent = (Mechanism(1.0, 0.1, 10),)
    node_state.write_privacy(tmp_path, node_state.JobPrivacy("j", spent, cap=cap))
    assert node_state.open_record(tmp_path, "j", cap).spent == spent  # a re-join resumes it
    with pytest.raises(ConfigError, match="never change"):
        node_state.open_record(tmp_path, "j", node_state.PrivacyCap(30.0, 1e-5, "prv"))
    assert node_state.read_privacy(tmp_path, "j") == node_state.JobPrivacy("j", spent, cap=cap)


KILLED_PEER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_client_app as t
from fedsilo.peers.client import app as client
from fedsilo.peers.client import node_state
from fedsilo.peers.models import build_model, get_weights
root, state, server_round, hold = Path({root!r}), Path({state!r}), int(sys.argv[1]), sys.argv[2] == "hold"
job = t._job(root, rounds=2)
initial = get_weights(build_model(job.model, {features}))
reply = client.train(t._train_message(initial, server_round), t._deployed_context(job, root, state))
print("ERROR " + reply.error.reason if reply.has_error() else "OK", flush=True)
while hold:
    time.sleep(1)
"""


@pytest.mark.slow
def test_a_killed_client_app_process_resumes_from_the_record(bank_files, tmp_path):
    """The process holding the ClientApp is SIGKILLed after a round; new processes train the next
    round, and the one after the job's rounds is refused (real processes, real file reloads)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root, encoder = bank_files
    job = _job(root, rounds=2)
    _open(job, tmp_path)
    script = KILLED_PEER.format(
        tests=str(Path(__file__).parent), root=str(root), state=str(tmp_path), features=encoder.n_features
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    holder = subprocess.Popen([sys.executable, "-c", script, "1", "hold"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "OK"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert len(node_state.read_privacy(tmp_path, job.job_id).spent) == 1
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(r), "exit"], env=env, capture_output=True, text=True, timeout=600
        )
        for r in (2, 3)
    ]
    assert runs[0].stdout.strip() == "OK", runs[0].stderr[-2000:]
    assert runs[1].stdout.startswith("ERROR BudgetExceeded"), runs[1].stdout + runs[1].stderr[-2000:]
    assert len(node_state.read_privacy(tmp_path, job.job_id).spent) == 2
