"""DP-SGD for in-memory tabular data: per-sample clipping, Gaussian noise, fast Poisson sampling.

`DPSGDTrainer` is a small facade in the spirit of Opacus' `PrivacyEngine`. Each step:

1. Poisson sampling: every row of the bank's table (already one tensor in memory) joins
   the batch independently with probability `sample_rate`, drawn as one vectorized
   Bernoulli mask and turned into row indices, instead of a per-row `DataLoader`. That
   is the sampling the accountant assumes, without Python per-row overhead;
2. per-sample clipping: each sampled row's gradient g_i (over all trained parameters)
   is scaled by min(1, C/‖g_i‖) (Opacus: min(1, C/(‖g_i‖ + 1e-6))), so that its norm
   is at most C = `max_grad_norm`;
3. noise: Gaussian noise of standard deviation `noise_multiplier · C` is added to the
   sum of the clipped gradients, and the result is divided by the *expected* batch
   size round(q·n) (a public constant, so the sensitivity does not depend on the
   sampled batch); then a plain SGD step (no momentum) with `lr`.

Two interchangeable backends compute steps 2–3 (`backend=`):

- "ghost" (used by "auto" whenever it applies): for models that are an `nn.Sequential`
  of distinct `nn.Linear` layers and element-wise activations, or a
  `fedsilo.privacy.split_input.SplitInputMLP` (exact types, so that no subclass can change
  what a layer does) — every model `fedsilo.peers.models.build_model` makes — on 2-D input.
  Per-sample gradient norms come from the ghost-clipping identity that Opacus'
  `grad_sample_mode="ghost"` uses for `nn.Linear` (‖g_i a_iᵀ‖ = ‖g_i‖·‖a_i‖, plus
  ‖g_i‖ for the bias; for a layer split into column blocks, the same identity per
  block), from one backward pass to the layers' outputs; the clipped sum is then one
  matrix product per layer, and the noise one vectorized draw. No per-sample gradient is materialised and no
  Python hook runs, which is what dominates Opacus' cost on a model this small.
- "opacus": Opacus' `GradSampleModule` (per-sample gradients by hooks) and
  `DPOptimizer` (clipping, noise, averaging). "auto" falls back to it for any other
  model; it is also the reference the ghost backend is tested against.

Contract (both backends):
- every step returned in the `Mechanism` of `train` was taken with exactly that noise
  multiplier and sample rate, so `fedsilo.privacy.accounting.epsilon_spent` of the returned
  mechanisms is a valid (ε, δ) bound for releasing the trained weights;
- an empty Poisson batch is counted as a step but performs no update (releasing less
  than was accounted for is safe: the bound stays conservative);
- `noise_multiplier == 0` is only accepted when `private=False` (plain SGD with the
  same sampling, used for the non-private baselines and `--dp off`);
- the loss function must average a per-row loss over the rows (`reduction="mean"`;
  another `reduction` is refused), as Opacus' `loss_reduction="mean"` assumes, and rows must not interact in the model
  (no batch statistics: `fedsilo.peers.models` holds no such layer).

Randomness (`fedsilo.privacy.noise_source`): by default the Poisson masks and the noise of both
backends come from a `SecureNoise` made fresh for each trainer — AES-256-CTR keyed by
`os.urandom`, with Opacus' `secure_mode` defence against floating-point attacks on the
Gaussian sampler — so nothing in the job, the host's hands or the model card determines
them. `reproducible_seed=` (the research mode, and the only way to pass a seed) uses
torch's seeded generators instead: the run can be replayed, and so can its noise, so
its ε is not a privacy guarantee.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.noise_source import NoiseSource, SecureNoise, SeededNoise
from fedsilo.privacy.sampling import expected_batch_size, steps_per_epoch
from fedsilo.privacy.split_input import SplitInputMLP

BACKENDS = ("auto", "ghost", "opacus")

# Opacus' full backward hooks make torch warn on every backward of a model whose first
# layer's input does not require gradients (always the case here); it is harmless.
_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to module outputs"

# Layers that act on each row, and each element, independently and hold no parameter:
# a per-row loss of a Sequential of these and nn.Linear depends on its own row only.
_ELEMENTWISE = (
    nn.Identity,
    nn.Tanh,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Dropout,
)


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


def _applied_noise(noise_multiplier: float) -> float:
    """The noise multiplier a DP-SGD step really applies: always `noise_multiplier`.

    TEST-ONLY monkeypatch point. The privacy audit's tests replace this function with one
    returning 0.0 to simulate a forgotten noise call (the accountant still claims ε) and
    check that the canary audit catches it. No flag, config key or environment variable
    reaches it; production code never changes it.
    """
    return noise_multiplier


@contextmanager
def _quiet_hooks() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HOOK_WARNING, category=UserWarning)
        yield


def _trained(param: torch.Tensor | None) -> bool:
    return param is not None and param.requires_grad


@dataclass(frozen=True)
class _Part:
    """One nn.Linear of a linear stage, applied to the input columns `columns` (all when None)."""

    layer: nn.Linear
    columns: slice | None


def _is_in(part: _Part, parts: list[_Part]) -> bool:
    return any(part is other for other in parts)


class _LinearStack:
    """Ghost-clipping DP-SGD step for a stack of linear stages and element-wise activations.

    A linear stage is the sum of one or more `nn.Linear` layers, each applied to its
    own block of the stage's input columns: one layer over all columns for an
    `nn.Sequential`, the shared and own blocks for `SplitInputMLP`'s first layer. All
    the layers of a stage see the same output gradient r_i, and their parameters are
    distinct, so row i's squared gradient norm is the sum over layers of
    ‖r_i‖²·‖a_i,block‖² (weight) and ‖r_i‖² (bias): the ghost-clipping identity per
    block.

    Frozen parameters (requires_grad False) are neither counted in the per-sample norm
    nor updated, as in Opacus; a stage with nothing to train only runs forward.
    """

    def __init__(self, stages: list[nn.Module | list[_Part]]) -> None:
        self.stages = stages
        self.trained = [
            part
            for stage in stages
            if isinstance(stage, list)
            for part in stage
            if _trained(part.layer.weight) or _trained(part.layer.bias)
        ]
        self._records = [
            isinstance(stage, list) and any(_is_in(part, self.trained) for part in stage) for stage in stages
        ]
        self.params = [p for part in self.trained for p in (part.layer.weight, part.layer.bias) if _trained(p)]
        sizes = [p.numel() for p in self.params]
        self._flat = torch.empty(sum(sizes), dtype=self.params[0].dtype)
        self._grads = [v.view_as(p) for v, p in zip(self._flat.split(sizes), self.params)]
        grads = iter(self._grads)
        # per recorded stage: its trained parts with (columns, weight gradient view or None, bias view or None)
        self._views = [
            [
                (
                    part.columns,
                    next(grads) if _trained(part.layer.weight) else None,
                    next(grads) if _trained(part.layer.bias) else None,
                )
                for part in stage
                if _is_in(part, self.trained)
            ]
            for stage, record in zip(stages, self._records)
            if record
        ]

    @classmethod
    def of(cls, model: nn.Module) -> _LinearStack | None:
        """The fast step for `model`, or None when the ghost identity does not cover it."""
        if type(model) is SplitInputMLP:
            stages = cls._split_input_stages(model)
        elif isinstance(model, nn.Sequential):
            layers = list(model)  # in call order, repeats included (children() drops them)
            # exact types: a subclass may override forward() and mix rows or hide parameters
            if any(type(m) is not nn.Linear and type(m) not in _ELEMENTWISE for m in layers):
                return None
            stages = [[_Part(m, None)] if type(m) is nn.Linear else m for m in layers]
        else:
            return None
        linears = [part.layer for stage in stages if isinstance(stage, list) for part in stage]
        if not linears or any(type(m) is not nn.Linear for m in linears):
            return None
        if len({id(m) for m in linears}) != len(linears):
            return None  # a layer applied twice: per-sample norms would not add up
        owned = [p for m in linears for p in m.parameters()]
        if len(owned) != len(list(model.parameters())) or not any(p.requires_grad for p in owned):
            return None  # foreign parameters, or nothing to train: let Opacus handle it
        if len({p.dtype for p in owned}) != 1:
            return None
        return cls(stages)

    @staticmethod
    def _split_input_stages(model: SplitInputMLP) -> list[nn.Module | list[_Part]]:
        """`SplitInputMLP.forward` as stages (its class is taken by exact type, so its forward is this)."""
        s = model.shared_features
        first = [_Part(model.shared_input, slice(0, s))]
        if model.input is not None:
            first.append(_Part(model.input, slice(s, None)))
        stages: list[nn.Module | list[_Part]] = [first, nn.Tanh()]
        for name in model.layer_names:
            stages += [[_Part(getattr(model, name), None)], nn.Tanh()]
        return [*stages, [_Part(model.head, None)]]

    def step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: nn.Module,
        max_grad_norm: float,
        noise_multiplier: float,
        lr_over_batch: float,
        noise: NoiseSource,
    ) -> torch.Tensor:
        """One DP-SGD update of the parameters in place; returns the batch's mean loss.

        Everything below is the textbook step divided by C, which lets every constant
        ride on an existing operation: the flat buffer ends up holding
        (Σ_i clip(g_i) + N(0, σ²C²)) / C, and the SGD step scales it by lr·C/E.
        """
        inputs, outputs = [], []
        h = x
        for stage, record in zip(self.stages, self._records):
            if isinstance(stage, list):
                z = None
                for part in stage:
                    out = part.layer(h if part.columns is None else h[:, part.columns])
                    z = out if z is None else z + out
                if record:
                    inputs.append(h)
                    outputs.append(z)
                h = z
            else:
                h = stage(h)
        loss = loss_fn(h.squeeze(-1), y)
        batch = x.shape[0]
        # loss is the mean over rows and rows do not interact, so row i of each output
        # gradient is r_i = g_i / batch, g_i being the gradient of row i's own loss.
        grad_out = torch.autograd.grad(loss, outputs)
        with torch.no_grad():
            # ‖r_i‖ over the trained parameters: a layer's share is ‖r_i,out‖·‖a_i‖ for
            # its weight (the ghost-clipping identity for nn.Linear, a_i its input
            # block) and ‖r_i,out‖ for its bias, accumulated with hypot.
            norms = None
            for h_in, r, parts in zip(inputs, grad_out, self._views):
                r_norm = torch.linalg.vector_norm(r, dim=1)
                for columns, wg, bg in parts:
                    if wg is not None:
                        a = h_in if columns is None else h_in[:, columns]
                        share = r_norm * torch.linalg.vector_norm(a, dim=1)
                        norms = share if norms is None else torch.hypot(norms, share, out=norms)
                    if bg is not None:
                        norms = r_norm.clone() if norms is None else torch.hypot(norms, r_norm, out=norms)
            assert norms is not None  # the fast path only runs a model with a trained parameter
            # clip(g_i)/C = g_i·min(1, C/‖g_i‖)/C = r_i·min(batch/C, 1/‖r_i‖)
            factor = norms.reciprocal_().clamp_(max=batch / max_grad_norm)
            column = factor.unsqueeze(1)
            # noise first, then Σ_i clip(g_i)/C accumulated onto σ·noise, per layer
            noise.standard_normal_(self._flat)
            for h_in, r, parts in zip(inputs, grad_out, self._views):
                scaled = r * column
                for columns, wg, bg in parts:
                    if wg is not None:
                        wg.addmm_(scaled.t(), h_in if columns is None else h_in[:, columns], beta=noise_multiplier)
                    if bg is not None:
                        bg.addmv_(r.t(), factor, beta=noise_multiplier)
            torch._foreach_add_(self.params, self._grads, alpha=-lr_over_batch * max_grad_norm)
        return loss.detach()


class DPSGDTrainer:
    """Trains `model` in place on (X, y) with DP-SGD (or plain SGD when not private).

    The model's own parameters are updated, so its `state_dict()` keys never carry
    Opacus' `_module.` prefix. `backend` picks how clipping and noise are computed (see
    the module docstring); every backend gives the same guarantee.
    """

    def __init__(
        self, model: nn.Module, config: DPSGDConfig, *, reproducible_seed: int | None = None, backend: str = "auto"
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown DP-SGD backend '{backend}': use one of {', '.join(BACKENDS)}")
        self.model = model
        self.config = config
        self.noise: NoiseSource = SecureNoise() if reproducible_seed is None else SeededNoise(reproducible_seed)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._fast: _LinearStack | None = None
        self._opacus: tuple[nn.Module, torch.optim.Optimizer] | None = None
        if config.private and backend != "opacus":
            self._fast = _LinearStack.of(model)
            if self._fast is None and backend == "ghost":
                raise ConfigError(
                    "the ghost DP-SGD backend needs an nn.Sequential of nn.Linear layers and "
                    "element-wise activations: use backend 'auto' or 'opacus'"
                )
        if config.private and self._fast is None:
            self._opacus = self._make_opacus()

    def _make_opacus(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        from opacus import GradSampleModule

        module = GradSampleModule(self.model, loss_reduction="mean")
        optimizer = _noise_source_optimizer()(
            torch.optim.SGD(self.model.parameters(), lr=self.config.lr, momentum=0.0),
            noise_source=self.noise,
            noise_multiplier=_applied_noise(self.config.noise_multiplier),
            max_grad_norm=self.config.max_grad_norm,
            expected_batch_size=1,  # replaced per run by q·n, see train()
            loss_reduction="mean",
        )
        return module, optimizer

    @property
    def backend(self) -> str:
        """The backend in use: "ghost", "opacus", or "sgd" when not private."""
        return "ghost" if self._fast else "opacus" if self._opacus else "sgd"

    def train(
        self, features: torch.Tensor, labels: torch.Tensor, epochs: int, loss_fn: nn.Module | None = None
    ) -> tuple[Mechanism | None, float]:
        """Run `epochs` expected passes; return the mechanism run and the mean loss.

        The mechanism is None when training is not private.
        """
        n = features.shape[0]
        q = self.config.sample_rate
        steps = epochs * steps_per_epoch(q)
        loss_fn = loss_fn or nn.BCEWithLogitsLoss()
        if self.config.private and getattr(loss_fn, "reduction", "mean") != "mean":
            raise ConfigError(
                "DP-SGD needs a loss averaged over the rows (reduction='mean'): "
                "per-sample clipping is calibrated for it"
            )
        if self._fast is not None and features.dim() != 2:
            raise ConfigError(f"DP-SGD on tabular rows needs 2-D features, got shape {tuple(features.shape)}")
        self.model.train()
        step = self._step_function(n, loss_fn)
        total_loss, counted = 0.0, 0
        for _ in range(steps):
            rows = self.noise.poisson_rows(n, q)
            size = rows.numel()
            if size == 0:
                continue
            loss = step(features.index_select(0, rows), labels.index_select(0, rows))
            total_loss += float(loss) * size
            counted += size
        if self._opacus is not None:
            self._opacus[1].zero_grad(set_to_none=True)  # drop per-sample gradients
        mean_loss = total_loss / counted if counted else float("nan")
        if not self.config.private:
            return None, mean_loss
        return Mechanism(self.config.noise_multiplier, q, steps), mean_loss

    def _step_function(self, n: int, loss_fn: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        config = self.config
        if self._fast is not None:
            fast, source = self._fast, self.noise
            lr_over_batch = config.lr / expected_batch_size(config.sample_rate, n)
            noise = _applied_noise(config.noise_multiplier)
            return lambda x, y: fast.step(x, y, loss_fn, config.max_grad_norm, noise, lr_over_batch, source)
        if self._opacus is not None:
            module, optimizer = self._opacus
            # Opacus divides the clipped noisy sum by the *expected* batch size q·n.
            optimizer.expected_batch_size = expected_batch_size(config.sample_rate, n)

            def opacus_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(module(x).squeeze(-1), y)
                with _quiet_hooks():
                    loss.backward()
                optimizer.step()
                return loss.detach()

            return opacus_step
        params, model, lr = self._params, self.model, config.lr

        def sgd_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = loss_fn(model(x).squeeze(-1), y)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                torch._foreach_add_(params, grads, alpha=-lr)
            return loss.detach()

        return sgd_step


@lru_cache(maxsize=1)
def _noise_source_optimizer() -> type:
    """Opacus' `DPOptimizer` with its Gaussian noise drawn from a `NoiseSource` (imported lazily)."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class NoiseSourceDPOptimizer(DPOptimizer):
        """`DPOptimizer.add_noise` with `noise_source` in place of torch's generator.

        Opacus' own `secure_mode` draws from torch's global generator unless torchcsprng
        (absent for this torch) seeds it; here the source is the trainer's, so both
        backends share one stream and one floating-point defence.
        """

        def __init__(self, optimizer: torch.optim.Optimizer, *, noise_source: NoiseSource, **kwargs: Any) -> None:
            super().__init__(optimizer, **kwargs)
            self.noise_source = noise_source

        def add_noise(self) -> None:
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                noise = self.noise_source.standard_normal_(torch.empty_like(p.summed_grad)).mul_(std)
                p.grad = (p.summed_grad + noise).view_as(p)
                _mark_as_processed(p.summed_grad)

    return NoiseSourceDPOptimizer
