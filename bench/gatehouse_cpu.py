"""Gatehouse's CPU time per request, quickly: the loop to iterate on while optimising the request path.

Owns: this command line only (it reuses proxy_targets for the upstream, the store seeding,
``gatehouse serve`` and the many-users tokens).
Must not import: gateway (Gatehouse runs as its own process, exactly as ``make bench`` starts it).

Starts the bench upstream and Gatehouse (a small fleet by default: the request path does not
depend on the fleet's size) on one core, drives Gatehouse with ``wrk -c32`` from the other, and
prints requests/s, p50/p99 and the server's CPU microseconds per request (from /proc) for each run,
then the median. ``--many-users`` sends make bench's many-users traffic (each request the next of
1,000 users' tokens, each on their own device) instead of one user's token. ``--ledger off`` serves
with ``evidence.ledger_enabled: false``; ``--ledger both`` starts both and alternates the runs
(on, off, on, off, ...), printing each pair's difference and the median difference: the access
ledger's cost, each pair measured a few seconds apart so the machine's load is alike.
``--threads`` adds each thread's share by name: ``main`` is the event loop, the others are
named by the OS (Python's thread names are not: the SQLite store's thread shows as ``python``).
``--spy FILE`` records a py-spy profile (raw folded stacks) of the measured runs (of the
ledger-on server with ``--ledger both``); ``--spy-gil`` samples only while the GIL is held, which
leaves out time blocked in send/recv.
``--log-level info`` serves with ``request.completed`` logged per request, as make bench's logs-on rows.
``--command`` runs another build, e.g. a checkout of an older commit.

Run: ``.venv/bin/python bench/gatehouse_cpu.py --runs 3 --duration 4`` (about 30 s); the ledger's
cost: ``.venv/bin/python bench/gatehouse_cpu.py --many-users --ledger both --runs 8 --duration 5 --threads``.
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
from proxy_targets.procs import CLOCK_TICKS, Target, cpu_seconds, free_port, process_tree, python_argv, start_proc, wait_http  # noqa: E402
from proxy_targets.scenarios import BY_NAME, write_tokens, wrk_script  # noqa: E402
from proxy_targets.tokens import make_keys, mint_token  # noqa: E402


def run_wrk(target: Target, *, seconds: int, connections: int, client_core: int, script: Path | None = None) -> tuple[int, str, str]:
    """One wrk run: (requests, p50, p99) as wrk prints them; ``script`` sends the many-users traffic."""
    argv = ["taskset", "-c", str(client_core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    else:
        for name, value in target.headers:
            argv += ["-H", f"{name}: {value}"]
    argv.append(target.url)
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60).stdout
    requests = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    latency = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip().startswith(("50%", "99%"))}
    if "Non-2xx" in out:
        raise RuntimeError(f"gatehouse answered errors: {out}")
    return requests, latency.get("50%", "?"), latency.get("99%", "?")


def thread_seconds(pids: Sequence[int]) -> dict[str, float]:
    """utime + stime, in seconds, by thread name (``main`` for each process's main thread), of the processes and their live descendants."""
    out: dict[str, float] = {}
    for pid in process_tree(pids):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; 0 when every run completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--many-users", action="store_true", help="make bench's many-users traffic (1,000 users' tokens in turn)")
    parser.add_argument("--ledger", choices=("on", "off", "both"), default="on", help="both: alternate runs with the access ledger on and off")
    parser.add_argument("--threads", action="store_true", help="also print CPU per request by thread name")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error"),
        help="Gatehouse's logging.level: info writes make bench's logs-on request.completed line per request (to a file)",
    )
    parser.add_argument("--spy", default="", help="write a py-spy raw profile of the measured runs here")
    parser.add_argument("--spy-gil", action="store_true", help="py-spy samples only while the GIL is held")
    parser.add_argument("--command", type=shlex.split, default=None, help="how to run the gatehouse CLI (default: python -m gateway)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("wrk and taskset are needed; run `bash scripts/bench-deps.sh` (as root) first", file=sys.stderr)
        return 1
    if args.many_users and args.devices < gatehouse_target.MANY_USERS:
        print(f"--many-users needs --devices of at least {gatehouse_target.MANY_USERS:,}, not {args.devices:,}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-cpu-"))
    keys = make_keys(workdir / "keys")
    token = mint_token(keys, user=gatehouse_target.BENCH_USER, device=gatehouse_target.BENCH_SERIAL, lifetime_s=4 * 3600)
    script = None
    if args.many_users:
        tokens = [token] + [mint_token(keys, user=u, device=d, lifetime_s=4 * 3600) for u, d in gatehouse_target.many_users()[1:]]
        script = wrk_script(workdir, BY_NAME["many-users"], paced=False, tokens_file=write_tokens(workdir / "many-users.tokens", tokens))
    port = free_port()
    upstream = start_proc("upstream", python_argv("upstream", "--port", str(port), "--kind", "lowlevel"), workdir=workdir, core=args.server_core)
    targets: dict[str, Target] = {}
    try:
        wait_http(upstream, "127.0.0.1", port, timeout=30)
        for ledger in ("on", "off") if args.ledger == "both" else (args.ledger,):
            targets[ledger] = gatehouse_target.start_gatehouse(
                workdir, f"http://127.0.0.1:{port}", keys=keys, token=token, core=args.server_core, devices=args.devices,
                command=args.command, ledger=ledger == "on", name=f"gatehouse-ledger-{ledger}", log_level=args.log_level,
            )
        for target in targets.values():
            run_wrk(target, seconds=2, connections=args.connections, client_core=args.client_core, script=script)  # warm-up
        spy = None
        if args.spy:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spied = next(iter(targets.values()))
            spy = subprocess.Popen(
                [py_spy, "record", "-p", str(spied.procs[0].pid), "-o", args.spy, "-f", "raw", "-r", "500",
                 "-d", str(args.duration * args.runs * len(targets)), *(["--gil"] if args.spy_gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        per_request: dict[str, list[float]] = {name: [] for name in targets}
        by_thread: dict[str, dict[str, float]] = {name: {} for name in targets}
        served: dict[str, int] = dict.fromkeys(targets, 0)
        for run in range(args.runs):
            for name, target in targets.items():
                threads0 = thread_seconds(target.pids)
                before = cpu_seconds(target.pids)
                requests, p50, p99 = run_wrk(target, seconds=args.duration, connections=args.connections, client_core=args.client_core, script=script)
                per_request[name].append(1e6 * (cpu_seconds(target.pids) - before) / requests)
                served[name] += requests
                for thread, seconds in thread_seconds(target.pids).items():
                    by_thread[name][thread] = by_thread[name].get(thread, 0.0) + seconds - threads0.get(thread, 0.0)
                print(f"run {run + 1} ledger {name:3}: {requests / args.duration:.0f} req/s  p50 {p50}  p99 {p99}  CPU {per_request[name][-1]:.1f} us/req", flush=True)
            if len(targets) == 2:
                print(f"run {run + 1} ledger on - off: {per_request['on'][-1] - per_request['off'][-1]:+.1f} us/req", flush=True)
        if spy is not None:
            spy.wait()
        shape = "many-users traffic" if args.many_users else "one user's token"
        for name in targets:
            print(f"ledger {name}: median CPU {median(per_request[name]):.1f} us/req ({args.devices:,} devices, {shape})")
            if args.threads:
                shares = ", ".join(f"{thread} {1e6 * seconds / served[name]:.2f}" for thread, seconds in sorted(by_thread[name].items(), key=lambda kv: -kv[1]))
                print(f"  by thread, us/req over all runs: {shares}")
        if len(targets) == 2:
            pairs = [on - off for on, off in zip(per_request["on"], per_request["off"])]
            print(f"access ledger: median of {len(pairs)} paired differences {median(pairs):+.2f} us/req (range {min(pairs):+.1f} to {max(pairs):+.1f})")
    finally:
        for target in targets.values():
            target.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
