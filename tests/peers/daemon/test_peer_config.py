"""peer.toml and job.toml are parsed strictly: unknown keys and bad values are refused by name."""

import pytest

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.peers.daemon.config import load_config
from fedsilo.peers.daemon.signed_job import job_document

PEER_TOML = """[peer]
identity = "identity"
state = "state"

[policy]
model-owners = ["risk-dept"]
max-epsilon-per-job = 3.0

[sources.credit-card]
path = "data.csv"
label = "Y"
epsilon = 8.0
"""


@pytest.fixture
def peer_dir(tmp_path):
    (tmp_path / "data.csv").write_text("x,Y\n1,0\n")
    return tmp_path


def test_a_valid_peer_toml(peer_dir):
    (peer_dir / "peer.toml").write_text(PEER_TOML)
    config = load_config(peer_dir / "peer.toml")
    assert config.policy.model_owners == ("risk-dept",) and config.policy.min_participants == 2
    assert config.policy.strategies == ("fedavg", "fedadam")
    assert config.policy.setups == ("horizontal",) and config.policy.dp == ("local",)
    assert config.policy.vertical_label_holders == ()
    source = config.sources["credit-card"]
    assert source.path == (peer_dir / "data.csv").resolve() and source.delta == 1e-5 and source.accountant == "prv"
    assert config.state_dir == (peer_dir / "state").resolve() and config.max_body_bytes == 1 << 20


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (
            ("max-epsilon-per-job = 3.0", "max-epsilon-per-job = 3.0\nmax-epsilon = 1"),
            "unknown key 'max-epsilon' in [policy]: valid keys are dp, max-batch-size, max-epsilon-per-job, max-model-parameters",
        ),
        (
            ("[peer]", "[peers]"),
            "unknown key 'peers' in peer.toml (sections): valid keys are limits, lists, peer, policy, sources",
        ),
        (
            ("max-epsilon-per-job = 3.0", 'max-epsilon-per-job = 3.0\nstrategies = ["krum"]'),
            "policy.strategies: 'krum' is unknown; valid choices are fedavg, fedadam",
        ),
        (("max-epsilon-per-job = 3.0", "max-epsilon-per-job = -1"), "policy.max-epsilon-per-job must be > 0"),
        (
            ("max-epsilon-per-job = 3.0", 'max-epsilon-per-job = 3.0\nsetups = ["diagonal"]'),
            "policy.setups: 'diagonal' is unknown; valid choices are horizontal, transfer, vertical",
        ),
        (
            ("max-epsilon-per-job = 3.0", 'max-epsilon-per-job = 3.0\ndp = ["off"]'),
            "policy.dp: 'off' is unknown; valid choices are local, distributed",
        ),
        (
            ("max-epsilon-per-job = 3.0", 'max-epsilon-per-job = 3.0\nvertical-label-holders = "broker"'),
            "policy.vertical-label-holders must be list",
        ),
        (("epsilon = 8.0", 'epsilon = "eight"'), "sources.credit-card.epsilon must be int or float"),
        (('path = "data.csv"', 'path = "missing.csv"'), "does not exist"),
        (
            ("epsilon = 8.0", 'epsilon = 8.0\naccountant = "gdp"'),
            "accountant 'gdp' is unknown: valid choices are prv, rdp",
        ),
    ],
)
def test_a_bad_peer_toml_is_refused_by_name(peer_dir, edit, fragment):
    (peer_dir / "peer.toml").write_text(PEER_TOML.replace(*edit))
    with pytest.raises(ConfigError) as error:
        load_config(peer_dir / "peer.toml")
    assert fragment in str(error.value)


JOB_TOML = """[job]
id = "job-1"
host = "bank-a"
participants = ["bank-a", "bank-b"]
source = "credit-card"
label = "Y"

[dp]
epsilon = 2.0
"""


def test_a_job_document_carries_a_nonce_and_an_expiry(tmp_path):
    (tmp_path / "job.toml").write_text(JOB_TOML)
    first = job_document(tmp_path / "job.toml", "risk-dept")
    second = job_document(tmp_path / "job.toml", "risk-dept")
    assert first["min_participants"] == 2 and first["run_config"]["dp.epsilon"] == 2.0
    assert len(first["nonce"]) == 32 and first["nonce"] != second["nonce"]
    assert first["expires"] > first["created"]


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("[dp]", "[privacy]"), "unknown section [privacy]"),
        (("epsilon = 2.0", "epsilon = 2.0\nsigma = 1"), "unknown key 'sigma' in [dp]"),
        (("epsilon = 2.0", "epsilon = 0"), "dp.epsilon must be > 0"),
        (('participants = ["bank-a", "bank-b"]', 'participants = ["bank-a", "bank-a"]'), "distinct member names"),
        (
            ('label = "Y"', 'label = "Y"\nvalid-for-minutes = 99999'),
            "valid-for-minutes must be an integer in [1, 10080]",
        ),
        (('id = "job-1"', 'id = "Job 1"'), "job id 'Job 1' is not valid"),
    ],
)
def test_a_bad_job_toml_is_refused_before_signing(tmp_path, edit, fragment):
    (tmp_path / "job.toml").write_text(JOB_TOML.replace(*edit))
    with pytest.raises(FedsiloError) as error:
        job_document(tmp_path / "job.toml", "risk-dept")
    assert fragment in str(error.value)
