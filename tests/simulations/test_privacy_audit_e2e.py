"""`fedsilo simulate --audit` on a real 3-bank run (Flower's Simulation Engine, Ray), then
`fedsilo audit-privacy` on the same folder. One engine run serves every assertion."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from contextlib import redirect_stdout

import pytest

from fedsilo.cli import main

pytestmark = pytest.mark.slow


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(
            [
                "simulate",
                "--banks",
                "3",
                "--rounds",
                "2",
                "--epsilon",
                "2",
                "--customers",
                "4000",
                "--compare",
                "none",
                "--audit",
                "--quiet",
                "--out",
                str(out),
            ]
        )
    assert code == 0, buffer.getvalue()
    (folder,) = list(out.iterdir())
    return folder, buffer.getvalue()


def test_simulate_audit_writes_the_measured_section_and_keeps_hashes(run):
    folder, stdout = run
    card = json.loads((folder / "model_card.json").read_text())
    measured = card["measured_privacy"]
    assert measured["claimed"] == {"epsilon": 2.0, "delta": 1e-5, "dp_mode": "local"}
    attacks = measured["membership_inference"]["attacks"]
    assert [a["attack"] for a in attacks] == ["loss threshold", "calibrated (LiRA-style, offline)"]
    for a in attacks:
        assert 0.4 < a["auc"] < 0.6 and a["within_bound"] and a["advantage_bound"] == pytest.approx(0.7616, abs=1e-4)
    canary = measured["one_run_epsilon_audit"]
    assert (
        canary["canaries"] == 1000 and canary["epsilon_lower_bound"] <= 2.0 and canary["verdict"].startswith("passed")
    )
    check = measured["mechanism_check"]
    assert check["passed"] and check["verdict"].startswith("passed") and check["bank"] == "bank-00000"
    assert check["interval"][0] <= check["replay_sd"] <= check["interval"][1]
    assert check["interval"][0] <= check["host_sd"] <= check["interval"][1]
    assert "mechanism check (bank-00000): replays differ by sd" in stdout
    assert card["privacy"]["noise"].startswith("secret: each bank drew its DP-SGD noise")
    assert "number of training rows is released exactly" in card["privacy"]["public"]
    view = measured["aggregator_view"]
    assert view["plaintext_single_peer_update"]["succeeded"] and not view["masked_secagg_upload"]["succeeded"]
    artifacts = card["artifacts"]
    for key in ("model", "encoder", "membership_split", "privacy_audit_plot"):
        assert artifacts[key]["sha256"] == _sha(folder / artifacts[key]["file"]), key
    assert (folder / "privacy_audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "one-run ε audit (1000 canaries, bank-00000): ε ≥" in stdout


def test_split_file_keeps_positions_not_rows(run):
    folder, _ = run
    split = json.loads((folder / "membership_split.json").read_text())
    card = json.loads((folder / "model_card.json").read_text())
    for entry, bank in zip(split["banks"], card["participants"]):
        assert set(entry) == {"index", "name", "data_sha256", "rows", "train_rows", "test_rows"}
        assert entry["data_sha256"] == bank["data_sha256"]
        assert len(entry["train_rows"]) == bank["rows_train"] and len(entry["test_rows"]) == bank["rows_test"]
        assert sorted(entry["train_rows"] + entry["test_rows"]) == list(range(entry["rows"]))


def test_audit_privacy_command_reruns_and_refuses_a_changed_model(run, tmp_path, capsys):
    folder, _ = run
    code = main(["audit-privacy", str(folder), "--canaries", "200", "--reference-models", "1", "--json", "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    section = json.loads(out[-1])
    assert section["one_run_epsilon_audit"]["canaries"] == 200
    assert json.loads((folder / "model_card.json").read_text())["measured_privacy"] == section

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    with (tampered / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")
    before = (tampered / "model_card.json").read_text()
    assert main(["audit-privacy", str(tampered), "--quiet"]) == 2
    assert "does not match the SHA-256 in model_card.json" in capsys.readouterr().err
    assert (tampered / "model_card.json").read_text() == before  # nothing written
