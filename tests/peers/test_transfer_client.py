"""Transfer setups at the peer: private tensors never leave it; fine-tuning freezes what it is told."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from safetensors.numpy import save_file

from fedsilo.errors import ConfigError
from fedsilo.peers.client import app as client
from fedsilo.peers.client import node_state
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec, global_shapes
from fedsilo.peers.models import ModelSpec, build_model, get_weights, select
from fedsilo.peers.server.host import JobHost
from fedsilo.simulations.data.schemas import synthetic_scenario, synthetic_transfer_table
from fedsilo.simulations.transfer import institution_view, shared_vocabulary


@pytest.fixture(scope="module")
def institutions(tmp_path_factory):
    """Three institutions laid out as the transfer runner lays them out (shared vocabulary + own columns)."""
    root = tmp_path_factory.mktemp("inst")
    scenario = synthetic_scenario()
    label = scenario.label
    vocabulary = shared_vocabulary(scenario)
    views = [
        institution_view(f, spec, vocabulary, label)
        for f, spec in zip(
            scenario.split(synthetic_transfer_table(seed=1, customers=6000), seed=1), scenario.institutions
        )
    ]
    shared_encoder = TabularEncoder.fit_frames([pd.concat([s, o[[label]]], axis=1) for s, o in views], label)
    widths = []
    for i, (shared, own) in enumerate(views):
        pd.concat([shared, own], axis=1).to_parquet(root / f"bank-{i:05d}.parquet")
        own_encoder = TabularEncoder.fit_frames([own], label)
        encoder = TabularEncoder(label, shared_encoder.columns + own_encoder.columns)
        (root / f"bank-{i:05d}.encoder.json").write_text(encoder.to_json())
        widths.append(own_encoder.n_features)
    assert len(set(widths)) == 3  # three different own schemas
    return root, label, widths, shared_encoder.n_features


def _job(institutions, shared=("shared_input", "hidden", "head"), **kw):
    root, label, _, n_shared = institutions
    kw.setdefault("private_dir", tempfile.mkdtemp(dir=root))  # each job starts with no private weights kept
    return JobConfig(
        label=label,
        encoder_path=str(root / "{bank}.encoder.json"),
        banks_dir=str(root),
        job_id="tl",
        peers=3,
        model=ModelSpec("mlp", (16, 8), shared_features=n_shared),
        shared=shared,
        train=TrainSpec(rounds=3, batch_size=64, lr=0.3),
        dp=DPSpec(epsilon=3.0),
        **kw,
    )


def _message(weights, server_round, kind="train"):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})
    return Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})}),
        dst_node_id=10,
        message_type=kind,
    )


def _context(job, bank):
    return Context(
        run_id=1,
        node_id=10 + bank,
        node_config={"partition-id": bank, "num-partitions": 3},
        state=RecordDict(),
        run_config=job.to_run_config(),
    )


def _shared_initial(job):
    return dict(select(get_weights(build_model(job.model, job.model.shared_features + 1)), job.shared))


def test_private_tensors_never_appear_in_replies(institutions):
    _, _, widths, n_shared = institutions
    job = _job(institutions)
    for bank in range(3):
        context = _context(job, bank)
        shared = _shared_initial(job)
        for server_round in (1, 2):
            reply = client.train(_message(shared, server_round), context)
            assert not reply.has_error(), reply.error.reason
            sent = set(reply.content["arrays"].keys())
            assert sent == set(shared) and "shared_input.weight" in sent and "input.weight" not in sent
            # No array anywhere in the reply has the shape of the institution's own input layer.
            for record in reply.content.array_records.values():
                assert all(a.numpy().shape != (16, widths[bank]) for a in record.values())
            shared = {k: v.numpy() for k, v in reply.content["arrays"].items()}
        stored = node_state.read_private_weights(Path(job.private_dir) / f"bank-{bank:05d}.private.safetensors", "tl")
        assert set(stored) == {"input.weight"} and stored["input.weight"].shape == (16, widths[bank])
        assert client.PRIVACY_STATE_KEY in context.state and len(context.state.array_records) == 0


def test_private_weights_live_on_disk_and_carry_over_to_a_fresh_context(institutions):
    job = _job(institutions)
    path = Path(job.private_dir) / "bank-00001.private.safetensors"
    shared = _shared_initial(job)
    reply = client.train(_message(shared, 1), _context(job, 1))
    after_one = node_state.read_private_weights(path, "tl")["input.weight"]
    # a fresh context (a restarted node, or a bank whose memory was dropped) resumes from the file
    received = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    full = client._full_weights(job, client.bank_data(job, _context(job, 1)), _context(job, 1), received)
    np.testing.assert_array_equal(full["input.weight"], after_one)
    client.train(_message(received, 2), _context(job, 1))
    assert not np.array_equal(node_state.read_private_weights(path, "tl")["input.weight"], after_one)


def test_private_weights_of_another_job_or_a_broken_file_are_refused(institutions):
    job = _job(institutions)
    path = Path(job.private_dir) / "bank-00000.private.safetensors"
    node_state.write_private_weights(path, "another-job", {"input.weight": np.zeros((16, 3), np.float32)})
    reply = client.train(_message(_shared_initial(job), 1), _context(job, 0))
    assert reply.has_error() and "of job 'another-job', not 'tl'" in reply.error.reason
    path.write_bytes(b"not safetensors")
    reply = client.train(_message(_shared_initial(job), 1), _context(job, 0))
    assert reply.has_error() and "not a readable safetensors file" in reply.error.reason
    assert path.read_bytes() == b"not safetensors"  # a refusal leaves the file as it was
    node_state.write_private_weights(path, "tl", {"input.weight": np.zeros((16, 3), np.float32)})
    reply = client.train(_message(_shared_initial(job), 1), _context(job, 0))
    assert reply.has_error() and "do not fit this model" in reply.error.reason


def test_private_head_stays_home(institutions):
    job = _job(institutions, shared=("shared_input", "hidden"))
    reply = client.train(_message(_shared_initial(job), 1), _context(job, 0))
    assert set(reply.content["arrays"].keys()) == {
        "shared_input.weight",
        "shared_input.bias",
        "hidden1.weight",
        "hidden1.bias",
    }


def test_host_sending_a_private_parameter_is_refused(institutions):
    job = _job(institutions)
    weights = {**_shared_initial(job), "input.weight": np.zeros((16, 3), np.float32)}
    reply = client.train(_message(weights, 1), _context(job, 0))
    assert reply.has_error() and "this job shares exactly" in reply.error.reason


def test_shared_declaration_naming_nothing_is_refused(institutions):
    with pytest.raises(ConfigError, match="names no parameter"):
        global_shapes(_job(institutions, shared=("trunk",)), 40)


def test_fine_tuning_loads_base_freezes_and_changes_only_the_rest(institutions, tmp_path):
    job = _job(institutions)
    base = {k: np.full(v.shape, 0.05, np.float32) for k, v in _shared_initial(job).items()}
    base_file = tmp_path / "base.safetensors"
    save_file(base, str(base_file))
    tuned = _job(institutions, base_model=str(base_file), freeze=("hidden1",))
    initial = JobHost(tuned).initial_weights()
    assert all(np.array_equal(initial[k], base[k]) for k in base)
    reply = client.train(_message(initial, 1), _context(tuned, 1))
    out = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    assert np.array_equal(out["hidden1.weight"], base["hidden1.weight"])
    assert np.array_equal(out["hidden1.bias"], base["hidden1.bias"])
    assert not np.array_equal(out["head.weight"], base["head.weight"])


def test_base_model_with_wrong_shapes_is_refused(institutions, tmp_path):
    good = _shared_initial(_job(institutions))
    bad = tmp_path / "bad.safetensors"
    save_file({**good, "hidden1.weight": np.zeros((3, 3), np.float32)}, str(bad))
    with pytest.raises(ConfigError, match="has shape \\(3, 3\\)"):
        JobHost(_job(institutions, base_model=str(bad))).initial_weights()
    with pytest.raises(ConfigError, match="does not exist"):
        JobHost(_job(institutions, base_model=str(tmp_path / "absent.safetensors"))).initial_weights()
