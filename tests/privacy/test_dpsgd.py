"""Tests of privacy.dpsgd: clipping, noise, sampling, accounting and the two backends."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.peers.models import ModelSpec, build_model
from fedsilo.privacy.dpsgd import (
    DPSGDConfig,
    DPSGDTrainer,
    expected_batch_size,
    steps_per_epoch,
)
from fedsilo.privacy.noise_source import SecureNoise, SeededNoise
from fedsilo.privacy.split_input import SplitInputMLP

BACKENDS = ("ghost", "opacus")
TINY_NOISE = 1e-12


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def table(n: int = 200, d: int = 12, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * scale
    y = (torch.rand(n, generator=g) < 0.3).float()
    return x, y


def mlp(d: int = 12, hidden: tuple[int, ...] = (16, 8)) -> nn.Module:
    return build_model(ModelSpec("mlp", hidden), d, seed=1)


def train_copy(model: nn.Module, config: DPSGDConfig, x, y, epochs=1, backend="auto", seed: int | None = 3):
    """Train a copy; `seed` None: the default secret noise, else the reproducible research mode."""
    model = copy.deepcopy(model)
    trainer = DPSGDTrainer(model, config, reproducible_seed=seed, backend=backend)
    mechanism, loss = trainer.train(x, y, epochs=epochs)
    return model, mechanism, loss, trainer


# -- per-sample clipping ------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["mlp", "logreg"])
def test_one_huge_loss_example_moves_the_model_by_at_most_lr_c_over_batch(backend, kind):
    x = torch.full((1, 12), 1e3)
    model = build_model(ModelSpec(kind, (16, 8)), 12, seed=0)
    with torch.no_grad():  # make the one example's loss (and gradient) huge
        model.head.bias.fill_(50.0)
        y = (model(x).squeeze(-1) < 0).float()  # the label it gets most wrong
    lr, clip = 0.5, 0.1
    config = DPSGDConfig(lr=lr, max_grad_norm=clip, noise_multiplier=TINY_NOISE, sample_rate=1.0)
    trained, _, loss, _ = train_copy(model, config, x, y, backend=backend)
    assert loss > 40  # the example really was far off
    moved = (flat(trained) - flat(model)).norm().item()
    assert moved <= lr * clip / expected_batch_size(1.0, 1) * (1 + 1e-5) + 1e-7
    assert moved > 0.99 * lr * clip  # clipped to C, not zeroed


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_example_contributes_at_most_c_to_the_sum(backend):
    """A batch of B examples, each with a huge gradient: the update is ≤ lr·C·B/E."""
    x, y = table(n=64, scale=100.0)
    model = mlp()
    lr, clip = 1.0, 0.5
    config = DPSGDConfig(lr=lr, max_grad_norm=clip, noise_multiplier=TINY_NOISE, sample_rate=1.0)
    trained, *_ = train_copy(model, config, x, y, backend=backend)
    moved = (flat(trained) - flat(model)).norm().item()
    assert moved <= lr * clip * 64 / expected_batch_size(1.0, 64) * (1 + 1e-5)


def explicit_dp_sgd_update(model: nn.Module, x, y, lr: float, clip: float) -> torch.Tensor:
    """The textbook step, one example at a time: clip each gradient, sum, average."""
    params = list(model.parameters())
    total = torch.zeros_like(flat(model))
    for i in range(len(y)):
        loss = nn.BCEWithLogitsLoss()(model(x[i : i + 1]).squeeze(-1), y[i : i + 1])
        g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, params)])
        total += g * min(1.0, clip / (g.norm().item() + 1e-6))
    return flat(model) - lr * total / expected_batch_size(1.0, len(y))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", [0.05, 1.0, 1e3])
@pytest.mark.parametrize("kind", ["mlp", "logreg"])
def test_update_equals_explicit_per_example_clipping(backend, clip, kind):
    x, y = table(n=40)
    model = build_model(ModelSpec(kind, (16, 8)), 12, seed=2)
    config = DPSGDConfig(lr=0.3, max_grad_norm=clip, noise_multiplier=TINY_NOISE, sample_rate=1.0)
    trained, *_ = train_copy(model, config, x, y, backend=backend)
    expected = explicit_dp_sgd_update(copy.deepcopy(model), x, y, 0.3, clip)
    torch.testing.assert_close(flat(trained), expected, rtol=1e-4, atol=1e-6)


def test_ghost_backend_matches_opacus_over_several_poisson_steps():
    x, y = table(n=300)
    model = mlp()
    config = DPSGDConfig(lr=0.5, max_grad_norm=0.7, noise_multiplier=TINY_NOISE, sample_rate=0.1)
    ghost, m_ghost, loss_ghost, t_ghost = train_copy(model, config, x, y, epochs=2, backend="auto")
    opacus, m_opacus, loss_opacus, t_opacus = train_copy(model, config, x, y, epochs=2, backend="opacus")
    assert (t_ghost.backend, t_opacus.backend) == ("ghost", "opacus")
    assert m_ghost == m_opacus
    assert loss_ghost == pytest.approx(loss_opacus, rel=1e-5)
    torch.testing.assert_close(flat(ghost), flat(opacus), rtol=1e-5, atol=1e-6)


# -- noise -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_noise_has_standard_deviation_sigma_c_on_the_sum(backend):
    """With σ huge the update is noise: per coordinate sd = lr·σ·C / E."""
    x, y = table(n=50)
    model = mlp(hidden=(64, 32))
    lr, clip, sigma = 1e-3, 0.5, 1e4
    config = DPSGDConfig(lr=lr, max_grad_norm=clip, noise_multiplier=sigma, sample_rate=1.0)
    trained, *_ = train_copy(model, config, x, y, backend=backend, seed=None)
    delta = flat(trained) - flat(model)
    expected_sd = lr * sigma * clip / expected_batch_size(1.0, 50)
    assert delta.std().item() == pytest.approx(expected_sd, rel=0.05)
    # the noise is secret (fresh every run): its mean over n coordinates is within 5 sd/sqrt(n) of 0
    assert delta.mean().abs().item() < 5 * expected_sd / delta.numel() ** 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_run_twice_gives_different_noise_of_the_full_scale(backend):
    """Secret noise: the same model, data, config and torch seed, twice; the updates differ by √2·lr·σ·C/E.

    With one full-batch step the clipped sums are equal, so the difference is the
    difference of the two noise draws: nothing about the run fixes them.
    """
    x, y = table(n=50)
    model = mlp(hidden=(64, 32))
    lr, clip, sigma = 0.1, 0.5, 1.0
    config = DPSGDConfig(lr=lr, max_grad_norm=clip, noise_multiplier=sigma, sample_rate=1.0)
    torch.manual_seed(0)
    a, *_ = train_copy(model, config, x, y, backend=backend, seed=None)
    torch.manual_seed(0)
    b, *_ = train_copy(model, config, x, y, backend=backend, seed=None)
    expected_sd = math.sqrt(2) * lr * sigma * clip / expected_batch_size(1.0, 50)
    assert (flat(a) - flat(b)).std().item() == pytest.approx(expected_sd, rel=0.05)


def test_secure_gaussians_are_standard_normal_sums_of_four_samples():
    noise = SecureNoise()
    drawn = 0
    words = noise.words

    def counting(count):
        nonlocal drawn
        drawn += count
        return words(count)

    noise.words = counting
    z = noise.gaussian(200_001)
    assert drawn == 4 * 200_001  # two uniforms per Box–Muller pair of samples, four samples per value
    assert abs(z.mean()) < 0.01
    assert z.var() == pytest.approx(1.0, rel=0.01)
    assert ((z - z.mean()) ** 4).mean() / z.var() ** 2 == pytest.approx(3.0, rel=0.03)  # Gaussian tails
    assert (abs(z) > 1.959964).double().mean() == pytest.approx(0.05, rel=0.05)
    assert len(set(SecureNoise().words(4).tolist()) & set(SecureNoise().words(4).tolist())) == 0  # fresh keys


def test_reproducible_noise_differs_between_seeds_and_repeats_with_one():
    x, y = table()
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.2)
    a, *_ = train_copy(mlp(), config, x, y, seed=1)
    b, *_ = train_copy(mlp(), config, x, y, seed=1)
    c, *_ = train_copy(mlp(), config, x, y, seed=2)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


# -- sampling and accounting ----------------------------------------------------------


@pytest.mark.parametrize("source", [SecureNoise, lambda: SeededNoise(0)], ids=["secure", "seeded"])
def test_poisson_batch_draws_each_row_with_probability_q(source):
    noise = source()
    n, q, draws = 1000, 0.05, 400
    counts = torch.zeros(n)
    sizes = []
    for _ in range(draws):
        rows = noise.poisson_rows(n, q)
        assert rows.unique().numel() == rows.numel()
        counts[rows] += 1
        sizes.append(rows.numel())
    assert sum(sizes) / draws == pytest.approx(n * q, rel=0.03)
    assert torch.tensor(sizes, dtype=torch.float).std().item() > 2  # not a fixed batch size
    assert counts.mean().item() / draws == pytest.approx(q, rel=0.03)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("q,epochs", [(0.07, 3), (0.5, 1), (1.0, 2), (0.013, 1)])
def test_mechanism_counts_epochs_times_ceil_one_over_q_steps(backend, q, epochs):
    x, y = table(n=100)
    config = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.3, sample_rate=q)
    _, mechanism, _, _ = train_copy(mlp(), config, x, y, epochs=epochs, backend=backend)
    assert mechanism.steps == epochs * math.ceil(1 / q) == epochs * steps_per_epoch(q)
    assert mechanism.noise_multiplier == 1.3
    assert mechanism.sample_rate == q


def test_empty_batches_are_counted_but_change_nothing():
    x, y = table(n=2)
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=1e-4)
    model = mlp()
    trained, mechanism, loss, _ = train_copy(model, config, x, y, seed=5)
    assert mechanism.steps == 10_000
    if math.isnan(loss):  # no row was ever sampled (the likely case): no update at all
        assert torch.equal(flat(trained), flat(model))


# -- the model and the modes ----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_keys_have_no_opacus_prefix(backend):
    x, y = table()
    model = mlp()
    keys = list(model.state_dict())
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.1)
    trained, *_ = train_copy(model, config, x, y, backend=backend)
    assert list(trained.state_dict()) == keys
    assert not any("_module." in k for k in trained.state_dict())


def test_non_private_mode_returns_no_mechanism_and_learns():
    x, y = table(n=400)
    y = (x[:, 0] > 0).float()
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=0.0, sample_rate=0.1, private=False)
    model = mlp()
    _, first_loss, *_ = DPSGDTrainer(copy.deepcopy(model), config, reproducible_seed=0).train(x, y, epochs=1)
    trained, mechanism, loss, trainer = train_copy(model, config, x, y, epochs=20)
    assert mechanism is None
    assert trainer.backend == "sgd"
    assert loss < first_loss


def test_opacus_hook_warning_is_silenced():
    x, y = table()
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_copy(mlp(), config, x, y, backend="opacus")
    assert not [w for w in caught if "Full backward hook" in str(w.message)]


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.a(x)))


def test_other_models_fall_back_to_opacus():
    shared = nn.Linear(12, 12)
    for model in (TwoInputs(), nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(12, 1))):
        config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.5)
        assert DPSGDTrainer(model, config).backend == "opacus"
        with pytest.raises(ConfigError, match="ghost"):
            DPSGDTrainer(model, config, backend="ghost")


@pytest.mark.parametrize("frozen", [("input.",), ("input.weight", "hidden1.bias"), ("hidden1.", "head.bias")])
def test_frozen_parameters_stay_put_and_the_rest_is_clipped_per_example(frozen):
    x, y = table(n=40)
    model = mlp()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
    config = DPSGDConfig(lr=0.3, max_grad_norm=0.2, noise_multiplier=TINY_NOISE, sample_rate=1.0)
    ghost, _, _, trainer = train_copy(model, config, x, y, backend="auto")
    opacus, *_ = train_copy(model, config, x, y, backend="opacus")
    assert trainer.backend == "ghost"
    torch.testing.assert_close(flat(ghost), flat(opacus), rtol=1e-5, atol=1e-6)
    before, after = dict(model.named_parameters()), dict(ghost.named_parameters())
    for name in before:
        unchanged = torch.equal(before[name], after[name])
        assert unchanged == name.startswith(frozen), name
    # the explicit per-example step over the trained parameters only
    trained = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in trained]
    for i in range(len(y)):
        loss = nn.BCEWithLogitsLoss()(model(x[i : i + 1]).squeeze(-1), y[i : i + 1])
        g = torch.autograd.grad(loss, trained)
        norm = torch.cat([t.flatten() for t in g]).norm().item()
        for t, gi in zip(total, g):
            t += gi * min(1.0, 0.2 / norm)
    expected = [p.detach() - 0.3 * t / 40 for p, t in zip(trained, total)]
    got = [p.detach() for p in ghost.parameters() if p.requires_grad]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_a_model_with_nothing_to_train_is_not_taken_by_the_ghost_path():
    model = mlp()
    model.requires_grad_(False)
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.5)
    with pytest.raises(ConfigError, match="ghost"):
        DPSGDTrainer(model, config, backend="ghost")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(noise_multiplier=0.0),
        dict(max_grad_norm=0.0),
        dict(sample_rate=0.0),
        dict(sample_rate=1.5),
    ],
)
def test_invalid_configs_are_refused(kwargs):
    base = dict(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(ConfigError):
        DPSGDConfig(**{**base, **kwargs})


def test_unknown_backend_is_refused():
    config = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(ConfigError, match="backend"):
        DPSGDTrainer(mlp(), config, backend="fast")


def test_a_summed_loss_is_refused_in_private_mode():
    x, y = table()
    config = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(ConfigError, match="mean"):
        DPSGDTrainer(mlp(), config).train(x, y, epochs=1, loss_fn=nn.BCEWithLogitsLoss(reduction="sum"))


class LeakyLinear(nn.Linear):
    """A subclass that mixes rows: must not take the ghost path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - x.mean(0))


