"""Job configuration: run-config round trip, validation, and the DP plan."""

import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec, plan_dp
from fedsilo.peers.models import ModelSpec
from fedsilo.privacy.accounting import epsilon_spent


def test_run_config_round_trip():
    job = JobConfig(
        label="y",
        encoder_path="/e.json",
        banks_dir="/b",
        job_id="j1",
        strategy="fedadam",
        peers=7,
        model=ModelSpec("logreg", (8,)),
        train=TrainSpec(rounds=4, lr=0.1, seed=9),
        dp=DPSpec(epsilon=1.5, delta=1e-6, accountant="prv"),
    )
    flat = job.to_run_config()
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())
    assert JobConfig.from_run_config(flat) == job


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"epsilon": 0.0}, "dp.epsilon must be > 0"),
        ({"epsilon": -1.0}, "dp.epsilon must be > 0"),
        ({"delta": 1.0}, "dp.delta must be in (0, 1)"),
        ({"delta": 0.0}, "dp.delta must be in (0, 1)"),
        ({"mode": "central"}, "dp.mode 'central' is unknown"),
    ],
)
def test_bad_dp_settings_are_refused(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        DPSpec(**kwargs)


def test_missing_run_config_key_names_it():
    with pytest.raises(ConfigError, match="data.label"):
        JobConfig.from_run_config({"data.encoder": "x"})


@pytest.mark.parametrize("n_train", [200, 3000])
def test_plan_spends_exactly_the_target_over_all_rounds(n_train):
    job = JobConfig(label="y", encoder_path="", train=TrainSpec(rounds=5, batch_size=64), dp=DPSpec(epsilon=2.0))
    plan = plan_dp(job, n_train)
    assert job.dp.accountant == "prv"  # the default: the tightest sound accountant
    spent = epsilon_spent([plan.per_round] * job.train.rounds, job.dp.delta, job.dp.accountant)
    assert spent <= 2.0 + 1e-6 and spent == pytest.approx(2.0, rel=0.02)
    assert epsilon_spent([plan.per_round] * job.train.rounds, job.dp.delta, "rdp") > 2.0  # the card's RDP figure
    assert plan.whole_job.steps == plan.steps_per_round * 5
