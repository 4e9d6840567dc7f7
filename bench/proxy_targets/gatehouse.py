"""The Gatehouse target: a realistic configuration, a 100,000-device store, and `gatehouse serve` on it.

Owns: start_gatehouse, write_policy, write_config, seed_store, bench_fleet, many_users (the
many-users row's users and devices) and the seeding command line
(``python -m proxy_targets.gatehouse seed --db PATH --devices N``).
Must not import: gateway at module level. The gateway is imported only by the seeding subprocess
(and policy_engine only inside bench_fleet), so a gateway that does not import yet makes the
Gatehouse row unavailable instead of breaking the bench.

What the target needs from Gatehouse (checked in this order; the first thing missing is printed as
``gatehouse target unavailable: <why>`` and the rest of the bench runs without the row):

1. ``gateway.store.open_store("sqlite:///<abs path>")`` returning a store whose
   ``put_snapshots(list[DeviceSnapshot])`` and ``close()`` work: the seeding subprocess writes
   ``devices`` snapshots (100,000 by default) in batches of 5,000. The first ``MANY_USERS`` (1,000)
   pass every check and each is owned by its own user (``many_users``); the first of them is
   ``BENCH_SERIAL``, owned by ``BENCH_USER``, the device of every row but many-users.
2. ``python -m gateway serve --config FILE`` exists (``--workers 1`` is added when ``serve --help``
   mentions ``--workers``, so the one-core figure stays one process; when serve then exits with
   status 2 naming ``--workers``, it is started again without it), and ``check-config FILE``
   accepts the file written by ``write_config``:
   - ``listeners: [{address: 127.0.0.1:<port>}]``, ``metrics.address: 127.0.0.1:<port>``;
   - ``store: sqlite:///<workdir>/gatehouse.db``; ``policy: policy.yaml`` (three tiers ``low``,
     ``medium``, ``high``, each extending the one before; see ``write_policy``);
   - ``identity:`` (gateway/config/identity.py's IdentitySettings) with ``sources: [{kind: bearer}]``,
     ``jwt: {issuers: [ISSUER], audiences: [AUDIENCE], key_files: [<jwks.json>], algorithms: [ES256],
     claims: {device_serial: device_serial}}`` and ``device: {sources: [claim]}``: the device serial
     comes from the verified user token's ``device_serial`` claim (no mTLS in the bench, and wrk
     speaks plain HTTP like every other target);
   - one route ``{id: bench, path_prefix: /, upstream: <upstream_url>, tier: high, require_owner: true}``;
   - ``logging: {level: warning}`` by default (nginx runs with ``access_log off`` and the aiohttp
     targets without access logs); the logs-on targets use ``info``: one ``request.completed``
     line per request, written to the process's log file (stdout redirected to it);
   - ``evidence: {ledger_enabled: false}`` only for the ledger-off target (otherwise the key is not
     written, so a baseline checkout from before the setting reads the same file).
3. Gatehouse loads every snapshot into memory at start and answers within ``start_timeout_s``.
4. ``GET /`` with ``Authorization: Bearer <token for BENCH_USER on BENCH_SERIAL>`` answers 200 with
   the upstream's 100-byte body, unchanged: the whole path (verified identity, device lookup, tier ``high`` policy,
   proxying) runs on every benchmark request.

``root`` runs another checkout's Gatehouse (``make bench BASELINE=DIR``): its own code seeds its
store and serves (``PYTHONPATH`` is that checkout), with its ``.venv``'s Python when it has one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from proxy_targets.procs import Proc, Target, TargetUnavailable, free_port, start_proc, wait_http
from proxy_targets.tokens import AUDIENCE, DEVICE_CLAIM, ISSUER, BenchKeys
from proxy_targets.upstream import BODY as UPSTREAM_BODY

if TYPE_CHECKING:
    from policy_engine import DeviceSnapshot

BENCH_USER = "bench.user@bench.example"
BENCH_SERIAL = "C02BENCH0000001"
DEFAULT_DEVICES = 100_000
MANY_USERS = 1_000
"""The many-users row: this many users, each on their own healthy device (the fleet's first devices)."""
ROUTE_TIER = "high"

POLICY = """\
# Three tiers, each extending the one before (the benchmark route uses `high`).
format: 1
description: gatehouse proxy benchmark policy
checks:
  disk_encrypted: {fact: disk_encrypted, equals: true}
  firewall: {fact: firewall_enabled, equals: true}
  os_current:
    fact: os_version
    min_version: {darwin: "14.4", windows: "10.0.22631", linux: {ubuntu: "22.04", default: "6.0"}}
  screen_lock: {fact: screen_lock_enabled, equals: true}
  screen_lock_delay: {fact: screen_lock_delay_s, at_most: 900, if_unknown: pass}
  remote_login_off: {fact: remote_login_enabled, equals: false, if_unknown: pass}
  auto_updates: {fact: auto_updates_enabled, equals: true, severity: nudge}
  sip: {fact: sip_enabled, equals: true, platforms: [darwin]}
  gatekeeper: {fact: gatekeeper_enabled, equals: true, platforms: [darwin]}
tiers:
  low:
    checks: [disk_encrypted]
    max_snapshot_age: 7d
    break_glass: {mode: allowed, max_duration: 8h}
  medium:
    extends: low
    checks: [firewall, os_current, screen_lock]
    max_snapshot_age: 24h
    break_glass: {mode: approval, max_duration: 4h}
  high:
    extends: medium
    checks: [screen_lock_delay, remote_login_off, auto_updates, sip, gatekeeper]
    max_snapshot_age: 4h
    break_glass: never
"""


def many_users(count: int = MANY_USERS) -> list[tuple[str, str]]:
    """(user, device serial) of the fleet's first ``count`` devices: healthy, each owned by its user; BENCH_USER first."""
    return [(BENCH_USER if i == 0 else f"user{i:06d}@bench.example", f"C02BENCH{i + 1:07d}") for i in range(count)]


def write_policy(path: Path) -> Path:
    """Write the benchmark's three-tier policy to ``path``."""
    path.write_text(POLICY, encoding="utf-8")
    return path


def write_config(
    path: Path,
    *,
    port: int,
    metrics_port: int,
    db: Path,
    policy: Path,
    jwks: Path,
    upstream_url: str,
    log_level: str = "warning",
    ledger: bool = True,
) -> Path:
    """Write the Gatehouse configuration the target serves with (JSON, which the YAML loader reads)."""
    config: dict[str, object] = {
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "metrics": {"address": f"127.0.0.1:{metrics_port}"},
        "store": f"sqlite:///{db}",
        "policy": str(policy),
        "logging": {"level": log_level, "format": "json"},
        # the bench fleet's owners arrive inside its snapshots, as a trusted MDM export's would
        "ingest": {"trust_reported_owners": True},
        "identity": {
            "sources": [{"kind": "bearer"}],
            "jwt": {
                "issuers": [ISSUER],
                "audiences": [AUDIENCE],
                "key_files": [str(jwks)],
                "algorithms": ["ES256"],
                "claims": {"device_serial": DEVICE_CLAIM},
            },
            "device": {"sources": ["claim"]},
        },
        "routes": [
            {"id": "bench", "path_prefix": "/", "upstream": upstream_url, "tier": ROUTE_TIER, "require_owner": True},
        ],
    }
    if not ledger:
        config["evidence"] = {"ledger_enabled": False}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def bench_fleet(count: int, now: datetime, *, seed: int = 9) -> Iterator[DeviceSnapshot]:
    """``count`` snapshots: the many-users devices (healthy and fresh, BENCH_SERIAL first), then a mixed fleet.

    All are about 45% macOS, 40% Windows and 15% Linux; past the many-users devices, mostly healthy,
    some failing or stale. Repeated strings are interned, as the ingest path does.
    """
    from policy_engine import DeviceSnapshot, OsFamily, Version

    rng = random.Random(seed)
    intern = sys.intern
    macos = [Version.parse(v) for v in ("13.6.9", "14.4.1", "14.7", "15.0.1", "15.1", "15.2")]
    windows = [Version.parse(v) for v in ("10.0.19045", "10.0.22631", "10.0.26100")]
    ubuntu = [Version.parse(v) for v in ("20.04", "22.04", "24.04")]
    agent = Version.parse("5.23.0")
    head = dict(many_users(min(count, MANY_USERS)))
    for i in range(count):
        owner = BENCH_USER if i == 0 else f"user{i:06d}@bench.example"
        serial = head.get(owner) if i < MANY_USERS else None
        fresh = now - timedelta(seconds=rng.randrange(30, 3 * 3600 if serial is None else 300))
        if serial is None and rng.random() < 0.03:
            fresh = now - timedelta(days=rng.randrange(2, 20))
        healthy = serial is not None or rng.random() < 0.85
        roll = 0.0 if i == 0 else rng.random()
        common = dict(
            collected_at=fresh,
            received_at=fresh,
            source=intern("osquery"),
            owners=(owner,),
            agent_name=intern("osquery"),
            agent_version=agent,
            firewall_enabled=healthy or rng.random() < 0.5,
            disk_encrypted=healthy or rng.random() < 0.5,
            screen_lock_enabled=True,
            screen_lock_delay_s=300 if healthy else rng.choice((300, 1800)),
            remote_login_enabled=False,
            auto_updates_enabled=healthy,
        )
        if roll < 0.45:
            yield DeviceSnapshot(
                serial=serial or f"C02B{i:07d}X",
                platform=OsFamily.DARWIN, os_name=intern("macOS"),
                os_version=macos[4] if i == 0 else rng.choice(macos[1:] if healthy else macos),
                hostname=f"mac-{i:06d}", sip_enabled=True, gatekeeper_enabled=True, **common,  # type: ignore[arg-type]
            )
        elif roll < 0.85:
            yield DeviceSnapshot(
                serial=serial or f"5CG{i:07d}W", platform=OsFamily.WINDOWS, os_name=intern("Windows 11 Pro"),
                os_version=rng.choice(windows[1:] if healthy else windows), hostname=f"win-{i:06d}", **common,  # type: ignore[arg-type]
            )
        else:
            yield DeviceSnapshot(
                serial=serial or f"PF{i:08d}L", platform=OsFamily.LINUX, os_name=intern("Ubuntu"), distribution=intern("ubuntu"),
                os_version=rng.choice(ubuntu[1:] if healthy else ubuntu), hostname=f"lnx-{i:06d}", **common,  # type: ignore[arg-type]
            )


async def seed_store(db: Path, count: int, *, batch: int = 5_000) -> int:
    """Write ``count`` fleet snapshots into the SQLite store at ``db``; returns how many were stored."""
    from gateway.store import open_store

    now = datetime.now(UTC)
    store = await open_store(f"sqlite:///{db}")
    stored = 0
    try:
        pending: list[DeviceSnapshot] = []
        for snapshot in bench_fleet(count, now):
            pending.append(snapshot)
            if len(pending) >= batch:
                stored += sum(1 for o in await store.put_snapshots(pending) if o == "stored")
                pending = []
        if pending:
            stored += sum(1 for o in await store.put_snapshots(pending) if o == "stored")
    finally:
        await store.close()
    return stored


def _run(argv: Sequence[str], *, timeout: float, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, cwd=str(cwd), stdin=subprocess.DEVNULL, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


def _last_lines(text: str, count: int = 6) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[-700:]


def start_gatehouse(
    workdir: Path,
    upstream_url: str,
    *,
    keys: BenchKeys,
    token: str,
    core: int | None,
    devices: int = DEFAULT_DEVICES,
    log_level: str = "warning",
    start_timeout_s: float = 240.0,
    name: str = "gatehouse",
    command: Sequence[str] | None = None,
    ledger: bool = True,
    root: Path | None = None,
    description: str = "",
) -> Target:
    """Seed a store with ``devices`` snapshots, write the configuration, start `gatehouse serve` pinned to ``core``.

    Returns a Target whose requests carry ``Authorization: Bearer <token>``; ``token`` must be
    signed by ``keys`` for BENCH_USER with BENCH_SERIAL in its ``device_serial`` claim.
    ``command`` is how to run the CLI (default ``[<python>, "-m", "gateway"]``, from ``root``);
    ``root`` is the checkout whose Gatehouse runs (default this one), with ``root/.venv``'s Python
    when there is one; ``ledger=False`` writes ``evidence.ledger_enabled: false``.

    Raises:
        TargetUnavailable: any step above failed; the message says which and why, in one line.
    """
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    bench_dir = Path(__file__).resolve().parent.parent
    this_checkout = bench_dir.parent
    root = (root or this_checkout).resolve()
    python = sys.executable
    if root != this_checkout and (root / ".venv" / "bin" / "python").exists():
        python = str(root / ".venv" / "bin" / "python")
    # INVARIANT: the seeder and the server import `gateway` from `root`, whatever PYTHONPATH the harness runs with.
    env = {"PYTHONPATH": os.pathsep.join([str(bench_dir), str(root)])}

    cli = list(command) if command is not None else [python, "-m", "gateway"]
    probe = _run([*cli, "serve", "--help"], timeout=60, cwd=root, env=env)
    if probe.returncode != 0:
        raise TargetUnavailable(f"`gatehouse serve` is not available yet: {_last_lines(probe.stderr or probe.stdout)}")
    workers = ["--workers", "1"] if "--workers" in probe.stdout else []

    db = home / "gatehouse.db"
    for leftover in home.glob("gatehouse.db*"):
        leftover.unlink()
    started = time.monotonic()
    seeded = _run(
        [python, "-m", "proxy_targets.gatehouse", "seed", "--db", str(db), "--devices", str(devices)],
        timeout=600,
        cwd=bench_dir,
        env=env,
    )
    if seeded.returncode != 0:
        raise TargetUnavailable(f"seeding the store with {devices} snapshots failed: {_last_lines(seeded.stderr or seeded.stdout)}")
    seed_s = time.monotonic() - started

    port, metrics_port = free_port(), free_port()
    config = write_config(
        home / "gatehouse.json",
        port=port,
        metrics_port=metrics_port,
        db=db,
        policy=write_policy(home / "policy.yaml"),
        jwks=keys.jwks,
        upstream_url=upstream_url,
        log_level=log_level,
        ledger=ledger,
    )
    checked = _run([*cli, "check-config", str(config)], timeout=60, cwd=root, env=env)
    if checked.returncode != 0:
        raise TargetUnavailable(f"`gatehouse check-config` refused the bench configuration: {_last_lines(checked.stdout + checked.stderr)}")

    headers = (("Authorization", f"Bearer {token}"),)
    started = time.monotonic()
    proc: Proc = start_proc(name, [*cli, "serve", "--config", str(config), *workers], workdir=home, core=core, cwd=root, env=env)
    try:
        try:
            status, body = wait_http(proc, "127.0.0.1", port, timeout=start_timeout_s, headers=headers)
        except TargetUnavailable:
            if not workers or proc.popen.returncode != 2 or "--workers" not in proc.log_tail():
                raise
            # This build lists --workers but refuses it (one worker only): start it without the flag.
            workers = []
            started = time.monotonic()
            proc = start_proc(name, [*cli, "serve", "--config", str(config)], workdir=home, core=core, cwd=root, env=env)
            status, body = wait_http(proc, "127.0.0.1", port, timeout=start_timeout_s, headers=headers)
        if (status, body) != (200, UPSTREAM_BODY):
            raise TargetUnavailable(
                f"`gatehouse serve` answered {status} with {len(body)} bytes, not 200 with the upstream's body, to the bench token"
                f" (user {BENCH_USER}, device {BENCH_SERIAL}, tier {ROUTE_TIER}): {body[:200]!r}; log: {_last_lines(proc.log_tail())}"
            )
        ready_s = time.monotonic() - started
    except BaseException:
        proc.stop()
        raise
    return Target(
        name=name,
        description=description or f"gatehouse serve ({devices:,} devices, ES256 JWT, tier {ROUTE_TIER})",
        url=f"http://127.0.0.1:{port}/",
        procs=[proc],
        headers=headers,
        notes=[
            f"store seeded with {devices:,} snapshots in {seed_s:.1f}s; ready {ready_s:.1f}s after start"
            + ("" if workers else " (started without --workers)")
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``seed --db PATH --devices N``: write the benchmark fleet into a SQLite store."""
    parser = argparse.ArgumentParser(prog="python -m proxy_targets.gatehouse")
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed", help="write the benchmark fleet into a SQLite store")
    seed.add_argument("--db", type=Path, required=True)
    seed.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    args = parser.parse_args(argv)
    stored = asyncio.run(seed_store(args.db.resolve(), args.devices))
    if stored != args.devices:
        print(f"stored {stored} of {args.devices} snapshots", file=sys.stderr)
        return 1
    print(f"stored {stored} snapshots in {args.db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
