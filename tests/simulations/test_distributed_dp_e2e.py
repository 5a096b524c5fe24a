"""Distributed DP end to end on Flower's Simulation Engine: noise shares inside SecAgg+."""

import io
import json
from contextlib import redirect_stdout

import pytest

from fedsilo.cli import main
from fedsilo.privacy.ledger import SQLiteLedger

pytestmark = pytest.mark.slow


def test_distributed_dp_run_learns_within_budget(tmp_path):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(
            [
                "simulate",
                "--dp",
                "distributed",
                "--banks",
                "4",
                "--rounds",
                "8",
                "--lr",
                "3",
                "--customers",
                "6000",
                "--epsilon",
                "2",
                "--compare",
                "none",
                "--json",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
    assert code == 0, buffer.getvalue()
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert summary["dp"] == "distributed" and summary["secure_aggregation"] == "on"
    assert summary["final_auc"] > 0.65
    assert 0 < summary["epsilon_max"] <= 2.0 + 1e-6
    folder = next(tmp_path.iterdir())
    card = json.loads((folder / "model_card.json").read_text())
    assert "distributed DP" in card["privacy"]["mode"] and "colluders" in card["privacy"]["guarantee"]
    ledger = SQLiteLedger(folder / "ledger.sqlite")
    try:
        for bank in card["participants"]:
            assert ledger.status(bank["name"]).spent_epsilon == pytest.approx(bank["epsilon_spent"])
    finally:
        ledger.close()
