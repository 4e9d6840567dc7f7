"""The device's hardware serial, from verified sources only; the only place a serial is trusted.

Owns: DeviceEvidence, device_serial, serial_from_peercert, certificate_refusal, verify_device_assertion.
Must not import: aiohttp (the resolver reads the request and passes the evidence in).

Sources, tried in the configured order:
  mtls       the client certificate verified by the TLS listener against the configured client CA:
             SAN URI `urn:device:serial:<SERIAL>`, else the subject CN. A certificate naming more than
             one serial (two such SAN URIs, a CN other than the SAN URI's serial) is refused with 401
             whatever the source order, never resolved by precedence;
  assertion  a short-lived JWT in `X-Device-Assertion` (claim `serial`, audience Gatehouse, `iss` one of
             the configured issuers) signed by a trusted device key;
  claim      a claim in the verified user token;
  header     a plain header, believed only from configured front-end addresses (the weaker option:
             anyone who can reach Gatehouse from those addresses can name any serial).
A serial header from anywhere else is ignored: the device is then unknown.

With `mtls` a source, a client certificate is also checked at the request (``certificate_refusal``):
with Gatehouse's device CA configured, outside its validity it is refused as `device-certificate-expired`
(listeners trusting the device CA accept expired certificates in the TLS handshake so that a page can
say so; without it the handshake checks the times), and one whose
fingerprint the revocation lookup knows as revoked as `device-certificate-revoked`.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.identity.errors import (
    AmbiguousDeviceCertificate, AuthenticationError, AuthReason, DeviceAssertionError, DeviceCertificateRefused,
)
from gateway.identity.jwks import KeySet
from gateway.identity.model import DeviceId, DeviceSourceKind, Identity
from gateway.identity.tokens import UnknownKeyId, check_times, decode_verified

SAN_PREFIX = "urn:device:serial:"
SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def valid_serial(value: object) -> str | None:
    """The serial if it is a plausible hardware serial (letters, digits, `.` `_` `:` `-`, ≤ 128 chars)."""
    return value if isinstance(value, str) and SERIAL.fullmatch(value) else None


def serial_from_peercert(cert: Mapping[str, object] | None) -> str | None:
    """Serial from a verified peer certificate as returned by ``SSLObject.getpeercert()``: its one SAN URI
    `urn:device:serial:<SERIAL>` and subject CN, which must agree when both are present.

    Raises:
        AmbiguousDeviceCertificate: the certificate names more than one serial.
    """
    if not cert:
        return None
    named = [
        entry[1].removeprefix(SAN_PREFIX) for entry in cert.get("subjectAltName") or ()  # type: ignore[attr-defined]  # getpeercert() values are unions
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "URI" and isinstance(entry[1], str)
        and entry[1].startswith(SAN_PREFIX)
    ]
    named += [
        value for rdn in (cert.get("subject") or ()) for (name, value) in rdn  # type: ignore[attr-defined]  # getpeercert() values are unions
        if name == "commonName"
    ]
    names = tuple(dict.fromkeys(named))
    if len(names) > 1:
        raise AmbiguousDeviceCertificate(names)
    return valid_serial(names[0]) if names else None


def verify_device_assertion(
    raw: str,
    keys: KeySet,
    *,
    now: datetime,
    issuers: tuple[str, ...],
    audience: str,
    max_lifetime_s: int,
    algorithms: tuple[str, ...],
    leeway_s: float = 30.0,
    max_bytes: int = 4096,
) -> str:
    """The serial in a signed device assertion.

    Raises:
        DeviceAssertionError: bad signature or key, wrong issuer or audience, expired, too long-lived, no serial.
    """
    if not issuers:  # INVARIANT: settings require issuers; without any, no assertion is believed
        raise DeviceAssertionError(AuthReason.WRONG_ISSUER.value)
    try:
        claims = decode_verified(
            raw, keys, algorithms=algorithms, issuers=issuers, audiences=(audience,), max_bytes=max_bytes,
            required=("exp", "iat", "iss", "aud", "serial"),
        )
        check_times(claims, now=now, leeway_s=leeway_s)
    except AuthenticationError as exc:
        raise DeviceAssertionError(exc.reason.value) from None
    except UnknownKeyId:
        raise DeviceAssertionError("unknown-key") from None
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or float(exp) - float(iat) > max_lifetime_s:  # type: ignore[arg-type]
        raise DeviceAssertionError("lifetime-too-long")
    serial = valid_serial(claims.get("serial"))
    if serial is None:
        raise DeviceAssertionError("bad-serial")
    return serial


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    """What the request offers about its device, read by the resolver; nothing here is trusted yet."""

    peercert: Mapping[str, object] | None = None
    """From the TLS transport; only populated when the listener verified it against the client CA."""
    fingerprint: str | None = None
    """SHA-256 of the client certificate's DER, lowercase hex (how revocations are looked up)."""
    assertion: str | None = None
    serial_header: str | None = None
    remote: str | None = None
    """The TCP peer address (not X-Forwarded-For)."""


