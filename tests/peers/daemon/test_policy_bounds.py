"""peer.toml [policy] bounds a job's model size, rounds and batch size: a job over one is
declined with the reason (audit log, the host's view) and nothing is reserved.

Real daemons in-process on 127.0.0.1 over mutual TLS, as in test_daemon_refusals.
"""

import asyncio
import os
import re
import socket
import sqlite3

import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.config import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MODEL_PARAMETERS,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_MAX_WALL_MINUTES,
    load_config,
)
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.model_spec import ModelSpec
from fedsilo.peers.models import build_model

from ._consortium import OWNER, make_consortium, member_client, run, running, signed
from .test_consortium_e2e import descendants
from .test_daemon_refusals import propose, refused_without_change, state_of

DEFAULT_POLICY = 'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("bounds"), peers=("bank-a", "bank-b"))


def _job(consortium, path, job_id, hidden="[16]", rounds=2, batch=64, **kwargs):
    consortium.job_toml(path, job_id, rounds=rounds, **kwargs)
    text = (
        path.read_text()
        .replace("hidden = [16]", f"hidden = {hidden}")
        .replace("batch-size = 64", f"batch-size = {batch}")
    )
    path.write_text(text)
    return signed(consortium, path)


@pytest.mark.parametrize(
    "spec, n_features",
    [(ModelSpec("mlp", (16,)), 1), (ModelSpec("mlp", (64, 32)), 23), (ModelSpec("logreg", ()), 9)],
)
def test_the_counted_parameters_are_the_built_models(spec, n_features):
    built = sum(p.numel() for p in build_model(spec, n_features).parameters())
    assert spec.parameter_count(n_features) == built


def test_huge_layers_are_counted_without_building_them():
    # 1·10^5 + 10^5 (input) + 10^10 + 10^5 (hidden1) + 10^5 + 1 (head)
    assert ModelSpec("mlp", (100_000, 100_000)).parameter_count(1) == 10_000_400_001


@pytest.mark.parametrize(
    "job_kwargs, fragment",
    [
        ({"hidden": "[100000, 100000]"}, "has at least 10,000,400,001 parameters with 1 input feature(s)"),
        ({"rounds": 1_000_000}, "asks 1000000 rounds, above this peer's bound of 200"),
        ({"batch": 1_000_000_000}, "batch size of 1000000000, above this peer's bound of 10000"),
    ],
)
def test_a_job_over_a_default_bound_is_declined_and_nothing_is_reserved(consortium, tmp_path, job_kwargs, fragment):
    envelope = _job(consortium, tmp_path / "job.toml", f"huge-{len(fragment)}", **job_kwargs)
    reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), fragment)
    assert reply["decision"] == "declined" and fragment in reply["reason"]
    assert entry[1] == "job.decline"
    assert not state_of(consortium, "bank-b")[1], "a declined job left a ledger row"


def test_the_host_refuses_a_job_over_its_own_bound_at_submit(consortium, tmp_path):
    envelope = _job(
        consortium, tmp_path / "job.toml", "huge-at-host", host="bank-b", participants=["bank-b", "bank-a"], rounds=500
    )

    async def attempt():
        async with member_client(consortium, OWNER) as client:
            with pytest.raises(PeerUnreachable, match="403") as error:
                await client.call("POST", f"{consortium.addresses['bank-b']}/v1/jobs", envelope)
        return str(error.value)

    message, entry = refused_without_change(consortium, attempt, "above this peer's bound of 200")
    assert "max-rounds" in message and entry[1] == "job.submit"


