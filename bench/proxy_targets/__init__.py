"""The servers `make bench` compares Gatehouse against, and the machinery that starts them.

Owns: the benchmark upstream, the bare aiohttp pass-through proxy, the caching JWT auth service
for nginx's auth_request, the nginx configurations, token minting, the Gatehouse target and the
process handling the harness (bench/bench_proxy.py) shares with them.
Must not import: gateway (except gatehouse.py, which builds Gatehouse's configuration and store).

Each server module runs as its own process (``python -m proxy_targets.<module> ...`` with bench/
on PYTHONPATH) and also exposes a ``create_app`` factory that tests/bench drives in-process.
"""

from __future__ import annotations
