"""`gatehouse devices revoke-cert|certs` and `device-ca create`, and removing a device revoking its certificates, on a real SQLite store."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from gateway.cli.main import main
from gateway.cli.commands import assign_owners, list_device_certificates, revoke_device_certificates, unassign_owners
from gateway.store import open_store
from gateway.store.base import CertificateRecord
from tests.gateway.cli.commands.test_devices import NOW, clock
from tests.gateway.cli.test_main import write_config


async def issued(tmp_path: Path, *records: CertificateRecord) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gatehouse.db'}")
    try:
        for record in records:
            await store.record_certificate(record)
    finally:
        await store.close()


def cert(fingerprint: str, serial: str = "C02CLI1") -> CertificateRecord:
    return CertificateRecord(fingerprint, serial, "alice@example.com", NOW, NOW + timedelta(days=30), NOW)


class TestRevokeCert:
    async def test_by_fingerprint_then_again_is_refused(self, tmp_path: Path) -> None:
        """Revoking by fingerprint names what was revoked; revoking it again says when and by whom it already was."""
        config = write_config(tmp_path)
        await issued(tmp_path, cert("ab" * 32))
        out, err = io.StringIO(), io.StringIO()

        first = await revoke_device_certificates("AB:" * 31 + "AB", config, clock=clock, by="cli:ops", out=out)
        second = await revoke_device_certificates("ab" * 32, config, clock=clock, by="cli:other", err=err)

        assert (0, 1) == (first, second)
        assert f"revoked certificate {'ab' * 32} of C02CLI1 (owner alice@example.com" in out.getvalue()
        assert f"was revoked already, at {NOW} by cli:ops" in err.getvalue()

    async def test_by_serial_revokes_every_live_certificate_and_lists_them(self, tmp_path: Path) -> None:
        """A serial revokes all its unrevoked certificates; `certs` then shows each as revoked."""
        config = write_config(tmp_path)
        await issued(tmp_path, cert("01" * 32), cert("02" * 32), cert("03" * 32, "OTHER1"))
        listed = io.StringIO()

        code = await revoke_device_certificates("C02CLI1", config, clock=clock, by="cli:ops", out=io.StringIO())
        await list_device_certificates("C02CLI1", config, out=listed)

        assert 0 == code
        assert 2 == listed.getvalue().count(f"revoked {NOW.isoformat()} by cli:ops")

    async def test_unknown_fingerprint_is_refused_with_how_to_list(self, tmp_path: Path) -> None:
        """A fingerprint Gatehouse never issued is refused and the error names the listing command."""
        config = write_config(tmp_path)
        await issued(tmp_path, cert("01" * 32))
        err = io.StringIO()

        code = await revoke_device_certificates("ff" * 32, config, clock=clock, err=err)

        assert 1 == code
        assert "gatehouse devices certs SERIAL" in err.getvalue()


class TestRemovingADevice:
    async def test_unassigning_the_last_owner_revokes_its_certificates(self, tmp_path: Path) -> None:
        """Once a serial has no owners (the device is removed), its certificates are revoked as `device-removed:<who>`."""
        config = write_config(tmp_path)
        await assign_owners("C02CLI1", ["alice@example.com"], config, clock=clock, out=io.StringIO())
        await issued(tmp_path, cert("01" * 32))
        out, listed = io.StringIO(), io.StringIO()

        code = await unassign_owners("C02CLI1", [], config, clock=clock, by="cli:ops", out=out)
        await list_device_certificates("C02CLI1", config, out=listed)

        assert 0 == code
        assert "(the device was removed)" in out.getvalue()
        assert "by device-removed:cli:ops" in listed.getvalue()


class TestDeviceCaCreate:
    def test_create_writes_the_pair_and_refuses_to_overwrite(self, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
        """`gatehouse device-ca create --out DIR` writes the CA and prints its settings; a second run exits 1 and keeps it."""
        first = main(["device-ca", "create", "--out", str(tmp_path / "ca")], clock=clock)
        before = (tmp_path / "ca" / "device-ca.pem").read_bytes()
        second = main(["device-ca", "create", "--out", str(tmp_path / "ca")], clock=clock)

        captured = capsys.readouterr()
        assert (0, 1) == (first, second)
        assert f"key: {{file: {tmp_path / 'ca' / 'device-ca.key'}}}" in captured.out
        assert "is never overwritten" in captured.err + captured.out
        assert before == (tmp_path / "ca" / "device-ca.pem").read_bytes()
