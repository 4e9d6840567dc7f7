"""Running Gatehouse for real: listeners (plain and TLS), the metrics listener, signals, reload.

Owns: serve (async, until stopped), start_gateway / Gateway (in-process
handle for tests and embedding), tls_context, certificate_expiry (the TLS expiry gauge), GatewaySite, WorkerHooks (the seam the
worker processes of ``gateway.serve.workers`` plug into), loop_factory, exit_code.
Must not import: cli, gateway.serve.workers (the CLI calls ``gateway.serve.workers.run``, which runs ``serve`` in
one process or under a supervisor; the workers build on this module, never the reverse).

- Every accepted connection is served by the proxy (``gateway.proxy.Lane``, one per listener),
  which parses every request, applies the limits and timeouts of the HTTP front, and forwards every
  proxied request itself; a request to Gatehouse's own endpoints (``/.gatehouse/...``) is given to
  aiohttp's RequestHandler on the same connection (see ``GatewaySite``). One aiohttp AppRunner holds
  the app for those endpoints; TLS comes from the listener's cert and key, and client certificates
  are verified against ``client_ca`` with ``CERT_OPTIONAL`` or ``CERT_REQUIRED`` (the identity code
  reads the verified certificate from the connection's ``ssl_object``).
- Limits of the HTTP front come from ``server`` and are applied by the proxy's parser
  (``gateway.proxy.head``): ``max_header_bytes`` bounds the request line (414) and each header
  line (431), ``max_header_count`` the number of headers (431), ``max_head_bytes`` the whole head
  (431, counted as the bytes arrive); ``header_read_timeout_s`` closes a connection whose first
  request head is not complete that long after it was accepted (a connection that never sends a byte
  included), and one whose later head is not complete that long after its first byte (slowloris);
  ``keepalive_timeout_s`` closes connections idle between requests; on TLS listeners the handshake
  gets the ``header_read_timeout_s`` deadline too, and the first head another one from the
  handshake's end.
- Metrics are served on ``metrics.address`` by a separate tiny app, never on a proxy listener.
- SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests finish and their
  responses be written out to the client for up to ``shutdown_grace_s`` (a connection closes once its
  response is sent, not once it is queued), then cut what is left and exit 0. ``gateway.stopping`` is logged once the listeners are closed
  (with workers: once every worker's are). SIGHUP: call the loader again; a config that fails
  validation is logged (``config.reload_failed``) and counted (``config_reloads{what="config",outcome="failure"}``)
  and the old one stays; a good one is swapped into the app's ConfigHolder and applies to every request
  that starts afterwards (connections are not dropped). Listener addresses, TLS files, metrics address
  and the header/keep-alive limits apply only after a restart; ``config.reloaded`` says
  ``restart_needed=true`` when they changed. Then every ``app[RELOAD_HOOKS]`` hook runs with the new
  settings (see app.py).

Lifecycle events: ``gateway.started``, ``config.reloaded``, ``config.reload_failed``,
``gateway.stopping``, ``gateway.stopped``.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import structlog
from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.app import create_app, handler_kwargs
from gateway.config.clock import Clock, utc_now
from gateway.errors import ConfigError
from gateway.proxy.lane import Lane
from gateway.proxy.pool import UpstreamPool
from gateway.gate.admission import Gate
from gateway.keys import CONFIG, DEVICE_CA, METRICS, RELOAD_HOOKS
from gateway.metrics import Metrics
from gateway.config.settings import ServerSettings, Settings, TlsSettings

SettingsLoader = Callable[[], Settings]
_log = structlog.get_logger("gateway.server")
_STOP_AND_RELOAD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class WorkerHooks(Protocol):
    """What a worker process of a supervisor adds to a gateway (``gateway.serve.workers.WorkerLink``).

    A gateway given hooks binds its listeners with ``SO_REUSEPORT``.
    """

    def prepare(self, app: web.Application) -> None:
        """Add the worker's signals and cleanup contexts to ``app`` before it starts."""

    def started(self) -> None:
        """Every listener is bound and the signal handlers are installed."""

    async def listeners_closed(self) -> None:
        """This worker stopped accepting; returns when its siblings did too (or after a short wait)."""


class GatewaySite(web.TCPSite):
    """A TCPSite whose every connection is served by the proxy (``gateway.proxy.Lane``, one per site).

    The proxy gives each request to Gatehouse's own endpoints to a RequestHandler of the runner's
    aiohttp server (public API: calling ``web.Server`` builds one), which answers it and closes the
    connection; every other request is the proxy's.
    """

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None, server_settings: ServerSettings,
        reuse_port: bool = False, pool: UpstreamPool | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        self._server_settings = server_settings
        self._pool = pool
        self.lane: Lane | None = None

    def stop_accepting(self) -> None:
        """Close the listening socket now; connections already accepted carry on."""
        if self._server is not None:
            self._server.close()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        app = self._runner.app if isinstance(self._runner, web.AppRunner) else None
        assert manager is not None and app is not None  # INVARIANT: runner.setup() ran before sites start
        self.lane = Lane(app, self._server_settings, own=manager, pool=self._pool)
        timeout = self._server_settings.header_read_timeout_s
        server = await loop.create_server(
            self.lane.connection, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog, reuse_port=self._reuse_port,
            ssl_handshake_timeout=timeout if self._ssl_context is not None else None,
        )
        self._server = server
        if server.sockets:
            self._bound_port = server.sockets[0].getsockname()[1]  # TCPSite.port answers it (aiohttp 3.14)

    async def stop(self) -> None:
        if self.lane is not None:
            await self.lane.shutdown(self._server_settings.shutdown_grace_s)
        await super().stop()


