"""Gatehouse's device certificate authority: issues the short-lived certificates enrolled laptops present.

Owns: DeviceCA, IssuedCertificate, CsrError, DeviceCaError, create_device_ca, device_ca_problems, fingerprint_of.
Must not import: aiohttp, gateway.store, gateway.app (the enrollment API calls ``issue`` and records the result).

A certificate names exactly one device: subject CN = the serial (O = Gatehouse device), one SAN URI
``urn:device:serial:<SERIAL>``, nothing else a reader could take for a second serial (whatever the
CSR asked for, only its public key is used). EKU clientAuth, KeyUsage digitalSignature, a random
128-bit serial number, valid from five minutes before ``now`` (clock skew) for ``validity_days``,
never beyond the CA's own end of validity.

Rotation: ``previous`` CA certificates stay trusted by the TLS listeners (``trusted_pem``) until
they expire themselves, so the certificates they issued keep working until those expire (at most
``validity_days`` after the rotation); only the current CA issues.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import Problem
from gateway.config.identity import DeviceCaSettings
from gateway.identity.device import SAN_PREFIX, valid_serial

CLOCK_SKEW = timedelta(minutes=5)
CA_LIFETIME = timedelta(days=3650)
DEVICE_ORGANIZATION = "Gatehouse device"
MIN_RSA_BITS = 2048


class CsrError(ValueError):
    """A certificate signing request cannot be used; the message names what is wrong."""


class DeviceCaError(ValueError):
    """The configured device CA cannot be used (file unreadable, not a CA, key does not match, expired)."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A device certificate just issued, as the enrollment API returns and records it."""

    pem_chain: str
    """The leaf then the device CA certificate, PEM."""
    fingerprint: str
    """SHA-256 of the leaf's DER, lowercase hex."""
    serial: str
    owner: str
    not_before: datetime
    not_after: datetime


