"""A real Ray cluster on 127.0.0.1 (a head and a worker node, each started with Ray's own
`ray start`), a small simulation on it with `--ray-address`, and a two-point sweep on
the same cluster (one cluster start pays for both). The cluster is stopped in a finally.
"""

import io
import json
import tempfile
from contextlib import redirect_stdout

import pytest

from fedsilo.cli import main
from fedsilo.simulations.ray_cluster import ClusterPorts, LocalRayCluster

pytestmark = pytest.mark.slow
HEAD, WORKER = ClusterPorts(16100), ClusterPorts(16200)  # this project's test ports, never Ray's defaults


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="fsray-", dir="/tmp")
    started = LocalRayCluster(cpus=1, workers=1, head_ports=HEAD, worker_ports=[WORKER], temp_dir=temp_dir)
    try:
        started.__enter__()
        yield started
    finally:
        started.stop()
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


def _run(argv):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def test_cluster_has_a_head_and_a_worker_node(cluster):
    import ray

    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and sum(n["Resources"].get("CPU", 0) for n in alive) == 2
    finally:
        ray.shutdown()


def test_simulation_runs_on_the_cluster(cluster, tmp_path):
    # DP off: this test is about the cluster (sampling, where banks are built). 2 rounds on
    # 1,800 rows ended anywhere in 0.48-0.54 (sampling and shuffles are unseeded); 3 rounds
    # on 6,000 rows ended at 0.678, 0.682 and 0.699 in three runs.
    code, out = _run(
        [
            "simulate",
            "--dp",
            "off",
            "--ray-address",
            cluster.address,
            "--banks",
            "6",
            "--sample",
            "4",
            "--rounds",
            "3",
            "--customers",
            "6000",
            "--compare",
            "none",
            "--json",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["banks"] == 6 and summary["rounds"] == 3 and 0.6 < summary["final_auc"] <= 1.0
    card = json.loads((tmp_path / summary["run_dir"].split("/")[-1] / "model_card.json").read_text())
    population = card["data"]["population"]
    assert population["banks"] == 6 and population["sampled_per_round"] == 4
    assert 4 <= len(card["participants"]) <= 6  # only sampled banks were ever built
    for bank in card["participants"]:
        assert bank["rounds_trained"] <= 3 and bank["epsilon_spent"] <= 3.0 + 1e-6


def test_sweep_reuses_the_cluster_and_writes_one_table_and_one_plot(cluster, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'[sweep]\nbanks = [3, 4]\nepsilon = [2.0]\nout = "{tmp_path / "sweeps"}"\n'
        f'ray-address = "{cluster.address}"\n'
        "[simulation]\nrounds = 1\ncompare = []\n[data]\ncustomers = 1200\n"
    )
    code, out = _run(["sweep", str(config), "--quiet", "--json"])
    assert code == 0, out
    rows = json.loads(out.strip().splitlines()[-1])["runs"]
    assert [(r["banks"], r["epsilon"]) for r in rows] == [(3, 2.0), (4, 2.0)]
    assert all(0 < r["epsilon_max"] <= 2.0 + 1e-6 for r in rows)
    [folder] = list((tmp_path / "sweeps").iterdir())
    assert (folder / "utility.png").stat().st_size > 0
    assert (folder / "results.csv").read_text().splitlines()[0].startswith("setup,banks,epsilon,dropout,final_auc")
    assert len(list((folder / "runs").iterdir())) == 2