@dataclass(frozen=True, slots=True)
class DeviceTrust:
    """Configured device sources and what they need, prepared once."""

    sources: tuple[DeviceSourceKind, ...]
    assertion_keys: KeySet | None = None
    assertion_issuers: tuple[str, ...] = ()
    """Accepted `iss` values; none means no assertion is believed."""
    assertion_audience: str = "gatehouse"
    assertion_max_lifetime_s: int = 300
    assertion_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    assertion_leeway_s: float = 30.0
    assertion_max_bytes: int = 4096
    header_trusted_from: tuple[IpNetwork, ...] = ()
    certificate_times: bool = False
    """Check client certificates' validity at the request: the listeners skip it in the handshake when Gatehouse's device CA is configured."""


def _from_trusted_address(remote: str | None, networks: tuple[IpNetwork, ...]) -> bool:
    if remote is None or not networks:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


RevokedAt = Callable[[str], "datetime | None"]
"""When the certificate with this fingerprint was revoked; None when it is not (or not one of Gatehouse's)."""


def _cert_time(cert: Mapping[str, object], name: str) -> datetime | None:
    value = cert.get(name)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(value), UTC)
    except ValueError:
        return None


def certificate_refusal(
    evidence: DeviceEvidence, *, now: datetime, revoked_at: RevokedAt | None, check_times: bool,
) -> DeviceCertificateRefused | None:
    """Why the request's client certificate may not name a device now (expired or not yet valid when ``check_times``, revoked), or None."""
    cert = evidence.peercert
    if not cert:
        return None
    if check_times:
        not_after, not_before = _cert_time(cert, "notAfter"), _cert_time(cert, "notBefore")
        if not_after is None or now >= not_after:
            return DeviceCertificateRefused(AuthReason.DEVICE_CERTIFICATE_EXPIRED, at=not_after or now, fingerprint=evidence.fingerprint)
        if not_before is not None and now < not_before:
            return DeviceCertificateRefused(AuthReason.DEVICE_CERTIFICATE_EXPIRED, at=not_before, fingerprint=evidence.fingerprint)
    if revoked_at is not None and evidence.fingerprint is not None:
        when = revoked_at(evidence.fingerprint)
        if when is not None:
            return DeviceCertificateRefused(AuthReason.DEVICE_CERTIFICATE_REVOKED, at=when, fingerprint=evidence.fingerprint)
    return None


def device_serial(
    evidence: DeviceEvidence, identity: Identity | None, trust: DeviceTrust, *, now: datetime, revoked_at: RevokedAt | None = None,
) -> DeviceId | None:
    """The first serial a configured, verified source proves, or None (the device is unknown).

    Raises:
        AmbiguousDeviceCertificate: `mtls` is a source and the client certificate names several serials.
        DeviceCertificateRefused: `mtls` is a source and the client certificate is expired, not yet valid or revoked.
    """
    if "mtls" in trust.sources:
        refusal = certificate_refusal(evidence, now=now, revoked_at=revoked_at, check_times=trust.certificate_times)
        if refusal is not None:
            raise refusal
    certified = serial_from_peercert(evidence.peercert) if "mtls" in trust.sources else None
    for source in trust.sources:
        serial: str | None = None
        if source == "mtls":
            serial = certified
        elif source == "assertion" and evidence.assertion and trust.assertion_keys is not None:
            try:
                serial = verify_device_assertion(
                    evidence.assertion, trust.assertion_keys, now=now, issuers=trust.assertion_issuers,
                    audience=trust.assertion_audience,
                    max_lifetime_s=trust.assertion_max_lifetime_s, algorithms=trust.assertion_algorithms,
                    leeway_s=trust.assertion_leeway_s, max_bytes=trust.assertion_max_bytes,
                )
            except DeviceAssertionError:
                serial = None
        elif source == "claim" and identity is not None:
            serial = valid_serial(identity.device_serial_claim)
        elif source == "header" and _from_trusted_address(evidence.remote, trust.header_trusted_from):
            serial = valid_serial((evidence.serial_header or "").strip())
        if serial is not None:
            return DeviceId(serial, source)
    return None
