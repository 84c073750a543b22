"""CKKS recipes: sums within 1e-6, public contexts cannot decrypt, secrets do not pickle, strict parsing."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest

from fedcore.crypto import he
from fedcore.errors import InvalidInput, ProtocolError
from fedcore.secret import SecretLeakError


@pytest.fixture(scope="module")
def sums() -> he.CkksSecretContext:
    return he.CkksSecretContext.generate(he.SUMS)


@pytest.fixture(scope="module")
def dot() -> he.CkksSecretContext:
    return he.CkksSecretContext.generate(he.DOT)


def test_sum_of_20_vectors_within_1e6(sums: he.CkksSecretContext) -> None:
    rng = np.random.default_rng(1)
    n = 2 * sums.params.slots + 123  # three ciphertexts, the last one partial
    plain = [rng.uniform(-1, 1, n) for _ in range(20)]
    pub = sums.public_context()
    # parties encrypt under the public context; the coordinator parses and sums; the key holder decrypts
    wire = [he.encrypt_vector(pub, x).to_bytes() for x in plain]
    parsed = [he.EncryptedVector.from_bytes(pub, w) for w in wire]
    total = he.add(parsed)
    assert len(total.ciphertexts) == 3
    got = he.decrypt_vector(sums, he.EncryptedVector.from_bytes(sums, total.to_bytes()))
    err = np.max(np.abs(got - np.sum(plain, axis=0)))
    assert err < 1e-6, err


def test_large_values_sum(sums: he.CkksSecretContext) -> None:
    x = np.linspace(-1000, 1000, 500)
    total = he.add([he.encrypt_vector(sums, x)] * 20)
    assert np.max(np.abs(he.decrypt_vector(sums, total) - 20 * x)) < 1e-5


def test_public_context_cannot_decrypt(sums: he.CkksSecretContext) -> None:
    pub = he.CkksPublicContext.from_bytes(sums.public_context().serialize())
    ev = he.encrypt_vector(pub, np.ones(10))
    with pytest.raises(he.NoSecretKeyError, match="cannot decrypt"):
        he.decrypt_vector(pub, ev)  # type: ignore[arg-type]
    assert np.allclose(he.decrypt_vector(sums, ev), 1.0, atol=1e-6)


def test_secret_types_refuse_pickle(sums: he.CkksSecretContext) -> None:
    with pytest.raises(SecretLeakError):
        pickle.dumps(sums)
    assert "secret" in repr(sums)


def test_public_serialization_has_no_secret_key_and_fingerprint(sums: he.CkksSecretContext) -> None:
    pub = sums.public_context()
    data = pub.serialize()
    assert pub.fingerprint() == hashlib.sha256(data).hexdigest() == sums.fingerprint()
    assert not pub.has_galois_keys
    parsed = he.CkksPublicContext.from_bytes(data)
    assert parsed.fingerprint() == pub.fingerprint()
    assert parsed.params == he.SUMS
    with pytest.raises(ProtocolError, match="secret key"):
        he.CkksPublicContext.from_bytes(sums.serialize_for_party())
    with pytest.raises(ProtocolError):
        he.CkksSecretContext.from_party_bytes(data)
    assert len(data) < len(sums.serialize_for_party())


def test_secret_context_distribution_round_trip(sums: he.CkksSecretContext) -> None:
    other = he.CkksSecretContext.from_party_bytes(sums.serialize_for_party())
    assert other.fingerprint() == sums.fingerprint()
    x = np.arange(7, dtype=float)
    ev = he.encrypt_vector(sums, x)
    again = he.EncryptedVector.from_bytes(other, ev.to_bytes())
    assert np.allclose(he.decrypt_vector(other, again), x, atol=1e-6)


def test_garbage_contexts_raise_protocol_error(sums: he.CkksSecretContext) -> None:
    good = sums.public_context().serialize()
    bad_inputs = [
        b"",
        b"garbage",
        b"FCKC\x01" + b"\x00" * 20,
        good[:200],
        good[:5] + b"\xff" * 30,
        b"FCKC\x09" + good[5:],
    ]
    for bad in bad_inputs:
        with pytest.raises(ProtocolError):
            he.CkksPublicContext.from_bytes(bad)


def test_encrypted_vector_garbage_raises_protocol_error(sums: he.CkksSecretContext, dot: he.CkksSecretContext) -> None:
    ev = he.encrypt_vector(sums, np.arange(5000, dtype=float))
    data = ev.to_bytes()
    hdr = he._VEC_HEADER.size
    magic, version, fp, count, length = he._VEC_HEADER.unpack_from(data, 0)
    assert (magic, version, count, length) == (b"FCKV", 1, 2, 5000)
    bad_inputs = [
        b"",
        b"garbage" * 10,
        data[:hdr],
        data[:-1],
        data + b"\x00",
        b"XXXX" + data[4:],
        he._VEC_HEADER.pack(magic, 1, fp, 3, length) + data[hdr:],  # count inconsistent with length
        he._VEC_HEADER.pack(magic, 1, fp, 2, 4000) + data[hdr:],  # last ciphertext size mismatch
        data[: hdr + 4] + b"\x00" * 64 + data[hdr + 68 :],  # corrupted ciphertext
        data[:hdr] + struct.pack(">I", 2**31) + data[hdr + 4 :],  # size past the end
    ]
    for bad in bad_inputs:
        with pytest.raises(ProtocolError):
            he.EncryptedVector.from_bytes(sums, bad)
    with pytest.raises(ProtocolError, match="another CKKS context"):
        he.EncryptedVector.from_bytes(dot, data)
    with pytest.raises(ProtocolError):
        he.EncryptedVector.from_bytes(sums, data, max_length=4999)
    assert he.EncryptedVector.from_bytes(sums, data, max_length=5000).length == 5000


def test_empty_vector_and_bad_inputs(sums: he.CkksSecretContext) -> None:
    empty = he.encrypt_vector(sums, np.array([]))
    assert empty.length == 0 and empty.ciphertexts == ()
    assert he.decrypt_vector(sums, he.EncryptedVector.from_bytes(sums, empty.to_bytes())).shape == (0,)
    with pytest.raises(InvalidInput):
        he.encrypt_vector(sums, np.ones((2, 2)))
    with pytest.raises(InvalidInput):
        he.encrypt_vector(sums, np.array([1.0, np.nan]))
    with pytest.raises(InvalidInput):
        he.add([])
    with pytest.raises(InvalidInput):
        he.add([he.encrypt_vector(sums, np.ones(3)), he.encrypt_vector(sums, np.ones(4))])


def test_multiply_plain_dot_and_sums_refuses(sums: he.CkksSecretContext, dot: he.CkksSecretContext) -> None:
    rng = np.random.default_rng(2)
    n = dot.params.slots + 10
    x, w = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    prod = he.multiply_plain(he.encrypt_vector(dot.public_context(), x), w)
    wire = he.EncryptedVector.from_bytes(dot.public_context(), prod.to_bytes())
    got = he.decrypt_vector(dot, wire)
    assert np.max(np.abs(got - x * w)) < 1e-5
    assert np.sum(got) == pytest.approx(float(x @ w), abs=1e-3)
    scaled = he.decrypt_vector(dot, he.multiply_plain(he.encrypt_vector(dot, x), 0.5))
    assert np.max(np.abs(scaled - 0.5 * x)) < 1e-5
    with pytest.raises(InvalidInput, match="spare CKKS level"):
        he.multiply_plain(he.encrypt_vector(sums, x), w)
    with pytest.raises(InvalidInput):
        he.multiply_plain(he.encrypt_vector(dot, x), w[:-1])


def test_decrypt_with_other_context_is_refused(sums: he.CkksSecretContext, dot: he.CkksSecretContext) -> None:
    with pytest.raises(InvalidInput):
        he.decrypt_vector(dot, he.encrypt_vector(sums, np.ones(3)))


def test_add_does_not_mutate_inputs(sums: he.CkksSecretContext) -> None:
    a, b = he.encrypt_vector(sums, np.ones(5)), he.encrypt_vector(sums, 2 * np.ones(5))
    assert np.allclose(he.decrypt_vector(sums, he.add([a, b, a])), 4.0, atol=1e-6)
    assert np.allclose(he.decrypt_vector(sums, a), 1.0, atol=1e-6)
    assert np.allclose(he.decrypt_vector(sums, b), 2.0, atol=1e-6)
    assert he.add([a]) is a
