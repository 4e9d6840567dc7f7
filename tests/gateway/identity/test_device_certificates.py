"""Device certificates from Gatehouse's CA through the real TLS listener: allowed, revoked, expired, rotated, unknown, renewed."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from gateway.identity.device_ca import DeviceCA, fingerprint_of
from gateway.keys import SNAPSHOT_CACHE, STORE
from gateway.metrics import Metrics
from gateway.serve.server import Gateway, start_gateway
from gateway.config.settings import parse_settings
from gateway.store.base import CertificateRecord
from tests.gateway.identity.certs import laptop_csr, make_ca, write_identity
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_config, ingest_headers, mac_item


@dataclass
class Stack:
    gateway: Gateway
    base: str
    server_ca: trustme.CA
    keys: Keys
    clock: MovableClock
    tmp: Path
    ca: DeviceCA

    async def enroll(self, name: str, serial: str, owner: str = "alice@example.com", ca: DeviceCA | None = None) -> tuple[Path, str]:
        """Issue a certificate to a laptop key, record it as the enrollment API does; the identity file and fingerprint."""
        key, csr = laptop_csr()
        issued = (ca or self.ca).issue(csr, serial=serial, owner=owner, now=self.clock())
        await self.gateway.app[STORE].record_certificate(CertificateRecord(
            issued.fingerprint, serial, owner, issued.not_before, issued.not_after, self.clock()))
        await self.gateway.app[SNAPSHOT_CACHE].refresh()
        return write_identity(self.tmp, name, key, issued), issued.fingerprint

    async def report(self, serial: str, **facts: Any) -> None:
        ctx = ssl.create_default_context()
        self.server_ca.configure_trust(ctx)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.base}/.gatehouse/api/v1/snapshots", ssl=ctx, headers=ingest_headers(),
                                    json={"snapshots": [mac_item(serial, at=self.clock(), **facts)]}) as response:
                assert 200 == response.status

    async def get(self, path: str, identity: Path | None, *, accept: str = "application/json") -> tuple[int, dict[str, Any] | str]:
        ctx = ssl.create_default_context()
        self.server_ca.configure_trust(ctx)
        if identity is not None:
            ctx.load_cert_chain(identity)
        headers = {"Authorization": f"Bearer {self.keys.token('alice@example.com', now=self.clock())}", "Accept": accept}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.get(f"{self.base}{path}", ssl=ctx, headers=headers) as response:
                body = await response.json() if "json" in response.content_type else await response.text()
                return response.status, body

    async def renew(self, identity: Path | None, csr: bytes) -> tuple[int, dict[str, Any]]:
        """``POST …/enrollments/renew`` as ``gatehouse-enroll --renew`` does: the current certificate over TLS, no user token."""
        ctx = ssl.create_default_context()
        self.server_ca.configure_trust(ctx)
        if identity is not None:
            ctx.load_cert_chain(identity)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.post(f"{self.base}/.gatehouse/api/v1/enrollments/renew", ssl=ctx, json={"csr": csr.decode()}) as response:
                return response.status, await response.json(content_type=None)


async def start_stack(tmp_path: Path, upstream: str, *, ca_dir: str = "ca", previous: tuple[Path, ...] = (), client_ca: Path | None = None,
                      clock: MovableClock | None = None, store: str | None = None, like: Stack | None = None) -> Stack:
    """A full Gatehouse on a TLS listener trusting a new device CA (or, with ``like``, another replica of that stack)."""
    clock = clock or (like.clock if like else MovableClock())
    server_ca = like.server_ca if like else trustme.CA()
    if like is None:
        server_cert = server_ca.issue_cert("127.0.0.1")
        server_cert.private_key_pem.write_to_path(tmp_path / "key.pem")
        server_cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
        ca, section = make_ca(tmp_path / ca_dir, now=clock(), previous=previous)
    else:
        ca, section = like.ca, {"cert": str(tmp_path / ca_dir / "device-ca.pem"), "key": {"file": str(tmp_path / ca_dir / "device-ca.key")}}
    keys = like.keys if like else Keys(tmp_path / "keys")
    raw = gatehouse_config(keys, store=store or f"sqlite:///{tmp_path}/g.db", upstream=upstream)
    tls: dict[str, object] = {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem"), "client_cert": "optional"}
    if client_ca is not None:
        tls["client_ca"] = str(client_ca)
    raw["listeners"] = [{"address": "127.0.0.1:0", "tls": tls}]
    raw["identity"]["device"] = {"sources": ["mtls"], "ca": section}
    gateway = await start_gateway(parse_settings(raw, source="t.yaml", base_dir=keys.dir, environ={}), clock=clock,
                                  metrics=Metrics(CollectorRegistry()))
    return Stack(gateway, f"https://127.0.0.1:{gateway.addresses[0][1]}", server_ca, keys, clock, tmp_path, ca)


@pytest.fixture
async def upstream(aiohttp_server) -> str:  # type: ignore[no-untyped-def]
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"device": request.headers.get("X-Gatehouse-Device-Serial")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


@pytest.fixture
async def stack(tmp_path: Path, upstream: str) -> AsyncIterator[Stack]:
    built = await start_stack(tmp_path, upstream)
    yield built
    await built.gateway.stop()


class TestEnrolledCertificate:
    async def test_enrolled_laptop_is_identified_and_decided_by_its_health(self, stack: Stack) -> None:
        """A certificate from the device CA names its serial: healthy is allowed, unencrypted is denied, per the device's report."""
        healthy, _ = await stack.enroll("healthy", "C02HEALTHY1")
        sick, _ = await stack.enroll("sick", "C02SICK1")
        await stack.report("C02HEALTHY1")
        await stack.report("C02SICK1", disk_encrypted=False)

        allowed = await stack.get("/wiki/", healthy)
        denied = await stack.get("/wiki/", sick)

        assert (200, {"device": "C02HEALTHY1"}) == allowed
        assert (403, "checks-failed") == (denied[0], denied[1]["code"])  # type: ignore[index]

    async def test_revoked_certificate_is_refused_with_when_and_how_to_enroll_again(self, stack: Stack) -> None:
        """Once revoked (and the cache refreshed, as a notice or refresh does), the certificate gets a 403 naming the revocation time and the enroll command."""
        identity, fingerprint = await stack.enroll("laptop", "C02REVOKE1")
        await stack.report("C02REVOKE1")
        before = await stack.get("/wiki/", identity)
        at = stack.clock()
        await stack.gateway.app[STORE].revoke_certificate(fingerprint, at=at, by="security@example.com")
        await stack.gateway.app[SNAPSHOT_CACHE].refresh()

        status, body = await stack.get("/wiki/", identity)
        page_status, page = await stack.get("/wiki/", identity, accept="text/html")

        assert 200 == before[0]
        assert isinstance(body, dict) and isinstance(page, str)
        assert (403, "device-certificate-revoked", at.isoformat()) == (status, body["code"], body["at"])
        assert f"gatehouse-enroll {stack.base}" == body["enroll_command"]
        assert f"revoked on {at:%Y-%m-%d %H:%M} UTC" in body["detail"]
        assert 403 == page_status
        assert "This laptop&#x27;s device certificate was revoked" in page or "This laptop's device certificate was revoked" in page
        assert f"gatehouse-enroll {stack.base}" in page

    async def test_expired_certificate_reaches_the_request_and_gets_a_page(self, stack: Stack) -> None:
        """The handshake accepts an expired device certificate so the request can be answered: 403 saying it expired and how to renew."""
        identity, _ = await stack.enroll("laptop", "C02EXPIRE1")
        stack.clock.advance(timedelta(days=31))
        await stack.report("C02EXPIRE1")

        status, body = await stack.get("/wiki/", identity)

        assert isinstance(body, dict)
        assert (403, "device-certificate-expired") == (status, body["code"])
        assert (stack.clock() - timedelta(days=1)).isoformat() == body["at"]
        assert "gatehouse-enroll" in body["detail"]

    async def test_certificate_from_an_unknown_ca_fails_the_handshake(self, stack: Stack, tmp_path: Path) -> None:
        """A certificate no trusted CA signed never reaches a page: the TLS handshake fails, which is what a browser shows."""
        stranger, _ = make_ca(tmp_path / "stranger", now=stack.clock())
        key, csr = laptop_csr()
        identity = write_identity(tmp_path, "stranger", key, stranger.issue(csr, serial="C02STRANGE", owner="x@example.com", now=stack.clock()))

        with pytest.raises((aiohttp.ClientConnectionError, ssl.SSLError)):
            await stack.get("/wiki/", identity)


