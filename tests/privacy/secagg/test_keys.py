from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privacy.secagg import keys as K


def test_mask_seed_is_symmetric_and_bound_to_round_and_session():
    a, b = K.generate_key(), K.generate_key()
    sa = K.shared_secret(a, K.public_bytes(b))
    sb = K.shared_secret(b, K.public_bytes(a))
    seed = K.mask_seed(sa, session=b"job", round_id=1, u=1, v=2)
    assert seed == K.mask_seed(sb, session=b"job", round_id=1, u=2, v=1)
    assert seed != K.mask_seed(sa, session=b"job", round_id=2, u=1, v=2)
    assert seed != K.mask_seed(sa, session=b"job2", round_id=1, u=1, v=2)
    # the encryption keys are distinct from the mask seed and directional
    k12 = K.share_key(sa, session=b"job", round_id=1, src=1, dst=2)
    k21 = K.share_key(sa, session=b"job", round_id=1, src=2, dst=1)
    assert len({seed, k12, k21}) == 3


def test_aead_binds_round_and_addresses():
    key = bytes(32)
    aad = K.share_aad(session=b"", round_id=3, src=1, dst=2)
    nonce, ct = K.encrypt(key, b"secret shares", aad)
    assert K.decrypt(key, nonce, ct, aad) == b"secret shares"
    for other in (K.share_aad(session=b"", round_id=4, src=1, dst=2),
                  K.share_aad(session=b"", round_id=3, src=2, dst=1)):
        with pytest.raises(ValueError, match="authentication"):
            K.decrypt(key, nonce, ct, other)


def test_signing_hook():
    ident = Ed25519PrivateKey.generate()
    t = K.advertise_transcript(session=b"s", round_id=1, node_id=5, enc_public_key=b"a" * 32,
                               mask_public_key=b"b" * 32, seed_commitment=b"c" * 32)
    sig = K.sign(ident, t)
    assert K.verify(ident.public_key(), sig, t)
    assert not K.verify(ident.public_key(), sig, t.replace(b"a" * 32, b"d" * 32))
    assert not K.verify(Ed25519PrivateKey.generate().public_key(), sig, t)


def test_public_key_checks():
    K.check_public_key(K.public_bytes(K.generate_key()))
    for bad in (b"short", bytes(32), "not bytes"):
        with pytest.raises(ValueError):
            K.check_public_key(bad)
