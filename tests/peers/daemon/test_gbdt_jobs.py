"""A signed job with `[model] kind = "gbdt"`: its schema, its signature, the run config the host
sends, the reservation each participant makes, the policy bounds, the host's result and the
pulled model's files. No engine runs here (the three-daemon run is test_gbdt_e2e)."""

import datetime as dt
import json

import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.config import Policy
from fedsilo.peers.daemon.policy import SourceFacts, check_bounds, check_policy, check_trainable, planned_mechanisms
from fedsilo.peers.daemon.signed_job import SignedJob, job_document, parse_document, verify_envelope
from fedsilo.peers.deployment.host import _read_result
from fedsilo.peers.deployment.processes import DeploymentError
from fedsilo.peers.errors import Refused
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.identity.pki import load_certificate
from fedsilo.peers.identity.signing import sign_document
from fedsilo.privacy.gbdt import plan_releases
from fedsilo.simulations.scoring import artifact_files

from ._consortium import OWNER, make_consortium, signed

GBDT_MODEL = '[model]\nkind = "gbdt"\ntrees = 3\ndepth = 2\nbins = 8\nlearning-rate = 0.5\nfeatures-per-tree = 0\n'


def gbdt_toml(path, model=GBDT_MODEL, job_extra="public-rows = 500\n", dp='mode = "distributed"\n'):
    path.write_text(
        '[job]\nid = "boost-1"\nhost = "bank-a"\nparticipants = ["bank-a", "bank-b", "bank-c"]\n'
        f'source = "credit-card"\nlabel = "Y"\n{job_extra}\n{model}\n[dp]\nepsilon = 2.0\ndelta = 1e-5\n'
        f'accountant = "rdp"\n{dp}'
    )
    return path


def test_a_gbdt_job_becomes_the_boosting_run_config(tmp_path):
    config, header = parse_document(job_document(gbdt_toml(tmp_path / "job.toml"), OWNER))
    assert header["setup"] == "horizontal"
    terms = GBDTJob.from_run_config(config.to_run_config())
    assert terms == GBDTJob(
        session="boost-1",
        banks=3,
        row_bound=500,
        trees=3,
        depth=2,
        bins=8,
        learning_rate=0.5,
        features_per_tree=0,
        dp_mode="distributed",
        epsilon=2.0,
        delta=1e-5,
        accountant="rdp",
        dropout_fraction=0.3,
        collusion_fraction=0.1,
    )
    assert config.model.releases == 9  # 3 trees x (2 levels + the leaves)


@pytest.mark.parametrize(
    "model, job_extra, fragment",
    [
        (GBDT_MODEL.replace("trees = 3", "trees = 0"), "public-rows = 500\n", "model.trees must be an integer in"),
        (GBDT_MODEL.replace("depth = 2", "depth = 9"), "public-rows = 500\n", "model.depth must be an integer in"),
        (GBDT_MODEL.replace("bins = 8", "bins = 1"), "public-rows = 500\n", "model.bins must be an integer in"),
        (GBDT_MODEL.replace("trees = 3", 'trees = "3"'), "public-rows = 500\n", "model.trees must be an integer"),
        (GBDT_MODEL.replace("0.5", "1.5"), "public-rows = 500\n", "model.learning-rate must be a number in (0, 1]"),
        (GBDT_MODEL + "leaves = 4\n", "public-rows = 500\n", "unknown key 'leaves' in [model]"),
        (GBDT_MODEL + "hidden = [16]\n", "public-rows = 500\n", "model.hidden belongs to the neural models"),
        ('[model]\nkind = "mlp"\nhidden = [16]\ntrees = 3\n', "public-rows = 5\n", "model.trees belongs to model kind"),
        (GBDT_MODEL.replace('"gbdt"', '"forest"'), "", "unknown model 'forest': use one of mlp, logreg, gbdt"),
        (GBDT_MODEL + 'splits = "sideways"\n', "public-rows = 500\n", "model.splits must be histogram or random"),
    ],
)
def test_a_bad_gbdt_job_is_refused_before_signing_naming_the_key(tmp_path, model, job_extra, fragment):
    path = gbdt_toml(tmp_path / "job.toml", model, job_extra)
    with pytest.raises(ConfigError) as caught:
        job_document(path, OWNER)
    assert fragment in str(caught.value)


def test_a_gbdt_job_without_public_rows_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="a gbdt job needs job.public-rows"):
        job_document(gbdt_toml(tmp_path / "job.toml", job_extra="", dp='mode = "local"\n'), OWNER)


def test_a_gbdt_job_of_one_bank_is_refused(tmp_path):
    path = gbdt_toml(tmp_path / "job.toml")
    path.write_text(path.read_text().replace('["bank-a", "bank-b", "bank-c"]', '["bank-a"]'))
    with pytest.raises(ConfigError, match="gbdt.banks must be an integer >= 2"):
        job_document(path, OWNER)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("gbdt-jobs"))


