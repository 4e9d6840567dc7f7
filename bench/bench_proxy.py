"""`make bench`: Gatehouse's whole request path against what users would deploy instead.

Starts, each as its own process on 127.0.0.1: a small upstream, a bare aiohttp pass-through proxy,
nginx as a plain reverse proxy, nginx with auth_request to a caching Python JWT service (also with
its access log on), and Gatehouse (when it can start; otherwise its rows are skipped with the
reason): as configured for the bench, with ``request.completed`` logged at info to a file, and
with the access ledger off. With ``--baseline DIR`` (``make bench BASELINE=DIR``) another
checkout's Gatehouse runs the same rows, with and without logs, in the same run.

Rows (proxy_targets/scenarios.py): ``get`` (GET /, 100-byte answer, one user), ``post-1k`` (a 1 KiB
JSON body), ``download-256k`` (a 256 KiB answer) and ``many-users`` (1,000 users on 1,000 devices,
each request the next user's token). Every Gatehouse and nginx + auth_request target runs every
row; the plain nginx and aiohttp proxies run ``get`` only, Gatehouse with the ledger off runs
``many-users`` only (the ledger's cost is the difference to Gatehouse in the same rounds).

Drives each (row, target) with wrk in alternation over several rounds, wrk pinned to one core and
every server to the other, so a ratio to the direct upstream in the same round reflects CPU cost
per request. Prints requests/s, p50/p99 latency, CPU time per request (from /proc) and the ratios;
writes the raw figures to artifacts/bench/proxy.json and the table to artifacts/bench/proxy.txt.
Then offers the ``get`` row's main targets the same paced load (half of Gatehouse's peak) to
report the p99 latency each adds over the direct upstream, and reads Gatehouse's RSS with the
whole fleet resident against one started with a single device.

Run: ``make bench`` (about 4 minutes with the defaults, 5 with a baseline: 3 rounds x 2 s per row
and target after a 1 s warm-up, then 3 paced rounds x 3 s). Longer, steadier runs:
``.venv/bin/python bench/bench_proxy.py --rounds 5 --duration 10 --paced-duration 10`` (about
20 minutes); ``--rows many-users --only gatehouse,gatehouse-no-ledger,nginx-auth`` narrows it;
``--help`` lists the knobs. On a machine others are using, ``--nice -10`` (as root) gives the
bench's processes most of both cores; it slows everything else down while it runs, so it is off
by default. The figures of a 2 s run on a shared machine are indicative: compare rows within
one run, never across runs.

How to read it:
- wrk runs with one thread and 32 connections on the client core (one core: a second thread
  would only share it). Every server, the upstream included, shares the other core, so a proxy's
  ratio to ``direct`` is the upstream's CPU cost over the upstream's plus the proxy's.
- CPU time per request comes from /proc/<pid>/stat (utime + stime of each process tree) around each
  run; "x by CPU" is the throughput ratio an otherwise idle server core would give. When other
  processes use the server core (shown as a note, measured from /proc/stat), trust CPU per request
  over requests/s.
- "p99 added latency at half of peak load": wrk has no rate option, and wrk2 is not packaged, so
  a Lua ``delay()`` hook (proxy_targets/wrk/pace.lua) gives every free connection the next arrival
  time of a Poisson schedule at half Gatehouse's median peak (the bare aiohttp proxy's when
  Gatehouse is unavailable). Latency is measured from the actual send, without wrk2's correction
  for sends delayed because all 32 connections were busy, which at half load is rare. wrk's timers
  fire on whole milliseconds, so arrivals bunch on millisecond ticks: a little more queueing than
  true Poisson arrivals, the same for every target.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from proxy_targets import gatehouse as gatehouse_target
from proxy_targets.nginx import nginx_binary, start_nginx
from proxy_targets.procs import (
    Proc,
    Target,
    TargetUnavailable,
    core_busy_seconds,
    cpu_seconds,
    free_port,
    python_argv,
    rss_bytes,
    start_proc,
    wait_http,
)
from proxy_targets.scenarios import BY_NAME as SCENARIO_BY_NAME
from proxy_targets.scenarios import SCENARIOS, Scenario, probe, write_tokens, wrk_script
from proxy_targets.tokens import AUDIENCE, ISSUER, BenchKeys, make_keys, mint_token
from proxy_targets.upstream import BODY as UPSTREAM_BODY

OWN = ("direct", "aiohttp-proxy", "nginx", "nginx-auth", "nginx-auth-log", "gatehouse", "gatehouse-log", "gatehouse-no-ledger")
BASE = ("base:gatehouse", "base:gatehouse-log")
ORDER = (*OWN, *BASE)
DESCRIPTIONS = {
    "direct": "the upstream alone (aiohttp low-level server, 100-byte JSON)",
    "aiohttp-proxy": "bare aiohttp pass-through proxy (one ClientSession, streamed)",
    "nginx": "nginx reverse proxy (1 worker, keepalive upstream, HTTP/1.1)",
    "nginx-auth": "nginx + auth_request to a caching ES256 JWT service (aiohttp)",
    "nginx-auth-log": "nginx-auth with its access log on (combined format, to a file)",
    "gatehouse": "gatehouse serve (JWT, 100k devices, 3 tiers, 1 route, logging.level warning)",
    "gatehouse-log": "gatehouse with request.completed logged at info (JSON lines to a file)",
    "gatehouse-no-ledger": "gatehouse with evidence.ledger_enabled: false (many-users row only)",
    "base:gatehouse": "the baseline checkout's gatehouse, configured as gatehouse",
    "base:gatehouse-log": "the baseline checkout's gatehouse, configured as gatehouse-log",
}
ROWS_OF = {"aiohttp-proxy": ("get",), "nginx": ("get",), "gatehouse-no-ledger": ("many-users",)}
"""Targets that run only some rows; every other target runs every row."""
PACED = ("direct", "aiohttp-proxy", "nginx", "nginx-auth", "gatehouse", "base:gatehouse")
"""Targets of the paced phase (the ``get`` row)."""
PAIRS = (("gatehouse", "nginx-auth"), ("gatehouse-log", "nginx-auth-log"))
"""Gatehouse against nginx + auth_request, logs off and logs on."""


@dataclass
class Run:
    """One wrk run against one target, for one row."""

    target: str
    scenario: str
    round: int
    requests: int
    duration_s: float
    rps: float
    latency_us: dict[str, float]
    errors: dict[str, int]
    cpu_target_s: float
    cpu_upstream_s: float
    core_busy_s: float
    paced_rate: float | None = None
    cpu_by_proc_s: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_target_us(self) -> float:
        return 1e6 * self.cpu_target_s / self.requests if self.requests else float("nan")

    @property
    def cpu_total_us(self) -> float:
        return 1e6 * (self.cpu_target_s + self.cpu_upstream_s) / self.requests if self.requests else float("nan")

    @property
    def foreign_load(self) -> float:
        """Share of the server core used by processes other than these servers during the run."""
        if not self.duration_s:
            return 0.0
        return max(0.0, (self.core_busy_s - self.cpu_target_s - self.cpu_upstream_s) / self.duration_s)

    @property
    def server_busy(self) -> float:
        """Share of the run the server core was busy at all; well below 1 means the run was not server-bound."""
        return min(1.0, self.core_busy_s / self.duration_s) if self.duration_s else 0.0

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.update(
            cpu_target_us_per_req=self.cpu_target_us, cpu_total_us_per_req=self.cpu_total_us,
            foreign_load=self.foreign_load, server_busy=self.server_busy,
        )
        return out


@dataclass
class Memory:
    """Gatehouse's resident memory (bytes) with the whole fleet, and with one device for the baseline."""

    devices: int
    rss_after_start: int
    rss_after_warmup: int = 0
    peak: int = 0
    rss_one_device: int | None = None
    baseline_error: str = ""

    @property
    def added_by_fleet(self) -> int | None:
        return None if self.rss_one_device is None else self.rss_after_warmup - self.rss_one_device

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "added_by_fleet": self.added_by_fleet}


