import datetime as dt
import pickle

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcore.crypto.pki import (
    CertificateAuthority,
    PrivateKey,
    cert_info,
    csr_name,
    key_matches_cert,
    make_csr,
)
from fedcore.errors import InvalidInput
from fedcore.secret import SecretLeakError


@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority.create()


def test_csr_is_signed_into_a_client_certificate(ca):
    key = PrivateKey.generate()
    name, pem = ca.sign_csr(make_csr(key, "yixin"))
    info = ca.verify_issued(pem)
    assert name == info.name == "yixin"
    assert key_matches_cert(key, pem)
    cert = x509.load_pem_x509_certificate(pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_certificate_names_its_hosts(ca):
    key = PrivateKey.generate()
    pem = ca.issue("coordinator", key.public_key(), server_hosts=("127.0.0.1", "fed.example"))
    san = (
        x509.load_pem_x509_certificate(pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert "fed.example" in san.get_values_for_type(x509.DNSName)
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_tampered_csr_is_rejected(ca):
    key, other = PrivateKey.generate(), PrivateKey.generate()
    # A CSR for "yixin" whose self-signature was made with a different key than the one it carries.
    good = x509.load_pem_x509_csr(make_csr(key, "yixin"))
    forged = (
        x509.CertificateSigningRequestBuilder().subject_name(good.subject).sign(other.raw, hashes.SHA256())
    )
    der = bytearray(forged.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # break the signature
    bad_pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + __import__("base64").encodebytes(bytes(der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(InvalidInput):
        ca.sign_csr(bad_pem, source="bad.csr")


def test_csr_with_invalid_name_is_rejected():
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Evil Corp/admin")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(InvalidInput, match=r"x\.csr: name"):
        csr_name(csr, "x.csr")
    with pytest.raises(InvalidInput, match="not a PEM certificate signing request"):
        csr_name(b"garbage", "y.csr")


def test_certificate_from_another_ca_is_not_verified(ca):
    other = CertificateAuthority.create()
    _, pem = other.sign_csr(make_csr(PrivateKey.generate(), "meili"))
    with pytest.raises(InvalidInput, match="not issued by this federation's CA"):
        ca.verify_issued(pem)


def test_injectable_time_makes_expired_certificates(ca):
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    _, pem = ca.sign_csr(make_csr(PrivateKey.generate(), "uxin"), now=past, valid_days=1)
    assert cert_info(pem).not_after < dt.datetime.now(dt.UTC)


def test_secret_material_refuses_pickling_and_hides_in_repr(ca):
    key = PrivateKey.generate()
    for secret in (key, ca):
        with pytest.raises(SecretLeakError):
            pickle.dumps(secret)
        assert "secret" in repr(secret) and "BEGIN" not in repr(secret)


def test_key_file_is_private(tmp_path):
    key = PrivateKey.generate()
    key.save(tmp_path / "k" / "party.key")
    assert (tmp_path / "k" / "party.key").stat().st_mode & 0o777 == 0o600
    assert key_matches_cert(
        PrivateKey.load(tmp_path / "k" / "party.key"),
        CertificateAuthority.create().issue("abc", key.public_key()),
    )
