"""What the access ledger adds to each request: CPU microseconds per recorded decision, ledger on vs off.

Owns: this command line only.
Must not import: aiohttp servers or the store's I/O (it times the request path's part of the ledger, nothing else).

The request path's share of the ledger, called by ``PolicyGate._account`` for every decided
request, is one of two forms: ``ledger_entry(outcome)`` (the verdict and reason of the gate's
outcome) and ``AccessLedger.count(...)`` (one dict update) on the full path, or, for an admission
the fast lane kept and gives again, ``AccessLedger.recount(row, now)`` into the row its last count
returned (no key, no lookup). This times both for the many-users shape of ``make bench``: 1,000
users, each on their own device, over a few routes, with outcomes mixed as a fleet gives them
(mostly allowed, some in grace, a few denied), the clock moving a little on every call (so the hour
check runs as in production), against the same loop with the ledger off (the loop and outcome
lookups alone). Flushing runs off the request path and is not timed here.

Run: ``.venv/bin/python bench/ledger_cost.py`` (a few seconds). The figure is CPU time
(``time.process_time``), the median of several repeats; on a busy machine it is indicative only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from gateway.gate.decide import GateOutcome, Verdict  # noqa: E402
from gateway.gate.ledger import AccessLedger, ledger_entry  # noqa: E402
from gateway.metrics import Metrics  # noqa: E402
from policy_engine import Decision, Reason  # noqa: E402
from policy_engine.decision import Finding  # noqa: E402
from policy_engine.document import Severity  # noqa: E402

ROUTES = (("wiki", "low"), ("git", "medium"), ("console", "high"))


def workload(users: int) -> list[tuple[str, str, str, str, GateOutcome]]:
    """One request per user and route, with mixed outcomes: (route, tier, user, device, outcome)."""
    finding = Finding("firewall", "firewall_enabled", "off", "on", Severity.FAIL, None, "firewall")
    allowed = GateOutcome(Verdict.ALLOW, "ok", Decision(allowed=True, tier="low", reason=Reason.OK))
    grace = GateOutcome(Verdict.ALLOW, "ok", Decision(allowed=True, tier="medium", reason=Reason.OK, in_grace=(finding,)))
    denied = GateOutcome(Verdict.DENY, "checks-failed", Decision(allowed=False, tier="high", reason=Reason.CHECKS_FAILED, failing=(finding,)))
    requests = []
    for n in range(users):
        outcome = denied if n % 20 == 0 else grace if n % 7 == 0 else allowed
        for route, tier in ROUTES:
            requests.append((route, tier, f"user{n:04d}@example.com", f"C02BENCH{n:04d}", outcome))
    return requests


def run_once(requests: list[tuple[str, str, str, str, GateOutcome]], *, calls: int, mode: str) -> float:
    """CPU seconds for ``calls`` requests taken round-robin from ``requests``; mode ``count``, ``recount`` or ``off``."""
    ledger = AccessLedger(max_pending_rows=10_000_000, metrics=Metrics(CollectorRegistry()))
    count, recount = ledger.count, ledger.recount
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    step = timedelta(microseconds=50)
    times = [start + step * i for i in range(len(requests))]
    size = len(requests)
    rows = [count(start, route, tier, user, device, *ledger_entry(outcome)) for route, tier, user, device, outcome in requests]
    began = time.process_time()
    if mode == "count":
        for i in range(calls):
            route, tier, user, device, outcome = requests[i % size]
            verdict, reason = ledger_entry(outcome)
            count(times[i % size], route, tier, user, device, verdict, reason)
    elif mode == "recount":
        for i in range(calls):
            route, tier, user, device, outcome = requests[i % size]
            recount(rows[i % size], times[i % size])
    else:
        for i in range(calls):
            route, tier, user, device, outcome = requests[i % size]
    return time.process_time() - began


def main(argv: Sequence[str] | None = None) -> int:
    """Print µs per request with the ledger's two forms and off, and the differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    requests = workload(args.users)
    took: dict[str, list[float]] = {"off": [], "count": [], "recount": []}
    for _ in range(args.repeats):
        for mode, samples in took.items():
            samples.append(run_once(requests, calls=args.calls, mode=mode) / args.calls * 1e6)
    us = {mode: statistics.median(samples) for mode, samples in took.items()}
    print(f"access ledger, {args.users} users x {len(ROUTES)} routes, {args.calls} requests, median of {args.repeats}:")
    print(f"  ledger off                          {us['off']:6.3f} us/request")
    print(f"  full path (ledger_entry + count)    {us['count']:6.3f} us/request, added {us['count'] - us['off']:6.3f}")
    print(f"  kept fast-lane admission (recount)  {us['recount']:6.3f} us/request, added {us['recount'] - us['off']:6.3f}")
    print(f"  added {us['count'] - us['off']:.3f} us/request (full path), {us['recount'] - us['off']:.3f} (kept admission); budget 3 us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
