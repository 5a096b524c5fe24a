"""A distributed-DP job over the network: three daemons as processes, Flower's Deployment Engine.

Each peer reserves, at acceptance, exactly the job's distributed-DP plan (the noisy
sum's mechanism, known before the consortium encoder exists); the peers add their
discrete Gaussian noise shares inside SecAgg+, sized with the parameter count of the
encoder the host sends; at the end each ledger commits what its accountant spent,
which is the plan, and the owner pulls a verified model whose card states it.
"""

import asyncio

import pytest

from fedsilo.cli import main
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.signed_job import parse_document
from fedsilo.peers.job import distributed_dp_reservation
from fedsilo.privacy.accounting import epsilon_spent

from ._consortium import OWNER, make_consortium, signed
from .test_consortium_e2e import call, ledger_rows, start, stop, wait_for

pytestmark = pytest.mark.slow
POLICY = (
    'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'setups = ["horizontal"]\ndp = ["local", "distributed"]\n'
)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("distributed"), rows=600)
    for name in consortium.peers:
        consortium.write_peer_toml(name, policy=POLICY)
    processes = {name: start(consortium, name) for name in consortium.peers}
    yield consortium
    for process in processes.values():
        stop(process)


def test_a_distributed_dp_job_trains_and_every_ledger_commits_its_plan(consortium, tmp_path):
    path = consortium.job_toml(tmp_path / "job.toml", "dist-e2e", rounds=2, epsilon=1.0, extra="public-rows = 1440")
    path.write_text(path.read_text().replace("[dp]\n", '[dp]\nmode = "distributed"\n'))
    envelope = signed(consortium, path)
    host = consortium.addresses["bank-a"]
    assert call(consortium, OWNER, "POST", f"{host}/v1/jobs", envelope)["state"] == "proposing"
    view = wait_for(consortium, "bank-a", "dist-e2e", ("finished", "failed"))
    assert view["state"] == "finished", view["detail"]

    config, _ = parse_document(envelope["job"])
    planned = epsilon_spent([distributed_dp_reservation(config)], 1e-5, "prv")

    async def pull():
        async with PeerClient(consortium.identity(OWNER), timeout=120) as client:
            return await pull_model(client, host, "dist-e2e", tmp_path / "model")

    card = asyncio.run(pull())
    assert card["signer"] == "bank-a" and card["job"]["rounds"] == 2
    for participant in card["participants"]:
        assert participant["reported"] and participant["epsilon"] == pytest.approx(planned, rel=1e-9)
    for name in consortium.peers:
        assert ledger_rows(consortium, name)["dist-e2e"] == "committed"
        budget = call(consortium, OWNER, "GET", f"{consortium.addresses[name]}/v1/budget")["sources"][0]
        assert budget["spent_epsilon"] == pytest.approx(planned, rel=1e-9) and budget["reserved_epsilon"] == 0
        assert main(["audit", "verify", "--config", str(consortium.config_path(name))]) == 0
