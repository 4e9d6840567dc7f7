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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiohttp import web

from gateway.app import create_app
from gateway.identity import DeviceAssertionError, KeySet, serial_from_peercert, verify_device_assertion
from gateway.settings import parse_settings
from tests.conftest import NOW
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_config, ingest_headers, mac_item
from tests.gateway.identity.support import (
    build_app, ec_key, jwt_section, mint, private_pem, public_jwk, public_pem, settings,
)


def client_cert(ca: trustme.CA, tmp: Path, name: str, *, san_uri: str | None = None, cn: str | None = None) -> Path:
    """A client certificate signed by `ca` with an optional SAN URI and CN; returns a PEM with cert and key."""
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
    if san_uri:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san_uri)]), critical=False)
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
        "san": client_cert(device_ca, tmp_path, "san", san_uri="urn:device:serial:C02XL0ABCDEF", cn="laptop-7"),
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
    def test_san_uri_wins_over_cn(self) -> None:
        """The SAN URI serial is used when present."""
        cert = {"subject": ((("commonName", "host"),),), "subjectAltName": (("DNS", "x"), ("URI", "urn:device:serial:S-1"))}

        assert "S-1" == serial_from_peercert(cert)

    def test_unverified_or_empty_cert_gives_nothing(self) -> None:
        """An empty peer certificate (what Python returns when unverified) gives no serial."""
        assert None is serial_from_peercert({})

    def test_implausible_serial_is_ignored(self) -> None:
        """A serial with spaces or control characters is not a serial."""
        assert None is serial_from_peercert({"subjectAltName": (("URI", "urn:device:serial:a b\r\n"),)})


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

        up_app = web.Application()
        up_app.router.add_route("*", "/{tail:.*}", echo)
        upstream = await aiohttp_server(up_app)
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        (keys.dir / "device.pem").write_bytes(public_pem(ec_key("device")))
        raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=str(upstream.make_url("")).rstrip("/"))
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

