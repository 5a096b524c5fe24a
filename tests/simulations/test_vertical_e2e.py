"""`fedsilo simulate --setup vertical` end to end, and what crosses between the broker and the bank (issue 18)."""

import json

import numpy as np
import pytest
from safetensors import safe_open

from fedsilo.errors import ConfigError
from fedsilo.peers.vertical.parties import SplitSpec
from fedsilo.peers.vertical.training import score, train
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.simulations.api import simulate
from fedsilo.simulations.config import SimulationConfig, build_config
from fedsilo.simulations.vertical import (
    HOLDER_COLUMNS,
    LABEL,
    PARTY_COLUMNS,
    Observer,
    build_parties,
    pooled_table,
)


def test_no_message_carries_an_id_a_column_name_a_raw_value_or_a_label():
    config = SimulationConfig(setup="vertical", customers=1200, rounds=1, dp_mode="off")
    table = pooled_table(config)
    parties = build_parties(table, config, SplitSpec("mlp", (8,), 4), None, None, 0.6)
    observer = Observer()
    train(parties.holder, [parties.party], 1, 128, 0, tap=observer)
    score(parties.holder, [parties.party], parties.holder.test_index, tap=observer)
    assert {f[:4] for f in observer.frames} == {b"FSVB", b"FSVE", b"FSVG"}
    words = [c.encode() for c in (*HOLDER_COLUMNS, *PARTY_COLUMNS, LABEL)] + [b"customer-"]
    for frame in observer.frames:
        assert not any(w in frame for w in words)
    # no raw value of the bank's (the batch positions aside, every number sent is a float32 embedding/gradient)
    raw = np.unique(parties.bank_raw_aligned.to_numpy(dtype=np.float32))
    raw = raw[np.abs(raw) > 1]  # 0/±1 could coincide with a position's bytes; amounts and limits cannot
    sent = np.concatenate([observer.embeddings[b].ravel() for b in observer.embeddings])
    assert not np.isin(sent, raw).any()
    # the labels: the gradient messages are values, one row per position; no 0/1 column rides along
    for values in observer.gradients.values():
        assert not np.isin(values, [0.0, 1.0]).all(axis=0).any()


def test_simulate_vertical_writes_each_party_its_part_ledger_and_card(tmp_path):
    result = simulate(
        setup="vertical",
        customers=1600,
        rounds=1,
        batch_size=256,
        out=str(tmp_path),
        epsilon=3.0,
        vertical_scheme="split",
        engine="in-process",
    )
    folder = result.run_dir
    v = result.summary.vertical
    for owner in ("broker", "bank"):
        with safe_open(str(folder / f"part-{owner}.safetensors"), "np") as part:
            assert part.metadata()["fedsilo.owner"] == owner
        ledger = SQLiteLedger(folder / f"ledger-{owner}.sqlite")
        jobs = ledger.jobs(owner)
        assert ledger.sources() == [owner] and list(jobs) == [folder.name]
        (job,) = jobs.values()
        assert job.state == "committed"
        card_dp = json.loads((folder / "model_card.json").read_text())["parties"][owner]["privacy"]
        # the worst row's releases: a training row's two per epoch, or (bank) a held-out row's one scoring release
        assert job.mechanisms in (
            (Mechanism(v["noise_multiplier"], 1.0, 2),),
            (Mechanism(card_dp["scoring_noise_multiplier"], 1.0, 1),),
        )
        assert ledger.status(owner).spent_epsilon <= 3.0
        ledger.close()
    with safe_open(str(folder / "part-bank.safetensors"), "np") as part:
        assert all(k.startswith(("hidden", "out")) for k in part.keys())  # the bank's bottom model only
    card = json.loads((folder / "model_card.json").read_text())
    assert card["parties"]["bank"]["privacy"]["releases_per_training_row"] == 2
    assert card["parties"]["broker"]["epsilon_spent"] <= 3.0
    assert set(card["measured_leakage"]) == {
        "label_inference_norm_auc",
        "label_inference_direction_auc",
        "feature_reconstruction_r2",
    }
    assert 0.0 <= v["vertical_auc_shared"] <= 1.0 and v["shared_customers"] > 0
    assert (folder / "comparison.png").is_file() and (folder / "metrics.json").is_file()


def test_vertical_settings_from_toml_and_flags(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(
        '[simulation]\nsetup = "vertical"\n\n[data]\noverlap = 0.5\n\n[model]\nembedding-width = 2\n'
        'vertical-scheme = "split"\n'
    )
    config = build_config(path)
    assert (config.setup, config.overlap, config.embedding_width) == ("vertical", 0.5, 2)
    assert config.vertical_scheme == "split" and build_config(None, {"setup": "vertical"}).vertical_scheme == "coded"
    with pytest.raises(ConfigError, match="--vertical-scheme is split or coded"):
        build_config(None, {"setup": "vertical", "vertical_scheme": "trees"})
    with pytest.raises(ConfigError, match="--embedding-width must be ≥ 1"):
        build_config(None, {"setup": "vertical", "embedding_width": 0})
    with pytest.raises(ConfigError, match="--scenario uci needs --data"):
        pooled_table(SimulationConfig(setup="vertical", scenario="uci"))


def test_simulate_vertical_coded_commits_one_pure_release_at_the_bank_and_nothing_at_the_broker(tmp_path):
    result = simulate(setup="vertical", customers=1600, rounds=1, batch_size=256, out=str(tmp_path), epsilon=3.0)
    run = result.run_dir
    card = json.loads((run / "model_card.json").read_text())
    assert card["scheme"] == "coded" and result.summary.vertical["scheme"] == "coded"
    bank = SQLiteLedger(run / "ledger-bank.sqlite")
    assert bank.status("bank").spent_epsilon == pytest.approx(3.0)
    broker = SQLiteLedger(run / "ledger-broker.sqlite")
    assert broker.status("broker").spent_epsilon == 0.0
    assert not (run / "part-bank.safetensors").exists()  # the bank's rule is fixed: it has no trained part
    assert result.summary.vertical["measured_leakage"]["label_inference_auc"] == 0.5