X509_V_FLAG_NO_CHECK_TIME = 0x200000
"""OpenSSL's flag to skip certificate validity times while verifying a chain (not named in Python's ssl module)."""


def tls_context(tls: TlsSettings, *, device_cas: str | None = None) -> ssl.SSLContext:
    """A server TLS context from the listener's files (TLS 1.2+), verifying client certs if asked.

    ``device_cas`` (PEM, Gatehouse's device CA and its previous ones) is trusted besides ``client_ca``.
    Then the handshake does not check validity times, so that an expired device certificate reaches
    the request and gets a page saying so and how to renew (Python's ssl would otherwise fail the
    handshake and the browser could only show a TLS error); the identity code refuses every client
    certificate outside its validity at the request (``gateway.identity.device.certificate_refusal``).

    Raises:
        OSError, ssl.SSLError: a file is missing or does not hold a usable certificate or key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_cert != "none" and (tls.client_ca is not None or device_cas):
        if tls.client_ca is not None:
            context.load_verify_locations(cafile=str(tls.client_ca))
        if device_cas:
            context.load_verify_locations(cadata=device_cas)
            context.verify_flags |= X509_V_FLAG_NO_CHECK_TIME  # INVARIANT: times are checked per request instead
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return context


def certificate_expiry(tls: TlsSettings) -> float:
    """When the listener's (first) certificate stops being valid, as Unix time; read once the context loaded it."""
    certificate = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    return certificate.not_valid_after_utc.timestamp()


async def _metrics_endpoint(registry: CollectorRegistry) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner


def _restart_needed(old: Settings, new: Settings) -> bool:
    return (old.listeners, old.metrics, handler_kwargs(old.server), old.server.header_read_timeout_s, old.server.max_head_bytes) != (
        new.listeners, new.metrics, handler_kwargs(new.server), new.server.header_read_timeout_s, new.server.max_head_bytes,
    )


