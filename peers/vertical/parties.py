"""The parties of a split model: feature parties (a bottom model each) and the label holder (its bottom and the top).

Model (:class:`SplitSpec`): each party's bottom model maps its own encoded columns to an
embedding, an MLP (``hidden`` widths, tanh, then a linear layer to ``width`` outputs) or,
for the interpretable variant (``kind="logreg"``), one linear output: the party's
partial logit. The label holder's top model maps the concatenation of its own
embedding and every feature party's to the logit of default: one tanh layer then a
linear head (MLP) or a linear layer (logreg: the whole model is a logistic regression on
all columns, with each party's weights factored as its bottom times the top's weight).

One training step (driven by :mod:`fedsilo.peers.vertical.training`):

1. the label holder picks a batch of training positions and sends each feature party
   a :class:`~.messages.BatchRequest`;
2. each feature party computes its bottom model's outputs for those rows and releases
   them (:class:`~.messages.Embeddings`);
3. the label holder computes the loss, updates its own bottom and top, and releases the
   gradient of each example's loss with respect to each party's embedding
   (:class:`~.messages.Gradients`);
4. each feature party back-propagates its gradients through its bottom model and updates it.

Privacy (``PartyDP`` set; :mod:`fedsilo.privacy.vertical`): every vector a party releases
is clipped per example and noised (step 2: embeddings; step 3: the joint gradient of
all parties' embeddings, one release per example); every update of a party's own
parameters (steps 3 and 4) is a DP-SGD step on the batch (per-example clipping, noise
on the sum). Each is one Gaussian mechanism per example of the batch, at the party's
noise multiplier and sample rate 1, charged to the party's :class:`RowAccountant`
before it happens. Without ``PartyDP`` nothing is clipped or noised, and the steps are
exactly those of one centralized split model trained by SGD on the joined columns.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsilo.errors import ConfigError, DataError, ProtocolError
from fedsilo.peers.data.bank import TEST
from fedsilo.peers.vertical.messages import BatchRequest, Embeddings, Gradients, check_rows
from fedsilo.privacy.noise_source import NoiseSource
from fedsilo.privacy.vertical import RowAccountant, RowRelease, noisy_clipped_mean

__all__ = ["FeatureParty", "LabelHolder", "Link", "LocalModel", "PartyDP", "SplitSpec", "build_bottom", "build_top"]


@dataclass(frozen=True)
class SplitSpec:
    """The split model's family: ``kind`` "mlp" or "logreg"; MLP bottoms' ``hidden`` widths and embedding ``width``.

    ``frozen``: the feature parties never train their bottoms. Each keeps its seeded
    initialization (a fixed random map of its encoded columns, chosen before any data is
    seen), so its outputs depend on a row only through that row; each party releases a
    row's embedding once and repeats that same noisy release whenever the row is asked
    for again (post-processing: no further ε), and the label holder returns no
    gradients (it releases nothing about its labels; only its own updates spend its ε).
    """

    kind: str = "mlp"
    hidden: tuple[int, ...] = (16,)
    width: int = 4
    frozen: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "logreg"):
            raise ConfigError(f"a split model is 'mlp' or 'logreg', got {self.kind!r}")
        if self.width < 1 or any(h < 1 for h in self.hidden):
            raise ConfigError("a split model's widths must be ≥ 1")

    @property
    def embedding(self) -> int:
        return 1 if self.kind == "logreg" else self.width


@dataclass(frozen=True)
class PartyDP:
    """One party's DP: noise multiplier (from its ε over its planned releases), clipping bounds, budget."""

    noise_multiplier: float
    epsilon: float
    delta: float
    accountant: str = "prv"
    release_clip: float = 1.0  # embeddings (feature party) or returned gradients (label holder)
    update_clip: float = 1.0  # per-example gradient of the party's own parameters
    score_noise_multiplier: float | None = (
        None  # a scoring release (held-out rows: calibrated for one); None: as training
    )

    @property
    def scoring(self) -> float:
        return self.noise_multiplier if self.score_noise_multiplier is None else self.score_noise_multiplier

    def row_accountant(self, party: str, rows: int) -> RowAccountant:
        """The ledger of ``party``'s ``rows`` rows at this noise multiplier, within this budget."""
        return RowAccountant(party, rows, self.noise_multiplier, self.epsilon, self.delta, self.accountant)


