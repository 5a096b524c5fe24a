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
