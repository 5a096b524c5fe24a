"""A bank's side of histogram boosting: gradients of its own rows, histograms, its SecAgg+ answers.

The bank holds its rows already binned (`fedsilo.peers.gbdt.bins`), its labels and the
current margin of every row. For each tree it computes the logistic gradients
``g = clip(p - y, ±1)`` and hessians ``h = clip(p (1 - p), 0, 1/4)`` (the bounds of
`fedsilo.privacy.gbdt`, so the sensitivity is what the accounting assumes); for each
level the host asks for, it sums them per (open node, group, bin); once the tree is
grown, per leaf. It releases a sum divided by ``row_bound`` (the job's public bound on
a bank's training rows) so that every slot lies in ``[-1, 1]``; it checks its own
vector (`check_histogram`) before masking, so a bug that produced NaN or an
out-of-range value is refused with its name and never leaves the bank.

Secure sums: the bank answers the host's plain SecAgg+ rounds (``advertise`` ...
``unmask``, one `SecAggClient` per kind of release) and its multi-release sessions
(``session_keys`` ... ``session_unmask``, one `SessionClient` whose purposes are the
two kinds); a session's release must name the kind the host broadcast with `request`.

Noise: in distributed DP the bank's `SecAggClient` (or `SessionClient`) adds its discrete Gaussian share
inside the masked vector (`fedsilo.privacy.secagg.noise`); in local DP (``local_sigma``,
in raw sum units, one standard deviation for level histograms and one for leaf totals,
each the plan's multiplier times that release's sensitivity) the bank adds the whole
Gaussian noise itself, from
`fedsilo.privacy.noise_source.SecureNoise` (OS-keyed AES-CTR), before anything leaves.
"""

from __future__ import annotations

import numpy as np

from fedsilo.errors import ProtocolError
from fedsilo.privacy.gbdt import GRAD_BOUND, HESS_BOUND
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.secagg import (
    AdvertiseKeys,
    ConsistencyRequest,
    EncryptedShares,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    Signer,
    SurvivorSignature,
    UnmaskShares,
    Verifier,
)
from fedsilo.privacy.secagg.messages import MaskInputRequest, RoundSetup, ShareKeysRequest, UnmaskRequest
from fedsilo.privacy.secagg.session import ReleaseRequest, SessionClient, SessionKeys, SessionSetup
from fedsilo.strategies.gbdt.layout import BinLayout
from fedsilo.strategies.gbdt.tree import Tree, check_histogram

LEVEL, LEAVES = "level", "leaves"