def test_subclassed_layers_are_not_trusted_with_the_ghost_path():
    model = nn.Sequential(LeakyLinear(12, 4), nn.Tanh(), nn.Linear(4, 1))
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.5)
    assert DPSGDTrainer(model, config).backend == "opacus"


# -- the transfer setup's split-input model on the ghost path ---------------------------


def split_model(shared: int = 5, own: int = 7, hidden: tuple[int, ...] = (16, 8)) -> nn.Module:
    return build_model(ModelSpec("mlp", hidden, shared_features=shared), shared + own, seed=4)


@pytest.mark.parametrize("own", [7, 0])
def test_split_input_model_takes_the_ghost_path_and_matches_opacus(own):
    """Both input blocks' per-sample norms (‖r‖·‖a_block‖) add up as Opacus' per-sample gradients do."""
    x, y = table(n=300, d=5 + own)
    model = split_model(own=own)
    config = DPSGDConfig(lr=0.5, max_grad_norm=0.7, noise_multiplier=TINY_NOISE, sample_rate=0.1)
    ghost, m_ghost, loss_ghost, t_ghost = train_copy(model, config, x, y, epochs=2, backend="auto")
    opacus, m_opacus, loss_opacus, t_opacus = train_copy(model, config, x, y, epochs=2, backend="opacus")
    assert (t_ghost.backend, t_opacus.backend) == ("ghost", "opacus")
    assert m_ghost == m_opacus
    assert loss_ghost == pytest.approx(loss_opacus, rel=1e-5)
    torch.testing.assert_close(flat(ghost), flat(opacus), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", [0.05, 1e3])
def test_split_input_update_equals_explicit_per_example_clipping(clip):
    x, y = table(n=40)
    model = split_model()
    config = DPSGDConfig(lr=0.3, max_grad_norm=clip, noise_multiplier=TINY_NOISE, sample_rate=1.0)
    trained, _, _, trainer = train_copy(model, config, x, y, backend="ghost")
    assert trainer.backend == "ghost"
    expected = explicit_dp_sgd_update(copy.deepcopy(model), x, y, 0.3, clip)
    torch.testing.assert_close(flat(trained), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("frozen", [("shared_input.",), ("input.",), ("shared_input.bias", "head.")])
def test_split_input_frozen_blocks_stay_put_and_match_opacus(frozen):
    x, y = table(n=60)
    model = split_model()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
    config = DPSGDConfig(lr=0.3, max_grad_norm=0.2, noise_multiplier=TINY_NOISE, sample_rate=0.5)
    ghost, _, _, trainer = train_copy(model, config, x, y, backend="auto")
    opacus, *_ = train_copy(model, config, x, y, backend="opacus")
    assert trainer.backend == "ghost"
    torch.testing.assert_close(flat(ghost), flat(opacus), rtol=1e-5, atol=1e-6)
    before, after = dict(model.named_parameters()), dict(ghost.named_parameters())
    for name in before:
        assert torch.equal(before[name], after[name]) == name.startswith(frozen), name


def test_split_input_noise_has_standard_deviation_sigma_c_on_every_block():
    x, y = table(n=50)
    model = split_model(hidden=(64, 32))
    lr, clip, sigma = 1e-3, 0.5, 1e4
    config = DPSGDConfig(lr=lr, max_grad_norm=clip, noise_multiplier=sigma, sample_rate=1.0)
    trained, *_ = train_copy(model, config, x, y, backend="ghost")
    expected_sd = lr * sigma * clip / expected_batch_size(1.0, 50)
    for name in ("shared_input.weight", "input.weight", "head.weight"):
        delta = dict(trained.named_parameters())[name] - dict(model.named_parameters())[name]
        assert delta.std().item() == pytest.approx(expected_sd, rel=0.15), name


class RowMixingSplit(SplitInputMLP):
    """A subclass that mixes rows in its forward: must not take the ghost path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - x.mean(0))


def test_a_split_input_subclass_is_not_trusted_with_the_ghost_path():
    model = RowMixingSplit(5, 7, (8,))
    config = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=1.0, sample_rate=0.5)
    assert DPSGDTrainer(model, config).backend == "opacus"
