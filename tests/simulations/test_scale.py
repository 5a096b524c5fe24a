"""Scale without an engine: sampling settings, lazy populations, per-bank dropout, the
ledger reserved per participating bank, the sampling-rate grid, the cached accounting."""

import json

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.data.bank import split_train_test
from fedsilo.peers.job import JobConfig, TrainSpec, plan_dp
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.accounting.compose import RDP_ALPHAS
from fedsilo.privacy.accounting.planning import grid_sample_rate
from fedsilo.privacy.ledger import SQLiteLedger
from fedsilo.simulations.banks import build_population
from fedsilo.simulations.config import build_config
from fedsilo.simulations.data.synthetic import SIMULATE_RATE_RANGE, consortium_profiles, generate_bank
from fedsilo.simulations.lazy_banks import facts_path, materialize, reserve
from fedsilo.simulations.population import (
    SyntheticPopulation,
    TablePopulation,
    dropout_probability,
    load_population,
    yardstick_sample,
)


@pytest.mark.parametrize("given, per_round", [("100", 100), ("0.1", 100), (0.25, 250), (1000, 1000), ("1.0", 1000)])
def test_sample_is_a_count_or_a_fraction(given, per_round):
    config = build_config(None, {"banks": 1000, "sample": given})
    assert config.per_round == per_round and config.job().sample == per_round and config.job().peers == 1000


@pytest.mark.parametrize(
    "given, message",
    [
        ("0", "between 1 and the 10 banks"),
        ("11", "between 1 and the 10"),
        ("1.5", r"fraction of the banks must be in \(0, 1\]"),
        ("ten", "a count of banks"),
    ],
)
def test_bad_sample_is_refused_with_the_fix(given, message):
    with pytest.raises(ConfigError, match=message):
        build_config(None, {"banks": 10, "sample": given})


def test_sample_has_a_toml_key(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[simulation]\nbanks = 500\nsample = 0.2\nray-address = "127.0.0.1:16379"\n'
        "dropout = 0.3\ndropout-concentration = 4.0\nyardstick-banks = 30\n"
    )
    config = build_config(path)
    assert (config.per_round, config.ray_address, config.dropout_concentration, config.yardstick_banks) == (
        100,
        "127.0.0.1:16379",
        4.0,
        30,
    )


def test_synthetic_population_builds_no_bank_and_bank_i_is_the_generators(tmp_path):
    config = build_config(None, {"banks": 10_000})
    population = build_population(config, tmp_path)
    assert isinstance(population, SyntheticPopulation) and population.n_banks == 10_000
    assert list(tmp_path.iterdir()) == []  # nothing written, no table built
    sizes = population.sizes()
    assert sizes.min() >= 100 and sizes.max() > 10 * np.median(sizes)  # heavy-tailed sizes
    rates = [p.default_rate for p in population.profiles[:200]]
    low, high = SIMULATE_RATE_RANGE
    assert low <= min(rates) and max(rates) <= high and np.std(rates) > 0.015  # per-bank default rates
    profile = consortium_profiles(10_000, 0, rates=SIMULATE_RATE_RANGE)[1234]
    assert population.frame(1234).equals(generate_bank(profile, 0, 1234))


def test_table_population_keeps_index_lists_and_reads_rows_on_demand(tmp_path):
    config = build_config(None, {"banks": 6, "partition": "dirichlet:0.5", "customers": 3000})
    population = build_population(config, tmp_path)
    assert isinstance(population, TablePopulation) and (tmp_path / "table.parquet").exists()
    assert sum(population.sizes()) == 3000 and population.frame(2).shape[0] == population.sizes()[2]


def test_a_bank_is_materialized_once_when_first_asked(tmp_path):
    population = SyntheticPopulation(seed=0, profiles=consortium_profiles(50, 0))
    pickled = population.save(tmp_path / "population.pickle")
    banks = tmp_path / "banks"
    banks.mkdir()
    table = materialize(str(pickled), banks, 7, "default", 0.2, 0)
    assert sorted(p.name for p in banks.iterdir()) == ["bank-00007.json", "bank-00007.parquet"]
    facts = json.loads(facts_path(banks, 7).read_text())
    assert facts["rows"] == population.sizes()[7] == facts["rows_train"] + facts["rows_test"]
    assert len(facts["data_sha256"]) == 64
    train, test = split_train_test(population.frame(7)["default"].to_numpy(), 0.2, 0)
    assert facts["train_positions"] == train.tolist() and facts["test_positions"] == test.tolist()
    stamp = table.stat().st_mtime_ns
    materialize(str(pickled), banks, 7, "default", 0.2, 0)
    assert table.stat().st_mtime_ns == stamp and load_population(str(pickled)).n_banks == 50


def test_dropout_probabilities_are_per_bank_around_the_mean():
    same = {dropout_probability(0, b, 0.3, 0.0) for b in range(100)}
    assert same == {0.3}
    spread = np.array([dropout_probability(0, b, 0.3, 4.0) for b in range(4000)])
    assert spread.std() > 0.1 and spread.mean() == pytest.approx(0.3, abs=0.02)
    assert dropout_probability(0, 5, 0.3, 4.0) == dropout_probability(0, 5, 0.3, 4.0)
    assert dropout_probability(0, 5, 0.0, 4.0) == 0.0


