"""The data plane: the one proxy, serving every client connection and every proxied request at the protocol level.

``lane.py`` (connections, requests in order, upstream exchanges, tunnels, timeouts, shutdown),
``head.py`` (parsing a connection's requests and the limits of the HTTP front), ``pool.py`` (the
upstream HTTP/1.1 client and its keep-alive pool), ``record.py`` (the one request record: log line
and metrics), ``rules.py`` (header rules, the request id rule, upstream error kinds and texts),
``limits.py`` (limits on upstream response heads), ``target.py`` (the canonical target),
``routing.py`` (the route table and the reserved prefixes), ``live.py`` (the configuration in force).
Must not import: web (but ``web.pages`` and ``web.problem`` to answer its own errors), serve, cli, app.
"""

from __future__ import annotations