def test_the_signature_covers_the_boosting_terms(consortium, tmp_path):
    """The host (or anyone relaying the job) raises the trees to make each bank release more: refused."""
    envelope = signed(consortium, gbdt_toml(tmp_path / "job.toml"))
    manifest = consortium.identity("bank-b").manifest
    ca = load_certificate(consortium.root / "consortium" / "ca.pem")
    assert verify_envelope(envelope, manifest, ca).config.model.trees == 3
    for key, value in (("model.trees", 300), ("model.depth", 8), ("model.learning-rate", 1.0)):
        altered = json.loads(json.dumps(envelope))
        altered["job"]["run_config"][key] = value
        with pytest.raises(Refused, match="signature"):
            verify_envelope(altered, manifest, ca)
    # re-signed by a peer (the host), not the model owner: refused too
    host = consortium.identity("bank-a")
    altered = json.loads(json.dumps(envelope))
    altered["job"]["run_config"]["model.trees"] = 300
    altered["signature"] = sign_document(host.key, altered["job"])
    with pytest.raises(Refused):
        verify_envelope(altered, manifest, ca)


def _signed_job(tmp_path, **kwargs) -> SignedJob:
    body = job_document(gbdt_toml(tmp_path / "job.toml", **kwargs), OWNER)
    config, header = parse_document(body)
    return SignedJob(
        job_id=header["job_id"],
        owner=OWNER,
        host="bank-a",
        participants=("bank-a", "bank-b", "bank-c"),
        min_participants=3,
        source="credit-card",
        label="Y",
        nonce=header["nonce"],
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        config=config,
        envelope={"job": body},
    )


POLICY = Policy(
    model_owners=(OWNER,),
    max_epsilon_per_job=3.0,
    min_participants=2,
    model_families=("mlp", "logreg", "gbdt"),
    strategies=("fedavg",),
    dp=("local", "distributed"),
)


@pytest.mark.parametrize("mode", ["distributed", "local"])
def test_each_participant_reserves_the_whole_release_plan(tmp_path, mode):
    job = _signed_job(tmp_path, dp=f'mode = "{mode}"\n')
    check_policy(job, POLICY)
    check_trainable(job)
    planned = planned_mechanisms(job, SourceFacts(rows=400, n_train=320, fingerprint="sha256:x"))
    expected = plan_releases(2.0, 1e-5, 3, 2, "rdp").whole_job
    assert planned == [expected] and expected.steps == 9 and expected.sample_rate == 1.0


def test_a_random_splits_job_reserves_one_release_per_tree(tmp_path):
    """`splits = "random"`: signed, carried to the boosting run config, and planned as the leaf releases alone."""
    job = _signed_job(tmp_path, model=GBDT_MODEL + 'splits = "random"\n')
    assert job.config.model.splits == "random" and job.config.model.releases == 3
    assert GBDTJob.from_run_config(job.config.to_run_config()).settings.random_splits
    planned = planned_mechanisms(job, SourceFacts(rows=400, n_train=320, fingerprint="sha256:x"))
    assert planned == [plan_releases(2.0, 1e-5, 3, 2, "rdp", random_splits=True).whole_job]
    assert planned[0].steps == 3


def test_a_bank_above_the_public_row_bound_declines_with_nothing_reserved(tmp_path):
    job = _signed_job(tmp_path)
    with pytest.raises(Refused, match="501 training rows, above the gbdt job's public bound of 500"):
        planned_mechanisms(job, SourceFacts(rows=700, n_train=501, fingerprint="sha256:x"))


def test_the_policy_bounds_a_gbdt_job_by_its_releases_and_its_family(tmp_path):
    from dataclasses import replace

    job = _signed_job(tmp_path)
    with pytest.raises(Refused, match="make 9 histogram releases, above this peer's bound of 8 rounds"):
        check_bounds(job, replace(POLICY, max_rounds=8))
    check_bounds(job, replace(POLICY, max_rounds=9))
    with pytest.raises(Refused, match="3 trees of depth 2"):
        check_bounds(job, replace(POLICY, max_model_parameters=20))  # 3 x (2^3 - 1) = 21 nodes
    with pytest.raises(Refused, match="model family gbdt is not allowed here"):
        check_policy(job, replace(POLICY, model_families=("mlp", "logreg")))


def test_the_default_policy_allows_no_gbdt_and_a_peer_may_opt_in(tmp_path):
    from fedsilo.peers.daemon.config import load_config

    consortium = make_consortium(tmp_path / "c", peers=("bank-a", "bank-b"))
    assert load_config(consortium.config_path("bank-a")).policy.model_families == ("mlp", "logreg")
    consortium.write_peer_toml(
        "bank-b", 'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmodel-families = ["gbdt"]\n'
    )
    assert load_config(consortium.config_path("bank-b")).policy.model_families == ("gbdt",)


def test_the_host_reads_a_gbdt_jobs_model_json(tmp_path):
    result = tmp_path / "result"
    result.mkdir()
    (result / "metrics.json").write_text("{}")
    with pytest.raises(DeploymentError, match=r"wrote no model\.json/metrics\.json"):
        _read_result(result, 1, "gbdt")
    (result / "model.json").write_text("{}")
    assert _read_result(result, 1, "gbdt").model_path == result / "model.json"
    with pytest.raises(DeploymentError, match=r"model\.safetensors"):
        _read_result(result, 1, "mlp")


def test_a_pulled_gbdt_cards_model_file_is_model_json(tmp_path):
    card = {
        "job": {"model": {"kind": "gbdt"}},
        "artifacts": {"model.json": {"bytes": 1, "sha256": "a"}, "encoder.json": {"bytes": 1, "sha256": "b"}},
    }
    assert artifact_files(card, tmp_path) == {
        "model": ("model.json", "standard", "a"),
        "encoder": ("encoder.json", "standard", "b"),
    }
