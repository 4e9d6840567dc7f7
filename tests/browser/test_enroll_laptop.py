"""Enroll a laptop end to end, on this machine: the real client, the real OpenID provider, Gatehouse's TLS listener, its osquery endpoints, NSS, Chromium.

What is real: Gatehouse started with ``start_gateway`` (SQLite store, the example policy, a TLS listener
with ``client_cert: optional``, a device CA from ``create_device_ca``, device sources ``mtls`` and
``claim``, a route to a real upstream) with its own OpenID Connect login (``identity.oidc``, ``external_url``
the TLS listener's origin) at the real provider from tests/oidc (npm ``oidc-provider``, Gatehouse registered
there with its callback); the enrollment client deploy/enroll/gatehouse_enroll.py, its own ``main`` without
``--token``, with HOME a temporary ``…/home/alice`` (allowed by ``identity.device.ca.home_roots``, the setting
for homes outside ``/home``): it starts a sign-in session, prints the verification URL and polls while
Chromium (Playwright, Debian's package) opens that URL, signs in at the provider's own login form and presses
"Confirm this laptop" on Gatehouse's confirm page, then it continues by itself; its real NSS import with
``certutil``/``pk12util``; Gatehouse's osquery enroll, distributed read and write endpoints, driven by a
simulated agent on the same "machine" that hashes the nonce file the client wrote under that HOME; the
browsing afterwards with the session cookie of that sign-in. Chromium finds the certificate in the NSS database the client filled (``$HOME/.pki/nssdb``:
Chromium runs with HOME the test's home) and presents it without a prompt because of the
``AutoSelectCertificateForUrls`` policy the client printed, installed as an administrator would, in a
uniquely named file in /etc/chromium/policies/managed/ that is removed afterwards (its pattern names this
test's own port, so no other Chromium on the machine is affected). Observed with Debian's Chromium 156 in
headless mode: with the policy it presents the NSS certificate (the allowed page names the serial); without
it, the navigation waits for a certificate choice that headless never makes. So Playwright's
``client_certificates`` option is not used. Writing the policy needs root (CI runs as root): where
/etc/chromium/policies/managed cannot be written, the test is skipped (failed in CI) saying so.

What stands in: the serial is the recorded DMI output (tests/fixtures/enroll/linux/dmi_serial.json), not
this machine's (a container has no /sys/class/dmi/id/product_serial); the health reports come through the
ingest API rather than from osqueryd's scheduled queries; the security reviewer who revokes uses a bearer
token from the test's identity keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from gateway.identity.device_ca import create_device_ca
from gateway.keys import SNAPSHOT_CACHE
from gateway.metrics import Metrics
from gateway.serve.server import Gateway, start_gateway
from gateway.config.settings import parse_settings
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path, screenshot
from tests.conftest import free_port, missing_service
from tests.gateway.fullstack import Keys, gatehouse_config, ingest_headers, mac_item
from tests.gateway.identity.test_oidc import oidc_issuer, register_client  # noqa: F401  (oidc_issuer is a fixture)
from tests.gateway.ingest.support import ENROLL_SECRET, fixture

pytestmark = [pytest.mark.browser, pytest.mark.oidc]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_POLICIES = Path("/etc/chromium/policies/managed")
"""Where Debian's Chromium reads machine-wide managed policies (Chrome: /etc/opt/chrome/policies/managed)."""
CLIENT = ROOT / "deploy" / "enroll" / "gatehouse_enroll.py"
RECORDED_DMI = ROOT / "tests" / "fixtures" / "enroll" / "linux" / "dmi_serial.json"
LOGIN = "alice"
"""The account Alice types into the provider's login form."""
ALICE = "alice@example.test"
"""Her email as the provider states it (tests/oidc/provider.js): the certificate's owner."""
SERIAL = "PF2ABCDE"
"""The serial in the recorded DMI output the client reads."""


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gatehouse_enroll", CLIENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gatehouse_enroll"] = module
    spec.loader.exec_module(module)
    return module


ge = load_client()


@dataclass
class Laptop:
    """The one machine: its commands (DMI recorded, NSS tools real) and a polling pace that waits briefly."""

    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, env: Any = None) -> Any:
        self.calls.append(tuple(argv))
        if list(argv) == ["cat", ge.DMI_SERIAL]:
            recorded = json.loads(RECORDED_DMI.read_text())
            return ge.Completed(recorded["returncode"], recorded["stdout"], recorded["stderr"])
        return ge.run_command(argv, stdin=stdin, env=env)


