"""Device serials from verified sources only: mTLS (real TLS server), signed assertion, token claim, trusted header."""

from __future__ import annotations

import datetime as dt
import ssl
from datetime import timedelta
from pathlib import Path

import aiohttp
import jwt
import pytest
import trustme
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiohttp import web

from gateway.app import create_app
from gateway.identity import AmbiguousDeviceCertificate, DeviceAssertionError, KeySet, serial_from_peercert, verify_device_assertion
from gateway.metrics import Metrics
from gateway.serve.server import start_gateway
from gateway.config.settings import parse_settings
from tests.conftest import NOW
from tests.gateway.fullstack import catch_all_upstream, Keys, MovableClock, gatehouse_config, ingest_headers, mac_item
from tests.gateway.identity.support import (
    build_app, ec_key, jwt_section, mint, private_pem, public_jwk, public_pem, settings,
)


def client_cert(ca: trustme.CA, tmp: Path, name: str, *, san_uri: str | None = None, cn: str | None = None,
                more_san_uris: tuple[str, ...] = ()) -> Path:
    """A client certificate signed by `ca` with optional SAN URIs and CN; returns a PEM with cert and key."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devices")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    uris = ((san_uri,) if san_uri else ()) + more_san_uris
    if uris:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + private_pem(key))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    server_ca, device_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    server_ctx.load_verify_locations(cadata=device_ca.cert_pem.bytes().decode())
    return {
        "server_ctx": server_ctx, "server_ca": server_ca,
        "san": client_cert(device_ca, tmp_path, "san", san_uri="urn:device:serial:C02XL0ABCDEF"),
        "cn": client_cert(device_ca, tmp_path, "cn", cn="SER-CN-42"),
        "rogue": client_cert(rogue_ca, tmp_path, "rogue", san_uri="urn:device:serial:C02XL0ABCDEF"),
    }


def client_ctx(pki: dict[str, object], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["server_ca"].configure_trust(ctx)  # type: ignore[attr-defined]
    if cert is not None:
        ctx.load_cert_chain(pki[cert])  # type: ignore[arg-type]
    return ctx


class TestMtls:
    @pytest.fixture
    async def tls_url(self, aiohttp_server, jwks_server, pki) -> str:  # type: ignore[no-untyped-def]
        built = build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url), "device": {"sources": ["mtls"]}}))
        server = await aiohttp_server(built.app, ssl=pki["server_ctx"])
        return str(server.make_url("/x")).replace("http://", "https://")

    async def fetch(self, url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> dict[str, object]:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=ctx, headers={"Authorization": f"Bearer {mint()}", **(headers or {})}) as resp:
                return await resp.json()  # type: ignore[no-any-return]

    async def test_valid_client_cert_with_san_uri(self, tls_url: str, pki) -> None:  # type: ignore[no-untyped-def]
        """A client certificate from the device CA gives the serial from its SAN URI."""
        body = await self.fetch(tls_url, client_ctx(pki, "san"))

        assert {"serial": "C02XL0ABCDEF", "source": "mtls"} == body["device"]

    async def test_valid_client_cert_with_cn_only(self, tls_url: str, pki) -> None:  # type: ignore[no-untyped-def]
        """Without a serial SAN URI, the subject CN is the serial."""
        body = await self.fetch(tls_url, client_ctx(pki, "cn"))

        assert {"serial": "SER-CN-42", "source": "mtls"} == body["device"]

    async def test_no_client_cert_means_unknown_device(self, tls_url: str, pki) -> None:  # type: ignore[no-untyped-def]
        """Without a client certificate the device is unknown, even with a serial header."""
        body = await self.fetch(tls_url, client_ctx(pki, None), headers={"X-Device-Serial": "C02XL0ABCDEF"})

        assert None is body["device"]
        assert "X-Gatehouse-Device-Serial" not in body["headers"]  # type: ignore[operator]

    async def test_untrusted_client_cert_is_refused(self, tls_url: str, pki) -> None:  # type: ignore[no-untyped-def]
        """A certificate from another CA fails the handshake; no request is served."""
        with pytest.raises(aiohttp.ClientError):
            await self.fetch(tls_url, client_ctx(pki, "rogue"))


class TestPeercert:
    def test_san_uri_and_the_same_cn(self) -> None:
        """A SAN URI serial and a CN naming the same serial give that serial; other SANs are not serials."""
        cert = {"subject": ((("commonName", "S-1"),),), "subjectAltName": (("DNS", "x"), ("URI", "urn:device:serial:S-1"))}

        assert "S-1" == serial_from_peercert(cert)

    @pytest.mark.parametrize("cert", [
        {"subject": ((("commonName", "host"),),), "subjectAltName": (("URI", "urn:device:serial:S-1"),)},
        {"subjectAltName": (("URI", "urn:device:serial:S-1"), ("URI", "urn:device:serial:S-2"))},
        {"subject": ((("commonName", "S-1"),), (("commonName", "S-2"),))},
    ])
    def test_several_serials_are_refused(self, cert: dict[str, object]) -> None:
        """A CN other than the SAN URI's serial, two serial SAN URIs or two CNs are refused, never picked from."""
        with pytest.raises(AmbiguousDeviceCertificate) as caught:
            serial_from_peercert(cert)

        assert ("device-certificate-ambiguous", 2) == (caught.value.reason.value, len(caught.value.names))

    def test_unverified_or_empty_cert_gives_nothing(self) -> None:
        """An empty peer certificate (what Python returns when unverified) gives no serial."""
        assert None is serial_from_peercert({})

    def test_implausible_serial_is_ignored(self) -> None:
        """A serial with spaces or control characters is not a serial."""
        assert None is serial_from_peercert({"subjectAltName": (("URI", "urn:device:serial:a b\r\n"),)})


