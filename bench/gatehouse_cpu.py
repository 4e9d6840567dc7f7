"""Gatehouse's CPU time per request, quickly: the loop to iterate on while optimising the request path.

Owns: this command line only (it reuses proxy_targets for the upstream, the store seeding and
``gatehouse serve``).
Must not import: gateway (Gatehouse runs as its own process, exactly as ``make bench`` starts it).

Starts the bench upstream and Gatehouse (a small fleet by default: the request path does not
depend on the fleet's size) on one core, drives Gatehouse with ``wrk -c32`` from the other, and
prints requests/s, p50/p99 and the server's CPU microseconds per request (from /proc) for each run,
then the median. ``--spy FILE`` records a py-spy profile (raw folded stacks) of the measured runs;
``--spy-gil`` samples only while the GIL is held, which leaves out time blocked in send/recv.
``--command`` runs another build, e.g. a checkout of an older commit.

Run: ``.venv/bin/python bench/gatehouse_cpu.py --runs 3 --duration 4`` (about 30 s).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from proxy_targets import gatehouse as gatehouse_target  # noqa: E402
from proxy_targets.procs import Target, cpu_seconds, free_port, python_argv, start_proc, wait_http  # noqa: E402
from proxy_targets.tokens import make_keys, mint_token  # noqa: E402


def run_wrk(target: Target, *, seconds: int, connections: int, client_core: int) -> tuple[int, str, str]:
    """One wrk run: (requests, p50, p99) as wrk prints them."""
    argv = ["taskset", "-c", str(client_core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency"]
    for name, value in target.headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(target.url)
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60).stdout
    requests = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    latency = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip().startswith(("50%", "99%"))}
    if "Non-2xx" in out:
        raise RuntimeError(f"gatehouse answered errors: {out}")
    return requests, latency.get("50%", "?"), latency.get("99%", "?")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; 0 when every run completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--spy", default="", help="write a py-spy raw profile of the measured runs here")
    parser.add_argument("--spy-gil", action="store_true", help="py-spy samples only while the GIL is held")
    parser.add_argument("--command", type=shlex.split, default=None, help="how to run the gatehouse CLI (default: python -m gateway)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("wrk and taskset are needed; run `bash scripts/bench-deps.sh` (as root) first", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-cpu-"))
    keys = make_keys(workdir / "keys")
    token = mint_token(keys, user=gatehouse_target.BENCH_USER, device=gatehouse_target.BENCH_SERIAL, lifetime_s=4 * 3600)
    port = free_port()
    upstream = start_proc("upstream", python_argv("upstream", "--port", str(port), "--kind", "lowlevel"), workdir=workdir, core=args.server_core)
    target: Target | None = None
    try:
        wait_http(upstream, "127.0.0.1", port, timeout=30)
        target = gatehouse_target.start_gatehouse(
            workdir, f"http://127.0.0.1:{port}", keys=keys, token=token, core=args.server_core, devices=args.devices, command=args.command,
        )
        run_wrk(target, seconds=2, connections=args.connections, client_core=args.client_core)  # warm-up
        spy = None
        if args.spy:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy = subprocess.Popen(
                [py_spy, "record", "-p", str(target.procs[0].pid), "-o", args.spy, "-f", "raw", "-r", "500",
                 "-d", str(args.duration * args.runs), *(["--gil"] if args.spy_gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        per_request: list[float] = []
        for run in range(args.runs):
            before = cpu_seconds(target.pids)
            requests, p50, p99 = run_wrk(target, seconds=args.duration, connections=args.connections, client_core=args.client_core)
            per_request.append(1e6 * (cpu_seconds(target.pids) - before) / requests)
            print(f"run {run + 1}: {requests / args.duration:.0f} req/s  p50 {p50}  p99 {p99}  CPU {per_request[-1]:.1f} us/req", flush=True)
        if spy is not None:
            spy.wait()
        per_request.sort()
        print(f"median CPU {per_request[len(per_request) // 2]:.1f} us/req ({args.devices:,} devices)")
    finally:
        if target is not None:
            target.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
