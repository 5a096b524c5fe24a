"""Vertical boosting on UCI: the DP coded scheme against a SecureBoost-style Paillier scheme (issue 20 item 5).

The issue-18 split (bench/vertical.py): the broker holds the label, demographics and three
payment amounts; the bank the repayment statuses, bill amounts, limit and three more
payments; 60% of the broker's customers are also the bank's (PSI). For each seed, on the
held-out shared customers, with the same trees, depth, bins and learning rate:

(a) DP coded GBDT: the bank releases each shared customer's delinquency code once by
    4-ary randomized response at ε (`fedsilo simulate --setup vertical --model gbdt`'s code,
    `fedsilo.simulations.vertical_gbdt.train_coded`); the broker boosts on its columns + codes;
(b) SecureBoost (bench/_secureboost.py): Paillier-encrypted gradients, encrypted per-bin
    sums from the bank. It is lossless, so on the full data its model is (d)'s; that is
    *checked* on a subsample of ``--sb-rows`` shared training customers (same trees as the
    plaintext centralized GBDT on that subsample, same held-out scores), where its time
    per tree is measured at ``--key-bits`` and extrapolated to the full training set from
    the measured per-operation costs and the full set's operation counts;
(a') the same with the codes sent in the clear (what the coarse code costs, apart from DP);
(c) the broker alone (its columns, all its training customers, no DP);
(d) a centralized non-private GBDT on both parties' columns of the shared training customers.

Printed: AUC means ± standard errors over seeds, seconds per tree (provisional: a
loaded 2-core machine; ratios in this run), bytes on the wire per party for training,
and phe's own API costs per operation next to the raw-integer path the protocol uses.

    python bench/vertical_gbdt.py --data ../shared/data/UCI_Credit_Card.csv [--seeds 0 1 2] [--sb-rows 400]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from _secureboost import SecureBoost, phe_api_costs

from fedsilo.peers.data.bank import TEST
from fedsilo.peers.gbdt import layout_from_encoder
from fedsilo.peers.vertical.parties import SplitSpec
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.vertical import DEFAULT_OVERLAP, HOLDER, PARTY, _auc, build_parties, pooled_table
from fedsilo.simulations.vertical_gbdt import (
    boost_settings,
    coded_parties,
    fit,
    joined_layout,
    train_coded,
)
from fedsilo.strategies.gbdt import TreeParams


def _stat(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return f"{a.mean():.4f} ± {se:.4f}"


def _timed_fit(x, y, layout, settings) -> tuple[object, float]:
    started = time.perf_counter()
    model = fit(x, y.astype(np.float64), layout, settings)
    return model, (time.perf_counter() - started) / max(1, len(model.trees))


def one_seed(args, seed: int) -> dict:
    config = SimulationConfig(
        setup="vertical",
        scenario="uci",
        data=args.data,
        model="gbdt",
        seed=seed,
        epsilon=args.epsilon,
        trees=args.trees,
        depth=args.depth,
        bins=args.bins,
        lr=args.lr,
        features_per_tree=0,
    )
    parties = build_parties(pooled_table(config), config, SplitSpec("logreg", (), 4), None, None, DEFAULT_OVERLAP)
    holder = parties.holder
    train, test = holder.train_index, holder.test_index
    y = holder.y.numpy()
    settings = boost_settings(config)
    out: dict = {}
    bank, receiver = coded_parties(parties, config)
    _, scores, figures = train_coded(parties, bank, receiver, config)
    out["coded"] = {
        "auc": _auc(scores, y[test]),
        "seconds_per_tree": figures["seconds_per_tree"],
        "bytes_training": figures["bytes_training_exchange"],
        "once": figures["seconds_exchange"],
    }
    plain_config = replace(config, dp_mode="off")
    bank, receiver = coded_parties(parties, plain_config)
    _, scores, _ = train_coded(parties, bank, receiver, plain_config)
    out["coded_plain"] = {"auc": _auc(scores, y[test]), "seconds_per_tree": figures["seconds_per_tree"]}
    sides = np.asarray(parties.alignment.holder_sides)
    alone_train = np.flatnonzero(sides != TEST)
    own_layout = layout_from_encoder(parties.encoders[HOLDER], config.bins)
    alone, per_tree = _timed_fit(parties.broker_x[alone_train], parties.broker_y[alone_train], own_layout, settings)
    test_rows = parties.joint[test]
    out["alone"] = {
        "auc": _auc(alone.predict_margin(parties.broker_x[test_rows]), y[test]),
        "seconds_per_tree": per_tree,
    }
    positions = holder.links[0].positions
    joined = np.hstack([parties.broker_x[parties.joint], parties.bank_x_aligned[positions]])
    layout = joined_layout(parties, config.bins)
    central, per_tree = _timed_fit(joined[train], y[train], layout, settings)
    out["central"] = {"auc": _auc(central.predict_margin(joined[test]), y[test]), "seconds_per_tree": per_tree}
    out["rows_train"], out["layout"] = len(train), layout
    if seed == args.seeds[0] and args.sb_rows > 0:
        out["secureboost"] = secureboost(args, parties, joined, layout, train, test, y, config)
    return out


def secureboost(args, parties, joined, layout, train, test, y, config) -> dict:
    """SecureBoost on the first ``--sb-rows`` shared training customers, checked against the plaintext GBDT."""
    own_layout = layout_from_encoder(parties.encoders[HOLDER], config.bins)
    bank_layout = layout_from_encoder(parties.encoders[PARTY], config.bins)
    g_own = len(own_layout.groups)
    sub = train[: args.sb_rows]
    bins = layout.bin_rows(joined)
    params = TreeParams(depth=args.depth)
    sb = SecureBoost(
        bins[sub, :g_own], own_layout, bins[sub, g_own:], bank_layout, layout, args.key_bits, crt=not args.phe_encrypt
    )
    sb.fit(y[sub].astype(np.float64), args.sb_trees, params, args.lr)
    settings = replace(boost_settings(config), trees=args.sb_trees, params=params)
    plain = fit(joined[sub], y[sub].astype(np.float64), layout, settings)
    same = sum(
        np.array_equal(a.state, b.state)
        and np.array_equal(a.group, b.group)
        and np.array_equal(a.threshold, b.threshold)
        for a, b in zip(sb.trees, plain.trees, strict=True)
    )
    sb_scores = sb.predict_margin(bins[test, :g_own], bins[test, g_own:])
    plain_scores = plain.predict_margin(joined[test])
    c = sb.costs
    t_enc, t_add, t_dec = (
        c.seconds_encrypt / c.encryptions,
        c.seconds_add / c.additions,
        c.seconds_decrypt / c.decryptions,
    )
    n_full, trees = len(train), args.sb_trees
    # full-size counts per tree: 2 ciphertexts per row; each level adds every row once per bank group, twice;
    # decryptions: 2 per (open node, bank bin): the same node counts as on the subsample (same depth)
    adds_full = 2 * n_full * len(bank_layout.groups) * args.depth
    dec_per_tree = c.decryptions / trees
    plain_per_tree_full = c.seconds_plain / trees * n_full / len(sub)
    extrapolated = 2 * n_full * t_enc + adds_full * t_add + dec_per_tree * t_dec + plain_per_tree_full
    bytes_full = 2 * n_full * sb.cipher_bytes + args.depth * n_full + (c.bytes_to_broker / trees)
    return {
        "rows": len(sub),
        "trees": trees,
        "same_trees": int(same),
        "max_score_difference": float(np.abs(sb_scores - plain_scores).max()),
        "auc_sub": _auc(sb_scores, y[test]),
        "plain_auc_sub": _auc(plain_scores, y[test]),
        "seconds_per_tree_measured": float(np.mean(c.per_tree)),
        "seconds_keygen": sb.seconds_keygen,
        "us": {"encrypt": 1e6 * t_enc, "add": 1e6 * t_add, "decrypt": 1e6 * t_dec},
        "seconds_per_tree_full": extrapolated,
        "bytes_per_tree_sub": (c.bytes_to_bank + c.bytes_to_broker) / trees,
        "bytes_per_tree_full": bytes_full,
        "rows_full": n_full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--bins", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--sb-rows", type=int, default=400, help="SecureBoost subsample (0: skip SecureBoost)")
    parser.add_argument("--sb-trees", type=int, default=2)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--phe-encrypt", action="store_true", help="encrypt with phe's raw_encrypt, not the CRT path")
    parser.add_argument("--phe-ops", type=int, default=100, help="operations timed through phe's own API")
    args = parser.parse_args()
    results = [one_seed(args, s) for s in args.seeds]
    print(
        f"\nUCI vertical (broker | bank), {args.trees} trees of depth {args.depth}, {args.bins} bins, lr {args.lr}, "
        f"ε = {args.epsilon} for the bank's codes, seeds {args.seeds}; {results[0]['rows_train']:,} shared training "
        "customers (seed 0). ROC-AUC on held-out shared customers (mean ± s.e.):"
    )
    arms = (
        ("coded", "(a) DP coded GBDT"),
        ("coded_plain", "    coded, codes without DP"),
        ("alone", "(c) broker alone"),
        ("central", "(d) centralized"),
    )
    for key, name in arms:
        aucs = [r[key]["auc"] for r in results]
        per_tree = [r[key]["seconds_per_tree"] for r in results]
        print(f"  {name:28s} AUC {_stat(aucs)}   s/tree {np.median(per_tree):.4f} (median)")
    central = [r["central"]["auc"] for r in results]
    print(
        f"  (b) SecureBoost (lossless)   AUC = (d) {_stat(central)} on the full data (checked on the subsample below)"
    )
    coded = results[0]["coded"]
    print(
        f"  (a) bytes, training exchange (seed 0): {coded['bytes_training']:,} once; code exchange {coded['once']:.3f} s"
    )
    sb = results[0].get("secureboost")
    if sb:
        print(
            f"\nSecureBoost, Paillier {args.key_bits} bits, {sb['rows']} rows, {sb['trees']} trees of depth {args.depth} "
            f"(seed {args.seeds[0]}): trees equal to the plaintext GBDT's: {sb['same_trees']}/{sb['trees']}; "
            f"max |score difference| {sb['max_score_difference']:.2e}; AUC {sb['auc_sub']:.4f} vs plaintext "
            f"{sb['plain_auc_sub']:.4f} on the same held-out customers"
        )
        us = sb["us"]
        print(
            f"  measured: {sb['seconds_per_tree_measured']:.1f} s/tree; key generation {sb['seconds_keygen']:.1f} s; "
            f"µs per op: encrypt {us['encrypt']:.0f}, add {us['add']:.1f}, decrypt {us['decrypt']:.0f}; "
            f"{sb['bytes_per_tree_sub'] / 1e6:.2f} MB/tree"
        )
        full = sb["seconds_per_tree_full"]
        print(
            f"  extrapolated to {sb['rows_full']:,} rows: {full:.0f} s/tree, {args.trees} trees {full * args.trees / 3600:.2f} h; "
            f"{sb['bytes_per_tree_full'] / 1e6:.1f} MB/tree"
        )
        coded_total = coded["seconds_per_tree"] * args.trees + coded["once"]
        print(
            f"  ratio, training {args.trees} trees: SecureBoost (extrapolated) / DP coded = "
            f"{full * args.trees / coded_total:,.0f}×; bytes {sb['bytes_per_tree_full'] * args.trees / coded['bytes_training']:,.0f}×"
        )
        if args.phe_ops > 0:
            api = phe_api_costs(args.key_bits, args.phe_ops)
            print(
                f"  phe's own API, µs per op: encrypt {api['encrypt_us']:.0f} (raw_encrypt {api['raw_encrypt_us']:.0f}), "
                f"add {api['add_us']:.1f}, "
                f"decrypt {api['decrypt_us']:.0f} (the protocol: CRT or raw_encrypt, raw_decrypt, gmpy2 products)"
            )


if __name__ == "__main__":
    main()
