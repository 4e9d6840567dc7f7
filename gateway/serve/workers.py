"""Gatehouse on every core: a supervisor process and N worker processes serving the same ports.

Owns: run (blocking, for the CLI: one process, or a supervisor when ``workers > 1``), default_workers,
supervise (the supervisor), worker_main (a worker process's entry point), WorkerLink (the worker's end
of its control socket).
Must not import: cli (the CLI calls ``run``).

- ``run(path, workers=N)``: N defaults to the CPUs this process may run on (``default_workers()``). 1 is
  a single process (``gateway.serve.server.serve``). More than 1 starts a supervisor process that runs N worker
  processes, each the full app on the same ports (``SO_REUSEPORT``), with metrics served once, aggregated;
  what changes between processes (snapshot propagation, CSRF secret) is below.

- The supervisor loads the configuration once (an invalid one exits 1 before anything starts),
  creates and migrates an SQLite store once (so the workers never race to create the file), reserves a concrete port for every listener configured with port 0 (so every worker binds the same
  one), starts the metrics listener, then starts N workers: fresh interpreters (``sys.executable``,
  the same ``sys.path``) that each run the full app (``gateway.serve.server.serve``) and bind every proxy
  listener with ``SO_REUSEPORT``, so the kernel spreads new connections over them. A worker runs on
  uvloop when it is installed (it is optional). Workers log like the process that called ``run``
  (same format and level, same stdout); every line of theirs carries ``worker`` (index) and ``pid``.
- Signals: SIGTERM/SIGINT to the supervisor are sent on to every worker; each drains as a single
  process does, and the supervisor exits 0 when every worker exited 0 (1 otherwise, or when a worker
  is still running ``shutdown_grace_s + 10`` s later and is killed). Workers log ``gateway.stopping``
  only once every worker has closed its listeners, so after that line no worker accepts. SIGHUP is
  sent to every worker, and each reloads on its own (``config.reloaded`` per worker).
- A worker that exits while the supervisor is not stopping is logged (``worker.exited``) and started
  again after a backoff: 0.5 s doubling per quick failure up to 30 s, back to 0.5 s once a worker
  has run for 30 s. A worker that fails before every worker has started once fails the start: the
  others are stopped and the supervisor exits 1. A worker whose supervisor is gone (control socket
  closed) stops itself (``worker.orphaned``).
- Metrics: prometheus-client multiprocess mode. The supervisor points ``PROMETHEUS_MULTIPROC_DIR`` of
  the workers at a fresh temporary directory (removed on exit), serves ``metrics.address`` itself
  from a ``MultiProcessCollector``, and calls ``mark_process_dead`` for every worker that exits.
  Workers never serve metrics. Without a metrics address there is no directory.
- State shared through the store: each worker has its own store connection and snapshot cache (WAL
  lets several processes use one SQLite file). The store announces every write other processes hold
  in memory (snapshots, owners, device certificates, audit entries: ``Store.subscribe``). PostgreSQL
  tells every worker itself; an SQLite notice is ``local`` (only the writing worker hears it), so the
  worker's link forwards it to the supervisor, which tells every other worker to refresh its snapshot
  cache and break-glass state from the store at once: an ingest through one worker is seen by the
  others within milliseconds. The supervisor learns of writes only through these notices, never from
  requests or URL paths. The periodic refresh stays as the safety net (writes from other processes,
  such as the command line); with an SQLite store and no ``ingest.cache_refresh_s`` in the file it
  runs every second instead of every 30 s.
- Break-glass forms carry a CSRF token whose secret is per process unless
  ``breakglass.csrf_secret`` is configured; the supervisor gives its workers one shared random
  secret instead, so a form served by one worker is accepted by another.

Control protocol (one line per message over a socketpair): worker to supervisor ``ready``,
``changed``, ``closed``; supervisor to worker ``refresh``, ``proceed``.

Events: ``supervisor.started``, ``worker.exited``, ``supervisor.stopping``, ``supervisor.stopped``,
``worker.orphaned``, ``worker.refresh_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.keys import BREAKGLASS, SNAPSHOT_CACHE, STORE
from gateway.logging import configure_logging
from gateway.config.secret import Secret
from gateway.serve.server import _metrics_endpoint, exit_code, loop_factory, serve
from gateway.config.settings import Settings, load_settings
from gateway.store import open_store, sqlite_file
from gateway.store.base import ChangeNotice, StoreError

_log = structlog.get_logger("gateway.workers")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 30.0
_HEALTHY_AFTER_S = 30.0
"""A worker that ran this long before exiting is restarted after the initial backoff again."""
_KILL_AFTER_GRACE_S = 10.0
_BARRIER_WAIT_S = 2.0
_MULTIWORKER_CACHE_REFRESH_S = 1.0
_BOOTSTRAP = (
    "import json, sys\n"
    "spec = json.load(sys.stdin)\n"
    "sys.path[:] = spec['sys_path']\n"
    "from gateway.serve.workers import worker_main\n"
    "sys.exit(worker_main(spec))\n"
)


# -- one process or many -------------------------------------------------------------------------


def default_workers() -> int:
    """One worker per CPU this process may run on (pinning with taskset or a cpuset counts)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # platforms without sched_getaffinity
        return os.cpu_count() or 1


