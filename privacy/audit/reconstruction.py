"""The aggregator's view: can the party that aggregates a round reconstruct an input?

Two attacks on an update vector, as the aggregator would hold it:

- closed form (Phong et al. 2017; Geiping et al. 2020): for a first layer
  z = W x + b trained with batch size 1, ∂L/∂W = (∂L/∂z) xᵀ and ∂L/∂b = ∂L/∂z, so every
  row i with ∂L/∂b_i ≠ 0 gives x = (∂L/∂W)_i / (∂L/∂b)_i exactly;
- gradient matching, in the style of DLG (Zhu et al. 2019): start from a random input
  and descend ‖∇θ L(x′, y) − g‖² over x′ for a few steps (the label y is read off the
  sign of the output bias gradient, as in iDLG).

`similarity` is the Pearson correlation between a reconstruction and the true input:
1 is an exact reconstruction (up to shift and scale), 0 is unrelated. A reconstruction "succeeds" at or above
`SUCCESS_SIMILARITY`.

`secagg_round_view` plays one real SecAgg+ round (privacy.secagg, in process) and
returns what the aggregator holds: each peer's masked upload, decoded as if it were a
plaintext encoding, and the unmasked average of all uploads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsilo.errors import DataError
from fedsilo.privacy.secagg import SecAggClient, SecAggConfig, SecAggServer

SUCCESS_SIMILARITY = 0.9


def similarity(guess: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation of two vectors: 1 for an exact reconstruction up to shift and scale.

    Centring matters: an uninformed guess with a positive mean (a masked upload decoded
    as plaintext is one) would otherwise look similar to any row with a positive mean.
    0 when either vector is constant or not finite.
    """
    a, b = np.asarray(guess, dtype=np.float64).ravel(), np.asarray(truth, dtype=np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 and np.isfinite(norm) else 0.0


def invert_linear_layer(update: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
    """Closed form on a flat [dW (n_out × n_in, row-major), db (n_out)] update: x = dW[i] / db[i].

    Uses the row with the largest |db[i]| (the best-conditioned one).
    """
    update = np.asarray(update, dtype=np.float64).ravel()
    if update.size < n_out * (n_in + 1):
        raise DataError(f"an update of {update.size} values cannot hold a {n_out}×{n_in} layer and its bias")
    dW, db = update[: n_out * n_in].reshape(n_out, n_in), update[n_out * n_in : n_out * (n_in + 1)]
    i = int(np.argmax(np.abs(db)))
    return dW[i] / db[i] if db[i] != 0 else np.zeros(n_in)


def best_row_similarity(update: np.ndarray, n_out: int, n_in: int, truths: list[np.ndarray]) -> float:
    """Best similarity over every row i of the closed form (x = dW[i]/db[i]) and every true input.

    An attacker does not know which row is best; taking the max over rows and over the
    candidate inputs gives the attack every benefit of the doubt.
    """
    update = np.asarray(update, dtype=np.float64).ravel()
    dW, db = update[: n_out * n_in].reshape(n_out, n_in), update[n_out * n_in : n_out * (n_in + 1)]
    best = 0.0
    for i in range(n_out):
        if db[i] != 0 and np.isfinite(db[i]):
            guess = dW[i] / db[i]
            best = max(best, *(similarity(guess, t) for t in truths))
    return best


def flat_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The batch-size-1 (or batch) gradient of the mean BCE loss, flattened in parameter order."""
    params = [p for p in model.parameters()]
    loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads]).detach().double().numpy()


def gradient_matching(
    model: nn.Module, update: np.ndarray, n_features: int, steps: int = 200, lr: float = 0.1, seed: int = 0
) -> np.ndarray:
    """DLG-style reconstruction of one input from a flat gradient `update` of `model`.

    The label is inferred from the sign of the last parameter's gradient (the output
    bias: σ(z) − y, negative for y = 1). Returns the best input found (lowest matching loss).
    """
    params = [p for p in model.parameters()]
    sizes = [p.numel() for p in params]
    target = torch.as_tensor(np.asarray(update, dtype=np.float32))
    if target.numel() != sum(sizes):
        raise DataError(f"an update of {target.numel()} values does not match a model of {sum(sizes)} parameters")
    targets = [t.view_as(p) for t, p in zip(target.split(sizes), params)]
    label = torch.tensor([1.0 if float(targets[-1].sum()) < 0 else 0.0])
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.randn(1, n_features, generator=generator).requires_grad_(True)
    optimizer = torch.optim.Adam([dummy], lr=lr)
    best, best_loss = dummy.detach().clone(), float("inf")
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(dummy).squeeze(-1), label)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        mismatch = sum(((g - t) ** 2).sum() for g, t in zip(grads, targets))
        if float(mismatch.detach()) < best_loss:
            best_loss, best = float(mismatch.detach()), dummy.detach().clone()
        mismatch.backward()
        optimizer.step()
    return best.squeeze(0).double().numpy()


@dataclass(frozen=True)
class RoundView:
    """What the aggregator holds after one SecAgg+ round."""

    masked_as_plain: dict[int, np.ndarray]  # peer -> its masked upload decoded as if it were plain
    average: np.ndarray  # the unmasked weighted average of all uploads


def secagg_round_view(updates: list[np.ndarray], config: SecAggConfig, round_id: int = 1) -> RoundView:
    """Run one SecAgg+ round over `updates` (one per peer, weight 1 each) in process.

    Keys and masks come from the protocol's own generators (os.urandom, X25519, ChaCha20);
    nothing is weakened for the measurement.
    """
    if len(updates) < 2:
        raise DataError("a secure-aggregation round needs at least 2 peers")
    dim = int(np.asarray(updates[0]).size)
    nodes = list(range(1, len(updates) + 1))
    server = SecAggServer(config, round_id, nodes, dim, round_seed=os.urandom(32))
    clients = {u: SecAggClient(u, config) for u in nodes}
    s = server.setup
    for u in nodes:
        server.receive_advertise(u, clients[u].advertise_keys(s.round_id, s.participants, s.round_seed))
    for u, share in server.end_advertise().items():
        server.receive_shares(u, clients[u].share_keys(share.round_id, share.peer_keys))
    uploads = {}
    for u, mask in server.end_share_keys().items():
        msg = clients[u].mask_input(mask.round_id, np.asarray(updates[u - 1], dtype=np.float64), 1.0, mask.shares)
        uploads[u] = msg.masked
        server.receive_masked_input(u, msg)
    for u, check in server.end_mask_input().items():
        server.receive_consistency(u, clients[u].sign_survivors(check.round_id, check.survivors, check.dropped))
    for u, unmask in server.end_consistency().items():
        server.receive_unmask(
            u, clients[u].unmask(unmask.round_id, unmask.survivors, unmask.dropped, unmask.signatures)
        )
    result = server.aggregate()
    enc = server.encoder
    as_plain = {u - 1: enc.centered_integers(m)[:-1] / enc.scale - enc.clip for u, m in uploads.items()}
    return RoundView(masked_as_plain=as_plain, average=result.average)
