"""The one proxy: every client connection and every proxied request, served at the protocol level.

``lane.py`` (connections, requests in order, upstream exchanges, tunnels, timeouts, shutdown),
``head.py`` (parsing a connection's requests and the limits of the HTTP front), ``pool.py`` (the
upstream HTTP/1.1 client and its keep-alive pool).
"""

from __future__ import annotations