def fingerprint_of(der: bytes) -> str:
    """The fingerprint Gatehouse records and looks certificates up by: SHA-256 of the DER, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class DeviceCA:
    """The current CA (certificate and key) and the previous CA certificates still trusted."""

    def __init__(
        self, cert: x509.Certificate, key: CaKey, *, validity: timedelta, previous: tuple[x509.Certificate, ...] = (),
    ) -> None:
        self.cert = cert
        self._key = key
        self.validity = validity
        self.previous = previous

    @classmethod
    def from_settings(cls, settings: DeviceCaSettings, *, now: datetime) -> DeviceCA:
        """Load the configured CA; previous CAs that have expired themselves are left out (they vouch for nothing).

        Raises:
            DeviceCaError: every problem ``device_ca_problems`` finds, joined.
        """
        problems = device_ca_problems(settings, now=now)
        if problems:
            raise DeviceCaError("; ".join(str(p) for p in problems))
        cert = x509.load_pem_x509_certificate(settings.cert.read_bytes())
        key = serialization.load_pem_private_key(settings.key.reveal().encode(), password=None)
        previous = tuple(
            c for c in (x509.load_pem_x509_certificate(p.read_bytes()) for p in settings.previous) if c.not_valid_after_utc > now
        )
        return cls(cert, key, validity=timedelta(days=settings.validity_days), previous=previous)  # type: ignore[arg-type]

    def trusted_pem(self) -> str:
        """The CA certificates a TLS listener trusts for device certificates: current, then previous."""
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (self.cert, *self.previous))

    def issue(self, csr_pem: bytes, *, serial: str, owner: str, now: datetime) -> IssuedCertificate:
        """Sign a device certificate for ``serial`` with the CSR's public key.

        Raises:
            CsrError: the CSR is not PEM, its signature does not verify, or its key is not EC P-256 or RSA of 2048 bits or more;
                the serial is not a plausible hardware serial; the owner is empty.
        """
        if valid_serial(serial) is None:
            raise CsrError(f"serial `{serial[:64]}` is not a hardware serial; expected letters, digits, `.` `_` `:` `-`, at most 128")
        if not owner:
            raise CsrError("no owner; a device certificate is issued to the signed-in user who enrolls")
        public_key = _csr_public_key(csr_pem)
        not_before = now - CLOCK_SKEW
        not_after = min(now + self.validity, self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, serial),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEVICE_ORGANIZATION),
            ]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)  # positive, at most 128 bits
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"{SAN_PREFIX}{serial}")]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        leaf = builder.sign(self._key, hashes.SHA256())
        pem = leaf.public_bytes(serialization.Encoding.PEM).decode() + self.cert.public_bytes(serialization.Encoding.PEM).decode()
        return IssuedCertificate(
            pem_chain=pem, fingerprint=fingerprint_of(leaf.public_bytes(serialization.Encoding.DER)), serial=serial, owner=owner,
            not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        )


def _csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except (ValueError, TypeError):
        raise CsrError("the CSR is not a PEM certificate signing request; send `-----BEGIN CERTIFICATE REQUEST-----` ...") from None
    try:
        public_key = csr.public_key()
        signed = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        raise CsrError("the CSR's key or signature cannot be read; make an EC P-256 key and sign the CSR with it") from None
    if not signed:
        raise CsrError("the CSR's signature does not verify with its own key; sign the CSR with the key it carries")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise CsrError(f"the CSR's key is on curve `{public_key.curve.name}`; use EC P-256 (secp256r1)")
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CsrError(f"the CSR's RSA key has {public_key.key_size} bits; use EC P-256 or RSA of at least {MIN_RSA_BITS} bits")
        return public_key
    raise CsrError(f"the CSR's key is {type(public_key).__name__.removeprefix('_')}; use EC P-256 or RSA of at least {MIN_RSA_BITS} bits")


def device_ca_problems(settings: DeviceCaSettings, *, now: datetime) -> tuple[Problem, ...]:
    """Every problem with the configured device CA files (empty when they are usable), for `check-config` and startup."""
    where = "identity.device.ca"
    problems: list[Problem] = []
    cert = _load_ca_cert(settings.cert, f"{where}.cert", problems, now=now, expired_is_problem=True)
    try:
        key = serialization.load_pem_private_key(settings.key.reveal().encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        problems.append(Problem(f"{where}.key", "is not an unencrypted PEM private key; write the key `gatehouse device-ca create` made"))
        key = None
    if key is not None and not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        problems.append(Problem(f"{where}.key", "is neither an EC nor an RSA key; make one with `gatehouse device-ca create`"))
    elif key is not None and cert is not None and key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        problems.append(Problem(f"{where}.key", f"does not belong to the certificate `{settings.cert}`; configure the pair's own key"))
    for index, path in enumerate(settings.previous):
        _load_ca_cert(path, f"{where}.previous[{index}]", problems, now=now, expired_is_problem=False)
    return tuple(problems)


def _load_ca_cert(path: Path, where: str, problems: list[Problem], *, now: datetime, expired_is_problem: bool) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        problems.append(Problem(where, f"cannot read `{path}`: {exc.strerror or exc}"))
        return None
    except ValueError:
        problems.append(Problem(where, f"`{path}` holds no PEM certificate; name the `.pem` file `gatehouse device-ca create` wrote"))
        return None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        problems.append(Problem(where, f"`{path}` is not a CA certificate (no basicConstraints CA:TRUE); make one with `gatehouse device-ca create`"))
    if expired_is_problem and cert.not_valid_after_utc <= now:
        problems.append(Problem(where, f"`{path}` expired at {cert.not_valid_after_utc.isoformat()}; make a new CA with `gatehouse device-ca create`"))
    return cert


def create_device_ca(out: Path, *, now: datetime, name: str = "Gatehouse device CA") -> tuple[Path, Path]:
    """Write a new CA: ``device-ca.pem`` (certificate) and ``device-ca.key`` (mode 0600) in ``out``; ECDSA P-256, 10 years, CA:true pathlen 0.

    Raises:
        FileExistsError: either file exists already (a CA is never overwritten).
        OSError: the directory cannot be written.
    """
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / "device-ca.pem", out / "device-ca.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise FileExistsError(path)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {now.astimezone(UTC):%Y-%m-%d}"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gatehouse"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
