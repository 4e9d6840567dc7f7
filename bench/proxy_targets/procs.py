"""Server processes of the benchmark: start pinned to a core, wait until they answer, read their CPU time, stop.

Owns: Target, Proc, TargetUnavailable, start_proc, http_get, wait_http, cpu_seconds, rss_bytes, free_port.
Must not import: gateway, aiohttp (the harness itself stays synchronous and light).

CPU time comes from /proc/<pid>/stat (utime + stime of every thread of the process and of its
live descendants, so nginx's worker and any Gatehouse workers are counted with their master).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_DIR = Path(__file__).resolve().parent.parent


class TargetUnavailable(RuntimeError):
    """A target could not be started; the message says why, in one line."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin_prefix(core: int | None) -> list[str]:
    """``taskset -c CORE`` when pinning is on and taskset exists, else nothing."""
    if core is None:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset is missing; run `bash scripts/bench-deps.sh` (installs util-linux)")
    return [taskset, "-c", str(core)]


@dataclass
class Proc:
    """One started server process and the log file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def start_proc(
    name: str,
    argv: Sequence[str],
    *,
    workdir: Path,
    core: int | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``argv`` pinned to ``core`` (``None``: unpinned), output to ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), full_env.get("PYTHONPATH", "")]))
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [*pin_prefix(core), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd or workdir),
            # INVARIANT: no new session. With autogroup scheduling each session is its own CPU group, so
            # a target made of three processes would get three shares of a contended core against one.
        )
    return Proc(name=name, popen=popen, log=log)


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m proxy_targets.<module> ARGS`` with the interpreter running the harness."""
    return [sys.executable, "-m", f"proxy_targets.{module}", *args]


def http_get(host: str, port: int, path: str = "/", headers: Sequence[tuple[str, str]] = (), timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a fresh connection: the status and the whole body; raises OSError."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()


def wait_http(
    proc: Proc, host: str, port: int, *, timeout: float, path: str = "/", headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, bytes]:
    """Wait until the process answers HTTP on host:port; returns the first answer's status and body.

    Raises:
        TargetUnavailable: the process exited, or did not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        code = proc.popen.poll()
        if code is not None:
            raise TargetUnavailable(f"{proc.name} exited with status {code}: {_one_line(proc.log_tail())}")
        try:
            return http_get(host, port, path, headers)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TargetUnavailable(f"{proc.name} did not answer on {host}:{port} within {timeout:.0f}s ({last}): {_one_line(proc.log_tail())}")


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-600:]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        found.extend(int(p) for p in text.split())
    return found


def process_tree(pids: Sequence[int]) -> list[int]:
    """The given processes and all their live descendants."""
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(_children(pid))
    return seen


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime, in seconds, of the processes and their live descendants (all threads)."""
    total = 0
    for pid in process_tree(pids):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5): utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pids: Sequence[int], field_name: str = "VmRSS") -> int:
    """Resident set size (or ``VmHWM``, its peak) summed over the processes and their descendants."""
    total = 0
    for pid in process_tree(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def core_busy_seconds(core: int) -> float:
    """Seconds core ``core`` spent not idle since boot (from /proc/stat), to see other load on it."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
            return busy / CLOCK_TICKS
    return 0.0


@dataclass
class Target:
    """A server under test: where wrk sends requests, which headers it adds, and its own processes.

    ``procs`` are the target's own processes (the proxy, nginx and its auth service, Gatehouse);
    the shared upstream is not among them, except for the ``direct`` target, which is the upstream.
    """

    name: str
    description: str
    url: str
    procs: list[Proc]
    headers: tuple[tuple[str, str], ...] = ()
    notes: list[str] = field(default_factory=list)
    stop_procs: bool = True

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.popen.poll() is None for p in self.procs)

    def stop(self) -> None:
        if self.stop_procs:
            for proc in reversed(self.procs):
                proc.stop()
