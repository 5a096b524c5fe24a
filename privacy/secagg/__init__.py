"""SecAgg+ secure aggregation: pure client and server state machines, no network.

Implements the protocol of Bonawitz et al. (CCS 2017) with the sparse communication
graph of Bell et al. (CCS 2020, "SecAgg+"): each peer masks its fixed-point encoded
update with a self mask ``PRG(b_u)`` and pairwise masks ``+-PRG(s_uv)`` agreed with its
graph neighbours, Shamir-shares ``b_u`` and its mask key ``s_u`` among its neighbours,
and the server, which only ever sees masked vectors, reconstructs ``b_u`` of survivors
and ``s_v`` of dropped peers -- never both for one peer -- to obtain the sum alone.
The weight travels inside the masked vector, so the server gets ``sum w_i x_i`` and
``sum w_i`` and the weighted average without learning any ``w_i``.

Why not Flower's SecAgg+: Flower derives its masks from numpy's ``RandomState`` seeded
with a 32-bit fold of the shared secret (Flower issue 7522). With only 2**32 possible
seeds per mask, an aggregator can brute-force each mask from the masked vector and
strip it, so those masks hide nothing. Here masks are expanded by ChaCha20 from
256-bit seeds derived with HKDF-SHA256 from X25519 agreements (``prg.py``, ``keys.py``);
under the gm crypto suite (``SecAggConfig.suite``) by SM4-CTR, the SM3 KDF and ECDH on the SM2 curve.

Threat model and assumptions (details in the modules):

* The server may deviate from the protocol to learn individual inputs, possibly
  colluding with up to a ``collusion_fraction`` of the peers; malicious peers are
  detected and dropped. With a ``signer`` and ``verifier`` (``auth``; every deployed and
  simulated peer has them) each peer signs its round keys under its long-term identity
  and checks its neighbours' before sharing or masking, so the server cannot substitute
  keys; and the survivors sign the survivor/dropout lists (the consistency check of
  Bonawitz et al.'s malicious-server variant) and unmask only with ``threshold``
  signatures on the lists they signed themselves, so a server that tells peers
  different dropout stories is caught before any share is revealed. Without them
  (library tests, audits) the relay is trusted with the keys.
* Clients refuse requests that would reveal both secrets of a peer, and the threshold
  is a majority of holders plus colluders, so two disjoint groups of honest holders can
  never both reach it. A malicious server can still abort a round (liveness).
* The round seed that fixes the graph is chosen independently of which peers are
  corrupt (static adversary).
* Integrity: reconstructed secrets are checked against the advertised commitment /
  public key, and a decoded sum outside the range a sum of encodings can take (masks
  that did not cancel) is refused; no average is released in either case.

Modules, one job each: ``encoding`` (fixed point, modulus), ``prg`` (ChaCha20 masks),
``keys`` (X25519, HKDF, AES-GCM, signed transcripts), ``auth`` (signer/verifier), ``shamir`` (sharing over 2**521 - 1),
``graph`` (degree, threshold), ``noise`` (distributed discrete Gaussian), ``messages``,
``config``, ``client``, ``server``. This package imports neither Flower nor the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "AdvertiseKeys",
    "ClientStage",
    "ConsistencyRequest",
    "Ed25519Directory",
    "Ed25519Identity",
    "DistributedNoise",
    "EncryptedShares",
    "FixedPointEncoder",
    "Graph",
    "GraphParameters",
    "MaskInputRequest",
    "MaskedInput",
    "PeerRejected",
    "RoundSetup",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "ServerStage",
    "ShareKeysRequest",
    "Signer",
    "SurvivorSignature",
    "ThresholdNotMet",
    "UnmaskRequest",
    "UnmaskShares",
    "Verifier",
    "build_graph",
    "central_noise_multiplier",
    "graph_parameters",
]

# Each public name's home module, loaded on first use: `client`, `server`, `keys` and `encoding`
# bring numpy and `cryptography`, which reading a job's settings (and the command line's help) does not need.
_HOMES = {
    "AdvertiseKeys": "messages",
    "ClientStage": "client",
    "ConsistencyRequest": "messages",
    "DistributedNoise": "noise",
    "Ed25519Directory": "auth",
    "Ed25519Identity": "auth",
    "EncryptedShares": "messages",
    "FixedPointEncoder": "encoding",
    "Graph": "graph",
    "GraphParameters": "graph",
    "MaskInputRequest": "messages",
    "MaskedInput": "messages",
    "PeerRejected": "errors",
    "RoundSetup": "messages",
    "SecAggClient": "client",
    "SecAggConfig": "config",
    "SecAggResult": "messages",
    "SecAggServer": "server",
    "ServerStage": "server",
    "ShareKeysRequest": "messages",
    "Signer": "auth",
    "SurvivorSignature": "messages",
    "ThresholdNotMet": "errors",
    "UnmaskRequest": "messages",
    "UnmaskShares": "messages",
    "Verifier": "auth",
    "build_graph": "graph",
    "central_noise_multiplier": "noise",
    "graph_parameters": "graph",
}

if TYPE_CHECKING:
    from .auth import Ed25519Directory, Ed25519Identity, Signer, Verifier
    from .client import ClientStage, SecAggClient
    from .config import SecAggConfig
    from .encoding import FixedPointEncoder
    from .errors import PeerRejected, ThresholdNotMet
    from .graph import Graph, GraphParameters, build_graph, graph_parameters
    from .messages import (
        AdvertiseKeys,
        ConsistencyRequest,
        EncryptedShares,
        MaskedInput,
        MaskInputRequest,
        RoundSetup,
        SecAggResult,
        ShareKeysRequest,
        SurvivorSignature,
        UnmaskRequest,
        UnmaskShares,
    )
    from .noise import DistributedNoise, central_noise_multiplier
    from .server import SecAggServer, ServerStage


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
