"""The one record of a finished request: its ``request.completed`` line and its metric updates.

Owns: RequestRecorder (per app: the metric children by route and status class, whether the line is
written), RECORD_FIELDS.
Must not import: app, server, the lane (the proxy and the middleware of Gatehouse's own endpoints
both call this, so every request is recorded the same way).

For every request, proxied or Gatehouse's own, whatever its outcome: ``started`` when its head has
been read (the in-flight gauge), ``completed`` when it is over: the in-flight gauge back down, one
count in ``gatehouse_requests_total{route, code_class}``, one observation of
``gatehouse_request_duration_seconds{route}`` (``metrics.RequestTimer``'s points), and, when info is
logged, one ``request.completed`` line with exactly the fields of RECORD_FIELDS. ``route`` is the
route id, ``gatehouse`` for Gatehouse's own endpoints and ``-`` for a request refused before routing.
Updates go through ``Metrics.tally`` (plain dict updates, flushed at each scrape).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from gateway.metrics import Metrics

RECORD_FIELDS = (
    "request_id", "method", "path", "route", "tier", "decision", "user", "device", "reason", "status", "upstream_status",
    "bytes_in", "bytes_out", "duration_s",
)
"""The fields of every ``request.completed`` line, in order."""

_log = structlog.get_logger("gateway.request")
_CODE_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
_LEVELS: dict[object, int] = {}


def info_enabled() -> bool:
    """False when the configured structlog wrapper drops ``info`` events (then the line is skipped)."""
    wrapper = structlog.get_config()["wrapper_class"]
    level = _LEVELS.get(wrapper)
    if level is None:
        try:  # make_filtering_bound_logger's classes know their level without an instance
            level = int(wrapper.get_effective_level(None))
        except Exception:  # any other wrapper: assume it logs everything
            level = 0
        _LEVELS[wrapper] = level
    return level <= logging.INFO


class RequestRecorder:
    """Records finished requests into one app's metrics and the log."""

    __slots__ = ("metrics", "tally", "log_requests", "_series")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.tally = metrics.tally
        self.log_requests = info_enabled()
        """Whether ``request.completed`` lines are written (the log level is set once, at start)."""
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def series(self, route_id: str, code_class: str) -> tuple[Any, Any, Any]:
        """The (requests, request_duration, upstream_duration) children for a route id and status class."""
        key = (route_id, code_class)
        found = self._series.get(key)
        if found is None:
            m = self.metrics
            found = self._series[key] = (
                m.child(m.requests, route_id, code_class), m.child(m.request_duration, route_id), m.child(m.upstream_duration, route_id),
            )
        return found

    def started(self) -> None:
        """A request's head has been read."""
        self.tally.add(self.metrics.in_flight)

    def completed(
        self, *, request_id: str, method: str, path: str, route: str | None, tier: str | None, decision: str | None, user: str | None,
        device: str | None, reason: str | None, status: int, upstream_status: int | None, bytes_in: int, bytes_out: int,
        duration: float, metric_route: str | None = None, flush: bool = False,
    ) -> None:
        """The request is over: metrics and the ``request.completed`` line (``metric_route`` labels the metrics when not ``route``).

        ``flush``: hand the tally to prometheus-client now (Gatehouse's own endpoints, whose requests are few:
        with workers, the supervisor's scrape then sees them at once, not after the proxy's next sweep).
        """
        tally = self.tally
        tally.add(self.metrics.in_flight, -1.0)
        requests, request_duration, _ = self.series(metric_route or route or "-", _CODE_CLASSES.get(status // 100) or f"{status // 100}xx")
        tally.add(requests)
        tally.observe(request_duration, duration)
        if self.log_requests:
            _log.info(
                "request.completed",
                request_id=request_id, method=method, path=path, route=route, tier=tier, decision=decision, user=user, device=device,
                reason=reason, status=status, upstream_status=upstream_status, bytes_in=bytes_in, bytes_out=bytes_out,
                duration_s=round(duration, 6),
            )
        if flush:
            tally.flush()
