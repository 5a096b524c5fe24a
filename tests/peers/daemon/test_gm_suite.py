"""A gm consortium's daemons: a job with the owner's SM2 signature is accepted over mutual TLS; the
same job without it, or with an SM2 signature by another key, is refused with an audit entry and no
state change (the attacker: a member holding the owner's ECDSA-signed envelope)."""

import copy

import pytest

from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.identity.signing import sign_with_suite
from fedsilo.privacy.crypto_suite import get_suite

from ._consortium import make_consortium, run, running, signed
from .test_daemon_refusals import propose, refused_without_change


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("gm"), peers=("bank-a", "bank-b"), suite="gm")


def test_a_gm_signed_job_is_accepted(consortium, tmp_path):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "gm-good-1"))
    assert "suite_signature" in envelope

    async def body():
        async with running(consortium, ["bank-b"]):
            return await propose(consortium, envelope)

    assert run(body())["decision"] == "accepted"


@pytest.mark.parametrize(
    "tamper, status, fragment",
    [
        (lambda e: e.pop("suite_signature"), "400", "carries no gm-suite signature"),
        (
            lambda e: e.__setitem__(
                "suite_signature", sign_with_suite("gm", get_suite("gm").generate_signing_key(), e["job"])
            ),
            "403",
            "its gm-suite signature does not verify",
        ),
    ],
)
def test_a_job_without_the_owners_sm2_signature_is_refused(consortium, tmp_path, tamper, status, fragment):
    envelope = copy.deepcopy(signed(consortium, consortium.job_toml(tmp_path / "job.toml", "gm-forged-1")))
    tamper(envelope)

    async def attempt():
        with pytest.raises(PeerUnreachable, match=status):
            await propose(consortium, envelope)

    refused_without_change(consortium, attempt, fragment)


@pytest.fixture(scope="module")
def gm_daemons(tmp_path_factory):
    """Three gm peers' daemons as processes (training on Flower's Deployment Engine)."""
    from .test_consortium_e2e import start, stop

    consortium = make_consortium(tmp_path_factory.mktemp("gm-e2e"), rows=600, suite="gm")
    processes = {name: start(consortium, name) for name in consortium.peers}
    yield consortium
    for process in processes.values():
        stop(process)


@pytest.mark.slow
def test_a_gm_consortiums_secure_job_aggregates_under_the_gm_suite(gm_daemons, tmp_path):
    """End to end: the host's ServerApp runs SecAgg+ under the gm suite its manifest names, each
    peer's SuperNode under its own manifest's with its SM2 signing key; every round is released
    with no peer refused and none aborted (a suite mismatch would refuse every advertisement)."""
    import json

    from .test_consortium_e2e import OWNER, call, wait_for

    consortium = gm_daemons
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "gm-e2e-1", rounds=2, epsilon=2.0))
    call(consortium, OWNER, "POST", f"{consortium.addresses['bank-a']}/v1/jobs", envelope)
    view = wait_for(consortium, "bank-a", "gm-e2e-1", ("finished", "failed"))
    assert view["state"] == "finished", view["detail"]
    host = consortium.root / "bank-a" / "state" / "jobs" / "gm-e2e-1" / "host"
    assert '"consortium.suite" = "gm"' in (host / "app" / "pyproject.toml").read_text()
    rounds = json.loads((host / "result" / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["secure_aggregation"] == {"dropped": {}, "refused": {}, "aborted": None} for r in rounds), rounds
