"""The fast lane: plain proxied GETs served at the protocol level; everything else handed to aiohttp.

``lane.py`` (connections, timeouts, handover), ``head.py`` (request-head parsing and eligibility),
``pool.py`` (upstream keep-alive connections). The package imports nothing at import time, so
``gateway.identity`` can use ``head.RequestHead`` without a cycle.
"""

from __future__ import annotations
