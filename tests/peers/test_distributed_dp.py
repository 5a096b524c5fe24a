"""Distributed DP: the plan's accounting, its assumptions, and the clipped gradient sum."""

import pytest
import torch
from torch import nn

from peers.job import DPSpec, JobConfig, SecAggSpec, TrainSpec, plan_distributed_dp, secagg_config
from privacy.accounting import epsilon_spent
from privacy.clipped_gradients import clipped_gradient_sum
from privacy.errors import ConfigError
from privacy.secagg.graph import graph_parameters


def _job(peers=10, rounds=20, epsilon=3.0, secagg="on"):
    return JobConfig(label="y", encoder_path="", peers=peers, public_rows=20_000,
                     train=TrainSpec(rounds=rounds, lr=2.0), dp=DPSpec(mode="distributed", epsilon=epsilon),
                     secagg=SecAggSpec(mode=secagg, clip=1.0))


@pytest.mark.parametrize("peers, rounds", [(5, 10), (10, 30), (40, 5)])
def test_rounds_spend_the_target_and_survivors_are_enforced(peers, rounds):
    job = _job(peers, rounds)
    plan = plan_distributed_dp(job, 4000)
    spent = epsilon_spent([plan.per_round] * rounds, job.dp.delta, job.dp.accountant)
    assert spent <= 3.0 + 1e-9 and spent == pytest.approx(3.0, rel=0.02)
    graph = graph_parameters(peers, 0.3, 0.1, 40, 30, 30)
    assert plan.min_survivors == peers - graph.dropped
    # Accounting only counts the noise of peers − D − C honest shares: less than all peers' noise.
    assert plan.effective_multiplier < plan.noise.noise_multiplier
    config = secagg_config(job, 4000)
    assert config.noise == plan.noise and config.min_survivors == plan.min_survivors and config.max_weight == 1.0


def test_distributed_dp_needs_secure_aggregation():
    with pytest.raises(ConfigError, match="needs secure aggregation"):
        _job(secagg="off")


def test_no_honest_noise_is_refused():
    with pytest.raises(ConfigError, match="cannot tolerate 1 dropouts"):
        plan_distributed_dp(JobConfig(label="y", encoder_path="", peers=2, public_rows=10,
                                      dp=DPSpec(mode="distributed"),
                                      secagg=SecAggSpec(dropout_fraction=0.5, collusion_fraction=0.5)), 100)


def test_clipped_gradient_sum_matches_per_example_clipping():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    x = torch.randn(9, 4) * 5
    y = torch.randint(0, 2, (9,)).float()
    got = clipped_gradient_sum(model, x, y, max_grad_norm=0.5)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(9):
        model.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x[i:i + 1]).squeeze(-1), y[i:i + 1],
                                                       reduction="sum").backward()
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
        for n, p in model.named_parameters():
            expected[n] += p.grad * min(1.0, 0.5 / float(norm))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6)
    # One more row moves the sum by at most the clipping bound: the sensitivity the noise covers.
    more = clipped_gradient_sum(model, torch.cat([x, 100 * torch.ones(1, 4)]), torch.cat([y, torch.zeros(1)]), 0.5)
    moved = torch.sqrt(sum((more[n] - got[n]).pow(2).sum() for n in got))
    assert float(moved) <= 0.5 + 1e-5
    assert all(not hasattr(p, "grad_sample") or p.grad_sample is None for p in model.parameters())
