"""SecAgg+ with 100 to 1,000 peers in a round: graph degree, threshold, and the host's cost.

Drives `fedsilo.privacy.secagg` directly (the host's `SecAggServer` and n in-process
`SecAggClient`s, no Flower, no network), so the figures are the protocol's own
computation. For each n it reports the graph degree k (neighbours per peer) and the
threshold, and times every host stage separately from the peers' work: relaying keys
and shares, checking masked inputs, and unmasking (reconstructing each survivor's
self-mask seed and each dropped peer's pairwise-mask key from t Shamir shares, then
removing the masks from the sum). A share of the peers (default 5 %) vanishes after
sharing keys, so unmasking also has to rebuild dropped peers' pairwise masks.

Near-linear means: host time per peer stays roughly flat as n grows (the work per peer
is O(k · dim) with k = O(log n + σ), against O(n · dim) for a complete graph). The
figures are printed last, as ratios against the smallest n measured in the same run.

    python bench/secagg_scale.py                     # n = 100, 300, 1000; dim = 3,000; targets 10 % / 5 %
    python bench/secagg_scale.py --peers 100 1000 --dim 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsilo.privacy.secagg import Ed25519Directory, Ed25519Identity, SecAggClient, SecAggConfig, SecAggServer

ROUND = 1


def one_round(n: int, dim: int, drop_fraction: float, tolerated: float, colluding: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    nodes = sorted({int(v) for v in rng.integers(1, 2**62, size=n)})
    config = SecAggConfig(
        clip=8.0, bits=24, max_weight=1000.0, dropout_fraction=tolerated, collusion_fraction=colluding
    )
    host = {"relay keys": 0.0, "relay shares": 0.0, "receive masked": 0.0, "unmask": 0.0}
    server = SecAggServer(config, ROUND, nodes, dim, round_seed=rng.bytes(32))
    signers = {u: Ed25519Identity(f"peer-{u:x}", Ed25519PrivateKey.generate()) for u in nodes}
    verifier = Ed25519Directory({i.name: i.public_key() for i in signers.values()})
    clients = {u: SecAggClient(u, config, signer=signers[u], verifier=verifier) for u in nodes}
    inputs = {u: rng.uniform(-1, 1, dim) for u in nodes}
    peers_s = 0.0

    def timed(bucket: str, fn, *args):
        started = time.perf_counter()
        out = fn(*args)
        host[bucket] += time.perf_counter() - started
        return out

    setup = server.setup
    for u in nodes:
        started = time.perf_counter()
        advert = clients[u].advertise_keys(setup.round_id, setup.participants, setup.round_seed)
        peers_s += time.perf_counter() - started
        timed("relay keys", server.receive_advertise, u, advert)
    requests = timed("relay keys", server.end_advertise)
    for u, request in requests.items():
        started = time.perf_counter()
        shares = clients[u].share_keys(request.round_id, request.peer_keys)
        peers_s += time.perf_counter() - started
        timed("relay shares", server.receive_shares, u, shares)
    requests = timed("relay shares", server.end_share_keys)
    gone = set(rng.choice(sorted(requests), size=int(drop_fraction * len(requests)), replace=False).tolist())
    for u, request in requests.items():
        if u in gone:
            continue
        started = time.perf_counter()
        masked = clients[u].mask_input(request.round_id, inputs[u], 10.0, request.shares)
        peers_s += time.perf_counter() - started
        timed("receive masked", server.receive_masked_input, u, masked)
    checks = timed("unmask", server.end_mask_input)
    for u, request in checks.items():
        started = time.perf_counter()
        signature = clients[u].sign_survivors(request.round_id, request.survivors, request.dropped)
        peers_s += time.perf_counter() - started
        timed("unmask", server.receive_consistency, u, signature)
    requests = timed("unmask", server.end_consistency)
    for u, request in requests.items():
        started = time.perf_counter()
        shares = clients[u].unmask(request.round_id, request.survivors, request.dropped, request.signatures)
        peers_s += time.perf_counter() - started
        timed("unmask", server.receive_unmask, u, shares)
    result = timed("unmask", server.aggregate)
    plain = np.mean([np.clip(inputs[u], -8, 8) for u in result.survivors], axis=0)
    error = float(np.max(np.abs(result.average - plain)))
    graph = server.graph
    return {
        "n": len(nodes),
        "degree": graph.degree,
        "threshold": graph.threshold,
        "complete": graph.params.complete,
        "dropped": len(gone),
        "host": host,
        "host_total": sum(host.values()),
        "peers_s": peers_s,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--dim", type=int, default=3000, help="update length (fedsilo's default MLP: ~3,600)")
    parser.add_argument("--drop", type=float, default=0.05, help="share of peers vanishing after sharing keys")
    parser.add_argument("--dropout-fraction", type=float, default=0.1, help="dropouts the graph must tolerate")
    parser.add_argument("--collusion-fraction", type=float, default=0.05, help="peers colluding with the host")
    args = parser.parse_args()
    from fedsilo.privacy.secagg.graph import graph_parameters

    print("graph degree k by targets (tolerated dropouts, colluders), 40-bit security:")
    for targets in ((0.3, 0.1), (0.1, 0.05), (0.05, 0.02)):
        degrees = ", ".join(f"n={n}: k={graph_parameters(n, *targets).degree}" for n in (100, 300, 1000, 3000))
        print(f"  {targets[0]:.0%} dropouts, {targets[1]:.0%} colluders: {degrees}")
    rows = []
    for n in args.peers:
        print(f"• {n} peers ...", file=sys.stderr, flush=True)
        rows.append(one_round(n, args.dim, args.drop, args.dropout_fraction, args.collusion_fraction))
    base = rows[0]
    print()
    print(
        f"SecAgg+ round, dim = {args.dim}, targets {args.dropout_fraction:.0%} dropouts / "
        f"{args.collusion_fraction:.0%} colluders, {args.drop:.0%} of peers drop after sharing keys (times in s)"
    )
    print(
        f"{'peers':>6}{'degree k':>10}{'t':>5}{'dropped':>9}{'host unmask':>13}{'host total':>12}"
        f"{'host/peer ms':>14}{'× of n=' + str(base['n']) + ' per peer':>20}{'peers total':>13}{'max error':>11}"
    )
    for r in rows:
        per_peer = r["host_total"] / r["n"] * 1000
        ratio = (r["host_total"] / r["n"]) / (base["host_total"] / base["n"])
        print(
            f"{r['n']:>6}{r['degree']:>10}{r['threshold']:>5}{r['dropped']:>9}{r['host']['unmask']:>13.2f}"
            f"{r['host_total']:>12.2f}{per_peer:>14.2f}{ratio:>20.2f}{r['peers_s']:>13.1f}{r['error']:>11.1e}"
        )
    print("graph: sparse (Harary, degree k) above 30 peers; a complete graph would have degree n − 1")


if __name__ == "__main__":
    main()