class Gateway:
    """A started Gatehouse: its app, runners and bound addresses; reload() and stop()."""

    def __init__(
        self, app: web.Application, runner: web.AppRunner, metrics_runner: web.AppRunner | None, loader: SettingsLoader, clock: Clock,
        worker: WorkerHooks | None = None, pool: UpstreamPool | None = None,
    ) -> None:
        self.app = app
        self.runner = runner
        self.metrics_runner = metrics_runner
        self._loader = loader
        self._clock = clock
        self._worker = worker
        self.pool = pool if pool is not None else UpstreamPool(asyncio.get_running_loop())
        """The one upstream pool of this process, shared by every listener's proxy."""
        self.reload_results: asyncio.Queue[bool] = asyncio.Queue()
        """One entry per finished reload (True when the new config is in force), for tests and tooling."""

    @property
    def settings(self) -> Settings:
        """The settings in force now."""
        return self.app[CONFIG].current.settings

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Bound (host, port) of every proxy listener, in configuration order."""
        return [(a[0], a[1]) for a in self.runner.addresses]

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Bound (host, port) of the metrics listener, if any."""
        if self.metrics_runner is None or not self.metrics_runner.addresses:
            return None
        a = self.metrics_runner.addresses[0]
        return (a[0], a[1])

    async def reload(self) -> bool:
        """Load the configuration again and swap it in if valid; keep the old one otherwise."""
        metrics = self.app[METRICS]
        old = self.settings
        try:
            new = await asyncio.to_thread(self._loader)
        except ConfigError as exc:
            metrics.config_reloads.labels(what="config", outcome="failure").inc()
            _log.error("config.reload_failed", source=exc.source, problems=[str(p) for p in exc.problems])
            self.reload_results.put_nowait(False)
            return False
        except Exception as exc:  # a loader bug must not take the running gateway down
            metrics.config_reloads.labels(what="config", outcome="failure").inc()
            _log.error("config.reload_failed", source=old.source, problems=[f"{type(exc).__name__}: {exc}"])
            self.reload_results.put_nowait(False)
            return False
        self.app[CONFIG].swap(new, now=self._clock())
        metrics.config_reloads.labels(what="config", outcome="success").inc()
        metrics.config_loaded_timestamp.set(time.time())
        _log.info("config.reloaded", source=new.source, routes=len(new.routes), restart_needed=_restart_needed(old, new))
        hooks = self.app[RELOAD_HOOKS]
        for hook in list(hooks):
            try:
                await hook(new)
            except Exception as exc:  # the hook owns its failure handling; the config swap stands
                _log.error("config.reload_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)), error=f"{type(exc).__name__}: {exc}")
        self.reload_results.put_nowait(True)
        return True

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to shutdown_grace_s), release everything."""
        for site in list(self.runner.sites):
            if isinstance(site, GatewaySite):
                site.stop_accepting()
        if self._worker is not None:
            await self._worker.listeners_closed()
        grace = self.settings.server.shutdown_grace_s
        _log.info("gateway.stopping", grace_s=grace)
        sites = [site for site in self.runner.sites if isinstance(site, GatewaySite)]
        # Every listener's proxy and aiohttp's handlers (Gatehouse's own endpoints) drain together, within the one
        # grace period; a connection is closed once its response is written out (or the grace period is over).
        draining = [site.lane.shutdown(grace) for site in sites if site.lane is not None]
        if self.runner.server is not None:
            draining.append(self.runner.server.shutdown(grace))
        await asyncio.gather(*draining)
        self.pool.close()
        await self.runner.cleanup()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        _log.info("gateway.stopped")


async def start_gateway(
    settings: Settings,
    *,
    loader: SettingsLoader | None = None,
    metrics: Metrics | None = None,
    clock: Clock = utc_now,
    gate: Gate | None = None,
    worker: WorkerHooks | None = None,
) -> Gateway:
    """Build the app and start every listener and the metrics listener; returns the running Gateway.

    With ``worker`` (a worker process of ``gateway.serve.workers``) the listeners bind with ``SO_REUSEPORT``.

    Raises:
        OSError, ssl.SSLError: a listener cannot bind, or a TLS file is unusable.
    """
    metrics = metrics if metrics is not None else Metrics(CollectorRegistry())
    app = create_app(settings, clock=clock, metrics=metrics, gate=gate)
    if worker is not None:
        worker.prepare(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=settings.server.shutdown_grace_s)
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    pool = UpstreamPool(asyncio.get_running_loop())
    device_ca = app.get(DEVICE_CA)
    device_cas = device_ca.trusted_pem() if device_ca is not None else None
    try:
        for listener in settings.listeners:
            context = tls_context(listener.tls, device_cas=device_cas) if listener.tls is not None else None
            if listener.tls is not None:
                metrics.tls_certificate_expiry.labels(listener=listener.address).set(certificate_expiry(listener.tls))
            site = GatewaySite(
                runner, listener.host, listener.port, ssl_context=context, server_settings=settings.server, reuse_port=worker is not None,
                pool=pool,
            )
            await site.start()
        if settings.metrics.address is not None:
            metrics_runner = await _metrics_endpoint(metrics.registry)
            host, _, port = settings.metrics.address.rpartition(":")
            await web.TCPSite(metrics_runner, host.strip("[]"), int(port)).start()
    except BaseException:
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        raise
    metrics.config_reloads.labels(what="config", outcome="success")  # export the series at zero
    metrics.config_loaded_timestamp.set(time.time())
    gateway = Gateway(app, runner, metrics_runner, loader or (lambda: settings), clock, worker, pool)
    _log.info(
        "gateway.started",
        listeners=[f"{'https' if listener.tls else 'http'}://{h}:{p}" for listener, (h, p) in zip(settings.listeners, gateway.addresses)],
        metrics=f"http://{gateway.metrics_address[0]}:{gateway.metrics_address[1]}/metrics" if gateway.metrics_address else None,
        routes=len(settings.routes),
        source=settings.source,
    )
    return gateway


async def serve(
    loader: SettingsLoader,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[Gateway], None] | None = None,
    metrics: Metrics | None = None,
    clock: Clock = utc_now,
    gate: Gate | None = None,
    worker: WorkerHooks | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), reloading on SIGHUP; returns the exit code.

    ``worker`` is for the worker processes of ``gateway.serve.workers``, which start with these signals
    blocked (so none is lost while the app starts); they are unblocked once the handlers are in place.

    Raises:
        ConfigError: the initial configuration is invalid.
    """
    settings = loader()
    if worker is None:
        # INVARIANT: a SIGTERM sent as soon as `gateway.started` is logged must still drain cleanly, so
        # the signals wait (blocked, pending) until their handlers are installed below.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_AND_RELOAD)
    try:
        gateway = await start_gateway(settings, loader=loader, metrics=metrics, clock=clock, gate=gate, worker=worker)
    except BaseException:
        if worker is None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_AND_RELOAD)
        raise
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_AND_RELOAD)
        if worker is not None:
            worker.started()
        if on_started is not None:
            on_started(gateway)
        await stop.wait()
    finally:
        for sig in _STOP_AND_RELOAD:
            loop.remove_signal_handler(sig)
        for task in list(reloads):
            task.cancel()
        await gateway.stop()
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when uvloop is installed (a dependency on Linux and macOS), else None (asyncio's)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def exit_code(main: Callable[[], int]) -> int:
    """Call ``main``; a bad initial configuration or a listener that cannot start is logged and gives 1."""
    try:
        return main()
    except ConfigError as exc:
        _log.error("config.load_failed", source=exc.source, problems=[str(p) for p in exc.problems])
        return 1
    except (OSError, ssl.SSLError) as exc:
        _log.error("gateway.start_failed", error=f"{type(exc).__name__}: {exc}")
        return 1