@dataclass
class BriefPace:
    """The client's polling: each wait is 50 ms of real time (Gatehouse and the agent answer meanwhile)."""

    at: float = 0.0

    def sleep(self, seconds: float) -> None:
        time.sleep(0.05)
        self.at += seconds

    def monotonic(self) -> float:
        return self.at


@dataclass
class Stack:
    gateway: Gateway
    base: str
    server_ca_file: Path
    context: ssl.SSLContext
    keys: Keys
    home: Path
    device_ca_cn: str

    def user_token(self, email: str, groups: tuple[str, ...] = ()) -> str:
        return self.keys.token(email, now=datetime.now(UTC), groups=groups)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.base}{path}", ssl=self.context, json=body, headers=headers or {}) as response:
                assert response.status < 400, await response.text()
                return await response.json()

    async def report(self, *, healthy: bool) -> None:
        facts = {} if healthy else {"disk_encrypted": False}
        await self.post("/.gatehouse/api/v1/snapshots", {"snapshots": [mac_item(SERIAL, at=datetime.now(UTC), owner=ALICE, **facts)]}, ingest_headers())


async def start(tmp_path: Path, upstream: str, issuer: str) -> Stack:
    server_ca = trustme.CA()
    server_cert = server_ca.issue_cert("127.0.0.1")
    server_cert.private_key_pem.write_to_path(tmp_path / "tls.key")
    server_cert.cert_chain_pems[0].write_to_path(tmp_path / "tls.pem")
    server_ca.cert_pem.write_to_path(tmp_path / "server-ca.pem")
    ca_cert, ca_key = create_device_ca(tmp_path / "device-ca", now=datetime.now(UTC))
    ca_subject = x509.load_pem_x509_certificate(ca_cert.read_bytes()).subject
    keys = Keys(tmp_path / "keys")
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    client = await register_client(issuer, base)
    raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=upstream)
    raw["listeners"] = [{"address": f"127.0.0.1:{port}",
                         "tls": {"cert": str(tmp_path / "tls.pem"), "key": str(tmp_path / "tls.key"), "client_cert": "optional"}}]
    raw["identity"]["sources"] = [{"kind": "session"}, {"kind": "bearer"}]  # browsers sign in; the reviewer's API client sends a token
    raw["identity"]["oidc"] = {
        "discovery_url": f"{issuer}/.well-known/openid-configuration", "client_id": client["client_id"],
        "client_secret": {"value": client["client_secret"]}, "external_url": base, "session_key": {"value": "s" * 40},
        "scopes": ["openid", "email", "groups"], "session_lifetime_s": 3600, "timeout_s": 3,
    }
    raw["identity"]["device"] = {"sources": ["mtls", "claim"], "ca": {
        "cert": str(ca_cert), "key": {"file": str(ca_key)}, "home_roots": [str(tmp_path / "home")]}}
    raw["ingest"]["osquery_enroll_secrets"] = [{"value": ENROLL_SECRET}]
    gateway = await start_gateway(parse_settings(raw, source="gatehouse.yaml", base_dir=keys.dir, environ={}),
                                  metrics=Metrics(CollectorRegistry()))
    context = ssl.create_default_context(cafile=str(tmp_path / "server-ca.pem"))
    return Stack(gateway, base, tmp_path / "server-ca.pem", context, keys,
                 tmp_path / "home" / "alice", str(ca_subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value))


