"""The aggregator's view: reconstruction succeeds on a plaintext update, fails on a masked one.

The closed-form attack itself is the one tests/privacy/secagg/test_leakage.py runs on
SecAgg+'s harness; here it runs on a real model's gradient and on one real round.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsilo.peers.models import ModelSpec, build_model
from fedsilo.privacy.audit import reconstruction as R
from fedsilo.privacy.secagg import SecAggConfig

FEATURES = 40


def test_closed_form_and_gradient_matching_on_plaintext_fail_on_masked_upload():
    torch.manual_seed(0)
    # 40 input features: a masked (uniformly random) vector then correlates with the true
    # row by chance well below the success threshold, whatever the masks drawn.
    model = build_model(ModelSpec(hidden=(16, 8)), FEATURES)
    rows = torch.randn(4, FEATURES)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    updates = [R.flat_gradient(model, rows[i : i + 1], labels[i : i + 1]) for i in range(4)]
    truth = rows[0].double().numpy()

    # control: the plaintext batch-size-1 update gives the row back
    assert R.best_row_similarity(updates[0], 16, FEATURES, [truth]) > 0.999
    guess = R.gradient_matching(model, updates[0], FEATURES, steps=150)
    assert R.similarity(guess, truth) > R.SUCCESS_SIMILARITY

    view = R.secagg_round_view(updates, SecAggConfig(clip=8.0, bits=24, max_weight=1.0))
    # what the aggregator holds of peer 0: its masked upload
    assert R.best_row_similarity(view.masked_as_plain[0], 16, FEATURES, [truth]) < R.SUCCESS_SIMILARITY
    masked_guess = R.gradient_matching(model, view.masked_as_plain[0], FEATURES, steps=50)
    assert R.similarity(masked_guess, truth) < R.SUCCESS_SIMILARITY
    # and the round still delivers the average of the updates
    assert np.max(np.abs(view.average - np.mean(updates, axis=0))) < 1e-4