@dataclass
class Bench:
    """Everything one bench run started and measured."""

    args: argparse.Namespace
    workdir: Path
    client_core: int | None
    server_core: int | None
    upstream: Proc | None = None
    targets: dict[str, Target] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    paced: list[Run] = field(default_factory=list)
    memory: Memory | None = None
    notes: list[str] = field(default_factory=list)
    extra_procs: list[Proc] = field(default_factory=list)
    tokens_file: Path | None = None
    user_tokens: list[str] = field(default_factory=list)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    """(row, target) pairs that did not answer the row's request as the upstream does, and why."""
    ledger_micro: str = ""

    def log(self, message: str) -> None:
        print(message, flush=True)


# ---------------------------------------------------------------------------------------- wrk


def run_wrk(
    bench: Bench, target: Target, scenario: Scenario, *, duration: int, connections: int, paced_rate: float | None = None
) -> dict[str, object]:
    """Run wrk once against ``target`` with the row's requests; the parsed report of its Lua ``done`` hook.

    Raises:
        RuntimeError: wrk failed or printed no report.
    """
    argv = [
        *(["taskset", "-c", str(bench.client_core)] if bench.client_core is not None else []),
        "wrk",
        "-t", str(bench.args.threads),
        "-c", str(connections),
        "-d", f"{max(1, duration)}s",
        "--timeout", "5s",
        "-s", str(wrk_script(bench.workdir, scenario, paced=paced_rate is not None, tokens_file=bench.tokens_file)),
    ]
    for name, value in () if scenario.many_users else target.headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(target.url.rstrip("/") + scenario.path)
    if paced_rate is not None:
        argv += ["--", f"{paced_rate:.1f}", str(bench.args.threads)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, stdin=subprocess.DEVNULL, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            report: dict[str, object] = json.loads(line.removeprefix("WRK_JSON "))
            return report
    raise RuntimeError(f"wrk against {target.name} ({scenario.name}) printed no report (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def measure(
    bench: Bench, target: Target, scenario: Scenario, *, round_no: int, duration: int, connections: int, paced_rate: float | None = None
) -> Run:
    """One wrk run with CPU time of the target, of the upstream and of the whole server core around it."""
    upstream_pids = [] if target.name == "direct" or bench.upstream is None else [bench.upstream.pid]
    server_core = bench.server_core if bench.server_core is not None else 0
    by_proc0 = {p.name: cpu_seconds([p.pid]) for p in target.procs}
    cpu0, up0, core0 = cpu_seconds(target.pids), cpu_seconds(upstream_pids), core_busy_seconds(server_core)
    report = run_wrk(bench, target, scenario, duration=duration, connections=connections, paced_rate=paced_rate)
    cpu1, up1, core1 = cpu_seconds(target.pids), cpu_seconds(upstream_pids), core_busy_seconds(server_core)
    by_proc1 = {p.name: cpu_seconds([p.pid]) for p in target.procs}
    requests = int(report["requests"])  # type: ignore[call-overload]
    duration_s = int(report["duration_us"]) / 1e6  # type: ignore[call-overload]
    if not target.alive():
        raise RuntimeError(f"{target.name} died during the run; see its log under {bench.workdir}")
    return Run(
        target=target.name,
        scenario=scenario.name,
        round=round_no,
        requests=requests,
        duration_s=duration_s,
        rps=requests / duration_s if duration_s else 0.0,
        latency_us={k: float(v) for k, v in report["latency_us"].items()},  # type: ignore[attr-defined]
        errors={k: int(v) for k, v in report["errors"].items()},  # type: ignore[attr-defined]
        cpu_target_s=cpu1 - cpu0,
        cpu_upstream_s=up1 - up0,
        core_busy_s=core1 - core0,
        paced_rate=paced_rate,
        cpu_by_proc_s={name: by_proc1[name] - by_proc0[name] for name in by_proc0},
    )


# ------------------------------------------------------------------------------------ targets


def start_upstream(bench: Bench) -> Target:
    port = free_port()
    proc = start_proc("upstream", python_argv("upstream", "--port", str(port), "--kind", bench.args.upstream_kind), workdir=bench.workdir, core=bench.server_core)
    bench.upstream = proc
    check_ok(proc, port, ())
    return Target("direct", DESCRIPTIONS["direct"], f"http://127.0.0.1:{port}/", [proc], stop_procs=False)


def check_ok(proc: Proc, port: int, headers: Sequence[tuple[str, str]], timeout: float = 30.0) -> None:
    status, body = wait_http(proc, "127.0.0.1", port, timeout=timeout, headers=headers)
    if (status, body) != (200, UPSTREAM_BODY):
        proc.stop()
        raise TargetUnavailable(f"{proc.name} answered {status} with {len(body)} bytes, not 200 with the upstream's 100-byte body; see {proc.log}")


def start_aiohttp_proxy(bench: Bench, upstream_url: str) -> Target:
    port = free_port()
    proc = start_proc("aiohttp-proxy", python_argv("passthrough", "--port", str(port), "--upstream", upstream_url), workdir=bench.workdir, core=bench.server_core)
    check_ok(proc, port, ())
    return Target("aiohttp-proxy", DESCRIPTIONS["aiohttp-proxy"], f"http://127.0.0.1:{port}/", [proc])


def start_nginx_plain(bench: Bench, upstream_addr: str) -> Target:
    port = free_port()
    proc = start_nginx("nginx", bench.workdir, port=port, upstream=upstream_addr, auth=None, core=bench.server_core)
    check_ok(proc, port, ())
    return Target("nginx", DESCRIPTIONS["nginx"], f"http://127.0.0.1:{port}/", [proc])


def start_nginx_auth(bench: Bench, upstream_addr: str, keys: BenchKeys, token: str, *, name: str = "nginx-auth", access_log: bool = False) -> Target:
    auth_port = free_port()
    auth = start_proc(
        f"auth-service-{name}",
        python_argv("authsvc", "--port", str(auth_port), "--public-key", str(keys.public_pem), "--issuer", ISSUER, "--audience", AUDIENCE),
        workdir=bench.workdir,
        core=bench.server_core,
    )
    try:
        status, _ = wait_http(auth, "127.0.0.1", auth_port, timeout=30, path="/verify")
        if status != 401:
            raise TargetUnavailable(f"auth service answered {status}, not 401, without a token; see {auth.log}")
        port = free_port()
        proc = start_nginx(name, bench.workdir, port=port, upstream=upstream_addr, auth=f"127.0.0.1:{auth_port}", core=bench.server_core, access_log=access_log)
        headers = (("Authorization", f"Bearer {token}"),)
        check_ok(proc, port, headers)
    except BaseException:
        auth.stop()
        raise
    return Target(name, DESCRIPTIONS[name], f"http://127.0.0.1:{port}/", [proc, auth], headers=headers)


def start_gatehouse(bench: Bench, name: str, keys: BenchKeys, token: str, **options: object) -> Target:
    """A Gatehouse target under its bench name (``base:`` ones from the baseline checkout)."""
    baseline = name.startswith("base:")
    target = gatehouse_target.start_gatehouse(
        bench.workdir, bench.targets["direct"].url.rstrip("/"), keys=keys, token=token, core=bench.server_core,
        devices=bench.args.devices, name=name.replace(":", "-"), description=DESCRIPTIONS[name],
        command=None if baseline else bench.args.gatehouse_command, root=bench.args.baseline if baseline else None,
        **options,  # type: ignore[arg-type]
    )
    target.name = name
    return target


def start_targets(bench: Bench, keys: BenchKeys, token: str) -> None:
    args = bench.args
    wanted = [t for t in ORDER if t in args.only]
    direct = start_upstream(bench)
    bench.targets["direct"] = direct
    upstream_addr = direct.url.removeprefix("http://").rstrip("/")
    starters: dict[str, Callable[[], Target]] = {
        "aiohttp-proxy": lambda: start_aiohttp_proxy(bench, direct.url.rstrip("/")),
        "nginx": lambda: start_nginx_plain(bench, upstream_addr),
        "nginx-auth": lambda: start_nginx_auth(bench, upstream_addr, keys, token),
        "nginx-auth-log": lambda: start_nginx_auth(bench, upstream_addr, keys, token, name="nginx-auth-log", access_log=True),
        "gatehouse": lambda: start_gatehouse(bench, "gatehouse", keys, token, log_level=args.gatehouse_log_level),
        "gatehouse-log": lambda: start_gatehouse(bench, "gatehouse-log", keys, token, log_level="info"),
        "gatehouse-no-ledger": lambda: start_gatehouse(bench, "gatehouse-no-ledger", keys, token, log_level=args.gatehouse_log_level, ledger=False),
        "base:gatehouse": lambda: start_gatehouse(bench, "base:gatehouse", keys, token, log_level=args.gatehouse_log_level),
        "base:gatehouse-log": lambda: start_gatehouse(bench, "base:gatehouse-log", keys, token, log_level="info"),
    }
    for name in wanted:
        if name == "direct":
            continue
        if name.startswith("nginx"):
            try:
                nginx_binary()
            except TargetUnavailable as exc:
                bench.unavailable[name] = str(exc)
                bench.log(f"{name} target unavailable: {exc}")
                continue
        bench.log(f"starting {name} ...")
        try:
            bench.targets[name] = starters[name]()
        except TargetUnavailable as exc:
            bench.unavailable[name] = str(exc)
            bench.log(f"{name} target unavailable: {exc}")
            continue
        for note in bench.targets[name].notes:
            bench.log(f"  {name}: {note}")


# ---------------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else float("nan")


def per_round(runs: Sequence[Run], target: str, other: str, value: Callable[[Run, Run], float]) -> list[float]:
    """``value(target's run, other's run)`` for every round in which both ran."""
    mine = {r.round: r for r in runs if r.target == target}
    theirs = {r.round: r for r in runs if r.target == other}
    return [value(mine[n], theirs[n]) for n in sorted(mine) if n in theirs and mine[n].requests and theirs[n].requests]


def summarise(bench: Bench) -> dict[str, dict[str, dict[str, float]]]:
    """Per row and target, the median across rounds of every figure; ratios are taken within a round first."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in bench.args.rows:
        runs = [r for r in bench.runs if r.scenario == scenario]
        rows: dict[str, dict[str, float]] = {}
        for name in ORDER:
            mine = [r for r in runs if r.target == name]
            if not mine:
                continue
            ratios = per_round(runs, name, "direct", lambda a, d: a.rps / d.rps if d.rps else float("nan"))
            # The throughput ratio an otherwise idle server core would give: direct's CPU per request over the target's.
            cpu_ratios = per_round(runs, name, "direct", lambda a, d: d.cpu_total_us / a.cpu_total_us if a.cpu_total_us > 0 else float("nan"))
            row = {
                "rps": median([r.rps for r in mine]),
                "x_direct": median(ratios),
                "x_direct_min": min(ratios) if ratios else float("nan"),
                "x_direct_max": max(ratios) if ratios else float("nan"),
                "x_direct_cpu": median(cpu_ratios),
                "p50_ms": median([r.latency_us["p50"] for r in mine]) / 1000,
                "p99_ms": median([r.latency_us["p99"] for r in mine]) / 1000,
                "cpu_target_us": median([r.cpu_target_us for r in mine]),
                "cpu_total_us": median([r.cpu_total_us for r in mine]),
                "errors": float(sum(sum(r.errors.values()) for r in mine)),
                "foreign_load": median([r.foreign_load for r in mine]),
                "server_busy": median([r.server_busy for r in mine]),
            }
            if len(mine[0].cpu_by_proc_s) > 1:
                for proc_name in mine[0].cpu_by_proc_s:
                    row[f"cpu_us[{proc_name}]"] = median([1e6 * r.cpu_by_proc_s[proc_name] / r.requests for r in mine if r.requests])
            rows[name] = row
        out[scenario] = rows
    return out


def comparisons(bench: Bench) -> dict[str, dict[str, list[float]]]:
    """Per row, the within-round ratios the bench is judged by; each list has one figure per round.

    ``<gatehouse>/<nginx-auth>``: nginx + auth_request's CPU per request over Gatehouse's, the upstream's
    share counted (above 1: Gatehouse is cheaper); ``<name>/base:<name>``: the baseline's over this
    checkout's (above 1: this checkout is cheaper); ``ledger_us``: Gatehouse's own CPU per request
    minus the ledger-off Gatehouse's, in microseconds.
    """
    out: dict[str, dict[str, list[float]]] = {}
    by_cpu = lambda mine, other: other.cpu_total_us / mine.cpu_total_us if mine.cpu_total_us > 0 else float("nan")  # noqa: E731
    for scenario in bench.args.rows:
        runs = [r for r in bench.runs if r.scenario == scenario]
        found: dict[str, list[float]] = {}
        for gatehouse, nginx in (*PAIRS, ("base:gatehouse", "nginx-auth"), ("base:gatehouse-log", "nginx-auth-log")):
            found[f"{gatehouse}/{nginx}"] = per_round(runs, gatehouse, nginx, by_cpu)
        for name in ("gatehouse", "gatehouse-log"):
            found[f"{name}/base:{name}"] = per_round(runs, name, f"base:{name}", by_cpu)
        found["ledger_us"] = per_round(runs, "gatehouse", "gatehouse-no-ledger", lambda on, off: on.cpu_target_us - off.cpu_target_us)
        out[scenario] = {key: values for key, values in found.items() if values}
    return out


def spread(values: Sequence[float], fmt: str) -> str:
    """The median, and the range over rounds when there are several."""
    if not values:
        return "-"
    text = format(median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)} to {format(max(values), fmt)})"
    return text


def print_table(bench: Bench, summary: dict[str, dict[str, dict[str, float]]], compared: dict[str, dict[str, list[float]]]) -> None:
    a = bench.args
    print()
    print(
        f"Throughput: median of {a.rounds} rounds x {a.duration:g}s per row and target, wrk -t{a.threads} -c{a.connections}"
        f" on core {bench.client_core}, servers on core {bench.server_core}; ratios taken within each round"
    )
    header = (
        f"{'row':<14} {'target':<20} {'req/s':>8} {'x direct':>9} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU us/req':>10} {'+upstream':>9} {'x by CPU':>8} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for scenario in a.rows:
        rows = summary.get(scenario, {})
        label = scenario
        for name in ORDER:
            if name in rows:
                s = rows[name]
                print(
                    f"{label:<14} {name:<20} {s['rps']:>8.0f} {s['x_direct']:>8.2f}x {s['p50_ms']:>7.2f} {s['p99_ms']:>7.2f}"
                    f" {s['cpu_target_us']:>10.1f} {s['cpu_total_us']:>9.1f} {s['x_direct_cpu']:>7.2f}x {int(s['errors']):>6}"
                )
                label = ""
            elif (scenario, name) in bench.skipped:
                print(f"{label:<14} {name:<20} skipped: {bench.skipped[(scenario, name)]}"[:200])
                label = ""
    for name in ORDER:
        if name in bench.unavailable:
            print(f"{name} unavailable: {bench.unavailable[name]}"[:300])
    print("CPU us/req: the target's own processes (nginx + auth service for nginx-auth); +upstream: with the upstream's share.")
    print("x by CPU: direct's CPU per request over the target's (+upstream), the ratio an otherwise idle server core would give.")
    for scenario in a.rows:
        for name, s in summary.get(scenario, {}).items():
            parts = [f"{key[7:-1]} {value:.1f}" for key, value in s.items() if key.startswith("cpu_us[")]
            if parts:
                print(f"{scenario} {name} CPU us/req by process: " + ", ".join(parts))
    print_comparisons(bench, compared)
    noisy = sorted({f"{n} {s['foreign_load']:.0%}" for rows in summary.values() for n, s in rows.items() if s["foreign_load"] > 0.05})
    if noisy:
        print(f"note: other processes used the server core during the runs (up to {max(s['foreign_load'] for rows in summary.values() for s in rows.values()):.0%});"
              " CPU us/req is steadier than req/s then")
    idle = sorted({n for rows in summary.values() for n, s in rows.items() if s["server_busy"] < 0.9})
    if idle:
        print(f"note: the server core was not saturated for {', '.join(idle)} in some rows: wrk's core was contended or the connection count too low")


def print_comparisons(bench: Bench, compared: dict[str, dict[str, list[float]]]) -> None:
    """Gatehouse against nginx + auth_request, this checkout against the baseline, and the ledger's cost; per row."""
    if any(f"{g}/{n}" in c for c in compared.values() for g, n in PAIRS):
        print()
        print("Gatehouse against nginx + auth_request by CPU per request with the upstream (nginx's over Gatehouse's: above 1.00x")
        print("Gatehouse is cheaper; goal >= 1.0x); median of the rounds (lowest to highest):")
        print(f"{'row':<14} {'logs off':<26} {'logs on':<26}")
        for scenario, found in compared.items():
            cells = [spread(found.get(f"{g}/{n}", []), ".2f") for g, n in PAIRS]
            print(f"{scenario:<14} {cells[0]:<26} {cells[1]:<26}")
    if any(f"{name}/base:{name}" in c for c in compared.values() for name in ("gatehouse", "gatehouse-log")):
        print()
        print(f"This checkout against the baseline ({bench.args.baseline}) by CPU per request with the upstream (the baseline's")
        print("over this checkout's: above 1.00x this checkout is cheaper, below it slower); median of the rounds (lowest to highest):")
        print(f"{'row':<14} {'logs off':<26} {'logs on':<26}")
        for scenario, found in compared.items():
            cells = [spread(found.get(f"{name}/base:{name}", []), ".2f") for name in ("gatehouse", "gatehouse-log")]
            print(f"{scenario:<14} {cells[0]:<26} {cells[1]:<26}")
    ledger = compared.get("many-users", {}).get("ledger_us", [])
    if ledger or bench.ledger_micro:
        print()
        if ledger:
            print(f"Access ledger (many-users row, gatehouse - gatehouse-no-ledger, own CPU per request): {spread(ledger, '+.1f')} us (budget 3 us);")
            print("  (counting on the request path plus the background flush of up to 1,000 rows every 5 s; a small difference")
            print("  between two noisy figures, so read it next to the micro-benchmark of the counting alone:)")
        if bench.ledger_micro:
            print(f"  bench/ledger_cost.py (the same 1,000 users, the ledger's calls alone): {bench.ledger_micro}")


def print_paced(bench: Bench, paced_info: dict[str, object]) -> None:
    rows: dict[str, dict[str, float]] = paced_info.get("summary", {})  # type: ignore[assignment]
    if not rows:
        return
    print()
    print(
        f"Paced load (get row): {paced_info['offered_rps']:.0f} req/s of Poisson arrivals offered to every target (half of {paced_info['reference']}'s peak),"
        f" {paced_info['connections']} connections, median of {paced_info['rounds']} rounds x {bench.args.paced_duration:g}s;"
        " p99 added = target p99 - direct p99 in the same round"
    )
    header = f"{'target':<20} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'p99 added':>9} {'CPU us/req':>10}"
    print(header)
    print("-" * len(header))
    for name in ORDER:
        if name not in rows:
            continue
        row = rows[name]
        added = "" if name == "direct" else f"{row['p99_added_ms']:+.2f}"
        flag = "  (saturated: could not take the offered rate)" if row["saturated"] else ""
        print(
            f"{name:<20} {row['rps']:>8.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['p999_ms']:>8.2f} {added:>9} {row['cpu_target_us']:>10.1f}{flag}"
        )
    busy = max(row["foreign_load"] for row in rows.values())
    if busy > 0.05:
        print(f"note: other processes took up to {busy:.0%} of the server core during these runs; each of their time slices is a latency spike")


def print_memory(bench: Bench) -> None:
    m = bench.memory
    if m is None or "gatehouse" in bench.unavailable:
        return
    print()
    mb = 1024 * 1024
    line = (
        f"Gatehouse RSS with {m.devices:,} devices: {m.rss_after_start / mb:.1f} MB after start,"
        f" {m.rss_after_warmup / mb:.1f} MB after warm-up, peak {m.peak / mb:.1f} MB"
    )
    if m.rss_one_device is not None and m.added_by_fleet is not None:
        line += f"; with 1 device {m.rss_one_device / mb:.1f} MB after warm-up, so the fleet adds {m.added_by_fleet / mb:.1f} MB (goal <= 60 MB)"
    elif m.baseline_error:
        line += f"; no 1-device baseline: {m.baseline_error}"
    print(line)


# -------------------------------------------------------------------------------------- phases


def drop(bench: Bench, name: str, why: str) -> None:
    """Take a failed target out of the bench (not direct: without it nothing compares); it shows as unavailable."""
    if name == "direct":
        raise RuntimeError(f"the direct upstream failed, so nothing can be compared: {why}")
    bench.log(f"{name} target dropped: {why}")
    bench.targets.pop(name).stop()
    bench.unavailable[name] = f"failed during the bench: {why}"


def cells(bench: Bench) -> list[tuple[Scenario, str]]:
    """Every (row, target) pair to measure, rows in order, targets in ORDER, minus the skipped ones."""
    found = []
    for scenario in bench.args.rows:
        for name in ORDER:
            if name in bench.targets and scenario in ROWS_OF.get(name, (scenario,)) and (scenario, name) not in bench.skipped:
                found.append((SCENARIO_BY_NAME[scenario], name))
    return found


def check_rows(bench: Bench) -> None:
    """Send each row's request once to each target; a pair answering otherwise than the upstream is skipped, with why."""
    for scenario, name in cells(bench):
        target = bench.targets[name]
        if scenario.many_users:
            tokens = bench.user_tokens
            headers: Sequence[tuple[str, str]] = [("Authorization", f"Bearer {t}") for t in (tokens[0], tokens[len(tokens) // 2], tokens[-1])]
        else:
            headers = target.headers
        try:
            probe(target.url, scenario, headers)
        except TargetUnavailable as exc:
            bench.skipped[(scenario.name, name)] = str(exc)
            bench.log(f"{scenario.name} row skipped for {name}: {exc}")


def warm_up(bench: Bench) -> None:
    for scenario, name in cells(bench):
        if name not in bench.targets:
            continue
        try:
            run_wrk(bench, bench.targets[name], scenario, duration=bench.args.warmup, connections=bench.args.connections)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            drop(bench, name, str(exc))


def rounds(bench: Bench) -> None:
    todo = cells(bench)
    for round_no in range(bench.args.rounds):
        shift = round_no * len(todo) // max(1, bench.args.rounds)
        for scenario, name in todo[shift:] + todo[:shift]:
            if name not in bench.targets:
                continue
            try:
                run = measure(bench, bench.targets[name], scenario, round_no=round_no, duration=bench.args.duration, connections=bench.args.connections)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                drop(bench, name, str(exc))
                continue
            bench.runs.append(run)
            bench.log(
                f"round {round_no + 1}/{bench.args.rounds} {scenario.name:<14} {name:<20} {run.rps:>8.0f} req/s  p99 {run.latency_us['p99'] / 1000:6.2f} ms"
                f"  CPU {run.cpu_target_us:6.1f} us/req" + (f"  ERRORS {run.errors}" if any(run.errors.values()) else "")
            )


def paced_phase(bench: Bench, summary: dict[str, dict[str, float]]) -> dict[str, object]:
    """Offer the get row's main targets the same Poisson load, half of the reference's peak; p99 added over direct."""
    reference = "gatehouse" if "gatehouse" in summary else "aiohttp-proxy" if "aiohttp-proxy" in summary else "direct"
    offered = summary[reference]["rps"] / 2
    connections = bench.args.connections
    scenario = SCENARIO_BY_NAME["get"]
    names = [n for n in PACED if n in bench.targets and ("get", n) not in bench.skipped]
    for round_no in range(bench.args.paced_rounds):
        order = names[round_no % len(names):] + names[: round_no % len(names)]
        for name in order:
            if name not in bench.targets:
                continue
            try:
                run = measure(bench, bench.targets[name], scenario, round_no=round_no, duration=bench.args.paced_duration, connections=connections, paced_rate=offered)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                drop(bench, name, str(exc))
                continue
            bench.paced.append(run)
            bench.log(
                f"paced {round_no + 1}/{bench.args.paced_rounds} {name:<20} {run.rps:>8.0f} req/s  p50 {run.latency_us['p50'] / 1000:6.2f} ms"
                f"  p99 {run.latency_us['p99'] / 1000:6.2f} ms"
            )
    rows: dict[str, dict[str, float]] = {}
    for name in [n for n in names if n in bench.targets]:
        runs = [r for r in bench.paced if r.target == name]
        rows[name] = {
            "rps": median([r.rps for r in runs]),
            "p50_ms": median([r.latency_us["p50"] for r in runs]) / 1000,
            "p99_ms": median([r.latency_us["p99"] for r in runs]) / 1000,
            "p999_ms": median([r.latency_us["p999"] for r in runs]) / 1000,
            "cpu_target_us": median([r.cpu_target_us for r in runs]),
            "foreign_load": median([r.foreign_load for r in runs]),
        }
    # p99 added: the target's p99 minus direct's p99 in the same round, median over rounds.
    direct_p99 = {r.round: r.latency_us["p99"] for r in bench.paced if r.target == "direct"}
    for name, row in rows.items():
        added = [(r.latency_us["p99"] - direct_p99[r.round]) / 1000 for r in bench.paced if r.target == name and r.round in direct_p99]
        row["p99_added_ms"] = median(added) if name != "direct" else 0.0
        row["saturated"] = float(row["rps"] < 0.95 * offered)
    return {"reference": reference, "offered_rps": offered, "connections": connections, "rounds": bench.args.paced_rounds, "summary": rows}


def ledger_micro(bench: Bench) -> str:
    """bench/ledger_cost.py's figure for this checkout (a short run), or why there is none."""
    argv = [sys.executable, str(BENCH_DIR / "ledger_cost.py"), "--calls", "200000", "--repeats", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return "no figure: it took more than 120 s"
    added = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("added")]
    if done.returncode != 0 or not added or len(added[0]) < 6:
        return f"no figure (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"
    full, kept = float(added[0][1]), float(added[0][5])  # added A us/request (full path), B (kept admission); ...
    return f"+{full:.2f} us per request on the full path, +{kept:.2f} for a kept fast-lane admission"


def memory_phase(bench: Bench, keys: BenchKeys, token: str) -> None:
    target = bench.targets.get("gatehouse")
    if target is None:
        return
    if bench.memory is None:
        bench.memory = Memory(devices=bench.args.devices, rss_after_start=rss_bytes(target.pids), rss_after_warmup=rss_bytes(target.pids))
    bench.memory.peak = rss_bytes(target.pids, "VmHWM")
    if bench.args.no_rss_baseline:
        return
    bench.log("starting gatehouse with 1 device for the RSS baseline ...")
    try:
        one = gatehouse_target.start_gatehouse(
            bench.workdir, bench.targets["direct"].url.rstrip("/"), keys=keys, token=token, core=bench.server_core,
            devices=1, log_level=bench.args.gatehouse_log_level, name="gatehouse-1-device", command=bench.args.gatehouse_command,
        )
    except TargetUnavailable as exc:
        bench.memory.baseline_error = str(exc)
        return
    try:
        run_wrk(bench, one, SCENARIO_BY_NAME["get"], duration=bench.args.warmup, connections=bench.args.connections)
        bench.memory.rss_one_device = rss_bytes(one.pids)
    finally:
        one.stop()


def tool_versions(bench: Bench) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
        return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "?"

    import aiohttp

    versions = {"python": platform.python_version(), "aiohttp": aiohttp.__version__, "wrk": first_line(["wrk", "-v"])}
    try:
        versions["nginx"] = first_line([nginx_binary(), "-v"])
    except TargetUnavailable:
        versions["nginx"] = "missing"
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(
    bench: Bench, summary: dict[str, dict[str, dict[str, float]]], compared: dict[str, dict[str, list[float]]], paced_info: dict[str, object], started: float
) -> Path:
    out = Path(bench.args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "load": bench.notes[:1]},
        "versions": tool_versions(bench),
        "settings": {
            "rounds": bench.args.rounds, "duration_s": bench.args.duration, "warmup_s": bench.args.warmup,
            "connections": bench.args.connections, "threads": bench.args.threads, "client_core": bench.client_core,
            "server_core": bench.server_core, "devices": bench.args.devices, "upstream_kind": bench.args.upstream_kind,
            "gatehouse_log_level": bench.args.gatehouse_log_level, "nice": bench.args.nice,
            "rows": bench.args.rows, "baseline": None if bench.args.baseline is None else str(bench.args.baseline),
        },
        "targets": {name: t.description for name, t in bench.targets.items()},
        "unavailable": bench.unavailable,
        "skipped": {f"{row}/{name}": why for (row, name), why in bench.skipped.items()},
        "summary": summary,
        "compared": compared,
        "ledger_micro": bench.ledger_micro,
        "runs": [r.as_dict() for r in bench.runs],
        "paced": {**paced_info, "runs": [r.as_dict() for r in bench.paced]},
        "gatehouse_memory": None if bench.memory is None else bench.memory.as_dict(),
        "notes": bench.notes,
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------- main


def set_niceness(nice: int) -> None:
    """Run this process, and so wrk and every server it starts, at ``nice``; its autogroup too, where there is one."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        try:
            autogroup.write_text(str(nice))  # between sessions, autogroup scheduling weighs groups, not processes
        except OSError as exc:
            print(f"note: could not set the autogroup's niceness ({exc.strerror}); --nice then acts only within this session")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gatehouse's request path against nginx, nginx + auth_request and a bare aiohttp proxy.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run (whole seconds, as wrk takes them)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per row and target before the rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (one core is the client's: 1)")
    parser.add_argument("--paced-duration", type=int, default=3, help="seconds per paced run")
    parser.add_argument("--paced-rounds", type=int, default=3, help="rounds of the paced phase (0 skips it)")
    parser.add_argument("--devices", type=int, default=gatehouse_target.DEFAULT_DEVICES)
    parser.add_argument("--only", default=",".join(ORDER), help=f"comma-separated targets among {','.join(ORDER)} (direct always runs)")
    parser.add_argument("--rows", default=",".join(s.name for s in SCENARIOS), help=f"comma-separated rows among {','.join(s.name for s in SCENARIOS)}")
    parser.add_argument(
        "--baseline", type=Path, default=None, metavar="DIR",
        help="another checkout (e.g. ../gatehouse-main) whose Gatehouse runs the same rows in the same run, printed next to this one's",
    )
    parser.add_argument("--no-gatehouse", action="store_true", help="skip every Gatehouse target of this checkout")
    parser.add_argument("--no-rss-baseline", action="store_true", help="skip the 1-device Gatehouse started for the RSS baseline")
    parser.add_argument("--gatehouse-log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--gatehouse-command", type=shlex.split, default=None,
        help="how to run the gatehouse CLI, e.g. '.venv/bin/gatehouse' (default: this Python with -m gateway)",
    )
    parser.add_argument("--upstream-kind", default="lowlevel", choices=("lowlevel", "app"))
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to separate cores")
    parser.add_argument("--nice", type=int, default=0, help="run the harness, wrk and every server at this niceness (negative needs root; less noise on a shared machine)")
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "proxy.json"))
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs (path printed at the end)")
    args = parser.parse_args(argv)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()} | {"direct"}
    unknown = args.only - set(ORDER)
    if unknown:
        parser.error(f"unknown target(s) `{'`, `'.join(sorted(unknown))}`; choose among {', '.join(ORDER)}")
    rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown_rows = [name for name in rows if name not in SCENARIO_BY_NAME]
    if unknown_rows or not rows:
        parser.error(f"unknown row(s) `{'`, `'.join(unknown_rows)}`; choose among {', '.join(SCENARIO_BY_NAME)}")
    args.rows = [s.name for s in SCENARIOS if s.name in rows]
    if args.no_gatehouse:
        args.only -= {name for name in OWN if name.startswith("gatehouse")}
    if args.baseline is None:
        args.only -= set(BASE)
    else:
        args.baseline = args.baseline.expanduser().resolve()
        if not (args.baseline / "gateway").is_dir():
            parser.error(f"--baseline `{args.baseline}` is not a Gatehouse checkout (no gateway/ in it); give the directory of a second clone")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark; 0 when it completed (unavailable targets are reported, not failures)."""
    args = parse_args(argv)
    started = time.monotonic()
    if shutil.which("wrk") is None:
        print("wrk is not installed; run `bash scripts/bench-deps.sh` (as root) first", file=sys.stderr)
        return 1
    if args.nice:
        set_niceness(args.nice)
    cpus = len(os.sched_getaffinity(0))
    pin = not args.no_pin and cpus >= 2 and shutil.which("taskset") is not None
    if not pin and not args.no_pin:
        print(f"note: not pinning ({cpus} usable CPU(s), taskset {'found' if shutil.which('taskset') else 'missing'}); ratios then mix client and server cost")
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    os.chmod(workdir, 0o755)
    bench = Bench(args=args, workdir=workdir, client_core=args.client_core if pin else None, server_core=args.server_core if pin else None)
    bench.notes.append(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    keys = make_keys(workdir / "keys")
    token = mint_token(keys, user=gatehouse_target.BENCH_USER, device=gatehouse_target.BENCH_SERIAL, lifetime_s=4 * 3600)
    users = gatehouse_target.many_users(min(args.devices, gatehouse_target.MANY_USERS))
    bench.user_tokens = [token] + [mint_token(keys, user=user, device=serial, lifetime_s=4 * 3600) for user, serial in users[1:]]
    bench.tokens_file = write_tokens(workdir / "many-users.tokens", bench.user_tokens)
    paced_info: dict[str, object] = {}
    summary: dict[str, dict[str, dict[str, float]]] = {}
    compared: dict[str, dict[str, list[float]]] = {}
    try:
        start_targets(bench, keys, token)
        check_rows(bench)
        if "gatehouse" in bench.targets:
            bench.memory = Memory(devices=args.devices, rss_after_start=rss_bytes(bench.targets["gatehouse"].pids))
        bench.log(f"warming up {len(cells(bench))} rows x targets ...")
        warm_up(bench)
        if bench.memory is not None and "gatehouse" in bench.targets:
            bench.memory.rss_after_warmup = rss_bytes(bench.targets["gatehouse"].pids)
        rounds(bench)
        summary = summarise(bench)
        compared = comparisons(bench)
        if args.paced_rounds > 0 and args.paced_duration > 0 and "get" in summary:
            paced_info = paced_phase(bench, summary["get"])
        memory_phase(bench, keys, token)
    finally:
        for target in reversed(list(bench.targets.values())):
            target.stop()
        if bench.upstream is not None:
            bench.upstream.stop()
    if "gatehouse-no-ledger" in bench.targets or "gatehouse-no-ledger" in bench.unavailable:
        bench.ledger_micro = ledger_micro(bench)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        print_table(bench, summary, compared)
        print_paced(bench, paced_info)
        print_memory(bench)
        if "gatehouse" in bench.unavailable:
            print(f"\ngatehouse target unavailable: {bench.unavailable['gatehouse']}")
    print(report.getvalue(), end="")
    out = write_json(bench, summary, compared, paced_info, started)
    text_out = out.with_suffix(".txt")
    text_out.write_text(f"{datetime.now(UTC).isoformat(timespec='seconds')} {' '.join(sys.argv)}\n{report.getvalue()}", encoding="utf-8")
    shown = [str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in (out, text_out)]
    print(f"\nwrote {shown[0]} and {shown[1]} ({time.monotonic() - started:.0f}s in all)")
    if args.keep_workdir:
        print(f"configs and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