class GBDTBank:
    """One bank in a boosting job (see the module docstring)."""

    def __init__(
        self,
        name: str,
        node_id: int,
        bins: np.ndarray,
        labels: np.ndarray,
        layout: BinLayout,
        row_bound: int,
        *,
        secagg: tuple[SecAggConfig, SecAggConfig] | None = None,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        local_sigma: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.name = name
        self.node_id = node_id
        self.bins = bins
        self.labels = labels.astype(np.float64)
        self.layout = layout
        self.row_bound = float(row_bound)
        self.local_sigma = dict(zip((LEVEL, LEAVES), (float(s) for s in local_sigma), strict=True))
        self.margin = np.zeros(bins.shape[0], dtype=np.float64)
        # one protocol client per kind of release: level and leaf vectors carry different noise shares
        self.clients = (
            {
                kind: SecAggClient(node_id, config, signer=signer, verifier=verifier)
                for kind, config in zip((LEVEL, LEAVES), secagg, strict=True)
            }
            if secagg
            else {}
        )
        # the same two configurations as the purposes of a multi-release session (one key set-up for many releases)
        self.session = (
            SessionClient(node_id, dict(zip((LEVEL, LEAVES), secagg, strict=True)), signer=signer, verifier=verifier)
            if secagg
            else None
        )
        self._noise = SecureNoise() if max(local_sigma) > 0 else None
        self._g = self._h = np.zeros(0)
        self._request: tuple[str, Tree] | None = None

    # ------------------------------------------------------------ boosting
    def start_tree(self) -> None:
        """Gradients and hessians of the logistic loss at the current margins, within their bounds."""
        p = 1.0 / (1.0 + np.exp(-self.margin))
        self._g = np.clip(p - self.labels, -GRAD_BOUND, GRAD_BOUND)
        self._h = np.clip(p * (1.0 - p), 0.0, HESS_BOUND)

    def level_histogram(self, tree: Tree) -> np.ndarray:
        """``(open nodes, bins of the tree's groups, 2)`` sums of (g, h) of this bank's rows, exact (no noise)."""
        nodes = tree.open_nodes()
        slot = np.full(tree.state.shape[0], -1, dtype=np.int64)
        slot[nodes] = np.arange(len(nodes))
        k = slot[tree.route(self.bins)]
        rows = np.flatnonzero(k >= 0)
        total = self.layout.total_bins
        index = (k[rows, None] * total + self.layout.offsets[None, :] + self.bins[rows]).ravel()
        size = len(nodes) * total
        g = np.bincount(index, np.repeat(self._g[rows], self.bins.shape[1]), minlength=size)
        h = np.bincount(index, np.repeat(self._h[rows], self.bins.shape[1]), minlength=size)
        full = np.stack([g, h], axis=-1).reshape(len(nodes), total, 2)
        return full if tree.features is None else full[:, self.layout.slots(tree.features)]

    def leaf_totals(self, tree: Tree) -> np.ndarray:
        """``(leaves, 2)`` sums of (g, h) per leaf of the grown tree, exact."""
        leaves = tree.leaves()
        slot = np.full(tree.state.shape[0], -1, dtype=np.int64)
        slot[leaves] = np.arange(len(leaves))
        k = slot[tree.route(self.bins)]
        g = np.bincount(k, self._g, minlength=len(leaves))
        h = np.bincount(k, self._h, minlength=len(leaves))
        return np.stack([g, h], axis=-1)

    def finish_tree(self, tree: Tree, learning_rate: float) -> None:
        self.margin += learning_rate * tree.predict(self.bins)

    # ------------------------------------------------------------ releases
    def request(self, kind: str, tree: Tree) -> None:
        """The host's broadcast: what the next release is (a level's histograms or the leaves' totals)."""
        self._request = (kind, tree)

    def exact(self) -> np.ndarray:
        """The requested sums, checked against the clipped range (raw units, no noise)."""
        if self._request is None:
            raise RuntimeError("no release requested")
        kind, tree = self._request
        sums = self.level_histogram(tree) if kind == LEVEL else self.leaf_totals(tree)
        return check_histogram(self.name, sums, sums.shape, float(self.bins.shape[0]))

    def release(self) -> np.ndarray:
        """What this bank lets out, unmasked: the requested sums plus its local noise (if any)."""
        sums = self.exact()
        if self._noise is not None:
            assert self._request is not None  # exact() checked it
            sigma = self.local_sigma[self._request[0]]
            sums = sums + sigma * self._noise.gaussian(sums.size).numpy().reshape(sums.shape)
        return sums

    # ------------------------------------------------------------ SecAgg+ answers
    def advertise(self, setup: RoundSetup) -> AdvertiseKeys:
        return self._client().advertise_keys(setup.round_id, setup.participants, setup.round_seed)

    def share(self, request: ShareKeysRequest) -> dict[int, EncryptedShares]:
        return self._client().share_keys(request.round_id, request.peer_keys)

    def mask(self, request: MaskInputRequest) -> MaskedInput:
        vector = self.release().ravel() / self.row_bound
        return self._client().mask_input(request.round_id, vector, 1.0, request.shares)

    def sign(self, request: ConsistencyRequest) -> SurvivorSignature:
        return self._client().sign_survivors(request.round_id, request.survivors, request.dropped)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        return self._client().unmask(request.round_id, request.survivors, request.dropped, request.signatures)

    # ------------------------------------------------------------ multi-release session answers
    def session_keys(self, setup: SessionSetup) -> SessionKeys:
        return self._session().keys(setup)

    def session_share(self, session_round: int, peer_keys: dict[int, SessionKeys]) -> dict[int, EncryptedShares]:
        return self._session().share(session_round, peer_keys)

    def session_accept(self, session_round: int, received: dict[int, EncryptedShares]) -> dict[int, str]:
        return self._session().accept(session_round, received)

    def session_mask(self, request: ReleaseRequest) -> MaskedInput:
        """Mask the requested sums for a release; the release's purpose must be the kind the host broadcast."""
        session = self._session()
        session.expect_release(request)  # a replayed or out-of-order release is refused before computing
        if self._request is None or request.purpose != self._request[0]:
            raise ProtocolError(f"bank {self.name}: release purpose {request.purpose!r} is not the requested sums")
        return session.mask(request, self.release().ravel() / self.row_bound, 1.0)

    def session_sign(self, session_round: int, release: int, request: ConsistencyRequest) -> SurvivorSignature:
        return self._session().sign(session_round, release, request.survivors, request.dropped)

    def session_unmask(self, session_round: int, release: int, request: UnmaskRequest) -> UnmaskShares:
        return self._session().unmask(session_round, release, request.survivors, request.dropped, request.signatures)

    def _session(self) -> SessionClient:
        if self.session is None:
            raise ProtocolError(f"bank {self.name}: this job has no secure aggregation")
        return self.session

    def _client(self) -> SecAggClient:
        if not self.clients or self._request is None:
            raise RuntimeError(f"bank {self.name}: no secure-aggregation round requested")
        return self.clients[self._request[0]]
