"""A small real device CA for the enrollment tests: it signs CSRs with `cryptography` as the contract describes.

Stands in for gateway/identity/device_ca.py (DeviceCA, built by another part in parallel): same ``issue`` signature,
a leaf with subject CN=<serial>, one SAN URI ``urn:device:serial:<SERIAL>``, clientAuth, 30 days.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class Issued:
    pem_chain: str
    fingerprint: str
    serial: str
    owner: str
    not_before: datetime
    not_after: datetime


class TestIssuer:
    """Signs P-256 CSRs; refuses anything else with ValueError as DeviceCA's CsrError does."""

    __test__ = False

    def __init__(self, now: datetime) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse test device CA")])
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.issued: list[Issued] = []

    def issue(self, csr_pem: bytes, *, serial: str, owner: str, now: datetime) -> Issued:
        csr = x509.load_pem_x509_csr(csr_pem)
        if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
            raise ValueError("the CSR's key is not EC P-256")
        not_after = now + timedelta(days=30)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gatehouse device")]))
            .issuer_name(self.cert.subject).public_key(csr.public_key())
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:device:serial:{serial}")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pem = leaf.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(serialization.Encoding.PEM)
        issued = Issued(pem.decode(), leaf.fingerprint(hashes.SHA256()).hex(), serial, owner, now - timedelta(minutes=5), not_after)
        self.issued.append(issued)
        return issued


def make_csr() -> str:
    """A CSR for a fresh P-256 key, as the enrollment client makes one."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "laptop")])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()
