"""kill -9 during batch ingest: everything the server acknowledged is in the store afterwards."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp

from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.support import API_TOKEN, store_path

ROOT = Path(__file__).resolve().parents[3]
SENDERS = 4
BATCH = 50
KILL_AFTER_BATCHES = 24


def batch(sender: int, number: int) -> list[dict[str, object]]:
    return [
        {
            "serial": f"K{sender}-{number:04d}-{i:02d}",
            "collected_at": 1795356000 + number,
            "platform": "linux",
            "os_name": "Ubuntu",
            "os_version": "24.04",
            "disk_encrypted": i % 2 == 0,
            "custom": {"sender": sender, "batch": number},
        }
        for i in range(BATCH)
    ]


class TestKillDuringIngest:
    async def test_sigkill_loses_nothing_acknowledged(self, tmp_path: Path) -> None:
        """Concurrent senders POST batches; the server is SIGKILLed mid-stream; every acknowledged item survives."""
        db = store_path(tmp_path)
        log = (tmp_path / "server.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.gateway.ingest.crash_server", str(tmp_path),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
        )
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)  # type: ignore[union-attr]
            assert line.startswith(b"ready "), line
            url = f"http://127.0.0.1:{int(line.split()[1])}/.gatehouse/api/v1/snapshots"
            acknowledged: dict[str, int] = {}
            acked_batches = 0
            enough = asyncio.Event()
            refused: list[BaseException] = []

            async def sender(session: aiohttp.ClientSession, index: int) -> None:
                nonlocal acked_batches
                number = 0
                while True:
                    items = batch(index, number)
                    try:
                        async with session.post(url, json={"snapshots": items}, headers={"Authorization": f"Bearer {API_TOKEN}"}) as response:
                            if response.status != 200:
                                return
                            body = await response.json()
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        refused.append(exc)
                        return
                    for item, result in zip(items, body["results"], strict=True):
                        assert "stored" == result["outcome"]
                        acknowledged[str(item["serial"])] = int(item["collected_at"])  # type: ignore[call-overload]
                    acked_batches += 1
                    if acked_batches >= KILL_AFTER_BATCHES:
                        enough.set()
                    number += 1

            async with aiohttp.ClientSession() as session:
                tasks = [asyncio.create_task(sender(session, i)) for i in range(SENDERS)]
                await asyncio.wait_for(enough.wait(), timeout=120)
                proc.send_signal(signal.SIGKILL)
                await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            assert -signal.SIGKILL == await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            log.close()

        store = await SqliteStore.open(db)
        latest = {s.serial: s for s in (await store.load_latest()).snapshots}
        await store.close()

        missing = [serial for serial in acknowledged if serial not in latest]
        assert [] == missing
        assert all(latest[s].collected_at.timestamp() == t for s, t in acknowledged.items())
        assert len(acknowledged) >= KILL_AFTER_BATCHES * BATCH
        assert refused, "no request failed after the kill: the server was not killed mid-stream"
