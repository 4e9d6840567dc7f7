"""Helpers for device certificate tests: a device CA on disk, laptop keys and CSRs as the enrollment client makes them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.identity.device_ca import DeviceCA, IssuedCertificate, create_device_ca
from gateway.config.identity import DeviceCaSettings
from gateway.config.secret import Secret


def make_ca(directory: Path, *, now: datetime, validity_days: int = 30, previous: tuple[Path, ...] = ()) -> tuple[DeviceCA, dict[str, object]]:
    """A new device CA in ``directory`` and the `identity.device.ca` section naming it."""
    cert, key = create_device_ca(directory, now=now)
    section: dict[str, object] = {"cert": str(cert), "key": {"file": str(key)}, "validity_days": validity_days,
                                  "previous": [str(p) for p in previous]}
    settings = DeviceCaSettings(cert=cert, key=Secret(key.read_text()), validity_days=validity_days, previous=previous)
    return DeviceCA.from_settings(settings, now=now), section


def laptop_csr(key: ec.EllipticCurvePrivateKey | None = None, *, cn: str = "laptop") -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A laptop's EC P-256 key and a CSR signed with it (what `gatehouse-enroll` sends)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(
        key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM)


def write_identity(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, issued: IssuedCertificate) -> Path:
    """The laptop's key and certificate chain in one PEM file, as ``SSLContext.load_cert_chain`` reads it."""
    path = directory / f"{name}.pem"
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(key_pem + issued.pem_chain.encode())
    return path
