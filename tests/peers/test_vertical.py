"""Vertical (split) learning between a label holder and feature parties (issue 18), from each party's side."""

import copy

import numpy as np
import pytest
import torch

from fedsilo.errors import BudgetExceeded, DataError, ProtocolError
from fedsilo.peers.data.bank import TEST, TRAIN
from fedsilo.peers.vertical.alignment import align_vertical
from fedsilo.peers.vertical.messages import BatchRequest, Embeddings, Gradients
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder, Link, PartyDP, SplitSpec
from fedsilo.peers.vertical.training import score, train
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.audit.split_learning import label_attack_auc, norm_scores, reconstruction_r2
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.vertical import plan_noise


def _data(n=400, seed=0):
    """The holder's 3 columns, a party's 5 (one of which drives the label), labels ~25% positive."""
    rng = np.random.default_rng(seed)
    xl = rng.normal(size=(n, 3)).astype(np.float32)
    xf = rng.normal(size=(n, 5)).astype(np.float32)
    logit = -1.5 + 2.0 * xf[:, 0] + 0.5 * xl[:, 0]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return xl, xf, y


def _parties(spec, n=400, lr=0.5, dp_holder=None, dp_party=None, sides=None, seed=0):
    xl, xf, y = _data(n, seed)
    sides = np.full(n, TRAIN, dtype=np.int8) if sides is None else sides
    party = FeatureParty(
        "bank", xf, sides, "d" * 64, spec, lr=lr, seed=1, dp=dp_party, noise=SecureNoise() if dp_party else None
    )
    link = Link("bank", np.arange(n), n, "d" * 64, spec.embedding)
    holder = LabelHolder(
        "broker",
        xl,
        y,
        np.arange(n),
        sides,
        [link],
        spec,
        lr=lr,
        seed=2,
        dp=dp_holder,
        noise=SecureNoise() if dp_holder else None,
    )
    return holder, party, (xl, xf, y)


def _one_step(holder, party, index, batch=1):
    embeddings = party.embed(BatchRequest.from_bytes(holder.request(0, index, batch).to_bytes()))
    _, gradients = holder.step(batch, index, [Embeddings.from_bytes(embeddings.to_bytes())])
    party.apply(Gradients.from_bytes(gradients[0].to_bytes()))
    return embeddings, gradients[0]


