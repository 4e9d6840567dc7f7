"""Time the compliance report over the generated 90-day, 500-device fleet history (gateway/report/synthetic.py).

    PYTHONPATH=. .venv/bin/python bench/bench_report.py
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from gateway.report import DeviceInfo, compute_report
from gateway.web.views.report import render_report
from gateway.report.synthetic import generate_fleet_history
from policy_engine import compile_policy_set, parse_policy_document

POLICY = Path(__file__).resolve().parents[1] / "deploy" / "policy.yaml"


def main() -> None:
    policies = compile_policy_set(parse_policy_document(yaml.safe_load(POLICY.read_text()), source=str(POLICY)))
    fleet = generate_fleet_history(datetime(2026, 8, 1, tzinfo=UTC), days=90, devices=500)
    devices = {s: DeviceInfo(p) for s, p in fleet.platforms.items()}
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        report = compute_report(fleet.entries, fleet.rollups, policies=policies, grants=fleet.grants, devices=devices,
                                since=fleet.start, until=fleet.until, now=fleet.until)
        for fmt in ("html", "json", "csv"):
            render_report(report, fmt)
        runs.append(time.perf_counter() - started)
    print(f"compliance report, 90 days x 500 devices ({len(fleet.entries)} evaluations, {len(fleet.rollups)} ledger rows): "
          f"best {min(runs):.2f} s, worst {max(runs):.2f} s (compute + html + json + csv)")


if __name__ == "__main__":
    main()