def _seeded(seed: int, build):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def build_bottom(spec: SplitSpec, n_in: int, seed: int) -> nn.Module:
    """A party's bottom model over its ``n_in`` encoded columns (deterministic in ``seed``)."""
    if n_in < 1:
        raise ConfigError("a bottom model needs at least one input column")

    def build() -> nn.Module:
        if spec.kind == "logreg":
            return nn.Sequential(OrderedDict(out=nn.Linear(n_in, 1)))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        widths = (n_in, *spec.hidden)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers[f"hidden{i}"] = nn.Linear(a, b)
            layers[f"hidden{i}_act"] = nn.Tanh()
        layers["out"] = nn.Linear(widths[-1], spec.width)
        return nn.Sequential(layers)

    return _seeded(seed, build)


def build_top(spec: SplitSpec, n_in: int, seed: int) -> nn.Module:
    """The label holder's top model over the concatenated embeddings."""

    def build() -> nn.Module:
        if spec.kind == "logreg":
            return nn.Sequential(OrderedDict(head=nn.Linear(n_in, 1)))
        hidden = spec.hidden[-1] if spec.hidden else spec.width
        return nn.Sequential(
            OrderedDict(hidden=nn.Linear(n_in, hidden), hidden_act=nn.Tanh(), head=nn.Linear(hidden, 1))
        )

    return _seeded(seed, build)


def _clip_tensor(h: torch.Tensor, bound: float) -> torch.Tensor:
    """Rows scaled to norm ≤ bound, differentiably (what a private party releases)."""
    return h * torch.clamp(bound / torch.clamp(h.norm(dim=-1, keepdim=True), min=1e-12), max=1.0)


def _sgd(model: nn.Module, grads: dict[str, torch.Tensor], lr: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.sub_(lr * grads[name].to(p.dtype))


def _check_positions(positions: np.ndarray, shared: int, who: str) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.int64)
    if positions.ndim != 1 or positions.size == 0:
        raise DataError(f"{who}: a batch lists at least one position")
    if positions.min() < 0 or positions.max() >= shared:
        raise DataError(f"{who}: batch position {int(positions.max())} is outside the agreed 0 … {shared - 1}: refused")
    if len(np.unique(positions)) != len(positions):
        raise DataError(f"{who}: a batch lists a position twice: refused")
    return positions


class FeatureParty:
    """A party holding columns (never the label) of the shared customers, and its bottom model.

    ``features[p]`` is the encoded row of the customer at position ``p`` of the agreed
    order, ``sides[p]`` her side; ``digest`` identifies the order (:mod:`.alignment`).
    """

    def __init__(
        self,
        name: str,
        features: np.ndarray,
        sides: np.ndarray,
        digest: str,
        spec: SplitSpec,
        *,
        lr: float,
        seed: int,
        dp: PartyDP | None = None,
        noise: NoiseSource | None = None,
    ) -> None:
        if len(features) != len(sides):
            raise DataError(f"{name}: {len(features)} feature rows for {len(sides)} sides")
        self.name, self.spec, self.lr, self.dp, self.noise = name, spec, lr, dp, noise
        self.digest, self.sides = digest, np.asarray(sides)
        self.x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.bottom = build_bottom(spec, self.x.shape[1], seed)
        self.accountant = dp.row_accountant(name, len(self.x)) if dp else None
        self.pending: dict[int, np.ndarray] = {}
        self.released: dict[int, np.ndarray] = {}  # frozen bottoms: position → its one noisy release

    def hello(self) -> dict:
        """What the label holder checks before training: the order's digest, its size, the embedding width."""
        return {"party": self.name, "shared": len(self.x), "digest": self.digest, "width": self.spec.embedding}

    def embed(self, request: BatchRequest) -> Embeddings:
        """The released embeddings of the requested rows (charged to the accountant first when private)."""
        positions = _check_positions(request.positions, len(self.x), self.name)
        if request.training and (self.sides[positions] == TEST).any():
            raise DataError(f"{self.name}: a training batch asks for held-out customers: refused")
        z = (self.dp.noise_multiplier if request.training else self.dp.scoring) if self.dp else 0.0
        if self.spec.frozen and self.dp is not None:
            return Embeddings(self.name, request.batch, self._released(positions, z).astype(np.float32))
        if self.accountant is not None:
            self.accountant.charge(positions, z)
        with torch.no_grad():
            h = self.bottom(self.x[positions]).double().numpy()
        values = RowRelease(self.dp.release_clip, z).apply(h, self.noise) if self.dp else h
        if request.training:
            self.pending = {request.batch: positions}  # one outstanding training batch at a time
        return Embeddings(self.name, request.batch, values.astype(np.float32))

    def _released(self, positions: np.ndarray, z: float) -> np.ndarray:
        """Frozen bottom: each row's one noisy release, made (and charged) the first time it is asked for."""
        new = np.array([p for p in positions.tolist() if p not in self.released], dtype=np.int64)
        if new.size:
            self.accountant.charge(new, z)
            with torch.no_grad():
                h = self.bottom(self.x[new]).double().numpy()
            for p, row in zip(new.tolist(), RowRelease(self.dp.release_clip, z).apply(h, self.noise)):
                self.released[p] = row
        return np.stack([self.released[p] for p in positions.tolist()])

    def apply(self, message: Gradients) -> None:
        """Back-propagate the label holder's gradients for a batch this party released, and update the bottom."""
        positions = self.pending.get(message.batch)
        if positions is None:
            raise ProtocolError(
                f"{self.name}: gradients for batch {message.batch}, which it was not asked for: refused"
            )
        g = torch.as_tensor(
            check_rows(message.values, len(positions), self.spec.embedding, "the label holder", "gradients")
        )
        del self.pending[message.batch]  # only a well-formed answer closes the batch
        if self.spec.frozen:
            raise ProtocolError(f"{self.name}: its bottom model is frozen and takes no gradients: refused")
        x = self.x[positions]
        if self.dp is None:
            self.bottom.zero_grad()
            (self.bottom(x) * g).sum().div(len(positions)).backward()
            _sgd(self.bottom, {n: p.grad for n, p in self.bottom.named_parameters()}, self.lr)
            return
        self.accountant.charge(positions)
        params = {n: p.detach() for n, p in self.bottom.named_parameters()}
        clip = self.dp.release_clip

        def one(params, xi, gi):
            return (_clip_tensor(functional_call(self.bottom, params, (xi[None],)), clip)[0] * gi).sum()

        per_example = vmap(grad(one), in_dims=(None, 0, 0))(params, x, g)
        step = noisy_clipped_mean(
            per_example, self.dp.update_clip, self.dp.noise_multiplier, len(positions), self.noise
        )
        _sgd(self.bottom, step, self.lr)


