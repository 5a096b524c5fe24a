"""Training on Flower's Deployment Engine: real SuperLink, SuperNodes and ClientApps on 127.0.0.1.

The slow tests start real processes (TLS with a throwaway CA, SuperNode
authentication) and check what a peer and a host get out of a job, that an
unauthorized SuperNode is refused, and that no process outlives its job, also after
a crash. The fast ones check the key files and the peer's own job records.
"""

import http.client
import os
import signal
import ssl
import stat

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedsilo.errors import ConfigError
from fedsilo.peers.client import node_state
from fedsilo.peers.data.bank import split_train_test
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.deployment import DeploymentError, TLSFiles, host_training, join_training, node_auth_keypair
from fedsilo.peers.deployment.local_ca import make_local_tls
from fedsilo.peers.deployment.tls import node_key_path, public_key_pem
from fedsilo.peers.identity.round_keys import simulated_consortium, simulated_files
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec, global_shapes, plan_dp
from fedsilo.peers.models import ModelSpec
from fedsilo.privacy.accounting import Mechanism
from fedsilo.simulations.data.synthetic import generate_consortium

LABEL = "default"


def _job(job_id: str, peers: int, rounds: int = 2) -> JobConfig:
    return JobConfig(
        label=LABEL,
        encoder_path="",
        job_id=job_id,
        peers=peers,
        model=ModelSpec("mlp", (16,)),
        train=TrainSpec(rounds=rounds, batch_size=64, lr=0.3),
        dp=DPSpec(epsilon=2.0, delta=1e-5),
    )


# ------------------------------------------------------------------ fast
def test_node_key_is_private_made_once_and_registrable(tmp_path):
    public = node_auth_keypair(tmp_path / "keys")
    assert public.startswith(b"ecdsa-sha2-nistp384 ")
    assert stat.S_IMODE(node_key_path(tmp_path / "keys").stat().st_mode) == 0o600
    assert node_auth_keypair(tmp_path / "keys") == public  # the same key, not a new one
    assert public_key_pem(public).startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ConfigError, match="neither an OpenSSH line nor PEM"):
        public_key_pem(b"not a key")


def test_missing_tls_file_is_named(tmp_path):
    tls = make_local_tls(tmp_path)
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="private key .*nope.key does not exist"):
        TLSFiles(tls.ca_cert, tls.cert, tmp_path / "nope.key").check()


def test_peer_privacy_record_round_trip(tmp_path):
    spent = (Mechanism(1.5, 0.1, 7), Mechanism(1.5, 0.1, 7))
    assert node_state.read_privacy(tmp_path, "job/1") is None
    node_state.write_privacy(tmp_path, node_state.JobPrivacy("job/1", spent, finished=True))
    assert node_state.read_privacy(tmp_path, "job/1") == node_state.JobPrivacy("job/1", spent, True)
    assert [p.name for p in tmp_path.iterdir()] == ["job_1.privacy.json"]  # no path from a job id


def test_a_secure_job_is_not_joined_without_the_peers_identity_and_the_node_config_names_it(tmp_path):
    from fedsilo.peers.deployment.join import _node_config
    from fedsilo.peers.identity.round_keys import IdentityFiles

    job = _job("needs-identity", peers=2)
    data = tmp_path / "data.csv"
    data.write_text("x\n1\n")
    node_auth_keypair(tmp_path / "keys")
    tls = make_local_tls(tmp_path / "tls")
    with pytest.raises(ConfigError, match="aggregates securely: give this peer's consortium identity"):
        join_training(job, tmp_path / "work", "127.0.0.1:1", tls.ca_cert, tmp_path / "keys", data)
    files = IdentityFiles(tmp_path / "peer.key", tmp_path / "peer.pem", tmp_path / "ca.pem", tmp_path / "m.json")
    config = _node_config(data, tmp_path, job, files)
    assert 'job-id="needs-identity"' in config and 'secagg="on"' in config
    assert f'identity-key="{tmp_path / "peer.key"}"' in config and f'manifest="{tmp_path / "m.json"}"' in config


# ------------------------------------------------------------------ slow: real processes
@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    tls = make_local_tls(root / "tls")
    frames = generate_consortium(2, seed=5, total_customers=1200)
    simulated_consortium(root / "identities", 2)
    peers = []
    for i, frame in enumerate(frames):
        data = root / f"peer-{i}" / "data.csv"
        data.parent.mkdir()
        frame.to_csv(data, index=False)
        peers.append((root / f"peer-{i}", data, node_auth_keypair(root / f"peer-{i}" / "keys")))
    return root, tls, frames, peers


