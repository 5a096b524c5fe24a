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
from fedsilo.peers.job import plan_distributed_dp, spec_parameter_count
from fedsilo.privacy.accounting import Mechanism, epsilon_spent

from ._consortium import OWNER, make_consortium, member_client, run, running
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


# A transfer job's [job] lines; `model-KEY = V` lines become `KEY = V` in the [model] table.
TRANSFER = 'setup = "transfer"\nmodel-shared = ["shared_input", "head"]\nmodel-shared-vocabulary = ["limit", "age"]'


def _job_file(consortium, path, job_id, extra=""):
    """The job file; `dp-mode = X` in `extra` goes into [dp] as `mode = "X"`, `model-KEY = V` into [model]."""
    lines = extra.splitlines()
    modes = [line.split("=")[1].strip() for line in lines if line.startswith("dp-mode")]
    model = [line.removeprefix("model-") for line in lines if line.startswith("model-")]
    rest = [line for line in lines if not line.startswith(("dp-mode", "model-"))]
    path = consortium.job_toml(path, job_id, extra="\n".join(rest))
    text = path.read_text().replace("[model]\n", "[model]\n" + "".join(f"{line}\n" for line in model))
    if modes:
        text = text.replace("[dp]\n", f'[dp]\nmode = "{modes[0]}"\n')
    path.write_text(text)
    return path


def _envelope(consortium, path, job_id, extra=""):
    """The owner's signed job (see `_job_file` for `extra`)."""
    return sign_job(consortium.identity(OWNER), job_document(_job_file(consortium, path, job_id, extra), OWNER))


@pytest.mark.parametrize("field, value", [("setup", "vertical"), ("dp", "distributed")])
def test_the_signature_covers_setup_and_dp(consortium, tmp_path, field, value):
    envelope = _envelope(consortium, tmp_path / "job.toml", "sig-1", extra='setup = "horizontal"\npublic-rows = 640')
    job = _verify(consortium, envelope)
    assert job.setup == "horizontal" and job.config.dp.mode == "local"
    assert envelope["job"]["setup"] == "horizontal" and envelope["job"]["run_config"]["job.public-rows"] == 640
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
        ("", TRANSFER, "policy: transfer jobs are not allowed here (allowed setups: horizontal)"),
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
        (
            'setup = "vertical"',
            "data source credit-card lacks the repayment statuses ['pay_0', 'pay_2', 'pay_3', 'pay_4', 'pay_5', "
            "'pay_6'] the code needs",
        ),
    ],
)
def test_an_allowed_job_this_release_cannot_train_is_declined_saying_what_is_missing(
    consortium, tmp_path, extra, fragment
):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL + 'vertical-label-holders = ["bank-a"]\n')
    envelope = _envelope(consortium, tmp_path / "job.toml", f"missing-{abs(hash(fragment)) % 10**6}", extra)
    try:
        reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), fragment)
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


def test_a_distributed_dp_job_reserves_exactly_its_plan_and_cancel_releases_it(tmp_path):
    consortium = make_consortium(tmp_path / "fresh", peers=("bank-a", "bank-b"))  # a ledger with nothing else
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    envelope = _envelope(consortium, tmp_path / "job.toml", "dist-1", DISTRIBUTED)
    job = _verify(consortium, envelope)
    plan = plan_distributed_dp(job.config, spec_parameter_count(job.config))
    expected = epsilon_spent([plan.per_round] * job.config.train.rounds, 1e-5, "prv")
    wider = plan_distributed_dp(job.config, 10 * spec_parameter_count(job.config) + 12345)  # the encoder's width
    assert epsilon_spent([wider.per_round] * 2, 1e-5, "prv") == pytest.approx(expected, rel=1e-12)

    async def body():
        async with running(consortium, ["bank-b"]):
            reply = await propose(consortium, envelope)
            async with member_client(consortium, OWNER) as client:
                address = consortium.addresses["bank-b"]
                reserved = await client.call("GET", f"{address}/v1/budget")
                await client.call("POST", f"{address}/v1/jobs/dist-1/cancel", {})
                released = await client.call("GET", f"{address}/v1/budget")
            return reply, reserved, released

    reply, reserved, released = run(body())
    assert reply["decision"] == "accepted"
    assert [Mechanism.from_dict(m) for m in reply["planned"]] == [
        Mechanism(plan.effective_multiplier, 1.0, job.config.train.rounds)
    ]
    assert reserved["sources"][0]["reserved_epsilon"] == pytest.approx(expected, rel=1e-9)
    assert 0.9 < expected <= 1.0  # the job's ε = 1, spent over its 2 rounds
    assert released["sources"][0]["reserved_epsilon"] == 0.0 and released["sources"][0]["spent_epsilon"] == 0.0
    jobs, ledger, _ = state_of(consortium, "bank-b")
    assert jobs == [("dist-1", "cancelled")] and ledger == []  # the reservation is gone, nothing spent


