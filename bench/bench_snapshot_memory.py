"""What resident snapshots cost: bytes per snapshot and MB for a fleet, loaded the way Gatehouse loads them.

Owns: this command line only (it reuses proxy_targets.gatehouse's bench fleet).
Must not import: gateway at module level (the measuring subprocess imports it, so its own
imports are in the baseline and not in the figure).

Seeds a SQLite store with the bench fleet (``open_store`` then ``put_snapshots`` in batches of
5,000), then in a fresh process opens the store, reads RSS (``VmRSS`` in /proc/self/status), runs
``SnapshotCache(store).load()`` and reads RSS again; a second fresh process does the same under
tracemalloc (which has its own overhead, so it never measures RSS). Prints the RSS added and the
Python heap added, per snapshot and for the whole fleet, and what one snapshot's objects weigh
field by field (objects shared between snapshots are counted once and spread over the fleet).
A benchmark, not a test: it asserts nothing.

Run: ``.venv/bin/python bench/bench_snapshot_memory.py`` (100,000 devices, about 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for entry in (str(BENCH_DIR), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

MB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident set size (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def seed(db: Path, devices: int) -> None:
    """Write the bench fleet into a new SQLite store at ``db``, as the proxy bench seeds it."""
    from proxy_targets.gatehouse import seed_store

    stored = await seed_store(db, devices)
    if stored != devices:
        raise RuntimeError(f"seeded {stored} snapshots, expected {devices}")


def pymalloc_size(obj: object) -> int:
    """What an object takes in memory: sys.getsizeof (with the GC header) rounded up to 16 bytes."""
    size = sys.getsizeof(obj)
    return (size + 15) & ~15 if size <= 512 else size


def field_breakdown(snapshots: Sequence[object]) -> dict[str, float]:
    """Bytes per snapshot by field: each distinct object once, spread over all snapshots."""
    from dataclasses import fields

    from policy_engine.model import DeviceSnapshot, Version

    count = len(snapshots)
    out: dict[str, float] = {"DeviceSnapshot": sum(pymalloc_size(s) for s in snapshots) / count}
    immortal = {id(None), id(True), id(False)}
    for field in fields(DeviceSnapshot):
        seen: set[int] = set()
        total = 0
        for snapshot in snapshots:
            value = getattr(snapshot, field.name)
            stack = [value]
            while stack:
                obj = stack.pop()
                if id(obj) in seen or id(obj) in immortal or (type(obj) is int and -5 <= obj <= 256):  # type: ignore[operator]
                    continue
                seen.add(id(obj))
                total += pymalloc_size(obj)
                if type(obj) is tuple:
                    stack.extend(obj)
                elif type(obj) is Version:
                    stack.extend((obj.parts, obj.text))
        out[field.name] = total / count
    return out


async def measure(db: Path, *, traced: bool, breakdown: bool) -> dict[str, object]:
    """Load the store into a fresh SnapshotCache; RSS (or traced heap) before and after."""
    import tracemalloc

    from gateway.store.snapshots import SnapshotCache
    from gateway.store import open_store

    store = await open_store(f"sqlite:///{db}")
    try:
        gc.collect()
        if traced:
            tracemalloc.start()
        before_rss = rss_bytes()
        before_heap = tracemalloc.get_traced_memory()[0] if traced else 0
        cache = SnapshotCache(store)
        await cache.load()
        gc.collect()
        after_rss = rss_bytes()
        after_heap, peak_heap = tracemalloc.get_traced_memory() if traced else (0, 0)
        if traced:
            tracemalloc.stop()
        result: dict[str, object] = {
            "devices": len(cache),
            "rss_added": after_rss - before_rss,
            "heap_added": after_heap - before_heap,
            "heap_peak": peak_heap - before_heap,
        }
        if breakdown:
            result["fields"] = field_breakdown(cache.snapshots())
        return result
    finally:
        await store.close()


def child(argv: Sequence[str]) -> dict[str, object]:
    """Run one measurement in a fresh interpreter; its JSON result."""
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"measuring process failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Seed, measure in fresh processes, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--db", type=Path, help="reuse this store (seeded with --devices when it does not exist)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes measuring RSS (the median is printed)")
    parser.add_argument("--measure", choices=("rss", "heap"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure is not None:
        result = asyncio.run(measure(args.db, traced=args.measure == "heap", breakdown=args.measure == "heap"))
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="gatehouse-snapmem-") as tmp:
        db = args.db or Path(tmp) / "gatehouse.db"
        if not db.exists():
            print(f"seeding {args.devices:,} snapshots into {db} ...", file=sys.stderr, flush=True)
            asyncio.run(seed(db, args.devices))
        runs = [child(["--measure", "rss", "--db", str(db)]) for _ in range(max(1, args.runs))]
        heap = child(["--measure", "heap", "--db", str(db)])

    devices = int(runs[0]["devices"])  # type: ignore[arg-type]
    rss = sorted(int(r["rss_added"]) for r in runs)[len(runs) // 2]  # type: ignore[arg-type]
    heap_added = int(heap["heap_added"])  # type: ignore[arg-type]
    print(f"{devices:,} snapshots loaded with SnapshotCache.load() from SQLite ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    each = ", ".join(f"{int(r['rss_added']) / MB:.1f}" for r in runs)  # type: ignore[arg-type]
    print(f"RSS added:   {rss / devices:7.1f} B/snapshot  {rss / MB:6.1f} MB  (median of {len(runs)}: {each} MB)")
    print(f"heap added:  {heap_added / devices:7.1f} B/snapshot  {heap_added / MB:6.1f} MB  (tracemalloc; load peak +{int(heap['heap_peak']) / MB:.1f} MB)")  # type: ignore[arg-type]
    print(f"for 100,000: {rss / devices * 100_000 / MB:6.1f} MB RSS (goal <= 60 MB)")
    print("by field (sys.getsizeof rounded to 16 B; shared objects spread over the fleet):")
    fields: dict[str, float] = heap["fields"]  # type: ignore[assignment]
    for name, size in fields.items():
        if size >= 0.5:
            print(f"  {name:<22} {size:7.1f} B")
    print(f"  {'total':<22} {sum(fields.values()):7.1f} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
