from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsilo.privacy.secagg import keys as K


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
    for other in (
        K.share_aad(session=b"", round_id=4, src=1, dst=2),
        K.share_aad(session=b"", round_id=3, src=2, dst=1),
    ):
        with pytest.raises(ValueError, match="authentication"):
            K.decrypt(key, nonce, ct, other)


def test_signed_transcripts_bind_keys_job_round_and_lists():
    from fedsilo.privacy.secagg import Ed25519Directory, Ed25519Identity

    me = Ed25519Identity("bank-a", Ed25519PrivateKey.generate())
    directory = Ed25519Directory({"bank-a": me.public_key()})
    t = K.advertise_transcript(
        session=b"s",
        round_id=1,
        node_id=5,
        enc_public_key=b"a" * 32,
        mask_public_key=b"b" * 32,
        seed_commitment=b"c" * 32,
        credential=me.credential,
    )
    sig = me.sign(t)
    assert directory.verify(me.credential, sig, t) == "bank-a"
    with pytest.raises(ValueError, match="signature"):
        directory.verify(me.credential, sig, t.replace(b"a" * 32, b"d" * 32))
    with pytest.raises(ValueError, match="not an admitted"):
        directory.verify(b"bank-b", sig, t)
    lists = K.survivors_transcript(session=b"s", round_id=1, node_id=5, survivors=[5, 7], dropped=[9])
    assert lists == K.survivors_transcript(session=b"s", round_id=1, node_id=5, survivors=[7, 5], dropped=[9])
    others = [
        K.survivors_transcript(session=b"s", round_id=1, node_id=5, survivors=[5, 7, 9], dropped=[]),
        K.survivors_transcript(session=b"s", round_id=2, node_id=5, survivors=[5, 7], dropped=[9]),
        K.survivors_transcript(session=b"t", round_id=1, node_id=5, survivors=[5, 7], dropped=[9]),
        K.survivors_transcript(session=b"s", round_id=1, node_id=7, survivors=[5, 7], dropped=[9]),
    ]
    assert lists not in others and len(set(others)) == 4


def test_public_key_checks():
    K.check_public_key(K.public_bytes(K.generate_key()))
    for bad in (b"short", bytes(32), "not bytes"):
        with pytest.raises(ValueError):
            K.check_public_key(bad)


def test_standard_suite_bytes_are_the_protocol_from_before_suites():
    """Every derivation, commitment, transcript and mask of the standard suite, pinned to what
    the code produced before SecAgg+ took its primitives from a crypto suite."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from fedsilo.privacy.secagg import prg

    s = bytes(range(32))
    out = [
        K.mask_seed(s, session=b"job", round_id=3, u=5, v=2),
        K.share_key(s, session=b"job", round_id=3, src=5, dst=2),
        K.share_aad(session=b"job", round_id=3, src=5, dst=2),
        K.seed_commitment(s, session=b"j", round_id=1, node_id=9),
        K.advertise_transcript(
            session=b"s",
            round_id=1,
            node_id=5,
            enc_public_key=b"a" * 32,
            mask_public_key=b"b" * 32,
            seed_commitment=b"c" * 32,
            credential=b"x",
        ),
        K.survivors_transcript(session=b"s", round_id=1, node_id=5, survivors=[5, 7], dropped=[9]),
        prg.expand(s, prg.LABEL_PAIR_MASK, 1000, 64).tobytes(),
        K.decrypt(s, bytes(12), AESGCM(s).encrypt(bytes(12), b"pt", b"ad"), b"ad"),
        K.shared_secret(K.load_private(s), K.public_bytes(K.load_private(bytes(range(1, 33))))),
    ]
    assert hashlib.sha256(b"".join(out)).hexdigest() == (
        "6ccdaac347b5a550254e7790ca9376d5a98274644d3adf185c77ba704790cbdd"
    )
    assert K.agree(s, K.public_bytes(K.load_private(bytes(range(1, 33))))) == out[-1]