class TestAmbiguousCertificateThroughTheListener:
    @pytest.fixture
    async def gatehouse(self, aiohttp_server, tmp_path: Path):  # type: ignore[no-untyped-def]
        """A full Gatehouse whose only listener is TLS with optional client certificates from a device CA (sources mtls, then claim)."""
        async def echo(request: web.Request) -> web.Response:
            seen.append(f"{request.method} {request.path}")
            return web.json_response({"device": request.headers.get("X-Gatehouse-Device-Serial")})

        seen: list[str] = []
        upstream_url = await catch_all_upstream(aiohttp_server, echo)
        server_ca, device_ca = trustme.CA(), trustme.CA()
        server_cert = server_ca.issue_cert("127.0.0.1")
        server_cert.private_key_pem.write_to_path(tmp_path / "key.pem")
        server_cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
        device_ca.cert_pem.write_to_path(tmp_path / "device-ca.pem")
        keys, clock, registry = Keys(tmp_path / "keys"), MovableClock(), CollectorRegistry()
        raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=upstream_url)
        raw["listeners"] = [{"address": "127.0.0.1:0", "tls": {
            "cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem"),
            "client_ca": str(tmp_path / "device-ca.pem"), "client_cert": "optional"}}]
        raw["identity"]["device"] = {"sources": ["mtls", "claim"]}
        gw = await start_gateway(parse_settings(raw, source="t.yaml", base_dir=keys.dir, environ={}), clock=clock, metrics=Metrics(registry))
        certs = {
            "agreeing": client_cert(device_ca, tmp_path, "agreeing", san_uri="urn:device:serial:C02GOOD", cn="C02GOOD"),
            "cn-differs": client_cert(device_ca, tmp_path, "cn-differs", san_uri="urn:device:serial:C02GOOD", cn="C02OTHER"),
            "two-sans": client_cert(device_ca, tmp_path, "two-sans", san_uri="urn:device:serial:C02GOOD",
                                    more_san_uris=("urn:device:serial:C02OTHER",)),
        }
        yield f"https://127.0.0.1:{gw.addresses[0][1]}", server_ca, certs, keys, clock, registry, seen
        await gw.stop()

    @staticmethod
    async def call(base: str, server_ca: trustme.CA, cert: Path, method: str, headers: dict[str, str]) -> tuple[int, dict[str, object], str]:
        ctx = ssl.create_default_context()
        server_ca.configure_trust(ctx)
        ctx.load_cert_chain(cert)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.request(method, f"{base}/public/", ssl=ctx, headers=headers) as response:
                return response.status, await response.json(), response.headers.get("WWW-Authenticate", "")

    @pytest.mark.parametrize("cert", ["cn-differs", "two-sans"])
    async def test_certificate_naming_two_serials_is_refused(self, gatehouse, cert: str) -> None:  # type: ignore[no-untyped-def]
        """A verified client certificate naming two serials is a 401 on GET and POST, logged and counted, even with a serial claim to fall back on."""
        base, server_ca, certs, keys, clock, registry, seen = gatehouse
        async with aiohttp.ClientSession() as session:
            await session.post(f"{base}/.gatehouse/api/v1/snapshots", ssl=ssl_trusting(server_ca), headers=ingest_headers(),
                               json={"snapshots": [mac_item("C02GOOD", at=clock()), mac_item("C02OTHER", at=clock())]})
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', device='C02GOOD', now=clock())}", "Accept": "application/json"}

        with capture_logs() as logs:
            got = await self.call(base, server_ca, certs[cert], "GET", headers)
            posted = await self.call(base, server_ca, certs[cert], "POST", headers)

        expected = (401, "unauthenticated", "device-certificate-ambiguous")
        assert [expected, expected] == [(status, body["code"], body["reason"]) for status, body, _ in (got, posted)]
        assert 'error_description="device-certificate-ambiguous"' in got[2]
        assert [] == seen
        assert 2.0 == registry.get_sample_value("gatehouse_auth_failures_total", {"reason": "device-certificate-ambiguous"})
        refused = [e for e in logs if e["event"] == "device.certificate_refused"]
        assert [["C02GOOD", "C02OTHER"]] * 2 == [e["serials"] for e in refused]

    async def test_certificate_naming_one_serial_gets_in(self, gatehouse) -> None:  # type: ignore[no-untyped-def]
        """A certificate whose SAN URI and CN name the same serial identifies that device, GET and POST alike."""
        base, server_ca, certs, keys, clock, _, seen = gatehouse
        async with aiohttp.ClientSession() as session:
            await session.post(f"{base}/.gatehouse/api/v1/snapshots", ssl=ssl_trusting(server_ca), headers=ingest_headers(),
                               json={"snapshots": [mac_item("C02GOOD", at=clock())]})
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', now=clock())}", "Accept": "application/json"}

        got = await self.call(base, server_ca, certs["agreeing"], "GET", headers)
        posted = await self.call(base, server_ca, certs["agreeing"], "POST", headers)

        assert [(200, {"device": "C02GOOD"})] * 2 == [(status, body) for status, body, _ in (got, posted)]
        assert ["GET /public/", "POST /public/"] == seen


