"""Laptop enrollment: a laptop proves it is the one its health agent reports, and gets a device certificate.

Owns: the enrollment package (flow: rules and states, pure; api: the HTTP API, pages' handlers and the osquery proof).
Must not import: gateway.app, gateway.server, gateway.cli.
"""

from __future__ import annotations
