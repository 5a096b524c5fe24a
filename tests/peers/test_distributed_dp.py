"""Distributed DP: the plan's accounting, its assumptions, and the clipped gradient sum."""

import pytest
import torch
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.peers.job import DPSpec, JobConfig, SecAggSpec, TrainSpec, plan_distributed_dp, secagg_config
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.privacy.clipped_gradients import clipped_gradient_sum
from fedsilo.privacy.secagg.graph import graph_parameters


def _job(peers=10, rounds=20, epsilon=3.0, secagg="on"):
    return JobConfig(
        label="y",
        encoder_path="",
        peers=peers,
        public_rows=20_000,
        train=TrainSpec(rounds=rounds, lr=2.0),
        dp=DPSpec(mode="distributed", epsilon=epsilon),
        secagg=SecAggSpec(mode=secagg, clip=1.0),
    )


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
        plan_distributed_dp(
            JobConfig(
                label="y",
                encoder_path="",
                peers=2,
                public_rows=10,
                dp=DPSpec(mode="distributed"),
                secagg=SecAggSpec(dropout_fraction=0.5, collusion_fraction=0.5),
            ),
            100,
        )


def test_clipped_gradient_sum_matches_per_example_clipping():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    x = torch.randn(9, 4) * 5
    y = torch.randint(0, 2, (9,)).float()
    got = clipped_gradient_sum(model, x, y, max_grad_norm=0.5)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(9):
        model.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(
            model(x[i : i + 1]).squeeze(-1), y[i : i + 1], reduction="sum"
        ).backward()
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


# -- the float update a peer encodes -------------------------------------------------


@pytest.fixture(scope="module")
def distributed_bank(tmp_path_factory):
    from fedsilo.peers.data.encoding import TabularEncoder
    from fedsilo.simulations.data.synthetic import generate_consortium

    root = tmp_path_factory.mktemp("dist")
    (frame,) = generate_consortium(1, seed=2, total_customers=600)
    encoder = TabularEncoder.fit_frames([frame], "default")
    (root / "encoder.json").write_text(encoder.to_json())
    x, y = (torch.from_numpy(a) for a in encoder.transform(frame))
    job = JobConfig(
        label="default",
        encoder_path=str(root / "encoder.json"),
        peers=10,
        public_rows=600,
        train=TrainSpec(rounds=5, lr=2.0),
        dp=DPSpec(mode="distributed", epsilon=3.0),
        secagg=SecAggSpec(clip=1.0),
    )
    return job, x, y


def test_the_distributed_update_is_encoded_in_float64_within_the_float_allowance(distributed_bank):
    """The encoded update is the exact clipped step up to 2**-12 integer units; a float32 cast was off by hundreds."""
    import numpy as np

    from fedsilo.peers.client.local_training import train_round
    from fedsilo.peers.data.bank import BankTensors
    from fedsilo.peers.models import build_model, get_weights, set_weights

    job, x, y = distributed_bank
    model = build_model(job.model, x.shape[1], seed=3)
    weights = {k: (v * 300).astype(np.float32) for k, v in get_weights(model).items()}  # |w| up to ~100
    result = train_round(job, BankTensors(x, y, x[:0], y[:0]), weights, [], 1, 0)
    set_weights(model, weights)
    gradient = clipped_gradient_sum(model, x, y, job.dp.max_grad_norm)
    step = job.train.lr / job.public_rows
    exact = np.concatenate([-np.clip(step * gradient[k].double().numpy().ravel(), -1.0, 1.0) for k in weights])
    released = np.concatenate([result.weights[k].ravel() for k in weights])
    start = np.concatenate([weights[k].astype(np.float64).ravel() for k in weights])
    scale = secagg_config(job, exact.size).encoder(job.per_round).scale
    assert released.dtype == np.float64
    assert np.max(np.abs((released - start) - exact)) * scale <= 2.0**-12
    cast = released.astype(np.float32).astype(np.float64)  # what the peer released before
    assert np.max(np.abs((cast - start) - exact)) * scale > 100


def test_global_weights_beyond_the_float_allowance_are_refused(distributed_bank):
    import numpy as np

    from fedsilo.peers.client.local_training import WEIGHT_BOUND, train_round
    from fedsilo.peers.data.bank import BankTensors
    from fedsilo.peers.models import build_model, get_weights

    job, x, y = distributed_bank
    weights = get_weights(build_model(job.model, x.shape[1]))
    weights[next(iter(weights))].flat[0] = np.float32(WEIGHT_BOUND * job.secagg.clip * 2)
    with pytest.raises(ConfigError, match="exceeds 1024·secagg.clip"):
        train_round(job, BankTensors(x, y, x[:0], y[:0]), weights, [], 1, 0)
