"""DP-SGD for in-memory tabular data: Opacus' per-sample clipping and noise, fast sampling.

`DPSGDTrainer` is a small facade in the spirit of Opacus' `PrivacyEngine`, built from
Opacus' own parts: `GradSampleModule` computes per-sample gradients, `DPOptimizer`
clips each of them to `max_grad_norm` and adds Gaussian noise of standard deviation
`noise_multiplier * max_grad_norm` to their sum. What it does differently from
`PrivacyEngine.make_private` is the sampling: a bank's table already sits in memory as
one tensor, so each step draws a Poisson batch (every row independently with
probability `sample_rate`) with one vectorized Bernoulli mask instead of a per-row
`DataLoader`. That is the sampling the accountant assumes (Poisson subsampling), and it
removes the Python per-row overhead that dominates DP training of small models.

Contract:
- every step returned in the `Mechanism` of `train` was taken with exactly that noise
  multiplier and sample rate, so `privacy.accounting.epsilon_spent` of the returned
  mechanisms is a valid (ε, δ) bound for releasing the trained weights;
- an empty Poisson batch is counted as a step but performs no update (releasing less
  than was accounted for is safe: the bound stays conservative);
- `noise_multiplier == 0` is only accepted when `private=False` (plain SGD, used for the
  non-private baselines and `--dp off`).

Assumption: the noise comes from torch's generator, not from a cryptographically secure
one (Opacus' `secure_mode` needs torchcsprng, which does not exist for this torch); the
floating-point attacks that secure mode defends against are out of scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from privacy.accounting import Mechanism
from privacy.errors import ConfigError


@dataclass(frozen=True)
class DPSGDConfig:
    """Hyper-parameters of one local training run.

    `sample_rate` is the Poisson sampling probability q; the expected batch is q·n.
    """

    lr: float
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float
    private: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if self.private and not self.noise_multiplier > 0:
            raise ConfigError("DP-SGD needs a positive noise multiplier")
        if self.private and not self.max_grad_norm > 0:
            raise ConfigError("DP-SGD needs a positive max_grad_norm (clipping bound)")


def steps_per_epoch(sample_rate: float) -> int:
    """Number of Poisson-sampled steps that make one expected pass over the data."""
    return max(1, math.ceil(1.0 / sample_rate))


class DPSGDTrainer:
    """Trains `model` in place on (X, y) with DP-SGD (or plain SGD when not private).

    The model's own parameters are updated, so its `state_dict()` keys never carry
    Opacus' `_module.` prefix.
    """

    def __init__(self, model: nn.Module, config: DPSGDConfig, seed: int) -> None:
        self.model = model
        self.config = config
        self._generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.0)
        if config.private:
            self._module: nn.Module = GradSampleModule(model, loss_reduction="mean")
            self._optimizer: torch.optim.Optimizer = DPOptimizer(
                optimizer,
                noise_multiplier=config.noise_multiplier,
                max_grad_norm=config.max_grad_norm,
                expected_batch_size=1,  # replaced per run by q·n, see train()
                loss_reduction="mean",
                generator=torch.Generator().manual_seed(seed + 1),
            )
        else:
            self._module = model
            self._optimizer = optimizer

    def train(self, features: torch.Tensor, labels: torch.Tensor, epochs: int,
              loss_fn: nn.Module | None = None) -> tuple[Mechanism | None, float]:
        """Run `epochs` expected passes; return the mechanism run and the mean loss.

        The mechanism is None when training is not private.
        """
        n = features.shape[0]
        q = self.config.sample_rate
        steps = epochs * steps_per_epoch(q)
        loss_fn = loss_fn or nn.BCEWithLogitsLoss()
        if isinstance(self._optimizer, DPOptimizer):
            # Opacus divides the clipped sum by the *expected* batch size q·n, so the
            # sensitivity of the average does not depend on the sampled batch.
            self._optimizer.expected_batch_size = max(1, round(q * n))
        self._module.train()
        total_loss, counted = 0.0, 0
        for _ in range(steps):
            mask = torch.rand(n, generator=self._generator) < q
            if not bool(mask.any()):
                continue
            x, y = features[mask], labels[mask]
            self._optimizer.zero_grad(set_to_none=True)
            logits = self._module(x).squeeze(-1)
            loss = loss_fn(logits, y)
            loss.backward()
            self._optimizer.step()
            total_loss += float(loss.detach()) * len(y)
            counted += len(y)
        self._optimizer.zero_grad(set_to_none=True)
        mean_loss = total_loss / counted if counted else float("nan")
        if not self.config.private:
            return None, mean_loss
        return Mechanism(self.config.noise_multiplier, q, steps), mean_loss
