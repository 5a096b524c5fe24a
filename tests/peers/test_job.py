"""Job configuration: run-config round trip, validation, and the DP plan."""

import math

import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec, plan_dp
from fedsilo.peers.models import ModelSpec
from fedsilo.privacy.accounting import epsilon_spent, planning


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epsilon": math.inf}, "dp.epsilon must be > 0 and finite (got inf); use --no-dp for a non-private run"),
        # A bool is no budget (True > 0 passed before the one validator).
        ({"epsilon": True}, "dp.epsilon must be > 0 and finite (got True); use --no-dp for a non-private run"),
        ({"delta": math.nan}, "dp.delta must be in (0, 1) (got nan); 1e-5 or 1/(10·rows) are usual"),
        ({"accountant": "gdp"}, "dp.accountant 'gdp' is unknown: valid choices are prv, rdp"),
    ],
)
def test_dp_settings_are_refused_by_the_one_validator(kwargs, message):
    with pytest.raises(ConfigError) as error:
        DPSpec(**kwargs)
    assert str(error.value) == message


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


@pytest.mark.parametrize("mode", ["local", "off"])
def test_the_job_plan_is_the_plan_of_its_public_numbers(mode):
    train = TrainSpec(rounds=3, batch_size=32, local_epochs=2)
    job = JobConfig(label="y", encoder_path="", train=train, dp=DPSpec(mode=mode, epsilon=4.0, accountant="rdp"))
    expected = planning.plan_dp(
        4.0 if mode == "local" else None, 1e-5, "rdp", n_train=500, batch_size=32, local_epochs=2, rounds=3
    )
    assert plan_dp(job, 500) == expected
    assert (expected.sample_rate, expected.steps_per_round) == (2**-3.75, 28)  # 32/500 rounded up; 14 steps an epoch
    assert (expected.noise_multiplier == 0.0) == (mode == "off")


def test_distributed_dp_refuses_a_private_block():
    """A transfer job's private block would train without noise under distributed DP: refused by name."""
    from fedsilo.peers.job import SecAggSpec

    base = {"label": "y", "encoder_path": "encoder.json"}
    distributed = {**base, "dp": DPSpec(mode="distributed"), "public_rows": 600, "secagg": SecAggSpec()}
    JobConfig(job_id="h", **distributed)  # horizontal: every trainable parameter is aggregated
    with pytest.raises(ConfigError, match=r"cannot train a private block .*'shared_input', 'hidden', 'head'"):
        JobConfig(job_id="t", shared=("shared_input", "hidden", "head"), **distributed)
    JobConfig(job_id="t", shared=("shared_input", "hidden", "head"), dp=DPSpec(mode="local"), **base)  # DP-SGD: both
