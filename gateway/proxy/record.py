"""The one record of a finished request: its ``request.completed`` line and its metric updates.

Owns: RequestRecorder (per app: the metric children by route and status class, whether the line is
written), RECORD_FIELDS.
Must not import: app, gateway.serve, the lane (the proxy and the middleware of Gatehouse's own endpoints
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

from typing import Any

from gateway.logging import EventWriter
from gateway.metrics import Metrics

RECORD_FIELDS = (
    "request_id", "method", "path", "route", "tier", "decision", "user", "device", "reason", "status", "upstream_status",
    "bytes_in", "bytes_out", "duration_s",
)
"""The fields of every ``request.completed`` line, in order."""

_CODE_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


class RequestRecorder:
    """Records finished requests into one app's metrics and the log."""

    __slots__ = ("metrics", "tally", "log_requests", "_series", "_write")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.tally = metrics.tally
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self.log_requests = False
        """Whether ``request.completed`` lines are written (read from the logging configuration by ``refresh``)."""
        self._write = EventWriter("request.completed", logger="gateway.request")
        self.refresh()

    def refresh(self) -> None:
        """Read the logging configuration again (the proxy calls it when its listener starts, after logging is set up)."""
        self._write = EventWriter("request.completed", logger="gateway.request")
        self.log_requests = self._write.enabled

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
        duration: float, metric_route: str | None = None, flush: bool = False, grant_id: str | None = None,
    ) -> None:
        """The request is over: metrics and the ``request.completed`` line (``metric_route`` labels the metrics when not ``route``).

        ``grant_id``: the break-glass grant that let the request through; the line then also says
        ``break_glass=true`` and the grant (the only fields beyond RECORD_FIELDS).
        ``flush``: hand the tally to prometheus-client now (Gatehouse's own endpoints, whose requests are few:
        with workers, the supervisor's scrape then sees them at once, not after the proxy's next sweep).
        """
        tally = self.tally
        tally.add(self.metrics.in_flight, -1.0)
        requests, request_duration, _ = self.series(metric_route or route or "-", _CODE_CLASSES.get(status // 100) or f"{status // 100}xx")
        tally.add(requests)
        tally.observe(request_duration, duration)
        if self.log_requests:
            self._write(
                request_id=request_id, method=method, path=path, route=route, tier=tier, decision=decision, user=user, device=device,
                reason=reason, status=status, upstream_status=upstream_status, bytes_in=bytes_in, bytes_out=bytes_out,
                duration_s=round(duration, 6), **({"break_glass": True, "grant_id": grant_id} if grant_id else {}),
            )
        if flush:
            tally.flush()
