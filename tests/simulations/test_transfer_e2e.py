"""A 3-institution transfer simulation with three schemas and shared customers, on Flower's Simulation Engine."""

import io
import json
from contextlib import redirect_stdout
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedsilo.cli import main
from fedsilo.simulations.data.schemas import synthetic_scenario, synthetic_transfer_table

pytestmark = pytest.mark.slow


def test_transfer_run_beats_chance_at_every_institution(tmp_path):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(
            [
                "simulate",
                "--setup",
                "transfer",
                "--rounds",
                "5",
                "--customers",
                "12000",
                "--compare",
                "local",
                "--overlap",
                "0.2",
                "--json",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
    assert code == 0, buffer.getvalue()
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    # customers shared between institutions were aligned by PSI; the same seed deals the same customers
    parts = replace(synthetic_scenario(), overlap=0.2).split_rows(synthetic_transfer_table(0, 12000), 0)
    expected = {
        f"{a} & {b}": len(np.intersect1d(parts[i], parts[j]))
        for (i, a), (j, b) in [
            ((0, "bank"), (1, "card-issuer")),
            ((0, "bank"), (2, "broker")),
            ((1, "card-issuer"), (2, "broker")),
        ]
    }
    assert summary["shared_customers"] == expected and min(expected.values()) > 100
    assert "shared customers, found by PSI (no raw id exchanged)" in buffer.getvalue()
    assert summary["setup"] == "transfer" and set(summary["institutions"]) == {"bank", "card-issuer", "broker"}
    for name, aucs in summary["institutions"].items():
        assert aucs["federated"] > 0.58, name  # chance is 0.5
        assert aucs["local_only"] is not None and aucs["horizontal_common"] is None
    folder = next(tmp_path.iterdir())
    weights = load_file(str(folder / "model.safetensors"))
    assert set(weights) == {
        "shared_input.weight",
        "shared_input.bias",
        "hidden1.weight",
        "hidden1.bias",
        "head.weight",
        "head.bias",
    }
    card = json.loads((folder / "model_card.json").read_text())
    assert card["data"]["shared_customers"]["per_pair"] == expected
    assert card["data"]["scenario"]["overlap"] == 0.2
    assert [len(p["columns"]) for p in card["participants"]] == [14, 9, 7]
    assert all(0 < p["epsilon_spent"] <= 3.0 + 1e-6 for p in card["participants"])
    # each institution's private input block was kept on disk, in the run folder, never in the shared model
    private = {path.name: load_file(str(path)) for path in sorted((folder / "private").iterdir())}
    assert list(private) == [f"bank-{i:05d}.private.safetensors" for i in range(3)]
    assert all(set(tensors) == {"input.weight"} for tensors in private.values())
    assert len({tensors["input.weight"].shape for tensors in private.values()}) == 3  # three own schemas
