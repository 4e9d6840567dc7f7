"""What a worker's memory does under steady snapshot churn: RSS per round of every device reporting again.

Owns: this command line only (it reuses proxy_targets.gatehouse's configuration, policy and bench fleet).
Must not import: gateway at module level (imported in ``measure``, after the baseline imports are counted).

Builds a full Gatehouse the way ``gatehouse serve`` builds a worker's (``create_app`` on a
configuration written by ``proxy_targets.gatehouse.write_config``, with routes at the three tiers
``low``, ``medium`` and ``high``; its startup run by an ``AppRunner``: store, snapshot cache,
policy, memo), takes the bench fleet into the snapshot cache, then runs rounds of churn: every
device sends a new snapshot (``SnapshotCache.apply``, what ingest calls after the store write) and
is decided at every tier through the gate the fast lane calls (``PolicyGate._judge``: snapshot from
memory, policy, memo). Prints VmRSS after the fleet is loaded and after each round, the peak
(VmHWM) and what the decision memo holds. Token checks, sockets and the upstream are left out:
they cost the same in every round, and the rounds are what this measures.

Run: ``.venv/bin/python bench/memo_churn.py`` (50,000 devices, 5 rounds, about 20 s).
To measure another checkout's gateway: ``PYTHONPATH=/path/to/checkout .venv/bin/python bench/memo_churn.py``
(the gateway is imported from PYTHONPATH when it is there, else from this checkout).
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib.util
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
if importlib.util.find_spec("gateway") is None:
    sys.path.insert(1, str(ROOT))

MB = 1024 * 1024
TIERS = ("low", "medium", "high")


def status_kb(field: str) -> int:
    """A field of /proc/self/status in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def write_bench_config(workdir: Path) -> Path:
    """The proxy bench's Gatehouse configuration, with one route per tier."""
    from proxy_targets.gatehouse import write_config, write_policy
    from proxy_targets.tokens import make_keys

    keys = make_keys(workdir / "keys")
    path = write_config(
        workdir / "gatehouse.json", port=1, metrics_port=2, db=workdir / "gatehouse.db",
        policy=write_policy(workdir / "policy.yaml"), jwks=keys.jwks, upstream_url="http://127.0.0.1:9",
    )
    config = json.loads(path.read_text(encoding="utf-8"))
    config["metrics"] = {"address": None}
    config["routes"] = [
        {"id": tier, "path_prefix": f"/{tier}", "upstream": "http://127.0.0.1:9", "tier": tier} for tier in TIERS
    ]
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


async def measure(devices: int, rounds: int) -> None:
    """Build the worker, load the fleet, churn, print one line per step."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.identity.model import DeviceId, Identity
    from gateway.keys import CONFIG, GATE, POLICY, SNAPSHOT_CACHE
    from gateway.config.settings import load_settings
    from proxy_targets.gatehouse import bench_fleet

    start = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="gatehouse-memo-churn-") as tmp:
        settings = load_settings(write_bench_config(Path(tmp)), {})
        clock = {"now": start}
        app = create_app(settings, clock=lambda: clock["now"])
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            cache, gate, memo = app[SNAPSHOT_CACHE], app[GATE], app[POLICY].memo
            routes = [app[CONFIG].current.routes.match("gatehouse.bench", f"/{tier}/") for tier in TIERS]
            fleet = list(bench_fleet(devices, start))
            for snapshot in fleet:
                cache.apply(snapshot)
            del fleet
            identity = Identity(subject="bench", email="bench.user@bench.example", groups=(), issuer="bench",
                                source="bearer", expires_at=start + timedelta(days=1))  # type: ignore[arg-type]
            gc.collect()
            loaded = status_kb("VmRSS")
            print(f"{len(cache):,} devices, {rounds} rounds of every device reporting and being decided at {len(TIERS)} tiers")
            print(f"{'step':<12} {'VmRSS MB':>9} {'memo entries':>13} {'seconds':>8}")
            print(f"{'loaded':<12} {loaded / 1024:9.1f} {len(memo):13,} {0:8.1f}")
            for n in range(1, rounds + 1):
                began = time.perf_counter()
                now = start + timedelta(minutes=n)
                clock["now"] = now
                for snapshot in cache.snapshots():
                    cache.apply(dataclasses.replace(snapshot, collected_at=now, received_at=now))
                for snapshot in cache.snapshots():
                    device = DeviceId(snapshot.serial, "claim")  # type: ignore[arg-type]  # one per request, as a worker makes them
                    for route in routes:
                        gate._judge(app, identity, device, route, now)  # noqa: SLF001 - the fast lane's decision
                print(f"{'round ' + str(n):<12} {status_kb('VmRSS') / 1024:9.1f} {len(memo):13,} {time.perf_counter() - began:8.1f}")
            peak = status_kb("VmHWM")
            print(f"peak VmHWM {peak / 1024:.1f} MB; growth over the loaded worker {(status_kb('VmRSS') - loaded) / 1024:+.1f} MB")
        finally:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and measure in this process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import gateway

    print(f"gateway from {Path(gateway.__file__).resolve().parent.parent} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    asyncio.run(measure(args.devices, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