def test_the_model_is_weighed_again_with_the_peers_own_columns_and_the_host_sees_why(consortium, tmp_path):
    """bank-b allows 60 parameters: [16] with one input (49) passes the first check, but its table has 4
    feature columns (4·16+16+17 = 97): declined at acceptance; the host's view says why; no ledger row."""
    consortium.write_peer_toml("bank-b", policy=DEFAULT_POLICY + "max-model-parameters = 60\n")
    envelope = _job(consortium, tmp_path / "job.toml", "wide-1")

    async def body():
        async with running(consortium):
            async with member_client(consortium, OWNER) as client:
                await client.call("POST", f"{consortium.addresses['bank-a']}/v1/jobs", envelope)
                for _ in range(600):
                    view = await client.call("GET", f"{consortium.addresses['bank-a']}/v1/jobs/wide-1")
                    if view["state"] != "proposing":
                        return view
                    await asyncio.sleep(0.1)
        raise AssertionError("the host never closed its proposals")

    try:
        view = run(body())
    finally:
        consortium.write_peer_toml("bank-b")
    declined = {p["peer"]: p for p in view["participants"]}["bank-b"]
    assert view["state"] == "failed"
    assert declined["decision"] == "declined"
    assert "at least 97 parameters with 4 input feature(s)" in declined["reason"]
    assert "bound of 60" in declined["reason"]
    with sqlite3.connect(consortium.root / "bank-b" / "state" / "ledger.sqlite") as conn:
        assert conn.execute("SELECT job_id FROM jobs WHERE job_id = 'wide-1'").fetchall() == []
    with sqlite3.connect(consortium.root / "bank-a" / "state" / "ledger.sqlite") as conn:
        assert conn.execute("SELECT state FROM jobs WHERE job_id = 'wide-1'").fetchall() == []
    audit = state_of(consortium, "bank-b")[2]
    assert any(a[1] == "job.decline" and "at least 97 parameters" in a[3] for a in audit)


def test_bounds_have_safe_defaults_and_bad_values_are_refused(consortium):
    path = consortium.config_path("bank-b")
    policy = load_config(path).policy
    assert (policy.max_model_parameters, policy.max_rounds, policy.max_batch_size, policy.max_wall_minutes) == (
        DEFAULT_MAX_MODEL_PARAMETERS,
        DEFAULT_MAX_ROUNDS,
        DEFAULT_MAX_BATCH_SIZE,
        DEFAULT_MAX_WALL_MINUTES,
    )
    try:
        for line, message in [
            ("max-rounds = 0", "policy.max-rounds must be a positive integer (got 0)"),
            ("max-batch-size = 2.5", "policy.max-batch-size must be int"),
            ("max-wall-minutes = -1", "policy.max-wall-minutes must be a positive number of minutes"),
            ("max-model-parameters = true", "policy.max-model-parameters must be int"),
        ]:
            consortium.write_peer_toml("bank-b", policy=DEFAULT_POLICY + line + "\n")
            with pytest.raises(ConfigError, match=re.escape(message)):
                load_config(path)
    finally:
        consortium.write_peer_toml("bank-b")


def test_a_job_past_the_wall_time_is_stopped_and_fails_with_its_reservation_settled(consortium, tmp_path):
    """bank-b trains a job for at most 0.05 minutes: its SuperNode, pointed at a SuperLink that never
    answers, is stopped after 3 s, the job fails saying so, nothing was spent, so the reservation is released.

    The "SuperLink" is a listening socket that never accepts: the SuperNode's connection waits in its
    backlog and gets no TLS answer. (A closed port would refuse it, and the SuperNode gives up after its
    connection retries, which on a loaded machine can come before the wall time.)"""
    consortium.write_peer_toml("bank-b", policy=DEFAULT_POLICY + "max-wall-minutes = 0.05\n")
    envelope = _job(consortium, tmp_path / "job.toml", "wall-1")
    base = consortium.addresses["bank-b"]
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)

    async def body():
        async with running(consortium, ["bank-b"]):
            async with member_client(consortium, "bank-a") as host:
                assert (await host.call("POST", f"{base}/v1/proposals", envelope))["decision"] == "accepted"
                reserved = state_of(consortium, "bank-b")[1]
                fleet = f"127.0.0.1:{silent.getsockname()[1]}"
                await host.call("POST", f"{base}/v1/jobs/wall-1/start", {"fleet_address": fleet})
                for _ in range(1200):
                    view = await host.call("GET", f"{base}/v1/jobs/wall-1")
                    if view["state"] != "training":
                        return reserved, view, supernodes()
                    await asyncio.sleep(0.1)
        raise AssertionError("the job outlived its wall time by minutes")

    try:
        reserved, view, left = run(body())
    finally:
        silent.close()
        consortium.write_peer_toml("bank-b")
    assert ("wall-1", "reserved") in reserved
    assert view["state"] == "failed"
    assert "did not finish at this peer within 3 s" in view["detail"]
    assert all(job != "wall-1" for job, _ in state_of(consortium, "bank-b")[1]), "the reservation was not settled"
    assert left == [], f"SuperNode processes left running: {left}"


def supernodes():
    """This test process's descendants that run a SuperNode."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"supernode" in command:
            found.append(command.decode(errors="replace"))
    return found
