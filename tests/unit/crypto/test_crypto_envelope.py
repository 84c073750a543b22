"""Envelope keys: storage, permissions, no pickling, public key parsing (sealing: test_sealing.py)."""

from __future__ import annotations

import hashlib
import pickle
import stat
from pathlib import Path

import pytest

from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey
from fedcore.errors import InvalidInput
from fedcore.secret import SecretLeakError


def test_key_save_load_permissions_and_pickle(tmp_path: Path) -> None:
    k = EnvelopePrivateKey.generate()
    path = tmp_path / "keys" / "envelope.pem"
    k.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = EnvelopePrivateKey.load(path)
    assert loaded.public_key() == k.public_key()
    path.chmod(0o644)
    with pytest.raises(InvalidInput):
        EnvelopePrivateKey.load(path)
    with pytest.raises(InvalidInput):
        EnvelopePrivateKey.load(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"junk")
    junk.chmod(0o600)
    with pytest.raises(InvalidInput):
        EnvelopePrivateKey.load(junk)
    with pytest.raises(SecretLeakError):
        pickle.dumps(k)
    assert "secret" in repr(k)


def test_public_key_bytes_and_fingerprint() -> None:
    pub = EnvelopePrivateKey.generate().public_key()
    raw = pub.to_bytes()
    assert len(raw) == 32
    again = EnvelopePublicKey.from_bytes(raw)
    assert again == pub and hash(again) == hash(pub)
    assert pub.fingerprint() == "sha256:" + hashlib.sha256(raw).hexdigest()
    for bad in (b"", raw[:31], bytes(32), (1).to_bytes(32, "little")):
        with pytest.raises(InvalidInput):
            EnvelopePublicKey.from_bytes(bad)
