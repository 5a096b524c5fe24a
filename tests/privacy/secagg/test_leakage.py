"""What the server sees of one peer: uniform noise, useless for reconstruction attacks."""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

from fedsilo.privacy.audit.reconstruction import invert_linear_layer
from fedsilo.privacy.secagg import SecAggConfig

from ._harness import Harness, deterministic_keys

BINS = 64


def _bins(values: np.ndarray, modulus_bits: int) -> np.ndarray:
    idx = (values >> np.uint64(modulus_bits - 6)).astype(np.int64)  # 64 equal bins of Z_M
    return np.bincount(idx, minlength=BINS)


def _capture_uploads(h: Harness) -> dict:
    uploads = {}
    h.advertise()
    h.share()
    h.mask(tamper=lambda u, m: uploads.setdefault(u, m))
    return uploads


def test_masked_upload_is_uniform_while_plaintext_encoding_is_not(monkeypatch):
    deterministic_keys(monkeypatch, seed=3)
    h = Harness(5, dim=20_000, seed=12)
    uploads = _capture_uploads(h)
    enc = h.server.encoder
    u = h.nodes[0]
    masked = uploads[u].masked
    p_masked = chisquare(_bins(masked, enc.modulus_bits)).pvalue
    plain = enc.encode(h.inputs[u], h.weights[u] / h.config.max_weight)
    p_plain = chisquare(_bins(plain, enc.modulus_bits)).pvalue
    assert p_masked > 1e-3, p_masked
    assert p_plain < 1e-12, p_plain


def _linear_layer_update(rng, n_in=400, n_out=3):
    """One SGD step on y = Wx + b with batch size 1 (squared loss): dW = g x^T, db = g."""
    W = rng.normal(0, 0.05, (n_out, n_in))
    b = rng.normal(0, 0.05, n_out)
    x = rng.uniform(0, 1, n_in)
    target = rng.normal(0, 1, n_out)
    g = (W @ x + b) - target
    dW, db = np.outer(g, x), g
    scale = 0.9 / max(np.abs(dW).max(), np.abs(db).max())  # fit the clip range exactly
    return x, np.concatenate([dW.ravel(), db]) * scale, n_out, n_in


def test_reconstruction_attack_works_on_plaintext_and_fails_on_masked_upload(monkeypatch):
    deterministic_keys(monkeypatch, seed=4)
    rng = np.random.default_rng(0)
    x, update, n_out, n_in = _linear_layer_update(rng)

    # control: the plaintext update gives the private example back exactly
    assert np.max(np.abs(invert_linear_layer(update, n_out, n_in) - x)) < 1e-9

    cfg = SecAggConfig(clip=1.0, bits=24, max_weight=1.0)
    h = Harness(5, dim=update.size, config=cfg, seed=4)
    target = h.nodes[2]
    h.inputs[target] = update
    h.weights[target] = 1.0
    enc = h.server.encoder

    # the fixed-point encoding alone does not protect: decoding it and inverting works
    decoded, _ = enc.decode_sum(enc.encode(update, 1.0), 1)
    assert np.corrcoef(invert_linear_layer(decoded, n_out, n_in), x)[0, 1] > 0.999

    # what the server holds of this peer: its masked upload; decode it as if it were plain
    masked = _capture_uploads(h)[target].masked
    guess_update = enc.centered_integers(masked)[:-1] / enc.scale - enc.clip  # decode as if plain
    for i in range(n_out):  # every row the attacker could try
        dW_i = guess_update[i * n_in : (i + 1) * n_in]
        guess = dW_i / guess_update[n_out * n_in + i]
        assert abs(np.corrcoef(guess, x)[0, 1]) < 0.2  # vs > 0.999 on the plaintext
        assert np.linalg.norm(guess - x) > 0.5 * np.linalg.norm(x)  # no better than noise

    # and the protocol still delivers the right aggregate
    result = h.unmask()
    h.check_exact(result)


def test_dropped_peer_whose_upload_arrived_stays_hidden_by_its_self_mask(monkeypatch):
    """A peer dropped after uploading: the server gets s_v, strips every pairwise mask,
    and still sees uniform noise, because b_v is never revealed alongside s_v."""
    import dataclasses

    from fedsilo.privacy.secagg import keys as K
    from fedsilo.privacy.secagg import shamir
    from fedsilo.privacy.secagg.prg import LABEL_PAIR_MASK, add_mask

    deterministic_keys(monkeypatch, seed=5)
    h = Harness(10, dim=20_000, seed=13)
    h.advertise()
    h.share()
    v, accuser = h.nodes[1], h.nodes[4]
    enc = h.requests[accuser].shares[v]  # the relay corrupts one ciphertext from v ...
    h.requests[accuser].shares[v] = dataclasses.replace(enc, ciphertext=bytes(len(enc.ciphertext)))
    uploads = {}
    h.mask(tamper=lambda u, m: uploads.setdefault(u, m))  # ... so v is dropped after uploading
    answers = {}
    result = h.unmask(tamper=lambda u, m: answers.setdefault(u, m))
    assert v in result.dropped and v in uploads
    h.check_exact(result)

    assert all(v not in a.seed_shares for a in answers.values())  # never b_v and s_v together
    holders = sorted(u for u, a in answers.items() if v in a.key_shares)[: h.server.threshold]
    raw = shamir.reconstruct(
        [shamir.point_of(u) for u in holders], [[shamir.share_from_bytes(answers[u].key_shares[v])] for u in holders]
    )[0]
    s_v = K.load_private(raw.to_bytes(32, "big"))
    y = uploads[v].masked.copy()
    for w in sorted(set(h.nodes) - {v}):  # v got everyone's shares, so it masked with all
        secret = K.shared_secret(s_v, h.server._adverts[w].mask_public_key)
        seed = K.mask_seed(secret, session=b"", round_id=h.server.round_id, u=v, v=w)
        add_mask(y, seed, LABEL_PAIR_MASK, subtract=w > v)
    y &= h.server.encoder.mask
    k = h.server.encoder.modulus_bits
    assert chisquare(_bins(y, k)).pvalue > 1e-3  # what remains is PRG(b_v): uniform
    plain = h.server.encoder.encode(h.inputs[v], h.weights[v] / h.config.max_weight)
    assert np.mean(y == plain) < 0.01