def test_an_infeasible_distributed_dp_plan_is_declined_before_reserving(consortium, tmp_path):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    path = consortium.job_toml(tmp_path / "job.toml", "dist-2", extra="public-rows = 640")
    text = path.read_text().replace("[dp]\n", '[dp]\nmode = "distributed"\n')
    path.write_text(text + "\n[secagg]\ndropout-fraction = 0.6\n")
    envelope = sign_job(consortium.identity(OWNER), job_document(path, OWNER))
    try:
        reply, entry = refused_without_change(
            consortium, lambda: propose(consortium, envelope), "the job's distributed-DP plan is not feasible"
        )
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "declined" and "secagg cannot tolerate 1 dropouts" in reply["reason"]


def _vertical_job(consortium, path, job_id, scheme=None, setup="vertical"):
    """A signed vertical job from bank-a (its label holder) to bank-b, with `[vertical] scheme` when given."""
    path = _job_file(consortium, path, job_id, f'setup = "{setup}"')
    if scheme is not None:
        path.write_text(path.read_text() + f'\n[vertical]\nscheme = "{scheme}"\n')
    return path


def test_the_vertical_scheme_is_in_the_signed_document_and_the_signature_covers_it(consortium, tmp_path):
    coded = _verify(
        consortium,
        sign_job(
            consortium.identity(OWNER), job_document(_vertical_job(consortium, tmp_path / "a.toml", "vs-0"), OWNER)
        ),
    )
    assert coded.vertical_scheme == "coded"  # absent: today's scheme
    document = job_document(_vertical_job(consortium, tmp_path / "b.toml", "vs-1", "split"), OWNER)
    assert document["vertical_scheme"] == "split"
    envelope = sign_job(consortium.identity(OWNER), document)
    assert _verify(consortium, envelope).vertical_scheme == "split"
    for tampered_value in ("coded", None):  # the host swaps the scheme, or drops it to fall back to coded
        tampered = copy.deepcopy(envelope)
        if tampered_value is None:
            del tampered["job"]["vertical_scheme"]
        else:
            tampered["job"]["vertical_scheme"] = tampered_value
        with pytest.raises(Refused, match="signature"):
            _verify(consortium, tampered)


@pytest.mark.parametrize(
    "scheme, setup, fragment",
    [
        ("diagonal", "vertical", "vertical.scheme 'diagonal' is unknown: valid schemes are 'coded', 'split'"),
        ("split", "horizontal", "[vertical] scheme belongs to vertical jobs only; this job's setup is horizontal"),
    ],
)
def test_an_unknown_or_misplaced_vertical_scheme_is_refused_before_signing(
    consortium, tmp_path, scheme, setup, fragment
):
    from fedsilo.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        job_document(_vertical_job(consortium, tmp_path / "job.toml", "vs-bad", scheme, setup), OWNER)


def test_a_signed_unknown_scheme_is_refused_by_the_peer_naming_it(consortium, tmp_path):
    document = job_document(_vertical_job(consortium, tmp_path / "job.toml", "vs-signed"), OWNER)
    document["vertical_scheme"] = ["split"]  # an owner's tool that bypassed job_document
    with pytest.raises(Refused, match=r"vertical.scheme \['split'\] is unknown") as refused:
        _verify(consortium, sign_job(consortium.identity(OWNER), document))
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "policy, fragment",
    [
        (
            "",
            "policy: the vertical job runs the split scheme; this peer allows coded (peer.toml [policy] vertical-schemes)",
        ),
        ("vertical-schemes = []\n", "policy: the vertical job runs the split scheme; this peer allows none"),
    ],
)
def test_a_split_job_is_declined_by_a_policy_that_allows_only_coded_with_nothing_reserved(
    consortium, tmp_path, policy, fragment
):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL + 'vertical-label-holders = ["bank-a"]\n' + policy)
    path = _vertical_job(consortium, tmp_path / "job.toml", f"vs-policy-{len(policy)}", "split")
    envelope = sign_job(consortium.identity(OWNER), job_document(path, OWNER))
    try:
        reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), fragment)
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "declined" and fragment in reply["reason"] and entry[1] == "job.decline"


def test_an_unknown_vertical_scheme_in_peer_toml_is_refused(consortium):
    from fedsilo.errors import ConfigError
    from fedsilo.peers.daemon.config import load_config

    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL + 'vertical-schemes = ["coded", "boosted"]\n')
    try:
        with pytest.raises(
            ConfigError, match="policy.vertical-schemes: 'boosted' is unknown; valid choices are coded, split"
        ):
            load_config(consortium.config_path("bank-b"))
    finally:
        consortium.write_peer_toml("bank-b")
