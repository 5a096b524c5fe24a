"""`fedsilo audit-privacy` on a vertical run: the two split-learning attacks, with and without DP (issue 18)."""

import io
import json
from contextlib import redirect_stdout

import pytest

from fedsilo.cli import main
from fedsilo.errors import DataError
from fedsilo.simulations.api import simulate
from fedsilo.simulations.privacy_audit import audit_run
from fedsilo.simulations.report.card import sha256_file


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vertical-audit")
    result = simulate(
        setup="vertical",
        customers=4000,
        rounds=2,
        batch_size=128,
        epsilon=3.0,
        out=str(root),
        engine="in-process",
        vertical_scheme="split",
        audit=True,
    )
    return result


@pytest.fixture(scope="module")
def vertical_run(audited_run):
    return audited_run.run_dir


def test_simulate_audit_runs_the_vertical_audit(audited_run):
    card = json.loads((audited_run.run_dir / "model_card.json").read_text())
    assert audited_run.privacy_audit == card["measured_privacy"]
    assert audited_run.privacy_audit["setup"] == "vertical"


def test_the_audit_finds_the_leaks_without_dp_and_none_with_dp(vertical_run):
    """Attackers: the bank reads the broker's labels from the gradients; the broker reads pay_0 from the embeddings."""
    section = audit_run(vertical_run)
    label, rec = section["label_inference"], section["feature_reconstruction"]
    # without DP both attacks work: this is what makes the DP figures mean something
    assert label["without_dp"]["norm_auc"] > 0.8 and label["without_dp"]["direction_auc"] > 0.9
    assert rec["without_dp"]["r2"] > 0.2
    # with the run's DP (ε = 3 per party) they are at chance, and within what ε allows
    assert abs(label["with_dp"]["norm_auc"] - 0.5) < 0.1 and abs(label["with_dp"]["direction_auc"] - 0.5) < 0.1
    assert rec["with_dp"]["r2"] < 0.1
    assert label["within_bound"] and label["advantage_bound_with_dp"] == pytest.approx(0.905, abs=1e-3)
    card = json.loads((vertical_run / "model_card.json").read_text())
    assert card["measured_privacy"] == section
    assert card["artifacts"]["privacy_audit_plot"]["sha256"] == sha256_file(vertical_run / "privacy_audit.png")
    assert section["as_run"] == card["measured_leakage"]


def test_the_cli_prints_each_attack_with_and_without_dp(vertical_run):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["audit-privacy", str(vertical_run), "--quiet"]) == 0
    text = out.getvalue()
    assert "label inference by the feature party (norm scoring): AUC" in text
    assert "label inference by the feature party (direction scoring): AUC" in text
    assert "reconstruction of pay_0 by the label holder: R²" in text and "claimed: ε = 3 per party" in text


def test_a_vertical_run_whose_card_lost_its_configuration_is_refused(vertical_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    card = json.loads((vertical_run / "model_card.json").read_text())
    del card["job"]
    (copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="no vertical job configuration"):
        audit_run(copy)


def test_a_coded_run_reports_the_leakage_measured_when_its_codes_were_released(tmp_path):
    """Not replayed: the section is the card's measurement, and the bank learns nothing label-dependent."""
    result = simulate(setup="vertical", customers=2000, rounds=1, epsilon=3.0, out=str(tmp_path), audit=True)
    card = json.loads((result.run_dir / "model_card.json").read_text())
    section = card["measured_privacy"]
    assert section["scheme"] == "coded" and section["label_inference"]["auc"] == 0.5
    assert section["feature_reconstruction"]["r2"] == card["measured_leakage"]["feature_reconstruction_r2"]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["audit-privacy", str(result.run_dir)]) == 0
    assert (
        "coded scheme (bank ε = 3" in out.getvalue()
        and "label inference by the feature party: AUC 0.500" in out.getvalue()
    )
