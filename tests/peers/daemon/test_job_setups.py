"""Every setup and DP mechanism in the signed job, and each peer's policy on them.

The signed document states `setup` and `dp.mode`; changing either after signing breaks
the signature, and a document signed before `setup` existed still verifies as
horizontal with local DP. Over real mutual TLS, bank-a (the host) proposes to bank-b,
whose peer.toml [policy] decides per setup, per DP mechanism and, for vertical jobs,
per label holder: a job outside it is declined with the reason in the audit log and
the reply, and nothing is reserved.
"""

import copy

import pytest

from fedsilo.peers.daemon.signed_job import SCHEMA, job_document, sign_job, verify_envelope
from fedsilo.peers.errors import Refused

from ._consortium import OWNER, make_consortium, run
from .test_daemon_refusals import _accept, propose, refused_without_change, state_of

ALLOW_ALL = (
    'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'setups = ["horizontal", "transfer", "vertical"]\ndp = ["local", "distributed"]\n'
)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("setups"), peers=("bank-a", "bank-b"))


def _verify(consortium, envelope):
    identity = consortium.identity("bank-b")
    return verify_envelope(envelope, identity.manifest, identity.ca_certificate)


DISTRIBUTED = "public-rows = 640\ndp-mode = distributed"  # [job] lines; dp-mode becomes [dp] mode


def _envelope(consortium, path, job_id, extra=""):
    """The owner's signed job; `dp-mode = X` in `extra` is moved into the [dp] table as `mode = "X"`."""
    lines = extra.splitlines()
    modes = [line.split("=")[1].strip() for line in lines if line.startswith("dp-mode")]
    path = consortium.job_toml(path, job_id, extra="\n".join(line for line in lines if not line.startswith("dp-mode")))
    if modes:
        path.write_text(path.read_text().replace("[dp]\n", f'[dp]\nmode = "{modes[0]}"\n'))
    return sign_job(consortium.identity(OWNER), job_document(path, OWNER))


@pytest.mark.parametrize("field, value", [("setup", "vertical"), ("dp", "distributed")])
def test_the_signature_covers_setup_and_dp(consortium, tmp_path, field, value):
    envelope = _envelope(consortium, tmp_path / "job.toml", "sig-1", extra='setup = "transfer"\npublic-rows = 640')
    job = _verify(consortium, envelope)
    assert job.setup == "transfer" and job.config.dp.mode == "local"
    assert envelope["job"]["setup"] == "transfer" and envelope["job"]["run_config"]["job.public-rows"] == 640
    tampered = copy.deepcopy(envelope)
    if field == "setup":
        tampered["job"]["setup"] = value
    else:
        tampered["job"]["run_config"]["dp.mode"] = value
    with pytest.raises(Refused, match="signature"):
        _verify(consortium, tampered)


def test_a_document_signed_before_setups_existed_verifies_as_horizontal_local(consortium, tmp_path):
    document = job_document(consortium.job_toml(tmp_path / "job.toml", "old-1"), OWNER)
    del document["setup"]  # what an older fedsilo signed: no setup, no dp.mode
    assert "dp.mode" not in document["run_config"] and document["schema"] == SCHEMA
    job = _verify(consortium, sign_job(consortium.identity(OWNER), document))
    assert job.setup == "horizontal" and job.config.dp.mode == "local"


def test_an_unknown_setup_is_refused_before_signing(consortium, tmp_path):
    from fedsilo.errors import ConfigError

    with pytest.raises(ConfigError, match="job.setup 'diagonal' is unknown: valid setups are horizontal, transfer"):
        job_document(consortium.job_toml(tmp_path / "job.toml", "bad-1", extra='setup = "diagonal"'), OWNER)


@pytest.mark.parametrize(
    "policy, extra, fragment",
    [
        ("", 'setup = "transfer"', "policy: transfer jobs are not allowed here (allowed setups: horizontal)"),
        (
            'setups = ["horizontal", "vertical"]\n',
            'setup = "vertical"',
            "policy: a vertical job's label holder is its host, bank-a, who may not hold the labels of vertical "
            "jobs here (allowed: nobody)",
        ),
        (
            'setups = ["vertical"]\nvertical-label-holders = ["broker"]\n',
            'setup = "vertical"',
            "(allowed: broker)",
        ),
        (
            "",
            DISTRIBUTED,
            "policy: the job uses distributed DP; this peer allows local (peer.toml [policy] dp)",
        ),
    ],
)
def test_a_job_outside_the_policy_is_declined_with_the_reason(consortium, tmp_path, policy, extra, fragment):
    consortium.write_peer_toml(
        "bank-b", policy='model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n' + policy
    )
    envelope = _envelope(consortium, tmp_path / "job.toml", f"outside-{abs(hash(fragment)) % 10**6}", extra)
    try:
        reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), fragment)
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "declined" and fragment in reply["reason"] and entry[1] == "job.decline"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ('setup = "transfer"', "transfer jobs are declared and allowed by policy but do not train over the network"),
        ('setup = "vertical"', "vertical jobs are declared and allowed by policy but do not train over the network"),
        (DISTRIBUTED, "distributed-DP jobs are allowed by policy but cannot be"),
    ],
)
def test_an_allowed_job_this_release_cannot_train_is_declined_saying_what_is_missing(
    consortium, tmp_path, extra, fragment
):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL + 'vertical-label-holders = ["bank-a"]\n')
    envelope = _envelope(consortium, tmp_path / "job.toml", f"missing-{abs(hash(fragment)) % 10**6}", extra)
    try:
        reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), "not yet supported")
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "declined" and fragment in reply["reason"] and entry[1] == "job.decline"


def test_a_horizontal_local_job_is_still_accepted_and_reserved_under_the_new_policy(consortium, tmp_path):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    envelope = _envelope(consortium, tmp_path / "job.toml", "still-1", 'setup = "horizontal"')
    try:
        run(_accept(consortium, envelope))  # asserts the decision is "accepted"
    finally:
        consortium.write_peer_toml("bank-b")
    assert ("still-1", "reserved") in state_of(consortium, "bank-b")[1]