async def osquery_agent(stack: Stack, node_key: str, home: Path, done: asyncio.Event) -> list[str]:
    """osqueryd on the laptop: read distributed queries, hash the files the hash queries name, write the answers."""
    answered: list[str] = []
    while not done.is_set():
        read = await stack.post("/.gatehouse/osquery/distributed/read", {"node_key": node_key})
        answers: dict[str, list[dict[str, str]]] = {}
        for query_id, sql in read["queries"].items():
            found = re.fullmatch(r"SELECT sha256 FROM hash WHERE path = '([^']*)';", sql)
            if found is None:
                continue
            path = Path(found.group(1))
            assert path.is_relative_to(home), path  # the agent hashes only on its own machine
            answers[query_id] = [{"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}] if path.is_file() else []
            answered.append(query_id)
        if answers:
            await stack.post("/.gatehouse/osquery/distributed/write",
                             {"node_key": node_key, "queries": answers, "statuses": {q: 0 for q in answers}})
        await asyncio.sleep(0.05)  # osquery's distributed_interval, shortened
    return answered


def printed_policy(said: Sequence[str]) -> dict[str, Any]:
    """The Chromium policy the client printed for an administrator to install (its indented JSON block)."""
    lines = "\n".join(said).splitlines()
    first = next(i for i, line in enumerate(lines) if line == "  {" and "AutoSelectCertificateForUrls" in lines[i + 1])
    last = lines.index("  }", first)
    return json.loads("\n".join(lines[first:last + 1]))  # type: ignore[no-any-return]


@contextmanager
def chromium_policy(policy: dict[str, Any]) -> Iterator[Path]:
    """The policy in force for every Chromium started inside the block, in its own file, removed afterwards."""
    try:
        CHROMIUM_POLICIES.mkdir(parents=True, exist_ok=True)  # left in place: another run may be using it
        writable = os.access(CHROMIUM_POLICIES, os.W_OK)
    except PermissionError:
        writable = False
    if not writable:
        missing_service(f"a writable {CHROMIUM_POLICIES} (Chromium's managed policies, for AutoSelectCertificateForUrls)",
                        "run the browser tests as root, as CI does")
    path = CHROMIUM_POLICIES / f"gatehouse-test-{uuid.uuid4().hex}.json"
    try:
        path.write_text(json.dumps(policy))
        yield path
    finally:
        path.unlink(missing_ok=True)


async def alices_chromium(pw: Any, home: Path) -> Any:
    """Debian's Chromium as Alice runs it: HOME is her home, so its certificates come from her NSS database."""
    return await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
                                    env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


@pytest.fixture
async def upstream(aiohttp_server: Any) -> str:
    async def page(request: web.Request) -> web.Response:
        serial = request.headers.get("X-Gatehouse-Device-Serial")
        return web.Response(text=f"<html><body><h1>Team wiki</h1><p>device {serial}</p></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


@pytest.fixture
async def stack(tmp_path: Path, upstream: str, oidc_issuer: str) -> AsyncIterator[Stack]:  # noqa: F811
    built = await start(tmp_path, upstream, oidc_issuer)
    yield built
    await built.gateway.stop()


async def sign_in_and_confirm(page: Any, verification_uri: str) -> tuple[str, str]:
    """Alice opens the URL the client printed, signs in at the provider's own pages and confirms the code; the two headings she saw."""
    await page.goto(verification_uri)  # no session yet: Gatehouse sends the browser to the provider's login form
    await page.fill("input[name=login]", LOGIN)
    await page.fill("input[name=password]", "any")
    await page.click("button[type=submit]")
    await page.click("text=Continue")  # the provider's consent page
    await page.wait_for_url(verification_uri)
    asked = await page.inner_text("h1")
    await screenshot(page, "enroll-laptop-confirm")
    await page.click("text=Confirm this laptop")
    done = await page.inner_text("main")
    await screenshot(page, "enroll-laptop-confirmed")
    return asked, done


async def test_a_laptop_enrolls_and_chromium_is_decided_by_its_health_until_revoked(stack: Stack, tmp_path: Path) -> None:
    """Signed in at the real provider, the real client enrolls with the agent's proof; Chromium with the certificate is allowed when healthy, denied when not, and refused once revoked."""
    if not all(subprocess.run(["which", tool], capture_output=True).returncode == 0 for tool in ("certutil", "pk12util")):
        missing_service("certutil and pk12util", "install them with `apt-get install libnss3-tools` (scripts/system-deps.sh)")
    from playwright.async_api import async_playwright

    enroll_body = fixture("enroll_request_linux.json")
    enroll_body["host_details"]["system_info"]["hardware_serial"] = SERIAL
    node_key = (await stack.post("/.gatehouse/osquery/enroll", enroll_body))["node_key"]
    said: list[str] = []
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[str] = loop.create_future()
    host = ge.Host(platform="linux", home=stack.home, run=Laptop().run, pace=BriefPace(), say=said.append,
                   open_browser=lambda url: loop.call_soon_threadsafe(opened.set_result, url), hostname="alice-laptop")
    argv = [stack.base, "--ca-file", str(stack.server_ca_file), "--no-renewal-job"]
    finished = asyncio.Event()
    agent = asyncio.create_task(osquery_agent(stack, node_key, stack.home, finished))

    async with async_playwright() as pw:
        browser = await alices_chromium(pw, stack.home)
        try:
            signing_in = await browser.new_context(ignore_https_errors=True)  # Gatehouse's TLS certificate is from the test's own CA
            client = asyncio.create_task(asyncio.to_thread(ge.main, argv, host))
            try:
                verification_uri = await asyncio.wait_for(asyncio.shield(opened), timeout=20)
                asked, confirmed = await sign_in_and_confirm(await signing_in.new_page(), verification_uri)
                code = await client
            finally:
                finished.set()
                await asyncio.gather(client, return_exceptions=True)
            session = await signing_in.storage_state()  # the session cookie of that sign-in
        finally:
            await browser.close()
        proof_queries = await agent
        state = json.loads((stack.home / ".gatehouse" / "enrollment.json").read_text())
        issued = stack.gateway.app[SNAPSHOT_CACHE].certificate(state["fingerprint"])
        policy = printed_policy(said)

        with chromium_policy(policy):  # the administrator installs what the client printed; Alice starts Chromium again
            browser = await alices_chromium(pw, stack.home)
            try:
                context = await browser.new_context(ignore_https_errors=True, storage_state=session)
                page = await context.new_page()

                await stack.report(healthy=True)
                allowed = await page.goto(f"{stack.base}/wiki/")
                allowed_text = await page.inner_text("body")
                await screenshot(page, "enroll-laptop-allowed")

                await stack.report(healthy=False)
                denied = await page.goto(f"{stack.base}/wiki/")
                denied_text = await page.inner_text("body")
                await screenshot(page, "enroll-laptop-unhealthy")

                await stack.report(healthy=True)
                await revoke_from_fleet_page(stack)
                revoked = await page.goto(f"{stack.base}/wiki/")
                revoked_text = await page.inner_text("body")
                await screenshot(page, "enroll-laptop-revoked")
                await context.close()
            finally:
                await browser.close()

    assert 0 == code, said
    assert any(f"open {verification_uri}" in line for line in said)
    assert (f"Enroll a laptop for {ALICE}?", f"Signed in as {ALICE}.") == (asked, next(line for line in said if line.startswith("Signed in")))
    assert "the enrollment program continues by itself" in confirmed
    assert [{"pattern": stack.base, "filter": {"ISSUER": {"CN": stack.device_ca_cn}}}] == [
        json.loads(rule) for rule in policy["AutoSelectCertificateForUrls"]]
    assert any(q.startswith("gatehouse_enroll_enr-") for q in proof_queries)
    assert not (stack.home / ".gatehouse" / "enroll-nonce").exists()
    assert ("nss", SERIAL) == (state["store_kind"], state["serial"])
    assert issued is not None and (SERIAL, ALICE, None) == (issued.serial, issued.owner, issued.revoked_at)
    assert allowed is not None and 200 == allowed.status
    assert f"device {SERIAL}" in allowed_text
    assert denied is not None and 403 == denied.status
    assert "Turn on disk encryption" in denied_text
    assert revoked is not None and 403 == revoked.status
    assert "device certificate was revoked" in revoked_text
    assert f"gatehouse-enroll {stack.base}" in revoked_text


async def revoke_from_fleet_page(stack: Stack) -> None:
    """A security reviewer presses "Revoke certificate" for the serial on the fleet page (the form's CSRF token and all)."""
    reviewer = {"Authorization": f"Bearer {stack.user_token('sec@example.com', groups=('security',))}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.base}/.gatehouse/admin/devices", ssl=stack.context, headers={**reviewer, "Accept": "text/html"}) as page:
            html = await page.text()
        token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        async with session.post(f"{stack.base}/.gatehouse/admin/devices/revoke-certificate", ssl=stack.context, allow_redirects=False,
                                headers={**reviewer, "Origin": stack.base}, data={"csrf_token": token, "serial": SERIAL}) as posted:
            assert 303 == posted.status, await posted.text()
