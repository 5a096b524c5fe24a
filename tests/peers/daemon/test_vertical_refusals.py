"""A vertical job at the feature party's daemon, before any code is released: what it reserves, and what it refuses.

One daemon (the bank) runs; the broker (the job's host) and an outsider call it as
members over mTLS. The bank reserves PureMechanism(ε, 1) on acceptance, before anything
is released; every refused call below leaves its jobs, ledger and stored codes as they were.
"""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.vertical.messages import BatchRequest
from fedsilo.privacy.accounting import PureMechanism
from fedsilo.simulations.data.schemas import synthetic_transfer_table
from fedsilo.simulations.vertical import PARTY_COLUMNS

from ._consortium import make_consortium, member_client, run, running, signed
from .test_daemon_refusals import state_of

pytestmark = pytest.mark.slow  # starts a daemon
REQUEST = base64.b64encode(BatchRequest(1, np.array([0, 1]), True).to_bytes()).decode()
POLICY = (
    'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'setups = ["vertical"]\ndp = ["local", "distributed"]\nvertical-label-holders = ["broker"]\n'
    'vertical-schemes = ["coded", "split"]\n'
)
LIST = (
    '\n[lists.credit-card]\npath = "data.csv"\nid-column = "ID"\npsi = ["broker"]\npsi-modes = ["both"]\n'
    'psi-protocols = ["dh"]\npsi-quota = 10000\nqueriers = { broker = 10 }\n'
)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("vertical"), peers=("broker", "bank", "outsider"), rows=10)
    bank = synthetic_transfer_table(seed=0, customers=300)[list(PARTY_COLUMNS)]
    bank.insert(0, "ID", [f"customer-{i}" for i in range(len(bank))])
    bank.to_csv(consortium.root / "bank" / "data.csv", index=False)
    consortium.write_peer_toml("bank", policy=POLICY)
    with open(consortium.config_path("bank"), "a") as handle:
        handle.write(LIST)
    return consortium


def _job(consortium, tmp_path, job_id, extra=""):
    path = consortium.job_toml(
        tmp_path / f"{job_id}.toml", job_id, ["broker", "bank"], extra='setup = "vertical"\n' + extra
    )
    return signed(consortium, path)


async def _call(consortium, caller, path, body):
    async with member_client(consortium, caller) as client:
        return await client.call("POST", f"{consortium.addresses['bank']}{path}", body)


def test_the_feature_party_reserves_its_one_release_on_acceptance_and_refuses_out_of_turn_calls(consortium, tmp_path):
    envelope = _job(consortium, tmp_path, "v-accept")

    async def body():
        async with running(consortium, ["bank"]) as services:
            reply = await _call(consortium, "broker", "/v1/proposals", envelope)
            assert reply["decision"] == "accepted", reply
            assert reply["planned"] == [PureMechanism(1.0, 1).to_dict()]
            record = services["bank"].ledger.jobs("credit-card")["v-accept"]
            assert record.state == "reserved" and list(record.mechanisms) == [PureMechanism(1.0, 1)]
            before = state_of(consortium, "bank")[:2]
            attempts = [
                # an outsider asks for codes of the broker's job
                ("outsider", "release", {"requests": []}, "403: only the job's label holder broker"),
                # the broker skips the alignment
                ("broker", "release", {"requests": [REQUEST]}, "409: job v-accept is not aligned yet: align first"),
                ("broker", "release", {"requests": ["AAAA"]}, "400: a batch request is at least"),
                ("broker", "score", {"session": "00" * 16}, "409: job v-accept is accepted here, not finished"),
                # a coded job's host asks for the split scheme's scoring embeddings
                ("broker", "embed", {"session": "00" * 16}, "409: job v-accept runs the coded scheme: no embedding"),
                # the broker names a PSI run that never happened (or someone else's)
                ("broker", "align", {"session": "11" * 16, "digest": "x"}, "409: no confirmed both-sides PSI"),
                ("broker", "align", {"session": "zz"}, "400: the body must name the PSI run"),
            ]
            for caller, route, request, fragment in attempts:
                with pytest.raises(PeerUnreachable, match=fragment.replace("(", r"\(")):
                    await _call(consortium, caller, f"/v1/jobs/v-accept/vertical/{route}", request)
            # the broker tries to start a SuperNode on the bank's table under the codes' reservation
            with pytest.raises(
                PeerUnreachable, match="409: job v-accept is a coded vertical job: it runs no SuperNode"
            ):
                await _call(consortium, "broker", "/v1/jobs/v-accept/start", {"fleet_address": "127.0.0.1:9092"})
            assert state_of(consortium, "bank")[:2] == before
            assert not (consortium.root / "bank" / "state" / "vertical" / "v-accept" / "released.npy").exists()

    run(body())


