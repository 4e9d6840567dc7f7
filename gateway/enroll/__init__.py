"""Laptop enrollment (issue 15): a laptop proves it is the one its health agent reports, and gets a device certificate.

Owns: the enroll package: ca (Gatehouse's device certificate authority), flow (the enrollment rules and
states, pure), limits (the per-address sign-in rate limit), api (the HTTP API, its pages' handlers and the osquery proof).
Must not import: gateway.app, gateway.server, gateway.cli (the app wires the CA and the routes in; the TLS listener trusts the CA).
"""

from __future__ import annotations

from gateway.enroll.ca import DeviceCA, IssuedCertificate, create_device_ca, fingerprint_of

__all__ = ["DeviceCA", "IssuedCertificate", "create_device_ca", "fingerprint_of"]
