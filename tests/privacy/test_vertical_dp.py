"""The DP mechanisms of split learning (fedsilo.privacy.vertical) and the split-learning attacks, exact values."""

import math

import numpy as np
import pytest
import torch

from fedsilo.errors import BudgetExceeded, ConfigError, DataError
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.audit.split_learning import direction_scores, label_attack_auc, norm_scores, reconstruction_r2
from fedsilo.privacy.noise_source import SecureNoise, SeededNoise
from fedsilo.privacy.vertical import RowAccountant, RowRelease, clip_rows, noisy_clipped_mean, plan_noise


def test_clip_rows_caps_every_row_at_the_bound_and_keeps_short_rows():
    rows = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(clip_rows(rows, 1.0), [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])


def test_a_release_without_noise_is_the_clipped_rows_and_with_noise_differs_every_time():
    rows = np.array([[3.0, 4.0]])
    np.testing.assert_allclose(RowRelease(1.0, 0.0).apply(rows, None), [[0.6, 0.8]])
    assert RowRelease(0.5, 2.0).sd == 2.0  # z · 2 · C
    noise = SecureNoise()
    a, b = RowRelease(1.0, 1.0).apply(rows, noise), RowRelease(1.0, 1.0).apply(rows, noise)
    assert not np.array_equal(a, b)
    with pytest.raises(ConfigError, match="noise source"):
        RowRelease(1.0, 1.0).apply(rows, None)
    with pytest.raises(ConfigError):
        RowRelease(0.0, 1.0)


def test_noisy_clipped_mean_clips_each_example_over_all_tensors_then_averages():
    per_example = {"w": torch.tensor([[3.0, 0.0], [0.0, 0.1]]), "b": torch.tensor([[4.0], [0.0]])}
    out = noisy_clipped_mean(per_example, 1.0, 0.0, 2, None)
    np.testing.assert_allclose(out["w"].numpy(), [0.3, 0.05], rtol=1e-6)  # (0.6 + 0) / 2, (0 + 0.1) / 2
    np.testing.assert_allclose(out["b"].numpy(), [0.4], rtol=1e-6)
    noisy = [noisy_clipped_mean(per_example, 1.0, 3.0, 2, SeededNoise(k))["b"].item() for k in range(2000)]
    assert np.std(noisy) == pytest.approx(3.0 * 2 * 1.0 / 2, rel=0.06)  # sd z·2C on the sum, then / batch


def test_the_noise_multiplier_fits_the_budget_over_every_release():
    z = plan_noise(3.0, 1e-5, 6)
    assert epsilon_spent([Mechanism(z, 1.0, 6)], 1e-5, "prv") <= 3.0
    assert epsilon_spent([Mechanism(z * 0.97, 1.0, 6)], 1e-5, "prv") > 3.0 - 0.01
    # six Gaussian releases at z are one Gaussian mechanism at z / sqrt(6)
    assert epsilon_spent([Mechanism(z / math.sqrt(6), 1.0, 1)], 1e-5, "prv") == pytest.approx(
        epsilon_spent([Mechanism(z, 1.0, 6)], 1e-5, "prv"), abs=1e-6
    )


def test_the_row_accountant_counts_each_row_and_refuses_past_the_budget_before_counting():
    z = plan_noise(2.0, 1e-5, 3)
    accountant = RowAccountant("bank", 5, z, 2.0, 1e-5)
    for _ in range(3):
        accountant.charge(np.array([0, 1]))
    accountant.charge(np.array([2]))
    assert accountant.counts.tolist() == [3, 3, 1, 0, 0]
    assert accountant.mechanisms() == [Mechanism(z, 1.0, 3)]
    assert accountant.spent() <= 2.0
    with pytest.raises(BudgetExceeded, match="bank: releasing these rows again"):
        accountant.charge(np.array([1, 3]))
    assert accountant.counts.tolist() == [3, 3, 1, 0, 0]
    accountant.charge(np.array([2, 3]))  # rows below the most-released one may still be released
    with pytest.raises(DataError, match="bank: rows outside"):
        accountant.charge(np.array([5]))
    with pytest.raises(DataError, match="twice"):
        accountant.charge(np.array([4, 4]))


def test_label_attacks_score_separable_gradients_perfectly_and_noise_at_one_half():
    labels = np.array([1, 0, 0, 1, 0])
    gradients = np.array([[-0.8, 0.0], [0.2, 0.0], [0.1, 0.0], [-0.9, 0.1], [0.3, 0.0]])
    assert label_attack_auc(norm_scores(gradients), labels) == 1.0
    assert label_attack_auc(direction_scores(gradients, gradients[0]), labels) == 1.0
    rng = np.random.default_rng(0)
    assert label_attack_auc(rng.normal(size=4000), rng.random(4000) < 0.3) == pytest.approx(0.5, abs=0.04)


def test_reconstruction_r2_is_one_for_a_linear_embedding_and_refuses_too_few_rows():
    x = np.random.default_rng(0).normal(size=(200, 3))
    assert reconstruction_r2(x, x @ [1.0, -2.0, 0.5] + 3.0, 50) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(DataError):
        reconstruction_r2(x, x[:, 0], 1)


def test_a_row_released_at_another_noise_multiplier_composes_both_and_the_ledger_gets_the_worst_row():
    z, once = plan_noise(3.0, 1e-5, 4), plan_noise(3.0, 1e-5, 1)
    accountant = RowAccountant("bank", 4, z, 3.0, 1e-5)
    for _ in range(4):
        accountant.charge(np.array([0, 1]))  # training rows
    accountant.charge(np.array([2, 3]), once)  # held-out rows, scored once
    assert accountant.other[once].tolist() == [0, 0, 1, 1]
    patterns = ([Mechanism(z, 1.0, 4)], [Mechanism(once, 1.0, 1)])  # four releases at z = 2·once: the same μ
    assert accountant.mechanisms() in patterns
    worst = max(epsilon_spent(m, 1e-5, "prv") for m in patterns)
    assert accountant.spent() == pytest.approx(worst) and accountant.spent() <= 3.0
    with pytest.raises(BudgetExceeded, match="bank"):
        accountant.charge(np.array([0]), once)  # a training row scored on top of its four releases
    with pytest.raises(BudgetExceeded):
        accountant.charge(np.array([3]))  # a held-out row released again
