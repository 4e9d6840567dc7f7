"""Gatehouse's own pages and APIs under ``/.gatehouse/``, served by aiohttp one request at a time.

Owns: the web package: ``problem`` (the ONE problem+json builder and problem-type URI scheme of every
JSON error Gatehouse answers), ``pages`` (error pages), ``gate_pages`` (what the gate answers instead
of proxying), ``middleware`` (request id, errors and the record for these endpoints), ``health``,
``portal``, ``csrf``, ``owners``, ``enroll``, ``webhook``, ``views`` (pure renderers, one page shell)
and ``breakglass`` (the break-glass pages and API, split by concern).
Must not import: gateway.app, gateway.serve.server (app.py wires these in; serving knows no URL paths).

Import from the submodules (``gateway.web.problem``, ``gateway.web.breakglass``); this package
imports nothing itself, so the builder stays cheap to import for the proxy's error pages.
"""

from __future__ import annotations

__all__: list[str] = []
