"""The federation's PKI: a CA held by the coordinator, keys made where they are used, CSRs, certificates.

Recipes, not primitives: callers never touch ``cryptography`` objects directly.

- A party runs :func:`PrivateKey.generate` and :func:`make_csr` on its own machine; only the CSR leaves.
- The admin's :class:`CertificateAuthority` signs it (:meth:`CertificateAuthority.sign_csr`), checking the
  CSR's signature and the name in it. Party certificates carry ``clientAuth`` only; the coordinator's carries
  ``serverAuth`` with its host names.
- A certificate names its holder in the subject common name; the holder's role lives in the coordinator's
  registry, not in the certificate, so a role change needs no re-issue.
- Revocation is by serial number in the coordinator's registry, checked on every call (gRPC's Python API
  takes no CRL).

Time is injectable (``now=``) so that tests can issue expired certificates. Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.messages import check_name
from fedcore.secret import Secret, write_private_file

DEFAULT_VALID_DAYS = 365


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PrivateKey(Secret):
    """An ECDSA P-256 private key. Leaves the process only through the explicitly named methods."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load(cls, path: Path) -> PrivateKey:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"private key file {path} does not exist") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise InvalidInput(f"{path} is not a PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidInput(f"{path} is not an EC private key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the key to ``path`` readable by its owner only."""
        write_private_file(path, self.pem_for_local_tls())

    def pem_for_local_tls(self) -> bytes:
        """The PEM bytes, for handing to this process's own TLS stack (gRPC wants PEM)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def raw(self) -> ec.EllipticCurvePrivateKey:
        return self._key


@dataclass(frozen=True)
class CertInfo:
    name: str
    serial: str  # hex
    fingerprint: str  # sha256 hex of the DER
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str


def load_cert(pem: bytes, source: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise InvalidInput(f"{source} is not a PEM certificate") from None


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def cert_info(pem: bytes, source: str = "certificate") -> CertInfo:
    cert = load_cert(pem, source)
    return CertInfo(
        name=_common_name(cert.subject),
        serial=format(cert.serial_number, "x"),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer=_common_name(cert.issuer),
    )


def make_csr(key: PrivateKey, name: str) -> bytes:
    """A PEM certificate signing request for ``name``, signed by ``key``."""
    check_name(name)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key.raw, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_name(csr_pem: bytes, source: str = "CSR") -> str:
    """The validated name in a CSR whose self-signature checks out."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidInput(f"{source} is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise InvalidInput(f"{source}: signature does not verify")
    name = _common_name(csr.subject)
    if not name:
        raise InvalidInput(f"{source}: no common name in the subject")
    return check_name(name, f"{source}: name")


class CertificateAuthority(Secret):
    """The federation CA (held by the coordinator admin)."""

    __slots__ = ("_cert", "_key")

    def __init__(self, key: PrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self._cert = cert

    @classmethod
    def create(
        cls, name: str = "fedcredit-ca", valid_days: int = 3650, now: dt.datetime | None = None
    ) -> CertificateAuthority:
        now = now or _utcnow()
        key = PrivateKey.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key.raw, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> CertificateAuthority:
        if not cert_path.is_file():
            raise NotFound(f"CA certificate {cert_path} does not exist")
        return cls(PrivateKey.load(key_path), load_cert(cert_path.read_bytes(), str(cert_path)))

    def save(self, key_path: Path, cert_path: Path) -> None:
        self._key.save(key_path)
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(self.cert_pem())

    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        server_hosts: tuple[str, ...] = (),
        valid_days: int = DEFAULT_VALID_DAYS,
        now: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> bytes:
        """Issue a certificate for ``name``. With ``server_hosts`` it is a server certificate
        (serverAuth, SANs for those hosts and ``name``), else a client certificate (clientAuth)."""
        check_name(name)
        now = now or _utcnow()
        end = not_after or now + dt.timedelta(days=valid_days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now - dt.timedelta(minutes=5), end - dt.timedelta(minutes=1)))
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if server_hosts:
            sans: list[x509.GeneralName] = [x509.DNSName(name)]
            for host in server_hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            usage = [ExtendedKeyUsageOID.SERVER_AUTH]
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return builder.sign(self._key.raw, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        source: str = "CSR",
        valid_days: int = DEFAULT_VALID_DAYS,
        now: dt.datetime | None = None,
    ) -> tuple[str, bytes]:
        """Check a party's CSR and issue its client certificate. Returns (name, certificate PEM)."""
        name = csr_name(csr_pem, source)
        csr = x509.load_pem_x509_csr(csr_pem)
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidInput(f"{source}: key must be an EC key")
        return name, self.issue(name, public_key, valid_days=valid_days, now=now)

    def verify_issued(self, cert_pem: bytes, source: str = "certificate") -> CertInfo:
        """Check that ``cert_pem`` was signed by this CA; return its info."""
        cert = load_cert(cert_pem, source)
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            raise InvalidInput(f"{source} was not issued by this federation's CA") from None
        return cert_info(cert_pem, source)


def key_matches_cert(key: PrivateKey, cert_pem: bytes) -> bool:
    cert = load_cert(cert_pem)
    pub = cert.public_key()
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        pub.public_bytes(serialization.Encoding.DER, fmt)
        == key.public_key().public_bytes(serialization.Encoding.DER, fmt)
    )


# ---- signed statements between parties (bound to their certificates) ------------------------------


def _statement(context: str, name: str, data: bytes) -> bytes:
    return b"fedcredit/statement/v1\x00" + context.encode() + b"\x00" + name.encode() + b"\x00" + data


def sign_statement(key: PrivateKey, context: str, name: str, data: bytes) -> bytes:
    """Sign ``data`` as ``name`` for ``context`` (e.g. "envelope-key") with the party's TLS key."""
    return key.raw.sign(_statement(context, name, data), ec.ECDSA(hashes.SHA256()))


@functools.lru_cache(maxsize=256)
def _issued_by(ca_pem: bytes, cert_pem: bytes, expected_name: str) -> tuple[CertInfo, object]:
    """``cert_pem``'s details and public key once its CA signature checks out (remembered: a pre-approval
    opens one sealed offer per lender, each signed under the same certificates). Validity dates and the
    statement's own signature are checked on every call; a failure is not remembered."""
    ca = load_cert(ca_pem, "CA certificate")
    cert = load_cert(cert_pem, f"certificate of {expected_name!r}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidInput(f"certificate presented for {expected_name!r} is not from this federation's CA") from None
    return cert_info(cert_pem), cert.public_key()


def verify_statement(
    ca_pem: bytes, cert_pem: bytes, expected_name: str, context: str, data: bytes, signature: bytes
) -> None:
    """Check that ``cert_pem`` is ``expected_name``'s valid certificate from our CA and that it signed ``data``.

    Raises InvalidInput (one message per cause) otherwise.
    """
    info, pub = _issued_by(ca_pem, cert_pem, expected_name)
    if info.name != expected_name:
        raise InvalidInput(f"certificate presented for {expected_name!r} names {info.name!r}")
    now = _utcnow()
    if not info.not_before <= now <= info.not_after:
        raise InvalidInput(f"certificate of {expected_name!r} is not valid now")
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise InvalidInput(f"certificate of {expected_name!r} does not hold an EC key")
    try:
        pub.verify(signature, _statement(context, expected_name, data), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InvalidInput(f"{context} statement of {expected_name!r} has a bad signature") from None