class TestRenewal:
    async def test_the_current_certificate_renews_for_the_same_serial_and_owner(self, stack: Stack) -> None:
        """Presenting a valid recorded certificate gets a new one for its serial and owner, recorded and usable at once."""
        identity, old = await stack.enroll("laptop", "C02RENEW1", owner="alice@example.com")
        await stack.report("C02RENEW1")
        stack.clock.advance(timedelta(days=25))
        key, csr = laptop_csr(cn="whatever-the-laptop-asks")

        status, body = await stack.renew(identity, csr)

        assert 200 == status
        leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ["urn:device:serial:C02RENEW1"] == san.get_values_for_type(x509.UniformResourceIdentifier)
        assert (stack.clock() + timedelta(days=30)).isoformat().replace("+00:00", "Z") == body["not_after"]
        record = stack.gateway.app[SNAPSHOT_CACHE].certificate(fingerprint_of(leaf.public_bytes(serialization.Encoding.DER)))
        assert record is not None and ("C02RENEW1", "alice@example.com") == (record.serial, record.owner)
        renewed = tmp_identity(stack.tmp, "renewed", key, body["certificate"])
        await stack.report("C02RENEW1")
        assert (200, {"device": "C02RENEW1"}) == await stack.get("/wiki/", renewed)
        assert old != record.fingerprint

    async def test_a_revoked_certificate_cannot_renew(self, stack: Stack) -> None:
        """A revoked certificate is refused with 403 `device-certificate-revoked` and told to enroll again."""
        identity, fingerprint = await stack.enroll("laptop", "C02RENEW2")
        await stack.gateway.app[STORE].revoke_certificate(fingerprint, at=stack.clock(), by="security@example.com")
        await stack.gateway.app[SNAPSHOT_CACHE].refresh()

        status, body = await stack.renew(identity, laptop_csr()[1])

        assert (403, "device-certificate-revoked") == (status, body["code"])
        assert f"gatehouse-enroll {stack.base}" in body["detail"]

    async def test_an_expired_certificate_cannot_renew(self, stack: Stack) -> None:
        """An expired certificate reaches the endpoint (the handshake lets it) and is refused with `device-certificate-expired`."""
        identity, _ = await stack.enroll("laptop", "C02RENEW3")
        stack.clock.advance(timedelta(days=31))

        status, body = await stack.renew(identity, laptop_csr()[1])

        assert (403, "device-certificate-expired") == (status, body["code"])
        assert "expired on" in body["detail"]

    async def test_a_certificate_gatehouse_never_recorded_cannot_renew(self, stack: Stack) -> None:
        """A certificate the store does not know (not issued through enrollment) is refused with `device-certificate-unknown`."""
        key, csr = laptop_csr()
        unrecorded = write_identity(stack.tmp, "unrecorded", key, stack.ca.issue(csr, serial="C02RENEW4", owner="a@example.com", now=stack.clock()))

        status, body = await stack.renew(unrecorded, laptop_csr()[1])

        assert (403, "device-certificate-unknown") == (status, body["code"])

    async def test_no_certificate_is_401(self, stack: Stack) -> None:
        """Without a client certificate the renewal answers 401 `device-certificate-required`."""
        status, body = await stack.renew(None, laptop_csr()[1])

        assert (401, "device-certificate-required") == (status, body["code"])

    async def test_a_bad_csr_is_400_and_issues_nothing(self, stack: Stack) -> None:
        """A CSR the device CA refuses is a 400 `csr-invalid` naming why; nothing new is recorded."""
        identity, _ = await stack.enroll("laptop", "C02RENEW5")

        status, body = await stack.renew(identity, b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")

        assert (400, "csr-invalid") == (status, body["code"])
        assert 1 == len(stack.gateway.app[SNAPSHOT_CACHE].certificates_of("C02RENEW5"))


def tmp_identity(directory: Path, name: str, key: Any, chain_pem: str) -> Path:
    """A key and a PEM chain from the API in one file, as ``SSLContext.load_cert_chain`` reads it."""
    path = directory / f"{name}.pem"
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(key_pem + chain_pem.encode())
    return path


class TestRotation:
    async def test_previous_ca_certificates_work_until_they_expire(self, tmp_path: Path, upstream: str) -> None:
        """After a rotation the old CA, listed under `previous`, still vouches for the certificates it issued; only the new one issues."""
        clock = MovableClock()
        old_ca, _ = make_ca(tmp_path / "old", now=clock())
        stack = await start_stack(tmp_path, upstream, ca_dir="new", previous=(tmp_path / "old" / "device-ca.pem",), clock=clock)
        try:
            old_identity, _ = await stack.enroll("old", "C02ROTATE1", ca=old_ca)
            new_identity, _ = await stack.enroll("new", "C02ROTATE2")
            await stack.report("C02ROTATE1")
            await stack.report("C02ROTATE2")

            got = [await stack.get("/wiki/", old_identity), await stack.get("/wiki/", new_identity)]

            assert [(200, {"device": "C02ROTATE1"}), (200, {"device": "C02ROTATE2"})] == got
            assert stack.ca.cert != old_ca.cert
        finally:
            await stack.gateway.stop()


class TestRevokeFromTheFleetPage:
    async def test_reviewer_revokes_and_the_next_request_is_refused(self, stack: Stack) -> None:
        """A security reviewer's "Revoke certificate" (CSRF-checked POST) refuses the laptop's very next request as revoked."""
        identity, fingerprint = await stack.enroll("laptop", "C02FLEET1")
        await stack.report("C02FLEET1")
        ctx = ssl.create_default_context()
        stack.server_ca.configure_trust(ctx)
        reviewer = {"Authorization": f"Bearer {stack.keys.token('sec@example.com', groups=('security',), now=stack.clock())}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{stack.base}/.gatehouse/admin/devices", ssl=ctx, headers={**reviewer, "Accept": "text/html"}) as page:
                html = await page.text()
            token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            async with session.post(f"{stack.base}/.gatehouse/admin/devices/revoke-certificate", ssl=ctx, allow_redirects=False,
                                    headers={**reviewer, "Origin": stack.base}, data={"csrf_token": token, "serial": "C02FLEET1"}) as posted:
                revoked = posted.status, posted.headers.get("Location")

        status, body = await stack.get("/wiki/", identity)

        assert "Revoke certificate" in html
        assert (303, "/.gatehouse/admin/devices") == revoked
        assert isinstance(body, dict)
        assert (403, "device-certificate-revoked") == (status, body["code"])
        record = stack.gateway.app[SNAPSHOT_CACHE].certificate(fingerprint)
        assert record is not None and "sec@example.com" == record.revoked_by

    async def test_forged_form_revokes_nothing(self, stack: Stack) -> None:
        """A revoke POST without a valid CSRF token is refused and the certificate keeps working."""
        identity, _ = await stack.enroll("laptop", "C02FLEET2")
        await stack.report("C02FLEET2")
        ctx = ssl.create_default_context()
        stack.server_ca.configure_trust(ctx)
        reviewer = {"Authorization": f"Bearer {stack.keys.token('sec@example.com', groups=('security',), now=stack.clock())}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{stack.base}/.gatehouse/admin/devices/revoke-certificate", ssl=ctx, allow_redirects=False,
                                    headers={**reviewer, "Origin": stack.base}, data={"csrf_token": "forged", "serial": "C02FLEET2"}) as posted:
                refused = posted.status

        assert 403 == refused
        assert 200 == (await stack.get("/wiki/", identity))[0]


@pytest.mark.postgres
class TestRevocationAcrossReplicas:
    async def test_revoked_on_one_replica_is_refused_on_the_other_within_a_second(
        self, tmp_path: Path, upstream: str, postgres_dsn: str,
    ) -> None:
        """Two replicas on one PostgreSQL: a revocation written through A reaches B's memory by NOTIFY in under a second, and B refuses."""
        a = await start_stack(tmp_path, upstream, store=postgres_dsn)
        b = await start_stack(tmp_path, upstream, store=postgres_dsn, like=a)
        try:
            identity, fingerprint = await a.enroll("laptop", "C02REPLICA1")
            await a.report("C02REPLICA1")
            await b.gateway.app[SNAPSHOT_CACHE].refresh()
            await _eventually(lambda: b.gateway.app[STORE].listening, within_s=5)  # type: ignore[attr-defined]
            allowed = await b.get("/wiki/", identity)

            await a.gateway.app[STORE].revoke_certificate(fingerprint, at=a.clock(), by="security@example.com")
            took = await _eventually(lambda: b.gateway.app[SNAPSHOT_CACHE].revoked_at(fingerprint) is not None, within_s=1)
            status, body = await b.get("/wiki/", identity)

            assert (200, {"device": "C02REPLICA1"}) == allowed
            assert took < 1
            assert isinstance(body, dict)
            assert (403, "device-certificate-revoked") == (status, body["code"])
        finally:
            await b.gateway.stop()
            await a.gateway.stop()


async def _eventually(condition: Callable[[], bool], *, within_s: float, step_s: float = 0.02) -> float:
    """Wait until ``condition()`` is true (a notice arriving, not time passing); returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not true within {within_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - started