def test_yardstick_sample_is_everyone_when_small_and_seeded_when_large():
    assert yardstick_sample(5, 100, 0) == [0, 1, 2, 3, 4]
    big = yardstick_sample(10_000, 100, 0)
    assert len(big) == len(set(big)) == 100 and big == sorted(big) and big == yardstick_sample(10_000, 100, 0)


def test_sampling_rate_grid_rounds_up_within_one_step():
    for n in (80, 129, 200, 1000, 3200, 77_777):
        q = grid_sample_rate(128, n)
        assert min(1.0, 128 / n) <= q <= min(1.0, 2**0.25 * 128 / n) + 1e-12
    assert len({grid_sample_rate(128, n) for n in range(200, 20_000)}) <= 4 * 7 + 1


def test_memoized_rdp_matches_opacus_accountant():
    from opacus.accountants import RDPAccountant

    history = [Mechanism(1.1, 0.0442, 23), Mechanism(0.9, 0.125, 8)]
    accountant = RDPAccountant()
    accountant.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history]
    assert epsilon_spent(history, 1e-5) == accountant.get_epsilon(delta=1e-5, alphas=RDP_ALPHAS)


def test_rdp_per_step_is_kept_on_disk_and_read_back_exactly(tmp_path, monkeypatch):
    from opacus.accountants.analysis import rdp

    from fedsilo.privacy.accounting import compose

    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path))
    compose._rdp_per_step.cache_clear()
    expected = tuple(rdp.compute_rdp(q=0.0625, noise_multiplier=0.8125, steps=1, orders=RDP_ALPHAS))
    try:
        assert compose._rdp_per_step(0.8125, 0.0625) == expected
        (stored,) = (tmp_path / compose.RDP_STORE_KIND).glob("*.json")
        compose._rdp_per_step.cache_clear()
        record = json.loads(stored.read_text())
        stored.write_text(json.dumps({**record, "rdp": [0.0] * len(RDP_ALPHAS)}))
        assert compose._rdp_per_step(0.8125, 0.0625) == (0.0,) * len(RDP_ALPHAS)  # what is stored is used
        compose._rdp_per_step.cache_clear()
        stored.write_text(json.dumps({**record, "rdp": [0.0]}))  # wrong length: recomputed, rewritten
        assert compose._rdp_per_step(0.8125, 0.0625) == expected
        assert json.loads(stored.read_text())["rdp"] == list(expected)
    finally:
        compose._rdp_per_step.cache_clear()


def test_a_bank_reserves_its_whole_plan_and_commits_per_participation(tmp_path):
    job = JobConfig(
        label="y", encoder_path="", job_id="job-1", peers=1000, sample=100, train=TrainSpec(rounds=10, batch_size=64)
    )
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite")
    try:
        reserve(ledger, job, "bank-00003", 640)
        plan = plan_dp(job, 640)
        assert ledger.status("bank-00003").reserved_epsilon == pytest.approx(job.dp.epsilon, rel=0.02)
        ledger.commit("bank-00003", "job-1", [plan.per_round] * 2)  # sampled in 2 of 10 rounds
        status = ledger.status("bank-00003")
        assert status.reserved_epsilon == 0 and 0 < status.spent_epsilon < job.dp.epsilon / 2
        assert status.spent_epsilon == pytest.approx(
            epsilon_spent([plan.per_round] * 2, job.dp.delta, job.dp.accountant)
        )
        assert ledger.sources() == ["bank-00003"]  # a bank never sampled never appears
    finally:
        ledger.close()


def test_host_samples_k_only_once_all_n_banks_are_registered():
    from flwr.serverapp.strategy import FedAvg

    from fedsilo.strategies.factory import build_strategy
    from fedsilo.strategies.wrapper import find_wrapper

    job = build_config(None, {"banks": 1000, "sample": "100"}).job()
    fraction = job.per_round / job.peers  # what JobHost.run passes
    inner = find_wrapper(
        build_strategy("fedavg", job.peers, fraction_train=fraction, fraction_evaluate=fraction), FedAvg
    )
    assert inner.min_available_nodes == 1000  # Flower waits for every bank before sampling
    assert inner.min_train_nodes == 100 and inner.min_evaluate_nodes == 100
    assert max(int(1000 * inner.fraction_train), inner.min_train_nodes) == 100  # Flower's sample size


def test_noise_of_every_sampling_rate_is_calibrated_before_the_engine(tmp_path, monkeypatch):
    from fedsilo.simulations.progress import Progress
    from fedsilo.simulations.runner import _warm_dp_plans

    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path))
    from fedsilo.privacy.accounting import cache

    cache.cached_calibration.cache_clear()
    job = build_config(None, {"banks": 3, "rounds": 2}).job()
    _warm_dp_plans(job, np.array([100, 120, 150]), 0.2, Progress(quiet=True))  # every bank: q = 1
    files = list((tmp_path / "noise-calibration").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["sample_rate"] == 1.0
    cache.cached_calibration.cache_clear()
