"""A gm consortium end to end, real processes: three daemons (`fedsilo peer start`), a job with local DP
and SecAgg+ trains over Flower's Deployment Engine with every Fleet payload sealed end to end
(each participant's SuperNode talks to its `fleet_seal` forwarder, the host's gateway opens), SecAgg+
runs under the gm suite (the host's ServerApp from its manifest, each SuperNode from its own: a suite
mismatch would refuse every advertisement), and the owner pulls a model whose card and hashes are SM3;
every audit chain is SM3 and verifies."""

import asyncio
import json

import pytest

from fedsilo.cli import main
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model

from ._consortium import OWNER, make_consortium, signed
from .test_consortium_e2e import audit_entries, call, start, stop, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gm(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("gm-e2e"), rows=600, suite="gm")
    consortium.processes = {name: start(consortium, name) for name in consortium.peers}
    yield consortium
    for process in consortium.processes.values():
        stop(process)


def test_a_gm_job_trains_over_sealed_fleet_traffic_to_an_sm3_card(gm, tmp_path):
    envelope = signed(gm, gm.job_toml(tmp_path / "job.toml", "gm-e2e-1", rounds=2, epsilon=2.0))
    host = gm.addresses["bank-a"]
    assert call(gm, OWNER, "POST", f"{host}/v1/jobs", envelope)["state"] == "proposing"
    view = wait_for(gm, "bank-a", "gm-e2e-1", ("finished", "failed"))
    assert view["state"] == "finished", view["detail"]
    host_dir = gm.root / "bank-a" / "state" / "jobs" / "gm-e2e-1" / "host"
    assert '"consortium.suite" = "gm"' in (host_dir / "app" / "pyproject.toml").read_text()
    rounds = json.loads((host_dir / "result" / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["secure_aggregation"] == {"dropped": {}, "refused": {}, "aborted": None} for r in rounds), rounds

    async def pull():
        async with PeerClient(gm.identity(OWNER), timeout=120) as client:
            return await pull_model(client, host, "gm-e2e-1", tmp_path / "model")

    card = asyncio.run(pull())
    assert sorted(card["artifacts"]["model.safetensors"]) == ["bytes", "sm3"]
    assert "document_sm3" in card["job"]
    assert all(p["reported"] and p["data_fingerprint"].startswith("sm3:") for p in card["participants"])
    for name in gm.peers:
        peer_logs = gm.root / name / "state" / "jobs" / "gm-e2e-1" / "peer" / "logs"
        assert (peer_logs / "fleet-seal.log").is_file()  # its SuperNode went through the forwarder
        entries = audit_entries(gm, name)
        assert entries and all(e["hash"].startswith("sm3:") for e in entries)
        assert main(["audit", "verify", "--config", str(gm.config_path(name))]) == 0
