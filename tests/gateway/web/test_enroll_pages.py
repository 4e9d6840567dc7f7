"""What a person reads about enrolling a laptop, over real HTTP on a full Gatehouse.

The deny page's three ``device-unknown`` cases per browser platform, the problem+json ``enroll``
object, the one-file client Gatehouse serves, the status page's enrolled laptops, and the README's
"Enroll a laptop" commands. Everything runs behind the listener ``gatehouse serve`` uses
(tests/serving.py): the SQLite store, the example policy, ES256 user tokens, snapshots through the
ingest API, a MovableClock. Issued certificates are recorded in the real SQLite store before the gateway starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.app import create_app
from gateway.keys import ENROLL_CLIENT_FILE
from gateway.store.base import CertificateRecord
from gateway.store.sqlite import SqliteStore
from gateway.web.portal import SHIPPED_CLIENT
from gateway.config.settings import Settings, parse_settings
from gateway.web.views.enroll import PLATFORMS, enroll_commands
from tests.gateway.fullstack import ROOT, Keys, MovableClock, gatehouse_config, gatehouse_settings, ingest_headers, mac_item

ALICE = "alice@example.com"
HTML = "text/html"
JSON = "application/json"
UA = {
    "darwin": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131.0",
    "linux": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Version/18.1 Mobile Safari/604.1",
}


def write_device_ca(directory: Path) -> tuple[Path, Path]:
    """A device CA as ``gatehouse device-ca create`` makes one (ECDSA P-256, CA:true pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse device CA (test)")])
    start = datetime(2026, 1, 1).astimezone()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "device-ca.pem", directory / "device-ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def enrolling_settings(keys: Keys, *, store: str, upstream: str) -> Settings:
    """A full Gatehouse with its device CA configured (``identity.device.ca``, `mtls` a device source), so it enrolls laptops."""
    cert, key = write_device_ca(keys.dir)
    raw = gatehouse_config(keys, store=store, upstream=upstream)
    raw["identity"]["device"]["ca"] = {"cert": str(cert), "key": {"file": str(key)}, "validity_days": 30}
    raw["identity"]["device"]["sources"] = ["mtls", *raw["identity"]["device"].get("sources", ["claim"])]
    return parse_settings(raw, source="test-gatehouse.yaml", base_dir=keys.dir, environ={})


@dataclass
class Stack:
    client: TestClient
    keys: Keys
    clock: MovableClock

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def headers(self, *, device: str | None = None, accept: str = HTML, ua: str = "linux") -> dict[str, str]:
        token = self.keys.token(ALICE, device=device, now=self.clock())
        return {"Authorization": f"Bearer {token}", "Accept": accept, "User-Agent": UA[ua]}

    async def ingest(self, *items: dict[str, Any]) -> None:
        response = await self.client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": list(items)},
                                          headers=ingest_headers())
        assert 200 == response.status, await response.text()


async def answer(request: web.Request) -> web.Response:
    return web.json_response({"upstream": "ok"})


