"""The sum of per-example clipped gradients: the quantity distributed DP noises.

In distributed DP (see `fedsilo.privacy.accounting.planning.plan_distributed_dp`) a peer
releases, inside its masked vector, Σ_r clip_C(∇ℓ_r(w)) over all of its training rows at
the global weights w, with no noise of its own beyond its share of the discrete Gaussian. Adding
or removing one row changes that sum by at most C in L2 norm: that is the sensitivity
the distributed noise is calibrated to. Per-example gradients come from Opacus'
`GradSampleModule`; rows are processed in chunks so that memory stays bounded for
large models (a chunk's per-example gradients hold `chunk × n_params` floats).
"""

from __future__ import annotations

import warnings

import torch
from opacus import GradSampleModule
from torch import nn

from fedsilo.errors import ConfigError

MAX_CHUNK_FLOATS = 1 << 24


def clipped_gradient_sum(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, max_grad_norm: float
) -> dict[str, torch.Tensor]:
    """Σ over rows of each row's gradient clipped to L2 norm `max_grad_norm` (by name)."""
    if not max_grad_norm > 0:
        raise ConfigError("clipping needs a positive max_grad_norm")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    n_params = sum(p.numel() for p in params.values())
    chunk = max(1, MAX_CHUNK_FLOATS // max(1, n_params))
    module = GradSampleModule(model, loss_reduction="sum")
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    try:
        for start in range(0, features.shape[0], chunk):
            x, y = features[start : start + chunk], labels[start : start + chunk]
            module.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss_fn(module(x).squeeze(-1), y).backward()
            samples = {name: p.grad_sample.reshape(len(y), -1) for name, p in params.items()}
            norms = torch.sqrt(sum(s.pow(2).sum(dim=1) for s in samples.values()))
            factor = (max_grad_norm / (norms + 1e-12)).clamp(max=1.0)
            for name, s in samples.items():
                total[name] += (factor @ s).reshape(params[name].shape)
    finally:
        module.remove_hooks()
        for p in params.values():
            p.grad, p.grad_sample = None, None
    return total