def ssl_trusting(server_ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    return ctx


DEVICE_ISSUER = "https://mdm.example.test"


def assertion(key=None, *, alg: str = "ES256", lifetime: int = 120, now: dt.datetime = NOW, **overrides: object) -> str:  # type: ignore[no-untyped-def]
    claims: dict[str, object] = {
        "serial": "C02XL0ABCDEF", "iss": DEVICE_ISSUER, "aud": "gatehouse", "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=lifetime)).timestamp()),
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key or ec_key("device"), algorithm=alg, headers={"kid": "dev1"})


DEVICE_KEYS = KeySet.from_jwks({"keys": [public_jwk(ec_key("device"), "dev1")]})


class TestDeviceAssertion:
    def verify(self, raw: str) -> str:
        return verify_device_assertion(
            raw, DEVICE_KEYS, now=NOW, issuers=(DEVICE_ISSUER,), audience="gatehouse", max_lifetime_s=300, algorithms=("ES256",),
        )

    def test_valid(self) -> None:
        """A short-lived assertion signed by a trusted device key yields its serial."""
        assert "C02XL0ABCDEF" == self.verify(assertion())

    @pytest.mark.parametrize(("raw", "reason"), [
        (lambda: assertion(exp=int((NOW - timedelta(minutes=2)).timestamp())), "expired"),
        (lambda: assertion(ec_key("attacker")), "invalid"),
        (lambda: assertion(aud="someone-else"), "wrong-audience"),
        (lambda: assertion(iss="https://attacker.example"), "wrong-issuer"),
        (lambda: assertion(iss=None), "invalid"),
        (lambda: assertion(lifetime=3600), "lifetime-too-long"),
        (lambda: assertion(serial=None), "invalid"),
        (lambda: assertion(serial="bad serial\n"), "bad-serial"),
        (lambda: assertion(iat=None), "invalid"),
    ])
    def test_refused(self, raw, reason: str) -> None:  # type: ignore[no-untyped-def]
        """Expired, wrong key, wrong issuer or audience, issuer-less, too long-lived or serial-less assertions are refused."""
        with pytest.raises(DeviceAssertionError) as caught:
            self.verify(raw())

        assert reason == caught.value.reason

    async def test_over_http(self, aiohttp_client, jwks_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """The resolver reads X-Device-Assertion and trusts only a valid one."""
        (tmp_path / "device.pem").write_bytes(public_pem(ec_key("device")))
        built = build_app(settings({
            "jwt": jwt_section(jwks_url=jwks_server.url),
            "device": {"sources": ["mtls", "assertion"], "assertion": {
                "issuers": [DEVICE_ISSUER], "key_files": ["device.pem"], "algorithms": ["ES256"]}},
        }, base_dir=tmp_path))
        client = await aiohttp_client(built.app)
        bearer = {"Authorization": f"Bearer {mint()}"}

        good = await (await client.get("/x", headers={**bearer, "X-Device-Assertion": assertion()})).json()
        bad = await (await client.get("/x", headers={**bearer, "X-Device-Assertion": assertion(ec_key("attacker"))})).json()

        assert {"serial": "C02XL0ABCDEF", "source": "assertion"} == good["device"]
        assert None is bad["device"]
        assert "X-Device-Assertion" in good["stripped"]


class TestDeviceAssertionThroughTheListener:
    async def test_only_configured_issuers_name_a_device(self, aiohttp_client, aiohttp_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """An assertion signed by a trusted device key but issued by anyone else leaves the device unknown; the configured issuer's gets in."""
        async def echo(request: web.Request) -> web.Response:
            return web.json_response({"device": request.headers.get("X-Gatehouse-Device-Serial")})

        upstream_url = await catch_all_upstream(aiohttp_server, echo)
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        (keys.dir / "device.pem").write_bytes(public_pem(ec_key("device")))
        raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=upstream_url)
        raw["identity"]["device"] = {"sources": ["assertion"], "assertion": {
            "issuers": [DEVICE_ISSUER], "key_files": [str(keys.dir / "device.pem")], "algorithms": ["ES256"]}}
        client = await aiohttp_client(create_app(parse_settings(raw, source="t.yaml", base_dir=keys.dir, environ={}), clock=clock))
        await client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item("C02XL0ABCDEF", at=clock())]}, headers=ingest_headers())
        bearer = {"Authorization": f"Bearer {keys.token('alice@example.com', now=clock())}", "Accept": "application/json"}

        foreign = await client.get("/public/", headers={**bearer, "X-Device-Assertion": assertion(now=clock(), iss="https://attacker.example")})
        issuerless = await client.get("/public/", headers={**bearer, "X-Device-Assertion": assertion(now=clock(), iss=None)})
        ours = await client.get("/public/", headers={**bearer, "X-Device-Assertion": assertion(now=clock())})

        assert [(403, "device-unknown")] * 2 == [(r.status, r.headers["X-Gatehouse-Denied-Reason"]) for r in (foreign, issuerless)]
        assert (200, {"device": "C02XL0ABCDEF"}) == (ours.status, await ours.json())


