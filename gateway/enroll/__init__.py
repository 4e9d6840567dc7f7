"""Laptop enrollment (issue 15): Gatehouse's device CA and the enrollment flow that uses it.

Owns: the enroll package (ca: the device certificate authority).
Must not import: gateway.app, gateway.server (the app wires the CA in; the TLS listener trusts it).
"""

from __future__ import annotations

from gateway.enroll.ca import DeviceCA, IssuedCertificate, create_device_ca, fingerprint_of

__all__ = ["DeviceCA", "IssuedCertificate", "create_device_ca", "fingerprint_of"]
