"""Gatehouse's device CA: certificates from laptops' CSRs that name exactly one serial, the CA files, and their checks."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.identity.device_ca import CsrError, create_device_ca, device_ca_problems, fingerprint_of
from gateway.config.identity import DeviceCaSettings
from gateway.config.secret import Secret
from tests.conftest import NOW
from tests.gateway.identity.certs import laptop_csr, make_ca


class TestIssue:
    def test_certificate_names_the_serial_once_for_client_auth(self, tmp_path: Path) -> None:
        """The leaf has CN = serial, O = Gatehouse device, one SAN URI, clientAuth, digitalSignature, and the CSR's key only."""
        ca, _ = make_ca(tmp_path, now=NOW)
        key, csr = laptop_csr(cn="C02OTHERSERIAL")

        issued = ca.issue(csr, serial="C02XK0AAJGH6", owner="alice@example.com", now=NOW)

        leaf = x509.load_pem_x509_certificates(issued.pem_chain.encode())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ["urn:device:serial:C02XK0AAJGH6"] == [str(v.value) for v in san]
        assert ["C02XK0AAJGH6"] == [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        assert ["Gatehouse device"] == [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert [ExtendedKeyUsageOID.CLIENT_AUTH] == list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
        assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
        assert fingerprint_of(leaf.public_bytes(serialization.Encoding.DER)) == issued.fingerprint
        assert (NOW - timedelta(minutes=5), NOW + timedelta(days=30)) == (issued.not_before, issued.not_after)
        assert 0 < leaf.serial_number < 2**128

    def test_chain_verifies_with_the_ca(self, tmp_path: Path) -> None:
        """The chain is the leaf then the CA certificate, and the leaf's signature verifies with the CA's key."""
        ca, _ = make_ca(tmp_path, now=NOW)

        issued = ca.issue(laptop_csr()[1], serial="PF3ABCDE", owner="bob@example.com", now=NOW)

        leaf, root = x509.load_pem_x509_certificates(issued.pem_chain.encode())
        assert ca.cert == root
        leaf.verify_directly_issued_by(root)

    def test_validity_is_configurable_and_capped_by_the_ca(self, tmp_path: Path) -> None:
        """`validity_days` sets the lifetime; a CA near its own end issues nothing that outlives it."""
        ca, _ = make_ca(tmp_path / "a", now=NOW, validity_days=7)
        late, _ = make_ca(tmp_path / "b", now=NOW - timedelta(days=3650 - 2))

        short = ca.issue(laptop_csr()[1], serial="S1", owner="a@example.com", now=NOW)
        capped = late.issue(laptop_csr()[1], serial="S1", owner="a@example.com", now=NOW)

        assert NOW + timedelta(days=7) == short.not_after
        assert late.cert.not_valid_after_utc == capped.not_after

    @pytest.mark.parametrize(("csr", "words"), [
        (b"not a csr", "not a PEM certificate signing request"),
        (lambda: _csr_with(ec.generate_private_key(ec.SECP384R1())), "curve `secp384r1`"),
        (lambda: _csr_with(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024 bits"),
    ])
    def test_unusable_csr_is_refused_with_the_reason(self, tmp_path: Path, csr: object, words: str) -> None:
        """A CSR that is not PEM, or whose key is not EC P-256 or RSA ≥ 2048, is refused saying which."""
        ca, _ = make_ca(tmp_path, now=NOW)
        pem = csr() if callable(csr) else csr

        with pytest.raises(CsrError) as raised:
            ca.issue(pem, serial="S1", owner="a@example.com", now=NOW)

        assert words in str(raised.value)

    def test_csr_with_a_forged_signature_is_refused(self, tmp_path: Path) -> None:
        """A CSR whose signature does not verify with its own key is refused."""
        ca, _ = make_ca(tmp_path, now=NOW)
        der = bytearray(x509.load_pem_x509_csr(laptop_csr()[1]).public_bytes(serialization.Encoding.DER))
        der[-1] ^= 0x01  # the last byte belongs to the signature's `s`
        forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)

        with pytest.raises(CsrError) as raised:
            ca.issue(forged, serial="S1", owner="a@example.com", now=NOW)

        assert "does not verify" in str(raised.value)

    def test_implausible_serial_is_refused(self, tmp_path: Path) -> None:
        """A serial with spaces or quotes never reaches a certificate."""
        ca, _ = make_ca(tmp_path, now=NOW)

        with pytest.raises(CsrError) as raised:
            ca.issue(laptop_csr()[1], serial="C02 X'; DROP", owner="a@example.com", now=NOW)

        assert "is not a hardware serial" in str(raised.value)


def _csr_with(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


class TestCreate:
    def test_new_ca_is_p256_ten_years_pathlen_zero_with_a_private_key_file(self, tmp_path: Path) -> None:
        """`device-ca create` writes an ECDSA P-256 CA (CA:true, pathlen 0, 10 years) and a key only its owner can read."""
        cert_path, key_path = create_device_ca(tmp_path / "ca", now=NOW)

        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert (True, 0) == (constraints.ca, constraints.path_length)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert "secp256r1" == cert.public_key().curve.name  # type: ignore[union-attr]
        assert NOW + timedelta(days=3650) == cert.not_valid_after_utc
        assert 0o600 == stat.S_IMODE(key_path.stat().st_mode)

    def test_existing_ca_is_never_overwritten(self, tmp_path: Path) -> None:
        """Creating a CA where one exists is refused and leaves the old files as they were."""
        cert_path, _ = create_device_ca(tmp_path, now=NOW)
        before = cert_path.read_bytes()

        with pytest.raises(FileExistsError):
            create_device_ca(tmp_path, now=NOW)

        assert before == cert_path.read_bytes()


class TestProblems:
    def test_every_problem_is_reported(self, tmp_path: Path) -> None:
        """A key of another CA, a leaf certificate as CA and an unreadable previous CA are all reported, each where it is."""
        cert, _ = create_device_ca(tmp_path / "a", now=NOW)
        _, other_key = create_device_ca(tmp_path / "b", now=NOW)
        leaf_ca, _ = make_ca(tmp_path / "c", now=NOW)
        leaf = tmp_path / "leaf.pem"
        leaf.write_text(leaf_ca.issue(laptop_csr()[1], serial="S1", owner="a@example.com", now=NOW).pem_chain)
        settings = DeviceCaSettings(cert=cert, key=Secret(other_key.read_text()), previous=(leaf, tmp_path / "missing.pem"))

        problems = [str(p) for p in device_ca_problems(settings, now=NOW)]

        assert 3 == len(problems)
        assert problems[0].startswith("identity.device.ca.key: does not belong to the certificate")
        assert problems[1].startswith("identity.device.ca.previous[0]:") and "is not a CA certificate" in problems[1]
        assert problems[2].startswith("identity.device.ca.previous[1]: cannot read")

    def test_expired_previous_ca_is_dropped_but_an_expired_current_is_a_problem(self, tmp_path: Path) -> None:
        """An expired previous CA vouches for nothing and is left out; an expired current CA is refused."""
        old_cert, old_key = create_device_ca(tmp_path / "old", now=NOW - timedelta(days=3651))
        new_cert, _ = create_device_ca(tmp_path / "new", now=NOW)
        expired_current = DeviceCaSettings(cert=old_cert, key=Secret(old_key.read_text()))

        ca, _ = make_ca(tmp_path / "ca", now=NOW, previous=(old_cert, new_cert))

        assert (new_cert.read_bytes(),) == tuple(c.public_bytes(serialization.Encoding.PEM) for c in ca.previous)
        assert [f"identity.device.ca.cert: `{old_cert}` expired at {(NOW - timedelta(days=1)).isoformat()}; make a new "
                "CA with `gatehouse device-ca create`"] == [str(p) for p in device_ca_problems(expired_current, now=NOW)]