@pytest.mark.parametrize("kind", ["mlp", "logreg"])
def test_one_step_without_dp_equals_the_centralized_split_model(kind):
    spec = SplitSpec(kind, (6,), 3)
    holder, party, (xl, xf, y) = _parties(spec)
    bottom, local = copy.deepcopy(party.bottom), copy.deepcopy(holder.model)
    index = np.arange(0, 400, 3)
    # centralized: one model on the joined columns, one SGD step on the mean loss
    xl_t, xf_t, y_t = (torch.as_tensor(a[index]) for a in (xl, xf, y))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(local(xl_t, bottom(xf_t)), y_t)
    params = [*bottom.parameters(), *local.parameters()]
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(0.5 * g)
    _one_step(holder, party, index)
    for a, b in zip(bottom.parameters(), party.bottom.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(local.parameters(), holder.model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def _dp(z, epsilon=1e6):
    return PartyDP(noise_multiplier=z, epsilon=epsilon, delta=1e-5, release_clip=1.0, update_clip=1.0)


def test_the_released_embeddings_carry_noise_of_the_calibrated_sd():
    """The label holder's view: what it receives minus the party's true (clipped) output is N(0, (2zC)²)."""
    spec = SplitSpec("mlp", (6,), 4)
    holder, party, _ = _parties(spec, n=2000, dp_party=_dp(1.5))
    index = np.arange(2000)
    with torch.no_grad():
        truth = party.bottom(party.x).double()
        truth = truth * torch.clamp(1.0 / truth.norm(dim=1, keepdim=True), max=1.0)
    released = party.embed(holder.request(0, index, 1, training=False)).values
    residual = released - truth.numpy()
    assert residual.std() == pytest.approx(2 * 1.5 * 1.0, rel=0.03)
    assert abs(residual.mean()) < 5 * 3.0 / np.sqrt(residual.size)
    assert (np.linalg.norm(truth.numpy(), axis=1) <= 1.0 + 1e-9).all()


def test_the_label_holder_cannot_reconstruct_a_raw_column_from_private_embeddings():
    """Attacker: the label holder, knowing the party's column for 10% of the customers, regresses it on the embeddings."""
    spec = SplitSpec("mlp", (6,), 4)
    index = np.arange(3000)
    plain_holder, plain_party, (_, xf, _) = _parties(spec, n=3000)
    plain = plain_party.embed(plain_holder.request(0, index, 1, training=False)).values
    z = plan_noise(3.0, 1e-5, 2)
    holder, party, _ = _parties(spec, n=3000, dp_party=_dp(z, 3.0))
    private = party.embed(holder.request(0, index, 1, training=False)).values
    assert reconstruction_r2(plain, xf[:, 0], 300) > 0.5
    assert reconstruction_r2(private, xf[:, 0], 300) < 0.1


def _returned_gradients(dp_holder, n=3000):
    spec = SplitSpec("mlp", (6,), 4)
    holder, party, (_, _, y) = _parties(spec, n=n, dp_holder=dp_holder)
    seen = []
    train(holder, [party], 1, 200, seed=0, tap=lambda d, p, f: seen.append(f))
    requests = [BatchRequest.from_bytes(f) for f in seen if f[:4] == b"FSVB"]
    gradients = [Gradients.from_bytes(f).values for f in seen if f[:4] == b"FSVG"]
    positions = np.concatenate([r.positions for r in requests])
    return np.concatenate(gradients), y[positions]


def test_label_inference_from_the_returned_gradients_fails_under_label_dp():
    """Attacker: the feature party scores each returned gradient by its norm (Li et al. 2022)."""
    gradients, labels = _returned_gradients(None)
    assert label_attack_auc(norm_scores(gradients), labels) > 0.9
    z = plan_noise(3.0, 1e-5, 2)
    gradients, labels = _returned_gradients(_dp(z, 3.0))
    assert abs(label_attack_auc(norm_scores(gradients), labels) - 0.5) < 0.05


def test_every_party_stays_within_its_budget_and_its_ledger_holds_its_releases(tmp_path):
    epochs = 2
    z = plan_noise(3.0, 1e-5, 2 * epochs)
    spec = SplitSpec("logreg")
    n = 300
    sides = np.where(np.arange(n) % 5 == 0, TEST, TRAIN).astype(np.int8)
    holder, party, _ = _parties(spec, n=n, dp_holder=_dp(z, 3.0), dp_party=_dp(z, 3.0), sides=sides)
    ledgers = {}
    for who in (holder, party):
        ledgers[who.name] = SQLiteLedger(tmp_path / f"{who.name}.sqlite")
        ledgers[who.name].set_budget(who.name, 3.0, 1e-5, "prv")
        ledgers[who.name].reserve(who.name, "job", [Mechanism(z, 1.0, 2 * epochs)])
    history = train(holder, [party], epochs, 64, seed=0)
    score(holder, [party], holder.test_index)  # one release of each held-out customer
    for who in (holder, party):
        assert who.accountant.max_releases == 2 * epochs
        assert who.accountant.spent() <= 3.0
        ledgers[who.name].commit(who.name, "job", who.accountant.mechanisms())
        assert ledgers[who.name].jobs(who.name)["job"].mechanisms == (Mechanism(z, 1.0, 2 * epochs),)
        assert ledgers[who.name].status(who.name).spent_epsilon <= 3.0
    assert party.accountant.counts[holder.test_index].tolist() == [1] * len(holder.test_index)
    assert history[-1].epsilon["bank"] == pytest.approx(epsilon_spent([Mechanism(z, 1.0, 4)], 1e-5, "prv"))
    # one more epoch would take every training row past ε = 3: refused before anything is released
    before = party.accountant.counts.copy()
    with pytest.raises(BudgetExceeded, match="bank"):
        party.embed(holder.request(0, holder.train_index[:10], 99))
    np.testing.assert_array_equal(party.accountant.counts, before)


def test_bad_messages_are_refused_naming_the_party():
    spec = SplitSpec("mlp", (6,), 4)
    sides = np.where(np.arange(100) < 80, TRAIN, TEST).astype(np.int8)
    holder, party, _ = _parties(spec, n=100, sides=sides)
    index = np.arange(10)
    with pytest.raises(DataError, match="bank: batch position 100 is outside"):
        party.embed(BatchRequest(1, np.array([3, 100])))
    with pytest.raises(DataError, match="held-out"):
        party.embed(BatchRequest(1, np.array([3, 90])))
    with pytest.raises(DataError, match="twice"):
        party.embed(BatchRequest(1, np.array([3, 3])))
    good = party.embed(holder.request(0, index, 1))
    with pytest.raises(DataError, match="bank sent embeddings of shape"):
        holder.step(1, index, [Embeddings("bank", 1, good.values[:, :3])])
    nan = good.values.copy()
    nan[2, 1] = np.nan
    with pytest.raises(DataError, match="bank sent embeddings with NaN"):
        holder.step(1, index, [Embeddings("bank", 1, nan)])
    with pytest.raises(ProtocolError, match="batch 7"):
        holder.step(1, index, [Embeddings("bank", 7, good.values)])
    with pytest.raises(ProtocolError, match="bank: gradients for batch 5, which it was not asked for"):
        party.apply(Gradients("broker", 5, np.zeros((10, 4), np.float32)))
    with pytest.raises(DataError, match="shape"):
        party.apply(Gradients("broker", 1, np.zeros((9, 4), np.float32)))
    party.apply(Gradients("broker", 1, np.zeros((10, 4), np.float32)))  # a malformed answer left the batch open
    with pytest.raises(ProtocolError):
        Embeddings.from_bytes(good.to_bytes()[:-3])
    with pytest.raises(ProtocolError, match="not a version-1 gradients frame"):
        Gradients.from_bytes(good.to_bytes())
    # a party whose alignment is another one (another intersection or order) is refused before training
    other = FeatureParty("bank", np.zeros((100, 5), np.float32), sides, "e" * 64, spec, lr=0.1, seed=1)
    with pytest.raises(ProtocolError, match="bank: its alignment"):
        holder.connect([other.hello()])


def _ids():
    rng = np.random.default_rng(4)
    holder_rows = rng.permutation(np.arange(0, 600))
    party_rows = rng.permutation(np.arange(300, 1000))
    labels = (rng.random(600) < 0.3).astype(np.float32)
    return holder_rows, party_rows, labels


def test_alignment_agrees_on_customers_order_and_sides_without_sending_an_id():
    holder_rows, party_rows, labels = _ids()
    frames = []
    alignment = align_vertical(
        [f"CUST-{r}" for r in holder_rows],
        labels,
        [[f"cust-{r} " for r in party_rows]],
        0.25,
        seed=1,
        wire=frames.append,
    )
    mine, theirs = alignment.holder[0], alignment.parties[0]
    assert mine.shared == theirs.shared == 300
    np.testing.assert_array_equal(holder_rows[mine.rows], party_rows[theirs.rows])  # same customer, same position
    np.testing.assert_array_equal(mine.sides, theirs.sides)
    np.testing.assert_array_equal(alignment.holder_sides[mine.rows], theirs.sides)
    assert mine.digest == theirs.digest
    assert not any(b"CUST" in f.upper() for f in frames)
    assert not any(str(r).encode() + b" " in f for f in frames for r in (300, 301))
    joint, positions = alignment.joint()
    np.testing.assert_array_equal(holder_rows[joint], party_rows[theirs.rows[positions[0]]])
    # another intersection: another digest, so the label holder's connect refuses it
    other = align_vertical(
        [f"CUST-{r}" for r in holder_rows], labels, [[f"CUST-{r}" for r in party_rows[:-50]]], 0.25, 1
    )
    assert other.parties[0].digest != mine.digest


def test_three_parties_one_step_equals_the_centralized_split_model():
    """Two feature parties: the label holder's top takes both embeddings; gradients go back to each its own slice."""
    spec = SplitSpec("mlp", (5,), 2)
    xl, xf, y = _data(120)
    sides = np.full(120, TRAIN, dtype=np.int8)
    order = np.random.default_rng(9).permutation(120)  # the second party's pair order differs from the first's
    first = FeatureParty("bank", xf[:, :3], sides, "a" * 64, spec, lr=0.3, seed=1)
    second = FeatureParty("card", xf[order, 3:], sides, "b" * 64, spec, lr=0.3, seed=5)
    where = np.argsort(order)  # the label holder's index j is at position where[j] in the second pair
    links = [Link("bank", np.arange(120), 120, "a" * 64, 2), Link("card", where, 120, "b" * 64, 2)]
    holder = LabelHolder("broker", xl, y, np.arange(120), sides, links, spec, lr=0.3, seed=2)
    b1, b2, local = copy.deepcopy(first.bottom), copy.deepcopy(second.bottom), copy.deepcopy(holder.model)
    index = np.arange(0, 120, 2)
    t = torch.as_tensor
    received = torch.cat([b1(t(xf[index, :3])), b2(t(xf[index, 3:]))], dim=1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(local(t(xl[index]), received), t(y[index]))
    params = [*b1.parameters(), *b2.parameters(), *local.parameters()]
    with torch.no_grad():
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.sub_(0.3 * g)
    holder.connect([first.hello(), second.hello()])
    embeddings = [p.embed(holder.request(k, index, 1)) for k, p in enumerate((first, second))]
    _, gradients = holder.step(1, index, embeddings)
    first.apply(gradients[0])
    second.apply(gradients[1])
    for ref, got in ((b1, first.bottom), (b2, second.bottom), (local, holder.model)):
        for a, b in zip(ref.parameters(), got.parameters()):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_bottoms_release_each_bank_row_once_and_the_broker_returns_nothing():
    """--frozen-bottoms: the bank's row is released once (then repeated), no gradient leaves the broker."""
    epochs, eps = 3, 3.0
    spec = SplitSpec("mlp", (8,), 2, frozen=True)
    z_bank, z_broker = plan_noise(eps, 1e-5, 1), plan_noise(eps, 1e-5, epochs)
    n = 300
    sides = np.where(np.arange(n) % 5 == 0, TEST, TRAIN).astype(np.int8)
    holder, party, _ = _parties(spec, n=n, dp_holder=_dp(z_broker, eps), dp_party=_dp(z_bank, eps), sides=sides)
    initial = copy.deepcopy(party.bottom.state_dict())
    frames = []
    history = train(holder, [party], epochs, 64, seed=0, tap=lambda d, p, frame: frames.append(frame))
    score(holder, [party], holder.test_index)
    # the bank: every row (training and held out) released exactly once, within its budget
    assert party.accountant.counts.tolist() == [1] * n
    assert party.accountant.spent() == pytest.approx(epsilon_spent([Mechanism(z_bank, 1.0, 1)], 1e-5, "prv"))
    assert party.accountant.spent() <= eps
    # the broker released nothing: its own updates only, once per epoch
    assert not any(frame[:4] == b"FSVG" for frame in frames)
    assert holder.accountant.max_releases == epochs and holder.accountant.spent() <= eps
    assert history[-1].epsilon["broker"] <= eps
    # the bank's bottom is its seeded initialization, and it refuses gradients
    for name, value in party.bottom.state_dict().items():
        torch.testing.assert_close(value, initial[name])
    with pytest.raises(ProtocolError, match="frozen"):
        party.pending[7] = holder.train_index[:4]
        party.apply(Gradients("bank", 7, np.zeros((4, 2), dtype=np.float32)))
    # the broker, asking again, gets the very same noisy vectors: averaging repeats recovers nothing
    index = holder.train_index[:20]
    first = party.embed(holder.request(0, index, 100)).values
    again = party.embed(holder.request(0, index, 101)).values
    np.testing.assert_array_equal(first, again)
    assert party.accountant.counts.tolist() == [1] * n