async def upstream(aiohttp_server: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def issued(clock: MovableClock) -> tuple[CertificateRecord, ...]:
    """Alice: a laptop enrolled five days ago that never reported, and one whose certificate IT revoked; Bob: one."""
    now = clock()
    return (
        CertificateRecord("aa" * 32, "C02ENROLLED1", ALICE, now - timedelta(days=5), now + timedelta(days=25), now - timedelta(days=5)),
        CertificateRecord("bb" * 32, "C02ALICE1", ALICE, now - timedelta(days=20), now + timedelta(days=10), now - timedelta(days=20),
                          revoked_at=now - timedelta(hours=2), revoked_by="rita@example.com"),
        CertificateRecord("cc" * 32, "C02BOBS", "bob@example.com", now, now + timedelta(days=30), now),
    )


Start = Callable[..., Awaitable[Stack]]


@pytest.fixture
def start(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> Start:
    """Start a Gatehouse: enrolling laptops (a device CA) or not, with issued certificates and the client file to serve."""
    async def run(*, enrolls: bool = True, certificates: tuple[CertificateRecord, ...] | None = None,
                  client_file: Path | None = None) -> Stack:
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        make = enrolling_settings if enrolls else gatehouse_settings
        settings = make(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=await upstream(aiohttp_server))
        store = await SqliteStore.open(tmp_path / "gatehouse.db")  # what the CA recorded before this Gatehouse started
        try:
            for record in certificates if certificates is not None else issued(clock):
                await store.record_certificate(record)
            if certificates is None:
                await store.revoke_certificate("bb" * 32, at=clock() - timedelta(hours=2), by="rita@example.com")
        finally:
            await store.close()
        app = create_app(settings, clock=clock)
        if client_file is not None:
            app[ENROLL_CLIENT_FILE] = client_file
        return Stack(await aiohttp_client(app), keys, clock)

    return run


@pytest.fixture
async def stack(start: Start) -> Stack:
    """A Gatehouse that enrolls laptops."""
    return await start()


@pytest.fixture
async def plain(start: Start) -> Stack:
    """A Gatehouse without a device CA: it does not enroll laptops."""
    return await start(enrolls=False)


def platforms_listed(page: str) -> list[str]:
    return re.findall(r'data-platform="([a-z]+)"', page)


class TestDenyPage:
    @pytest.mark.parametrize(("ua", "listed"), [
        ("darwin", ["darwin"]), ("windows", ["windows"]), ("linux", ["linux"]),
        ("iphone", ["darwin", "windows", "linux"]),
    ])
    async def test_a_browser_without_a_device_gets_the_enroll_commands_for_its_platform(
        self, stack: Stack, ua: str, listed: list[str],
    ) -> None:
        """A signed-in browser naming no device is told how to enroll this laptop, for the platform its User-Agent names."""
        response = await stack.client.get("/wiki/", headers=stack.headers(ua=ua))
        page = await response.text()

        assert (403, "device-unknown") == (response.status, response.headers["X-Gatehouse-Denied-Reason"])
        assert listed == platforms_listed(page)
        for platform in listed:
            commands = enroll_commands(stack.origin, next(p for p in PLATFORMS if p.value == platform))
            assert commands.install in page and commands.enroll in page
        assert "osquery" not in page

    async def test_an_api_client_gets_the_same_commands_in_problem_json(self, stack: Stack) -> None:
        """An API client naming no device gets an `enroll` object with the client's address and the commands."""
        response = await stack.client.get("/wiki/", headers=stack.headers(accept=JSON, ua="windows"))
        doc = orjson.loads(await response.read())

        assert (403, "application/problem+json") == (response.status, response.content_type)
        assert f"{stack.origin}/.gatehouse/enroll/gatehouse_enroll.py" == doc["enroll"]["client_url"]
        assert [f"py gatehouse_enroll.py {stack.origin}"] == [c["enroll"] for c in doc["enroll"]["commands"]]

    async def test_a_device_that_never_reported_gets_the_agent_steps(self, stack: Stack) -> None:
        """A request naming a device Gatehouse never heard from is told to start its health agent, not to enroll."""
        response = await stack.client.get("/wiki/", headers=stack.headers(device="C02ENROLLED1", ua="darwin"))
        page = await response.text()

        assert 403 == response.status
        assert "Gatehouse has never received a health report from this device" in page
        assert "sudo osqueryctl start" in page and "gatehouse_enroll.py" not in page

    async def test_without_a_device_ca_the_page_says_ask_it(self, plain: Stack) -> None:
        """A Gatehouse that does not enroll laptops sends a device-less browser to IT, never to install osquery."""
        response = await plain.client.get("/wiki/", headers=plain.headers(ua="linux"))
        page = await response.text()

        assert 403 == response.status
        assert "Ask IT how this device is identified" in page
        assert "osquery" not in page and "gatehouse_enroll.py" not in page


class TestEnrollmentClient:
    async def test_the_client_is_served_without_sign_in(self, start: Start, tmp_path: Path) -> None:
        """`curl` with no credential downloads the client file byte for byte, as a Python attachment."""
        client_file = tmp_path / "gatehouse_enroll.py"
        client_file.write_bytes(b"#!/usr/bin/env python3\nprint('enroll')\n")
        stack = await start(client_file=client_file)

        response = await stack.client.get("/.gatehouse/enroll/gatehouse_enroll.py", headers={"User-Agent": "curl/8.5.0"})

        assert (200, b"#!/usr/bin/env python3\nprint('enroll')\n") == (response.status, await response.read())
        assert "text/x-python" == response.content_type
        assert 'attachment; filename="gatehouse_enroll.py"' == response.headers["Content-Disposition"]

    async def test_a_missing_client_is_a_404_problem_naming_it(self, start: Start, tmp_path: Path) -> None:
        """When the packaged file is missing the route answers 404 problem+json naming deploy/enroll/gatehouse_enroll.py."""
        stack = await start(client_file=tmp_path / "absent.py")

        response = await stack.client.get("/.gatehouse/enroll/gatehouse_enroll.py", headers={"Accept": JSON})
        doc = orjson.loads(await response.read())

        assert (404, "application/problem+json", "enroll-client-missing") == (response.status, response.content_type, doc["code"])
        assert "`deploy/enroll/gatehouse_enroll.py`" in doc["detail"]

    def test_the_package_ships_the_client_through_a_link_to_deploy(self) -> None:
        """The served file is a link inside the package to deploy/enroll/gatehouse_enroll.py, so wheels carry it."""
        target = (SHIPPED_CLIENT.parent / os.readlink(SHIPPED_CLIENT)).resolve()

        assert ROOT / "deploy" / "enroll" / "gatehouse_enroll.py" == target


class TestStatusPage:
    async def test_lists_enrolled_laptops_with_certificate_and_agent(self, stack: Stack) -> None:
        """Each enrolled laptop shows its certificate's expiry or revocation and its agent's last report, or that it never reported."""
        await stack.ingest(mac_item("C02ALICE1", at=stack.clock(), hostname="alice-mbp"))

        body = orjson.loads(await (await stack.client.get("/.gatehouse/", headers=stack.headers(accept=JSON))).read())
        page = await (await stack.client.get("/.gatehouse/", headers=stack.headers())).text()

        devices = {d["serial"]: d for d in body["devices"]}
        assert ["C02ALICE1", "C02ENROLLED1"] == sorted(devices)
        assert ("revoked", "api") == (devices["C02ALICE1"]["certificate"]["state"], devices["C02ALICE1"]["agent"]["source"])
        assert ("valid", "2026-12-17T15:00:00+00:00", None) == (
            devices["C02ENROLLED1"]["certificate"]["state"], devices["C02ENROLLED1"]["certificate"]["not_after"],
            devices["C02ENROLLED1"]["agent"])
        assert "Enrolled laptops" in page and "Revoked" in page
        assert "Enrolled, but its health agent has never reported" in page

    async def test_a_user_without_devices_sees_the_enroll_commands(self, start: Start) -> None:
        """Someone with no device and no certificate is shown how to enroll this laptop, not "ask IT"."""
        stack = await start(certificates=())

        page = await (await stack.client.get("/.gatehouse/", headers=stack.headers(ua="darwin"))).text()

        assert "No device is registered to you yet." in page
        assert ["darwin"] == platforms_listed(page)
        assert enroll_commands(stack.origin, PLATFORMS[0]).enroll in page


class TestReadme:
    def test_the_readme_gives_the_same_commands_as_the_pages(self) -> None:
        """The README's "Enroll a laptop" section shows, per platform, the commands the deny page gives, and its pipx alternative."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        section = readme.split("## Enroll a laptop", 1)[1].split("\n## ", 1)[0]

        missing = [line for p in PLATFORMS for c in [enroll_commands("https://gatehouse.corp.example", p)]
                   for line in (c.install, c.enroll, c.pipx) if line not in section]

        assert [] == missing
