"""Secure aggregation with 30 % dropouts equals the plaintext run of the same seed.

Two real Flower simulations (Ray): SecAgg+ on and off, the same banks vanishing at the
same rounds (`--dropout 0.3`). The secure run's AUC must be within 0.005 of the
plaintext one (the only difference is fixed-point quantization of the updates: both
runs are `--reproducible`, so their DP noise is the same too).
"""

import io
import json
from contextlib import redirect_stdout

import pytest

from fedsilo.cli import main
from fedsilo.simulations.faults import dropout_stage

pytestmark = pytest.mark.slow
ARGS = [
    "simulate",
    "--banks",
    "6",
    "--rounds",
    "2",
    "--customers",
    "6000",
    "--dropout",
    "0.3",
    "--seed",
    "4",
    "--reproducible",
    "--compare",
    "none",
    "--json",
    "--quiet",
]


def _run(out, *extra):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main([*ARGS, "--out", str(out), *extra]) == 0
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    folder = next(out.iterdir())
    return summary, json.loads((folder / "metrics.json").read_text())


def test_secure_run_matches_plaintext_run_with_the_same_dropouts(tmp_path):
    # The seed drops some banks before upload and keeps others: the test is not vacuous.
    stages = [dropout_stage(4, r, b, 0.3) for r in (1, 2) for b in range(6)]
    assert any(s in ("advertise", "share", "mask") for s in stages)
    secure, secure_metrics = _run(tmp_path / "secure")
    plain, plain_metrics = _run(tmp_path / "plain", "--secure-aggregation", "off")
    assert secure["secure_aggregation"] == "on" and plain["secure_aggregation"] == "off"
    for s_round, p_round in zip(secure_metrics["rounds"], plain_metrics["rounds"]):
        assert sorted(m["bank"] for m in s_round["train"]) == sorted(m["bank"] for m in p_round["train"])
        assert s_round["secure_aggregation"]["aborted"] is None
    assert abs(secure["final_auc"] - plain["final_auc"]) <= 0.005
    dropped = [d for r in secure_metrics["rounds"] for d in r["secure_aggregation"]["dropped"].values()]
    assert any("simulated dropout" in d for d in dropped)
