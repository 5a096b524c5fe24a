"""The report's yardsticks, trained in the same run as the federation.

- centralized: one non-private model on every bank's training rows pooled together, the
  utility a single trusted party could reach (what federation tries to approach);
- local-only: each bank alone, running exactly the training it runs in the federation
  (same model, rounds, local epochs and DP plan, so the same ε), without the others.

Both are scored on the pooled held-out rows of all banks, as the federated model is,
and local-only models on each bank's own held-out rows too. Both also return their
predicted probabilities on the pooled held-out rows, for the report's intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsilo.peers.client.local_training import evaluate_weights, train_round
from fedsilo.peers.data.bank import BankTensors
from fedsilo.peers.evaluation import evaluate, predict_proba
from fedsilo.peers.job import JobConfig
from fedsilo.peers.models import build_model, get_weights, set_weights

CENTRAL_EPOCHS = 20
CENTRAL_BATCH = 256
CENTRAL_LR = 1e-3


@dataclass(frozen=True)
class LocalOnly:
    bank: int
    auc_pooled: float
    auc_own: float
    epsilon: float
    pooled_probabilities: np.ndarray


def centralized(job: JobConfig, train: BankTensors, test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
    """Non-private model on the pooled training rows, scored on the pooled test rows.

    {"loss", "auc", "probabilities"}: the last are its predictions on `test_x`.
    """
    torch.manual_seed(job.train.seed)
    model = build_model(job.model, train.x_train.shape[1], seed=job.train.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=CENTRAL_LR)
    loss_fn = nn.BCEWithLogitsLoss()
    n = train.n_train
    for _ in range(CENTRAL_EPOCHS):
        model.train()
        for batch in torch.randperm(n).split(CENTRAL_BATCH):
            optimizer.zero_grad()
            loss_fn(model(train.x_train[batch]).squeeze(-1), train.y_train[batch]).backward()
            optimizer.step()
    return {**evaluate(model, test_x, test_y), "probabilities": predict_proba(model, test_x)}


def local_only(job: JobConfig, bank: int, data: BankTensors, test_x: torch.Tensor, test_y: torch.Tensor) -> LocalOnly:
    """Bank `bank` running the federation's training schedule alone."""
    weights = get_weights(build_model(job.model, data.x_train.shape[1], seed=job.train.seed))
    history, epsilon = [], 0.0
    for server_round in range(1, job.train.rounds + 1):
        result = train_round(job, data, weights, history, server_round, bank)
        weights, epsilon = result.weights, result.epsilon
        if result.mechanism is not None:
            history.append(result.mechanism)
    model = build_model(job.model, data.x_train.shape[1])
    set_weights(model, weights)
    pooled = evaluate(model, test_x, test_y)["auc"]
    own = evaluate_weights(job, data, weights)["auc"]
    return LocalOnly(
        bank=bank, auc_pooled=pooled, auc_own=own, epsilon=epsilon, pooled_probabilities=predict_proba(model, test_x)
    )


def pooled(tensors: list[BankTensors]) -> BankTensors:
    """All banks' rows concatenated (simulation yardsticks only)."""
    return BankTensors(
        torch.cat([t.x_train for t in tensors]),
        torch.cat([t.y_train for t in tensors]),
        torch.cat([t.x_test for t in tensors]),
        torch.cat([t.y_test for t in tensors]),
    )
