"""Tabular risk models that peers train and the job host aggregates.

Models are plain `torch.nn.Module`s whose parameter names say which part they are
(`input`, `hidden`, `head`), so that a job can later declare by name which parts are
shared across institutions and which stay private. Every model outputs one logit per
row (the log-odds of default). No layer holds buffers (Opacus computes per-sample
gradients only for parameter layers, and batch statistics would leak across rows).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.peers.model_spec import MODEL_KINDS, ModelSpec
from fedsilo.privacy.split_input import SplitInputMLP

__all__ = ["MODEL_KINDS", "ModelSpec", "build_model", "freeze", "get_weights", "select", "set_weights"]


def build_model(spec: ModelSpec, n_features: int, seed: int = 0) -> nn.Module:
    """Build a freshly initialised model for `n_features` inputs (deterministic in `seed`)."""
    if n_features < 1:
        raise ConfigError("a model needs at least one input feature")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if spec.shared_features:
            return SplitInputMLP(spec.shared_features, n_features - spec.shared_features, spec.hidden)
        if spec.kind == "logreg":
            return nn.Sequential(OrderedDict(head=nn.Linear(n_features, 1)))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        widths = (n_features, *spec.hidden)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            name = "input" if i == 0 else f"hidden{i}"
            layers[name] = nn.Linear(a, b)
            layers[f"{name}_act"] = nn.Tanh()
        layers["head"] = nn.Linear(widths[-1], 1)
        return nn.Sequential(layers)
    finally:
        torch.random.set_rng_state(generator_state)


def get_weights(model: nn.Module) -> OrderedDict[str, np.ndarray]:
    """The model's parameters as named numpy arrays (copies)."""
    return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items())


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Load named arrays into `model`, refusing missing, extra or wrong-shaped ones."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    if missing or extra:
        raise ConfigError(f"model weights do not match the model: missing {missing}, unexpected {extra}")
    for name, tensor in own.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"weight '{name}' has shape {tuple(weights[name].shape)}, the model expects {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: torch.as_tensor(np.asarray(v), dtype=own[k].dtype) for k, v in weights.items()})


def select(weights: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> OrderedDict[str, np.ndarray]:
    """The entries whose name starts with one of `prefixes` (all of them when empty)."""
    return OrderedDict((k, v) for k, v in weights.items() if not prefixes or k.startswith(prefixes))


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Stop training the parameters whose names start with `prefixes`; return their names."""
    frozen = [name for name, p in model.named_parameters() if prefixes and name.startswith(prefixes)]
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    return frozen
