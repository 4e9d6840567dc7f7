"""The floor of a Python proxy's CPU per request: a no-logic uvloop relay, measured as Gatehouse is.

Owns: this command line only (it reuses proxy_targets for the upstream, the relay and the /proc readings).
Must not import: gateway.

Starts the bench upstream and ``proxy_targets/relay.py`` on one core and drives the relay with
``wrk -c32`` from the other, as ``bench/gatehouse_cpu.py`` drives Gatehouse. It prints the relay's
and the upstream's CPU microseconds per request. Gatehouse's figure minus the relay's is what its
request path costs beyond the event loop and the four socket calls.

Run: ``.venv/bin/python bench/floor_cpu.py`` (about 20 s).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from gatehouse_cpu import run_wrk  # noqa: E402
from proxy_targets.procs import Target, cpu_seconds, free_port, python_argv, start_proc, wait_http  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; 0 when every run completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("wrk and taskset are needed; run `bash scripts/bench-deps.sh` (as root) first", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-floor-"))
    up_port, relay_port = free_port(), free_port()
    upstream = start_proc("upstream", python_argv("upstream", "--port", str(up_port), "--kind", "lowlevel"), workdir=workdir, core=args.server_core)
    relay = start_proc("relay", python_argv("relay", "--port", str(relay_port), "--upstream-port", str(up_port)), workdir=workdir, core=args.server_core)
    target = Target("relay", "no-logic uvloop relay", f"http://127.0.0.1:{relay_port}/", [relay])
    try:
        wait_http(upstream, "127.0.0.1", up_port, timeout=30)
        wait_http(relay, "127.0.0.1", relay_port, timeout=30)
        run_wrk(target, seconds=2, connections=args.connections, client_core=args.client_core)  # warm-up
        rows = []
        for run in range(args.runs):
            before = cpu_seconds(target.pids), cpu_seconds([upstream.pid])
            requests, p50, p99 = run_wrk(target, seconds=args.duration, connections=args.connections, client_core=args.client_core)
            own = 1e6 * (cpu_seconds(target.pids) - before[0]) / requests
            up = 1e6 * (cpu_seconds([upstream.pid]) - before[1]) / requests
            rows.append((own, up))
            print(f"run {run + 1}: {requests / args.duration:.0f} req/s  p50 {p50}  p99 {p99}  relay {own:.1f} us/req  upstream {up:.1f} us/req", flush=True)
        rows.sort()
        own, up = rows[len(rows) // 2]
        print(f"median: relay {own:.1f} us/req, upstream behind it {up:.1f} us/req")
    finally:
        relay.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