def run(config_path: Path | str, *, environ: Mapping[str, str] | None = None, workers: int | None = None) -> int:
    """Serve the configuration file until SIGTERM (blocking); the exit code for the CLI.

    ``workers`` is how many processes serve; None means one per CPU this process may run on (``default_workers()``: respects taskset and cpusets). 1 is a
    single process (``gateway.serve.server.serve``); more run under a supervisor (``supervise``) that shares the
    listener ports between them, serves metrics once and restarts a worker that dies.

    Returns 0 after a graceful stop, 1 when the initial configuration is invalid (problems logged as
    ``config.load_failed``) or a listener cannot start.

    Raises:
        ValueError: ``workers`` is less than 1.
    """
    path = Path(config_path)
    count = workers if workers is not None else default_workers()
    if count < 1:
        raise ValueError(f"`workers` is {count}; give 1 or more")
    if count > 1:
        return exit_code(lambda: supervise(path, environ=environ, workers=count))

    def loader() -> Settings:
        return load_settings(path, environ)

    def main() -> int:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(serve(loader))

    return exit_code(main)


# -- the supervisor ------------------------------------------------------------------------------


def supervise(config_path: Path, *, environ: Mapping[str, str] | None, workers: int) -> int:
    """Run ``workers`` worker processes under a supervisor until SIGTERM (blocking); the exit code.

    Raises:
        ConfigError: the configuration is invalid.
        OSError: a port cannot be reserved or the metrics listener cannot start.
    """
    settings = load_settings(config_path, environ)
    return asyncio.run(_Supervisor(config_path, environ, workers, settings).run())


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    started_at: float
    ready: bool = False
    closed: bool = False

    def send(self, message: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(message + b"\n")


class _Supervisor:
    def __init__(self, config_path: Path, environ: Mapping[str, str] | None, count: int, settings: Settings) -> None:
        self._config_path = config_path
        self._environ = None if environ is None else dict(environ)
        self._count = count
        self._settings = settings
        self._live: dict[int, _Worker] = {}
        self._stop = asyncio.Event()
        self._all_ready = asyncio.Event()
        self._failed = False
        self._reservations: list[socket.socket] = []
        self._metrics_dir: str | None = None
        self._csrf_secret = secrets.token_hex(32)
        self._listeners: set[asyncio.Task[None]] = set()
        self._spawning = asyncio.Lock()

    async def run(self) -> int:
        try:
            await self._prepare_store()
        except StoreError as exc:
            _log.error("gateway.start_failed", error=f"{type(exc).__name__}: {exc}")
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._begin_stop)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        metrics_runner: web.AppRunner | None = None
        try:
            addresses = self._reserve_ports()
            metrics_url = None
            if self._settings.metrics.address is not None:
                self._metrics_dir = tempfile.mkdtemp(prefix="gatehouse-metrics-")
                metrics_runner, metrics_url = await self._start_metrics(self._metrics_dir)
            slots = [asyncio.create_task(self._keep(index, addresses)) for index in range(self._count)]
            ready = asyncio.create_task(self._all_ready.wait())
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if self._all_ready.is_set() and not self._stop.is_set():
                _log.info(
                    "supervisor.started", workers=self._count, pids=sorted(w.process.pid for w in self._live.values()),
                    listeners=[f"{'https' if listener.tls else 'http'}://{a}" for listener, (_, a) in zip(self._settings.listeners, addresses)],
                    metrics=metrics_url, loop="uvloop" if loop_factory() is not None else "asyncio",
                )
            await stopped
            codes = await self._wait_for_workers(slots)
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            for reservation in self._reservations:
                reservation.close()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        code = 1 if self._failed or any(codes) else 0
        _log.info("supervisor.stopped", exit_code=code)
        return code

    async def _prepare_store(self) -> None:
        """Create and migrate an SQLite store once, before the workers open it together.

        Two processes switching a new file to WAL at the same moment can fail with "database is
        locked"; once the file is in WAL mode (which persists) opening it concurrently is safe.
        """
        dsn = self._settings.store.reveal()
        if sqlite_file(dsn) is None:
            return  # PostgreSQL migrates under an advisory lock
        store = await open_store(dsn)
        try:
            await store.audit_sink()  # creates the audit tables too
        finally:
            await store.close()

    def _reserve_ports(self) -> list[tuple[str, str]]:
        """(configured, bound) address of every listener; port 0 becomes a port every worker can share."""
        addresses = []
        for listener in self._settings.listeners:
            if listener.port != 0:
                addresses.append((listener.address, listener.address))
                continue
            family, kind, proto, _, sockaddr = socket.getaddrinfo(listener.host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            reservation = socket.socket(family, kind, proto)
            self._reservations.append(reservation)
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # INVARIANT: bound but never listening, so it holds the port and never takes a connection.
            reservation.bind(sockaddr)
            port = reservation.getsockname()[1]
            host = f"[{listener.host}]" if ":" in listener.host else listener.host
            addresses.append((listener.address, f"{host}:{port}"))
        return addresses

    async def _start_metrics(self, directory: str) -> tuple[web.AppRunner, str]:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        runner = await _metrics_endpoint(registry)
        assert self._settings.metrics.address is not None  # INVARIANT: checked by the caller
        host, _, port = self._settings.metrics.address.rpartition(":")
        try:
            await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        return runner, f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/metrics"

    async def _keep(self, index: int, addresses: list[tuple[str, str]]) -> int:
        """Keep worker ``index`` running until the supervisor stops; its last exit code."""
        quick_failures = 0
        while not self._stop.is_set():
            worker = await self._spawn(index, addresses)
            code = await worker.process.wait()
            del self._live[index]
            self._process_dead(worker.process.pid)
            if self._stop.is_set():
                self._proceed_if_all_closed()
                return code
            ran_s = time.monotonic() - worker.started_at
            exited: dict[str, Any] = {"worker": index, "pid": worker.process.pid, "exit_code": code, "ran_s": round(ran_s, 3)}
            if code < 0:
                exited["signal"] = signal.Signals(-code).name
            if not self._all_ready.is_set():
                _log.error("worker.exited", **exited, restart_in_s=None, reason="failed while starting; stopping every worker")
                self._failed = True
                self._begin_stop()
                return code
            quick_failures = 0 if ran_s >= _HEALTHY_AFTER_S else quick_failures + 1
            delay = min(_BACKOFF_INITIAL_S * 2 ** max(quick_failures - 1, 0), _BACKOFF_MAX_S)
            _log.error("worker.exited", **exited, restart_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return 0

    async def _spawn(self, index: int, addresses: list[tuple[str, str]]) -> _Worker:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self._metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        spec = {
            "config_path": str(self._config_path),
            "environ": self._environ,
            "index": index,
            "sys_path": sys.path,
            "listeners": addresses,
            "csrf_secret": self._csrf_secret,
            "cache_refresh_s": _MULTIWORKER_CACHE_REFRESH_S,
            "logging": _logging_spec(),
            "control_fd": theirs.fileno(),
        }
        # The worker starts with the stop and reload signals blocked (the mask is inherited) and
        # unblocks them once its handlers are in place, so a SIGTERM during its start is not lost.
        # INVARIANT: one spawn at a time, or a second one would restore the first one's blocked mask.
        async with self._spawning:
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, *_interpreter_flags(), "-c", _BOOTSTRAP,
                    stdin=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),), env=env,
                )
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                theirs.close()
        assert process.stdin is not None  # INVARIANT: stdin=PIPE
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = _Worker(index, process, writer, time.monotonic())
        self._live[index] = worker
        task = asyncio.create_task(self._listen(worker, reader), name=f"worker-{index}-control")
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)
        if self._stop.is_set():  # asked to stop while this one was starting
            process.send_signal(signal.SIGTERM)
        return worker

    async def _listen(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                message = line.strip()
                if message == b"ready":
                    worker.ready = True
                    if len(self._live) == self._count and all(w.ready for w in self._live.values()):
                        self._all_ready.set()
                elif message == b"changed":
                    for other in list(self._live.values()):
                        if other is not worker:
                            other.send(b"refresh")
                elif message == b"closed":
                    worker.closed = True
                    if self._stop.is_set():
                        self._proceed_if_all_closed()
                    else:  # stopped on its own (a signal sent to it alone): nobody to wait for
                        worker.send(b"proceed")
        worker.writer.close()

    def _proceed_if_all_closed(self) -> None:
        live = list(self._live.values())
        if all(w.closed for w in live):
            for w in live:
                w.send(b"proceed")

    def _forward(self, sig: signal.Signals) -> None:
        for worker in list(self._live.values()):
            if worker.process.returncode is None:
                worker.process.send_signal(sig)

    def _begin_stop(self) -> None:
        if self._stop.is_set():
            return
        _log.info("supervisor.stopping", workers=len(self._live), grace_s=self._settings.server.shutdown_grace_s)
        self._stop.set()
        self._forward(signal.SIGTERM)

    async def _wait_for_workers(self, slots: list[asyncio.Task[int]]) -> list[int]:
        _, pending = await asyncio.wait(slots, timeout=self._settings.server.shutdown_grace_s + _KILL_AFTER_GRACE_S)
        if pending:
            self._forward(signal.SIGKILL)
            self._failed = True
        return list(await asyncio.gather(*slots))

    def _process_dead(self, pid: int) -> None:
        if self._metrics_dir is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(pid, self._metrics_dir)


def _interpreter_flags() -> list[str]:
    """The running interpreter's -W and -X options, as multiprocessing passes them to its children."""
    flags: Callable[[], list[str]] = getattr(subprocess, "_args_from_interpreter_flags", list)
    return flags()


def _logging_spec() -> dict[str, str] | None:
    """The format and level structlog was configured with here (by ``configure_logging``), for the workers."""
    if not structlog.is_configured():
        return None
    config = structlog.get_config()
    fmt = "json" if any(isinstance(p, structlog.processors.JSONRenderer) for p in config["processors"]) else "console"
    for level in ("debug", "info", "warning", "error"):
        if structlog.make_filtering_bound_logger(getattr(logging, level.upper())) is config["wrapper_class"]:
            return {"level": level, "fmt": fmt}
    return {"level": "info", "fmt": fmt}


# -- a worker ------------------------------------------------------------------------------------


def worker_main(spec: dict[str, Any]) -> int:
    """Run one worker from the supervisor's spec (read from stdin by the bootstrap); its exit code."""
    if spec["logging"] is not None:
        configure_logging(**spec["logging"])
    structlog.contextvars.bind_contextvars(worker=spec["index"], pid=os.getpid())
    link = WorkerLink(socket.socket(fileno=spec["control_fd"]))
    path = Path(spec["config_path"])
    environ = spec["environ"]

    def loader() -> Settings:
        return worker_settings(load_settings(path, environ), spec)

    def main() -> int:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(serve(loader, worker=link))

    return exit_code(main)


def worker_settings(settings: Settings, spec: Mapping[str, Any]) -> Settings:
    """What a worker runs: the reserved ports, no metrics listener, the shared CSRF secret, a faster cache refresh on SQLite."""
    resolved = dict(spec["listeners"]) if len(spec["listeners"]) == len(settings.listeners) else {}
    listeners = tuple(
        listener.model_copy(update={"address": resolved[listener.address]}) if listener.address in resolved else listener
        for listener in settings.listeners
    )
    update: dict[str, object] = {"listeners": listeners, "metrics": settings.metrics.model_copy(update={"address": None})}
    if settings.breakglass.csrf_secret is None:
        update["breakglass"] = settings.breakglass.model_copy(update={"csrf_secret": Secret(spec["csrf_secret"])})
    if "cache_refresh_s" not in settings.ingest.model_fields_set and sqlite_file(settings.store.reveal()) is not None:
        update["ingest"] = settings.ingest.model_copy(update={"cache_refresh_s": spec["cache_refresh_s"]})
    return settings.model_copy(update=update)


class WorkerLink:
    """A worker's end of its control socket: forwards its store's local change notices, follows its siblings', the stop barrier."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._writer: asyncio.StreamWriter | None = None
        self._refresh_wanted = asyncio.Event()
        self._proceed = asyncio.Event()
        self._stopping = False

    def prepare(self, app: web.Application) -> None:
        """Forward the store's local change notices, and follow the control socket, while the app runs."""
        app.cleanup_ctx.append(self._control)

    def started(self) -> None:
        """Tell the supervisor this worker serves."""
        self._send(b"ready")

    async def listeners_closed(self) -> None:
        """Tell the supervisor this worker stopped accepting; wait (briefly) until every worker has."""
        self._stopping = True
        if self._writer is None:
            return
        self._send(b"closed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proceed.wait(), _BARRIER_WAIT_S)

    def _send(self, message: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(message + b"\n")

    def _on_change(self, notice: ChangeNotice) -> None:
        if notice.local:  # the siblings did not hear of it; a shared store's notices reach them by themselves
            self._send(b"changed")

    async def _control(self, app: web.Application) -> AsyncIterator[None]:
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        store = app.get(STORE)  # INVARIANT: prepare() runs after create_app, so the store's context opened first
        unsubscribe = store.subscribe(self._on_change) if store is not None else None
        tasks = [
            asyncio.create_task(self._read(reader), name="worker-control"),
            asyncio.create_task(self._follow_siblings(app), name="worker-sibling-refresh"),
        ]
        try:
            yield
        finally:
            if unsubscribe is not None:
                unsubscribe()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                message = line.strip()
                if message == b"refresh":
                    self._refresh_wanted.set()
                elif message == b"proceed":
                    self._proceed.set()
        self._proceed.set()
        if not self._stopping:
            _log.error("worker.orphaned", reason="the supervisor's control socket closed; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    async def _follow_siblings(self, app: web.Application) -> None:
        cache = app.get(SNAPSHOT_CACHE)
        service = app.get(BREAKGLASS)
        while True:
            await self._refresh_wanted.wait()
            self._refresh_wanted.clear()  # writes announced while refreshing cause one more pass
            try:
                if cache is not None:
                    await cache.refresh()
                if service is not None:
                    await service.refresh()
            except Exception as exc:  # the periodic refresh is the safety net
                _log.warning("worker.refresh_failed", error=f"{type(exc).__name__}: {exc}")


__all__ = ["WorkerLink", "default_workers", "run", "supervise", "worker_main", "worker_settings"]
