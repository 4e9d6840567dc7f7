"""kill -9 between (and during) requests loses no acknowledged grant, and the log still verifies.

A subprocess serves the break-glass API over the SQLite audit log (``gateway/store/sqlite_audit.py``,
``synchronous=FULL``). The test sends grant requests, records every id it got a 201 for, SIGKILLs the
process (once between requests, once with a burst of requests in flight), restarts it on the same
file (which re-verifies and replays the log), and finally checks that every acknowledged grant is
in the log and that ``verify`` passes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from breakglass import EventKind, verify_sink
from gateway.store.sqlite_audit import SqliteAuditSink
from tests.gateway.web.breakglass.support import CLIENT, REASON, as_user

REPO = Path(__file__).resolve().parents[4]


class Killee:
    """One run of the killee process."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/.gatehouse/api/v1/break-glass"

    @classmethod
    async def start(cls, db: Path) -> Killee:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.gateway.web.breakglass.killee", str(db), cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if not line.startswith(b"listening "):
            process.kill()
            await process.wait()
            pytest.fail(f"the killee did not start: {line!r}")
        return cls(process, int(line.split()[1]))

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert -signal.SIGKILL == await self.process.wait()


async def grant(session: aiohttp.ClientSession, url: str, user: str) -> str | None:
    """Ask for a grant; the id when acknowledged (201), None when the process died first."""
    try:
        async with session.post(url, json={"route": "wiki", "reason": REASON, "duration_s": 600},
                                headers=as_user(user, f"SER-{user}", **CLIENT)) as response:
            if response.status != 201:
                return None
            return str((await response.json())["id"])
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def test_kill_9_loses_no_acknowledged_grant(tmp_path: Path) -> None:
    """Every grant the client saw acknowledged survives SIGKILLs and restarts; the chain verifies."""
    db = tmp_path / "gatehouse.db"
    acknowledged: list[str] = []
    users = (f"user{i}" for i in range(10_000))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _round in range(3):
            killee = await Killee.start(db)
            try:
                for _ in range(5):  # sequential: each one answered before the next
                    grant_id = await grant(session, killee.url, next(users))
                    assert grant_id is not None
                    acknowledged.append(grant_id)
                # A burst in flight: kill as soon as the first answer arrives.
                burst = [asyncio.ensure_future(grant(session, killee.url, next(users))) for _ in range(30)]
                await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED)
                await killee.kill()
                for result in await asyncio.gather(*burst):
                    if result is not None:
                        acknowledged.append(result)
            finally:
                if killee.process.returncode is None:
                    await killee.kill()
        last = await Killee.start(db)  # reopening verifies and replays the whole log
        await last.kill()

    sink = await SqliteAuditSink.open(db)
    try:
        report = await verify_sink(sink)
        entries = await sink.entries()
    finally:
        await sink.close()
    granted = {e.event.grant_id for e in entries if e.event.kind is EventKind.GRANTED}
    assert report.ok, report.problems
    assert len(acknowledged) >= 15
    assert set() == set(acknowledged) - granted