@pytest.mark.slow
def test_secure_dp_job_runs_and_each_peer_knows_what_it_spent(consortium):
    root, tls, frames, peers = consortium
    job = _job("deployed-secure-dp", peers=2)
    hosted = host_training(job, root / "host", tls, [key for _, _, key in peers])
    joined = []
    try:
        joined = [
            join_training(
                job,
                home / "work",
                hosted.fleet_address,
                tls.ca_cert,
                home / "keys",
                data,
                identity=simulated_files(root / "identities", i),
            )
            for i, (home, data, _) in enumerate(peers)
        ]
        result = hosted.wait(timeout=240)
        spent = [peer.wait(timeout=60).spent for peer in joined]
    finally:
        hosted.stop()
        for peer in joined:
            peer.stop()

    # the host fitted the encoder from the peers' aggregates: the same as from the pooled tables
    encoder = TabularEncoder.fit_frames(frames, LABEL)
    assert result.encoder_path.read_text() == encoder.to_json()
    weights = load_file(str(result.model_path))
    shapes = global_shapes(job, encoder.n_features)
    assert {k: v.shape for k, v in weights.items()} == shapes
    assert all(np.isfinite(v).all() for v in weights.values())

    rounds = result.metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(len(r["train"]) == 2 and len(r["evaluate"]) == 2 and not r["errors"] for r in rounds)
    assert all(r["secure_aggregation"]["aborted"] is None for r in rounds)
    # what each peer's own accountant recorded: the job's per-round DP-SGD plan for its rows
    for frame, peer_spent in zip(frames, spent):
        train_rows, _ = split_train_test(frame[LABEL].to_numpy(), job.train.test_fraction, job.train.seed)
        assert peer_spent == [plan_dp(job, len(train_rows)).per_round] * 2
    assert hosted.supervisor.alive() == [] and all(peer.supervisor.alive() == [] for peer in joined)


@pytest.mark.slow
def test_unauthorized_supernode_is_refused_and_a_crash_stops_everything(consortium, tmp_path):
    root, tls, _, peers = consortium
    job = _job("deployed-refusal", peers=1, rounds=1)
    (home, data, key), (stranger, _, _) = peers
    hosted = host_training(job, tmp_path / "host", tls, [key])
    joined = None
    try:
        joined = join_training(
            job,
            tmp_path / "stranger",
            hosted.fleet_address,
            tls.ca_cert,
            stranger / "keys",
            data,
            identity=simulated_files(root / "identities", 1),
        )
        with pytest.raises(DeploymentError, match="refused this peer's SuperNode .* not one the host authorized"):
            joined.wait(timeout=120)
        assert joined.supervisor.alive() == []
        record = node_state.read_privacy(tmp_path / "stranger", job.job_id)  # opened with the cap before joining
        assert record is not None and record.spent == () and not record.finished  # it never trained

        # the job's public address serves the Fleet API only: no Control or Runtime call reaches the SuperLink
        for method, path in [
            ("POST", "/v1/control/list-runs"),
            ("POST", "/v1/control/start-run"),
            ("POST", "/v1/control/register-node"),
            ("POST", "/v1/runtime/acquire-task"),
            ("POST", "/v1/fleet/../control/start-run"),
            ("POST", "/v1/fleet/%2e%2e/control/stop-run"),
            ("GET", "/v1/fleet/pull-messages"),
            ("POST", "/v1/fleet/pull-messages?x=1"),
        ]:
            status, body = _https(hosted.fleet_address, tls.ca_cert, method, path)
            assert status == 404 and b"serves a job's Fleet API only" in body, (path, status, body)
        assert _https(hosted.fleet_address, tls.ca_cert, "GET", "/health")[0] == 200
        assert [c.name for c in hosted.supervisor.children] == ["superlink", "fleet-gateway", "superexec"]

        superlink = hosted.supervisor.children[0]
        os.kill(superlink.process.pid, signal.SIGKILL)
        with pytest.raises(DeploymentError, match="superlink exited with code -9"):
            hosted.wait(timeout=60)
        assert hosted.supervisor.alive() == []  # its SuperExec and ServerApp went with it
    finally:
        hosted.stop()
        if joined is not None:
            joined.stop()


def _https(address, ca_cert, method, path):
    """(status, body) of one raw HTTPS request; the path is sent exactly as given."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPSConnection(
        host, int(port), timeout=30, context=ssl.create_default_context(cafile=str(ca_cert))
    )
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.putheader("Content-Length", "2")
        connection.endheaders(b"{}")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
