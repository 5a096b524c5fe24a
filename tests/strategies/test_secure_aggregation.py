"""SecAgg+ over Flower messages: the wire format and the refusals of the strategy and the mod."""

import numpy as np
import pytest
from _consortium import identity_configs
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.errors import ProtocolError
from fedsilo.peers.client.mods.secagg import secagg_mod
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.secagg import SecAggConfig
from fedsilo.strategies.secagg import SECAGG_CONFIG_KEY, SecureAggregation
from fedsilo.strategies.secagg.wire import read_stage, stage_record


def _identity():
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1


def _reply(content: RecordDict, node: int) -> Message:
    _identity()
    ins = Message(RecordDict(), dst_node_id=node, message_type="train")
    reply = Message(content, reply_to=ins)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


def test_wire_round_trip_keeps_bytes_and_64_bit_ids():
    payload = {"participants": [2**64 - 1, 3], "round_seed": b"\x00\xff" * 16, "nested": {"k": [b"ab", 7]}}
    stage, server_round, back = read_stage(RecordDict({SECAGG_CONFIG_KEY: stage_record("share", 5, payload)}))
    assert (stage, server_round, back) == ("share", 5, payload)


@pytest.mark.parametrize(
    "record",
    [
        ConfigRecord({"stage": "share", "round": 1, "payload": b"not json"}),
        ConfigRecord({"stage": "gossip", "round": 1, "payload": b"{}"}),
        ConfigRecord({"stage": "share", "round": 1, "payload": b'{"x": {"$hex": "zz"}}'}),
        ConfigRecord({"stage": "share", "round": 1, "payload": b"[1, 2]"}),
    ],
)
def test_malformed_stage_records_are_refused(record):
    with pytest.raises(ProtocolError):
        read_stage(RecordDict({SECAGG_CONFIG_KEY: record}))


def test_strategy_refuses_wrong_stage_wrong_round_and_duplicates_naming_the_peer():
    strategy = SecureAggregation(FedAvg(), SecAggConfig())
    wrong_stage = _reply(RecordDict({SECAGG_CONFIG_KEY: stage_record("unmask", 3, {})}), node=11)
    assert strategy._payload(3, 11, wrong_stage, "advertise") is None
    wrong_round = _reply(RecordDict({SECAGG_CONFIG_KEY: stage_record("advertise", 2, {})}), node=12)
    assert strategy._payload(3, 12, wrong_round, "advertise") is None
    good = _reply(RecordDict({SECAGG_CONFIG_KEY: stage_record("advertise", 3, {"a": 1})}), node=13)
    collected = strategy._collect("advertise", 3, [good, good])
    assert list(collected) == [13]
    refused = strategy.refusals[3]
    assert "expected advertise of round 3" in refused[11] and "round 2" in refused[12]
    assert "duplicate advertise reply" in refused[13]


def test_mod_refuses_a_replayed_stage_with_an_error_reply(tmp_path):
    _identity()
    job = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="j", peers=3)
    node_config = identity_configs(tmp_path / "consortium", [7, 8, 9])[7]
    context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=job.to_run_config())
    setup = {"round_id": 1, "participants": [7, 8, 9], "round_seed": b"\x01" * 32}

    def advertise():
        msg = Message(
            RecordDict({SECAGG_CONFIG_KEY: stage_record("advertise", 1, setup)}), dst_node_id=7, message_type="train"
        )
        return secagg_mod(msg, context, lambda m, c: pytest.fail("the app must not run at this stage"))

    first = advertise()
    assert not first.has_error()
    stage, _, keys = read_stage(first.content)
    assert stage == "advertise" and len(keys["enc_public_key"]) == 32
    replay = advertise()
    assert replay.has_error() and "not newer than round 1" in replay.error.reason


def test_mod_lets_other_messages_through():
    _identity()
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=7, message_type="train")
    sentinel = Message(RecordDict(), reply_to=msg)
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    assert secagg_mod(msg, context, lambda m, c: sentinel) is sentinel
    np.testing.assert_equal(len(context.state), 0)


