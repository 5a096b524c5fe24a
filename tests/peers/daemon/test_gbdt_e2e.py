"""A signed `model = gbdt` job over the network: three daemons as processes, Flower's Deployment Engine.

Each peer reserves at acceptance the job's whole release plan (`plan_releases(...).whole_job`),
the banks boost two trees of depth 2 level by level under SecAgg+ with distributed
discrete-Gaussian noise, each records every release it took part in, and at the end
each ledger commits exactly those records, which is the plan. The owner pulls the
signed model (model.json, verified against the host's card) and scores with the pulled
folder exactly as the host's own model file does.
"""

import asyncio

import numpy as np
import pandas as pd
import pytest

from fedsilo.cli import main
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.privacy.gbdt import plan_releases
from fedsilo.simulations.scoring import load_run

from ._consortium import OWNER, make_consortium, signed
from .test_consortium_e2e import call, ledger_rows, start, stop, wait_for

pytestmark = pytest.mark.slow
POLICY = (
    'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'model-families = ["mlp", "gbdt"]\ndp = ["distributed"]\n'
)
TREES, DEPTH = 2, 2


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("gbdt"), rows=300)
    for name in consortium.peers:
        consortium.write_peer_toml(name, policy=POLICY)
    processes = {name: start(consortium, name) for name in consortium.peers}
    yield consortium
    for process in processes.values():
        stop(process)


def test_a_gbdt_job_boosts_to_a_pulled_model_and_every_ledger_commits_its_releases(consortium, tmp_path):
    path = consortium.job_toml(tmp_path / "job.toml", "gbdt-e2e", epsilon=1.0, extra="public-rows = 300")
    text = path.read_text().replace("[dp]\n", '[dp]\nmode = "distributed"\n')
    text = text.replace('kind = "mlp"\nhidden = [16]\n', f'kind = "gbdt"\ntrees = {TREES}\ndepth = {DEPTH}\nbins = 8\n')
    path.write_text(text.replace("[train]\nrounds = 2\nbatch-size = 64\nlr = 0.5\n", ""))
    envelope = signed(consortium, path)
    host = consortium.addresses["bank-a"]
    assert call(consortium, OWNER, "POST", f"{host}/v1/jobs", envelope)["state"] == "proposing"
    view = wait_for(consortium, "bank-a", "gbdt-e2e", ("finished", "failed"))
    assert view["state"] == "finished", view["detail"]

    plan = plan_releases(1.0, 1e-5, TREES, DEPTH, "prv")
    planned = epsilon_spent([plan.whole_job], 1e-5, "prv")

    async def pull():
        async with PeerClient(consortium.identity(OWNER), timeout=120) as client:
            return await pull_model(client, host, "gbdt-e2e", tmp_path / "model")

    card = asyncio.run(pull())
    assert card["signer"] == "bank-a" and card["job"]["model"]["kind"] == "gbdt"
    assert card["job"]["model"]["releases_per_participant"] == 6 and "rounds" not in card["job"]
    assert set(card["artifacts"]) == {"model.json", "encoder.json", "metrics.json"}
    for participant in card["participants"]:
        assert participant["reported"]
        assert participant["spent"] == [plan.per_release.to_dict()] * plan.releases  # every release, no other
        assert participant["epsilon"] == pytest.approx(planned, rel=1e-6)
    for name in consortium.peers:
        assert ledger_rows(consortium, name)["gbdt-e2e"] == "committed"
        budget = call(consortium, OWNER, "GET", f"{consortium.addresses[name]}/v1/budget")["sources"][0]
        assert budget["spent_epsilon"] == pytest.approx(planned, rel=1e-6) and budget["reserved_epsilon"] == 0
        assert main(["audit", "verify", "--config", str(consortium.config_path(name))]) == 0

    pulled = load_run(tmp_path / "model", identity=consortium.identity_dir(OWNER))
    rows = pd.read_csv(consortium.root / "bank-b" / "data.csv").drop(columns=["Y"])
    scores = pulled.score(rows, id_column="ID").to_numpy()
    result = consortium.root / "bank-a" / "state" / "jobs" / "gbdt-e2e" / "host" / "result"
    own = GBDTModel.load(result / "model.json")
    encoder = TabularEncoder.load(result / "encoder.json")
    expected = own.predict_proba(encoder.transform_features(rows.drop(columns=["ID"])))
    assert len(own.trees) == TREES and np.array_equal(scores, expected)
    assert 0 < scores.min() < scores.max() < 1
