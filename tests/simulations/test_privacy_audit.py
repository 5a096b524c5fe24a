"""The privacy self-audit wired to fedsilo's own training (in process, no Ray).

Controls: a non-private overfitted model leaks membership, a DP one does not; the canary
audit passes a correct DP training and fails loudly when the noise is switched off
through the test-only hook `fedsilo.privacy.dpsgd._applied_noise`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fedsilo.cli import main
from fedsilo.errors import ConfigError, DataError, PrivacyAuditFailed
from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.models import build_model, get_weights, set_weights
from fedsilo.privacy import dpsgd
from fedsilo.privacy.audit import one_run
from fedsilo.simulations.config import SimulationConfig, build_config
from fedsilo.simulations.data.synthetic import generate_consortium
from fedsilo.simulations.privacy_audit import (
    AuditSettings,
    BankSplit,
    aggregator_view,
    canary_audit,
    membership_inference,
    train_locally,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is fastest, and fair to a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """One synthetic bank (the generator's 5-35 % default rates: enough defaults to overfit), its config."""
    config = SimulationConfig(banks=5, rounds=5)
    frames = generate_consortium(config.banks, seed=config.seed)
    encoder = TabularEncoder.fit([BankSummary.from_frame(f, config.label_column) for f in frames], config.label_column)
    return config, encoder, frames[0]


def _trained(config: SimulationConfig, data, **changes):
    job = replace(config, **changes).job()
    start = get_weights(build_model(job.model, data.x_train.shape[1], seed=job.train.seed))
    model = build_model(job.model, data.x_train.shape[1])
    set_weights(model, train_locally(job, data.x_train, data.y_train, start, bank_seed=0))
    return job, model


@pytest.mark.parametrize("private", [False, True])
def test_membership_auc_high_without_dp_and_near_chance_with_dp_at_epsilon_3(bank, private):
    config, encoder, frame = bank
    data = encode_bank(frame.iloc[:600], encoder, 0.5, 0)
    changes = (
        dict(dp_mode="local", epsilon=3.0, local_epochs=1)
        if private
        else dict(dp_mode="off", local_epochs=20, reproducible=True)
    )  # seeded: a fixed overfit model
    job, model = _trained(config, data, batch_size=32, rounds=10, **changes)
    split = BankSplit("b", data.x_train, data.y_train, data.x_test, data.y_test)
    loss, calibrated = membership_inference(job, model, [split], AuditSettings(reference_models=2))
    if private:
        assert loss.roc.auc <= 0.55 and calibrated.roc.auc <= 0.55
    else:
        assert loss.roc.auc > 0.58 and calibrated.roc.auc > 0.58
    assert loss.roc.members == loss.roc.nonmembers == 150


def test_canary_audit_passes_dp_and_fails_loudly_with_noise_switched_off(bank, monkeypatch):
    config, encoder, frame = bank
    data = encode_bank(frame.iloc[:1000], encoder, 0.2, 0)
    job = replace(config, epsilon=1.0).job()
    settings = AuditSettings(canaries=200)
    honest = canary_audit(job, data.x_train, data.y_train, settings)
    assert honest.epsilon_claimed == 1.0 and honest.epsilon_lower_bound < 1.0
    one_run.check_claim(honest)

    monkeypatch.setattr(dpsgd, "_applied_noise", lambda noise_multiplier: 0.0)  # a forgotten noise call
    broken = canary_audit(job, data.x_train, data.y_train, settings)
    assert broken.epsilon_lower_bound > 1.0
    with pytest.raises(PrivacyAuditFailed, match="privacy audit FAILED"):
        one_run.check_claim(broken)


def test_aggregator_view_on_a_trained_model(bank):
    config, encoder, frame = bank
    data = encode_bank(frame.iloc[:300], encoder, 0.2, 0)
    job, model = _trained(config, data, dp_mode="off")
    view = aggregator_view(job, model, data.x_train[:5], data.y_train[:5], AuditSettings(dlg_steps=20))
    assert view["plaintext_single_peer_update"]["closed_form"] > 0.999
    assert view["plaintext_single_peer_update"]["succeeded"] is True
    masked = view["masked_secagg_upload"]
    assert masked["succeeded"] is False and max(masked["closed_form"], masked["gradient_matching"]) < 0.5


def test_audit_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert main(["audit-privacy", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    (tmp_path / "model_card.json").write_text("{}")
    assert main(["audit-privacy", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "lacks model.safetensors, encoder.json, membership_split.json" in err and err.count("\n") == 1
    assert main(["audit-privacy", str(tmp_path), "--canaries", "5", "--quiet"]) == 2
    assert "--canaries must be ≥ 20" in capsys.readouterr().err


def test_audit_toml_key_and_flag(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[simulation]\naudit = true\n")
    assert build_config(toml).audit is True
    assert build_config(None, {"audit": True}).audit is True
    toml.write_text('[simulation]\naudit = "yes"\n')
    with pytest.raises(ConfigError, match="true or false"):
        build_config(toml)
    with pytest.raises(ConfigError, match="horizontal and vertical setups"):
        build_config(None, {"audit": True, "setup": "transfer"})
    assert build_config(None, {"audit": True, "setup": "vertical"}).audit is True
    with pytest.raises(DataError):
        AuditSettings(reference_models=0)


def test_dp_noise_hides_the_row_in_the_average(bank):
    config, encoder, frame = bank
    data = encode_bank(frame.iloc[:300], encoder, 0.2, 0)
    job, model = _trained(config, data, dp_mode="off")
    view = aggregator_view(
        job, model, data.x_train[:5], data.y_train[:5], AuditSettings(dlg_steps=10), noise_multiplier=1.0
    )
    noisy = view["unmasked_secagg_average_of_dp_steps"]
    assert noisy["noise_multiplier"] == 1.0 and noisy["succeeded"] is False and noisy["closed_form"] < 0.5