# ------------------------------------------------------------------ what the peer holds the host to
def _peers_at_mask_stage(tmp_path, job: JobConfig, nodes=(7, 8, 9)):
    """Three peers (real `secagg_mod`, own identities) taken through advertise and share by a real server."""
    from fedsilo.peers.job import secagg_config
    from fedsilo.privacy.secagg import AdvertiseKeys, SecAggServer
    from fedsilo.privacy.secagg.messages import encrypted_shares_from_dict

    _identity()
    configs = identity_configs(tmp_path / "consortium", list(nodes))
    contexts = {
        n: Context(run_id=1, node_id=n, node_config=configs[n], state=RecordDict(), run_config=job.to_run_config())
        for n in nodes
    }
    server = SecAggServer(secagg_config(job), 1, list(nodes), 4)

    def send(node, stage, payload, app, extra=None):
        content = RecordDict({**(extra or {}), SECAGG_CONFIG_KEY: stage_record(stage, 1, payload)})
        return secagg_mod(Message(content, dst_node_id=node, message_type="train"), contexts[node], app)

    never = lambda m, c: pytest.fail("the app must not run at this stage")  # noqa: E731
    for n in nodes:
        server.receive_advertise(
            n, AdvertiseKeys.from_dict(read_stage(send(n, "advertise", server.setup.to_dict(), never).content)[2])
        )
    for n, request in server.end_advertise().items():
        server.receive_shares(
            n, encrypted_shares_from_dict(read_stage(send(n, "share", request.to_dict(), never).content)[2])
        )
    return send, server.end_share_keys()


def test_a_replayed_mask_request_is_refused_before_the_peer_trains(tmp_path):
    from flwr.app import Array, ArrayRecord, MetricRecord

    job = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="j", peers=3)
    send, requests = _peers_at_mask_stage(tmp_path, job)
    trained = []

    def app(msg, _context):
        trained.append(msg.metadata.dst_node_id)
        w = msg.content["arrays"]["w"].numpy()
        return Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(w + 0.1)}), "metrics": MetricRecord({"num-examples": 10})}),
            reply_to=msg,
        )

    weights = {"arrays": ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32))})}
    first = send(7, "mask", requests[7].to_dict(), app, weights)
    assert not first.has_error() and trained == [7]
    replay = send(7, "mask", requests[7].to_dict(), app, weights)
    assert replay.has_error() and "expected stage 'shared'" in replay.error.reason
    assert trained == [7]  # no second training, no second budget spent


def test_a_peer_does_not_answer_a_secure_job_in_plaintext_whatever_the_host_sends(tmp_path):
    _identity()
    declared = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="j", peers=3)
    from dataclasses import replace

    from fedsilo.peers.job import SecAggSpec

    forged = replace(declared, secagg=SecAggSpec(mode="off"))  # the host's run config says plaintext
    plain = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=7, message_type="train")
    never = lambda m, c: pytest.fail("the peer must not train in plaintext")  # noqa: E731
    for node_config, run_config in (
        ({"job-id": "j", "secagg": "on"}, forged.to_run_config()),
        ({}, declared.to_run_config()),
    ):
        context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config)
        reply = secagg_mod(plain, context, never)
        assert reply.has_error() and "declares secure aggregation" in reply.error.reason
    # a job accepted as plaintext trains as usual
    sentinel = Message(RecordDict(), reply_to=plain)
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"job-id": "j", "secagg": "off"},
        state=RecordDict(),
        run_config=forged.to_run_config(),
    )
    assert secagg_mod(plain, context, lambda m, c: sentinel) is sentinel


def test_a_peer_refuses_secure_aggregation_stages_of_another_job_than_it_accepted(tmp_path):
    _identity()
    job = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="other", peers=3)
    node_config = {**identity_configs(tmp_path / "consortium", [7, 8, 9])[7], "job-id": "j", "secagg": "on"}
    context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=job.to_run_config())
    setup = {"round_id": 1, "participants": [7, 8, 9], "round_seed": b"\x01" * 32}
    msg = Message(
        RecordDict({SECAGG_CONFIG_KEY: stage_record("advertise", 1, setup)}), dst_node_id=7, message_type="train"
    )
    reply = secagg_mod(msg, context, lambda m, c: pytest.fail("no app at this stage"))
    assert reply.has_error() and "started for job 'j'" in reply.error.reason


def test_a_deployed_peer_without_its_identity_refuses_to_advertise(tmp_path):
    _identity()
    job = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="j", peers=3)
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"state-dir": str(tmp_path)},
        state=RecordDict(),
        run_config={**job.to_run_config(), "simulation.identity-dir": str(tmp_path)},
    )
    setup = {"round_id": 1, "participants": [7, 8, 9], "round_seed": b"\x01" * 32}
    msg = Message(
        RecordDict({SECAGG_CONFIG_KEY: stage_record("advertise", 1, setup)}), dst_node_id=7, message_type="train"
    )
    reply = secagg_mod(msg, context, lambda m, c: pytest.fail("no app at this stage"))
    assert reply.has_error() and "needs this peer's consortium identity" in reply.error.reason
