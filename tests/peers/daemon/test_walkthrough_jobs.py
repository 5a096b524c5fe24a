"""docs/consortium.md's job files and peer.toml, read as the daemons read them (fast, no daemons).

Every complete `job.toml` the walkthrough shows is signed-document valid; the banks' peer.toml
(section 2) allows the distributed-DP job of section 7, whose plan and committed ε stay within
the job's ε. The runs themselves:
test_gm_walkthrough.py (sections 1-6), test_distributed_e2e.py, test_transfer_e2e.py,
test_vertical_e2e.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fedsilo.peers.daemon.config import parse_config
from fedsilo.peers.daemon.signed_job import job_document, parse_document
from fedsilo.peers.job import distributed_dp_reservation
from fedsilo.privacy.accounting import epsilon_spent

DOC = Path(__file__).resolve().parents[3] / "docs" / "consortium.md"
TOML = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
JOBS = {
    re.search(r'^id = "([^"]+)"', block, re.M).group(1): block for block in TOML if re.search(r"^id = ", block, re.M)
}


def _job(tmp_path: Path, job_id: str):
    path = tmp_path / "job.toml"
    path.write_text(JOBS[job_id])
    config, _ = parse_document(job_document(path, "risk-dept"))
    return config


def test_the_page_shows_the_four_jobs_of_its_runs():
    assert sorted(JOBS) == ["credit-default-1", "credit-default-dp", "transfer-1", "vertical-demo"]


@pytest.mark.parametrize("job_id", sorted(JOBS))
def test_each_job_file_reads_as_a_signed_job(tmp_path, job_id):
    assert _job(tmp_path, job_id).train.rounds >= 1


def test_the_banks_allow_the_distributed_job_and_its_plan_is_the_committed_epsilon_shown(tmp_path):
    [peer_toml] = [block for block in TOML if block.startswith("[peer]")]
    (tmp_path / "credit-card.csv").write_text("ID,Y\n1,0\n")  # the source's file must exist
    policy = parse_config(tomllib.loads(peer_toml), tmp_path).policy
    config = _job(tmp_path, "credit-default-dp")
    assert config.dp.mode == "distributed" and config.dp.mode in policy.dp
    assert config.dp.epsilon <= policy.max_epsilon_per_job
    assert config.public_rows == 24000  # 80 % (the default test fraction 0.2 held out) of 30,000 rows
    planned = epsilon_spent([distributed_dp_reservation(config)], config.dp.delta, "prv")
    assert 0.9 < planned <= config.dp.epsilon
    shown = re.findall(r"job=credit-default-dp source=credit-card  ε = ([0-9.]+) spent", DOC.read_text())
    assert shown and float(shown[0]) <= config.dp.epsilon