@dataclass(frozen=True)
class Link:
    """The label holder's view of one feature party: ``positions[j]`` is its index ``j``'s position in their order."""

    party: str
    positions: np.ndarray
    shared: int
    digest: str
    width: int


class LocalModel(nn.Module):
    """The label holder's part: its own bottom model and the top model over [own embedding, received ones]."""

    def __init__(self, spec: SplitSpec, n_in: int, received: int, seed: int) -> None:
        super().__init__()
        self.bottom = build_bottom(spec, n_in, seed)
        self.top = build_top(spec, spec.embedding + received, seed + 1)

    def forward(self, x: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
        return self.top(torch.cat([self.bottom(x), received], dim=1)).squeeze(-1)


class LabelHolder:
    """The party holding the labels, its own columns of the same customers, and the top model.

    Its index ``j`` runs over ``rows`` (its table rows in training/scoring, e.g. the
    customers shared with every feature party); ``features``/``labels`` are its whole
    encoded table; ``links[k]`` maps its index to feature party k's positions. With no
    links it is the label holder alone (its own columns only: the yardstick and the
    model that scores customers outside the intersection).
    """

    def __init__(
        self,
        name: str,
        features: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        sides: np.ndarray,
        links: list[Link],
        spec: SplitSpec,
        *,
        lr: float,
        seed: int,
        dp: PartyDP | None = None,
        noise: NoiseSource | None = None,
    ) -> None:
        self.name, self.spec, self.lr, self.dp, self.noise, self.links = name, spec, lr, dp, noise, links
        self.rows = np.asarray(rows, dtype=np.int64)
        self.x = torch.as_tensor(np.asarray(features, dtype=np.float32)[self.rows])
        self.y = torch.as_tensor(np.asarray(labels, dtype=np.float32)[self.rows])
        self.sides = np.asarray(sides)[self.rows]
        self.widths = [link.width for link in links]
        self.model = LocalModel(spec, self.x.shape[1], sum(self.widths), seed)
        self.accountant = dp.row_accountant(name, len(self.rows)) if dp else None

    @property
    def train_index(self) -> np.ndarray:
        return np.flatnonzero(self.sides != TEST)

    @property
    def test_index(self) -> np.ndarray:
        return np.flatnonzero(self.sides == TEST)

    def connect(self, hellos: list[dict]) -> None:
        """Refuse to train with a party whose order, size or embedding width is not the agreed one."""
        if len(hellos) != len(self.links):
            raise ProtocolError(f"{self.name}: {len(hellos)} parties answered, {len(self.links)} are linked")
        for hello, link in zip(hellos, self.links):
            if hello["party"] != link.party:
                raise ProtocolError(f"{self.name}: expected party {link.party!r}, {hello['party']!r} answered")
            if hello["shared"] != link.shared or hello["digest"] != link.digest:
                raise ProtocolError(
                    f"{link.party}: its alignment ({hello['shared']} customers, digest {hello['digest'][:12]}…) is not "
                    f"the one agreed with {self.name} ({link.shared}, {link.digest[:12]}…): re-run the alignment"
                )
            if hello["width"] != link.width:
                raise ProtocolError(
                    f"{link.party}: embeddings of width {hello['width']}, the top model takes {link.width}"
                )

    def request(self, k: int, index: np.ndarray, batch: int, training: bool = True) -> BatchRequest:
        """The batch request for feature party ``k`` (its positions of the label holder's ``index``)."""
        return BatchRequest(batch, self.links[k].positions[index], training)

    def _received(self, batch: int, index: np.ndarray, messages: list[Embeddings]) -> torch.Tensor:
        if len(messages) != len(self.links):
            raise ProtocolError(f"{self.name}: {len(messages)} embedding messages for {len(self.links)} parties")
        parts = []
        for message, link in zip(messages, self.links):
            if message.party != link.party or message.batch != batch:
                raise ProtocolError(
                    f"{message.party}: embeddings for batch {message.batch}, where {self.name} asked "
                    f"{link.party} for batch {batch}: refused"
                )
            parts.append(check_rows(message.values, len(index), link.width, link.party, "embeddings"))
        if not parts:
            return torch.zeros(len(index), 0)
        return torch.as_tensor(np.concatenate(parts, axis=1))

    def step(self, batch: int, index: np.ndarray, messages: list[Embeddings]) -> tuple[float, list[Gradients]]:
        """One training step on the label holder's ``index`` rows; the gradients to send back, party by party."""
        index = _check_positions(index, len(self.rows), self.name)
        if (self.sides[index] == TEST).any():
            raise DataError(f"{self.name}: a training batch with held-out customers: refused")
        received = self._received(batch, index, messages)
        x, y = self.x[index], self.y[index]
        loss_fn = nn.functional.binary_cross_entropy_with_logits
        if self.dp is None:
            received.requires_grad_(True)
            self.model.zero_grad()
            losses = loss_fn(self.model(x, received), y, reduction="none")
            losses.sum().backward()
            back = received.grad.double().numpy()
            _sgd(self.model, {n: p.grad / len(index) for n, p in self.model.named_parameters()}, self.lr)
            loss = float(losses.detach().mean())
        else:
            if self.links and not self.spec.frozen:
                self.accountant.charge(index)  # the released gradients
            self.accountant.charge(index)  # the update of the label holder's own part
            params = {n: p.detach() for n, p in self.model.named_parameters()}

            def one(params, xi, ri, yi):
                return loss_fn(functional_call(self.model, params, (xi[None], ri[None])), yi[None])

            per_example, back = vmap(grad(one, argnums=(0, 2)), in_dims=(None, 0, 0, 0))(params, x, received, y)
            if back.shape[1] and not self.spec.frozen:
                back = RowRelease(self.dp.release_clip, self.dp.noise_multiplier).apply(
                    back.double().numpy(), self.noise
                )
            else:
                back = back.double().numpy()
            step = noisy_clipped_mean(
                per_example, self.dp.update_clip, self.dp.noise_multiplier, len(index), self.noise
            )
            _sgd(self.model, step, self.lr)
            with torch.no_grad():
                loss = float(loss_fn(self.model(x, received), y))
        out, start = [], 0
        for link in [] if self.spec.frozen else self.links:
            out.append(Gradients(link.party, batch, back[:, start : start + link.width].astype(np.float32)))
            start += link.width
        return loss, out

    def predict(self, batch: int, index: np.ndarray, messages: list[Embeddings]) -> np.ndarray:
        """Probabilities of default for the label holder's ``index`` rows, given the parties' embeddings."""
        received = self._received(batch, index, messages)
        with torch.no_grad():
            return torch.sigmoid(self.model(self.x[index], received)).double().numpy()