class TestClaimAndHeader:
    async def test_claim_in_verified_token(self, aiohttp_client, jwks_server) -> None:  # type: ignore[no-untyped-def]
        """A serial claim in the verified user token is used when `claim` is a source."""
        built = build_app(settings({
            "jwt": jwt_section(jwks_url=jwks_server.url, claims={"device_serial": "device_id"}),
            "device": {"sources": ["claim"]},
        }))
        client = await aiohttp_client(built.app)

        body = await (await client.get("/x", headers={"Authorization": f"Bearer {mint(device_id='SER-9')}"})).json()

        assert {"serial": "SER-9", "source": "claim"} == body["device"]

    @pytest.mark.parametrize("trusted", [None, "10.0.0.0/8"])
    async def test_forged_serial_header_is_ignored(self, aiohttp_client, jwks_server, trusted: str | None) -> None:  # type: ignore[no-untyped-def]
        """A serial header is ignored unless it comes from a configured front-end address."""
        device: dict[str, object] = {"sources": ["mtls", "claim"]}
        if trusted:
            device = {"sources": ["header"], "header": {"trusted_from": [trusted]}}
        built = build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url, claims={"device_serial": "device_id"}), "device": device}))
        client = await aiohttp_client(built.app)

        resp = await client.get("/x", headers={
            "Authorization": f"Bearer {mint()}", "X-Device-Serial": "C02XL0ABCDEF",
            "X-Gatehouse-Device-Serial": "C02XL0ABCDEF", "X-Forwarded-For": "10.1.2.3",
        })
        body = await resp.json()

        assert None is body["device"]
        assert "X-Gatehouse-Device-Serial" not in body["headers"]

    async def test_serial_header_from_trusted_front_end(self, aiohttp_client, jwks_server) -> None:  # type: ignore[no-untyped-def]
        """The weaker option: a serial header from a trusted front-end address is believed."""
        built = build_app(settings({
            "jwt": jwt_section(jwks_url=jwks_server.url),
            "device": {"sources": ["header"], "header": {"name": "X-Device-Serial", "trusted_from": ["127.0.0.1/32"]}},
        }))
        client = await aiohttp_client(built.app)

        body = await (await client.get("/x", headers={"Authorization": f"Bearer {mint()}", "X-Device-Serial": "SER-7"})).json()

        assert {"serial": "SER-7", "source": "header"} == body["device"]
        assert "SER-7" == body["headers"]["X-Gatehouse-Device-Serial"]