@pytest.mark.parametrize(
    "extra, participants, fragment",
    [
        ('public-rows = 1000\n[dp]\nmode = "distributed"', None, "not yet supported: vertical jobs run with local DP"),
        ("", ["broker", "bank", "outsider"], "a vertical job runs between its label holder (the host) and one"),
    ],
)
def test_a_vertical_job_the_coded_scheme_cannot_run_is_declined_with_nothing_reserved(
    consortium, tmp_path, extra, participants, fragment
):
    job_id = f"v-decline-{len(extra)}-{len(participants or [])}"
    path = consortium.job_toml(
        tmp_path / "job.toml", job_id, participants or ["broker", "bank"], extra='setup = "vertical"\n'
    )
    if extra:
        text = (
            path.read_text()
            .replace("[dp]\n", '[dp]\nmode = "distributed"\n')
            .replace('setup = "vertical"\n', 'setup = "vertical"\npublic-rows = 1000\n')
        )
        path.write_text(text)
    envelope = signed(consortium, path)

    async def body():
        async with running(consortium, ["bank"]):
            return await _call(consortium, "broker", "/v1/proposals", envelope)

    before = state_of(consortium, "bank")[1]
    reply = run(body())
    assert reply["decision"] == "declined" and fragment in reply["reason"], reply
    assert state_of(consortium, "bank")[1] == before


def test_the_feature_party_without_its_alignment_list_declines(consortium, tmp_path):
    consortium.write_peer_toml("bank", policy=POLICY)  # no [lists.credit-card]
    try:
        envelope = _job(consortium, tmp_path, "v-nolist")

        async def body():
            async with running(consortium, ["bank"]):
                return await _call(consortium, "broker", "/v1/proposals", envelope)

        reply = run(body())
    finally:
        with open(consortium.config_path("bank"), "a") as handle:
            handle.write(LIST)
    assert reply["decision"] == "declined"
    assert (
        "aligns through its shared list named like the source, [lists.credit-card]: it has no such list"
        in (reply["reason"])
    )
    assert pd.read_csv(consortium.root / "bank" / "data.csv").shape[0] == 300


def test_the_label_holder_of_a_split_job_cannot_make_the_feature_party_release_codes(consortium, tmp_path):
    """A malicious host of a split job asks the bank for the coded scheme's release and scoring, and for scoring
    embeddings before the job is trained: all refused, the bank's reservation (its Gaussian plan) stays as it
    was, nothing is drawn or committed."""
    path = consortium.job_toml(tmp_path / "split.toml", "v-split", ["broker", "bank"], extra='setup = "vertical"\n')
    path.write_text(path.read_text() + '\n[vertical]\nscheme = "split"\n')
    envelope = signed(consortium, path)

    async def body():
        async with running(consortium, ["bank"]) as services:
            reply = await _call(consortium, "broker", "/v1/proposals", envelope)
            assert reply["decision"] == "accepted", reply
            planned = services["bank"].ledger.jobs("credit-card")["v-split"].mechanisms
            assert len(planned) == 1 and not isinstance(planned[0], PureMechanism)  # Gaussian releases
            before = state_of(consortium, "bank")[:2]
            for route, request in (("release", {"requests": [REQUEST]}), ("score", {"session": "00" * 16})):
                with pytest.raises(PeerUnreachable, match="409: job v-split runs the split scheme: no code"):
                    await _call(consortium, "broker", f"/v1/jobs/v-split/vertical/{route}", request)
            # and no embedding for scoring before its bottom model is trained
            with pytest.raises(PeerUnreachable, match="409: job v-split is accepted here, not finished"):
                await _call(consortium, "broker", "/v1/jobs/v-split/vertical/embed", {"session": "00" * 16})
            assert state_of(consortium, "bank")[:2] == before
            record = services["bank"].ledger.jobs("credit-card")["v-split"]
            assert record.state == "reserved" and record.mechanisms == planned
            assert not (consortium.root / "bank" / "state" / "vertical" / "v-split" / "released.npy").exists()

    run(body())
