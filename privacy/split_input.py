"""The transfer setup's model: an MLP whose first layer is split into a shared and an own block.

It lives here, below `peers`, because the ghost-clipping DP-SGD step
(`fedsilo.privacy.dpsgd`) computes its forward pass itself and must know it exactly: it takes
this class only by exact type, so no subclass can change what the layers do.

    z₁ = tanh(shared_input(x[:, :s]) + input(x[:, s:]))     (input: no bias; absent if no own column)
    zₖ = tanh(hiddenₖ(zₖ₋₁))                               k = 1 … len(hidden) − 1
    logit = head(z_last)

The first `s` = `shared_features` inputs are the consortium's shared vocabulary, the
rest the institution's own columns. Parameter names after the first layer match the
plain MLP's (`hidden1`, …, `head`), so `model.shared` prefixes mean the same in both
setups; `shared_input` can be aggregated while `input`, whose width is the
institution's own, stays private.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsilo.errors import ConfigError


class SplitInputMLP(nn.Module):
    """An MLP whose first layer is split: shared-vocabulary inputs and own inputs (see the module)."""

    def __init__(self, shared_features: int, own_features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        if shared_features < 1:
            raise ConfigError("a split-input model needs at least one shared-vocabulary feature")
        if own_features < 0:
            raise ConfigError(f"the model expects {shared_features} shared features but the data has fewer")
        self.shared_features = shared_features
        self.shared_input = nn.Linear(shared_features, hidden[0])
        self.input = nn.Linear(own_features, hidden[0], bias=False) if own_features else None
        self.layer_names: list[str] = []
        for i, (a, b) in enumerate(zip(hidden[:-1], hidden[1:]), start=1):
            self.add_module(f"hidden{i}", nn.Linear(a, b))
            self.layer_names.append(f"hidden{i}")
        self.head = nn.Linear(hidden[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.shared_input(x[:, : self.shared_features])
        if self.input is not None:
            z = z + self.input(x[:, self.shared_features :])
        z = torch.tanh(z)
        for name in self.layer_names:
            z = torch.tanh(getattr(self, name)(z))
        return self.head(z)
