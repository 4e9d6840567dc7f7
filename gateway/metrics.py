"""Every Prometheus metric Gatehouse exports, created against an injected registry.

Owns: Metrics (one instance per app), the bucket choices, RequestTimer (the timing points of a request,
the same for every request).
Must not import: aiohttp, app, gateway.gate.admission.

Label values come from closed sets only: route ids, tiers, reason codes, check names, sources,
outcome words. Never a user, a device serial or an address.

The proxy records into ``Metrics.tally`` (a Tally) instead of calling prometheus-client per
request: counts and histogram bucket counts accumulate in plain dicts and are added to the metrics
when the registry is collected (and about once a second), so a request costs dict updates, not
prometheus-client calls with their locks. A scrape always sees every request recorded before it.

With several worker processes (``gateway.serve.workers``) prometheus-client runs in multiprocess mode:
every value lives in a file per process under ``PROMETHEUS_MULTIPROC_DIR`` whatever registry the
metric is on, and the supervisor's endpoint aggregates them. Counters and histograms add up (a dead
worker's counts stay); each gauge names how its workers' values combine (``multiprocess_mode``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from time import perf_counter
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_M = TypeVar("_M", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DECISION_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)
_AGE_BUCKETS = (60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)


class Metrics:
    """The gateway's metrics; tests build one per test on a fresh CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        self.tally = Tally()
        registry.register(self.tally)  # INVARIANT: before every metric, so collecting flushes it first
        # Proxy (core)
        self.requests = Counter(
            "gatehouse_requests_total", "Requests answered, by route and status class.",
            ["route", "code_class"], registry=registry,
        )
        self.request_duration = Histogram(
            "gatehouse_request_duration_seconds",
            "Seconds from the moment a request's head has been read to the end of its response: its last byte handed to the "
            "client connection (a page of Gatehouse's own: the page ready to send), or the request ending without one. "
            "The same points for every request.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.upstream_duration = Histogram(
            "gatehouse_upstream_duration_seconds",
            "Seconds from the moment Gatehouse starts getting a connection to the upstream for a request (a pooled one, "
            "or connecting) to the moment the upstream's final response head has been read. The same points for every request.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.in_flight = Gauge(
            "gatehouse_requests_in_flight", "Requests being served now.", registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "gatehouse_upstream_errors_total", "Upstream failures, by route and kind (connect, timeout, protocol).",
            ["route", "kind"], registry=registry,
        )
        self.gate_paths = Counter(
            "gatehouse_gate_paths_total",
            "Routed requests by how the gate decided them: `memory` (at once, from what is in memory: a verified token or "
            "session, a snapshot, a decision) or `awaited` (a new token verified first, or a denial, login redirect or "
            "break-glass use decided and answered by the gate's full path).",
            ["path"], registry=registry,
        )
        self.config_reloads = Counter(
            "gatehouse_config_reloads_total", "Configuration and policy reloads, by what and outcome.",
            ["what", "outcome"], registry=registry,
        )
        self.tls_certificate_expiry = Gauge(
            "gatehouse_tls_certificate_expiry_timestamp_seconds",
            "When the certificate a TLS listener serves stops being valid (Unix time, its notAfter), by listener address.",
            ["listener"], registry=registry, multiprocess_mode="livemin",
        )
        self.config_loaded_timestamp = Gauge(
            "gatehouse_config_last_reload_success_timestamp_seconds", "When the configuration in force was loaded.",
            registry=registry, multiprocess_mode="livemin",  # with workers: the oldest one any live worker runs
        )
        # Identity
        self.auth_failures = Counter(
            "gatehouse_auth_failures_total", "Requests whose user or device identity could not be verified, by reason.",
            ["reason"], registry=registry,
        )
        self.jwks_fetches = Counter(
            "gatehouse_jwks_fetches_total", "Signing-key fetches from the identity provider, by outcome.",
            ["outcome"], registry=registry,
        )
        # Decisions (gate)
        self.decisions = Counter(
            "gatehouse_decisions_total", "Access decisions, by tier, outcome and reason code.",
            ["tier", "outcome", "reason"], registry=registry,
        )
        self.failing_checks = Counter(
            "gatehouse_failing_checks_total", "Checks that failed in a decision, by tier and check.",
            ["tier", "check"], registry=registry,
        )
        self.decision_duration = Histogram(
            "gatehouse_decision_duration_seconds", "Time to decide one request (identity to decision).",
            buckets=_DECISION_BUCKETS, registry=registry,
        )
        self.would_deny = Counter(
            "gatehouse_would_deny_total", "Requests a monitor-mode route let through that enforce mode would deny.",
            ["route", "reason"], registry=registry,
        )
        # Snapshots (ingest and cache)
        self.snapshots_held = Gauge(
            "gatehouse_snapshots_held", "Device snapshots resident in memory.", registry=registry,
            multiprocess_mode="livemax",  # each worker holds them all; a dead worker's count is dropped
        )
        self.snapshot_age = Histogram(
            "gatehouse_snapshot_age_seconds", "Age of snapshots at decision time.",
            buckets=_AGE_BUCKETS, registry=registry,
        )
        self.ingests = Counter(
            "gatehouse_snapshot_ingests_total", "Snapshots received, by source and outcome.",
            ["source", "outcome"], registry=registry,
        )
        self.stethoscope_disagreements = Counter(
            "gatehouse_stethoscope_disagreements_total",
            "Stethoscope answers whose raw setting and policy verdict disagree, by practice (the raw setting is used).",
            ["practice"], registry=registry,
        )
        self.ingest_last_stored = Gauge(
            "gatehouse_ingest_last_stored_timestamp_seconds",
            "When a snapshot from this source was last stored (Unix time): how fresh each source's reports are.",
            ["source"], registry=registry, multiprocess_mode="max",  # the newest any worker stored, dead ones included
        )
        # Pull connectors (label values: the connector names of the settings file, a closed set)
        self.connector_syncs = Counter(
            "gatehouse_connector_sync_total",
            "Connector sync attempts, by connector and outcome (success, failed, lease-held-elsewhere).",
            ["connector", "outcome"], registry=registry,
        )
        self.connector_records = Counter(
            "gatehouse_connector_records_total", "Records a connector read, by connector and outcome (seen, stored, rejected).",
            ["connector", "outcome"], registry=registry,
        )
        self.connector_last_success = Gauge(
            "gatehouse_connector_last_success_timestamp_seconds", "When the connector last completed a full pass (Unix time).",
            ["connector"], registry=registry, multiprocess_mode="max",
        )
        self.enrollments = Counter(
            "gatehouse_osquery_enrollments_total", "osquery enroll attempts, by outcome.",
            ["outcome"], registry=registry,
        )
        self.osquery_enroll_conflicts = Counter(
            "gatehouse_osquery_enroll_conflicts_total",
            "osquery nodes that enrolled a serial whose active node has another host identifier.", registry=registry,
        )
        self.device_enrollments = Counter(
            "gatehouse_enrollments_total",
            "Laptop enrollment steps, by outcome (created, proof-passed, proof-failed, approved, refused, issued, expired, renewed, renew-refused).",
            ["outcome"], registry=registry,
        )
        self.store_errors = Counter(
            "gatehouse_store_errors_total", "Store operations that failed, by operation.",
            ["operation"], registry=registry,
        )
        # Break-glass
        self.breakglass_grants = Counter(
            "gatehouse_breakglass_grants_total", "Break-glass requests, by tier and outcome.",
            ["tier", "outcome"], registry=registry,
        )
        self.breakglass_active = Gauge(
            "gatehouse_breakglass_active_grants", "Break-glass grants in force now.", registry=registry,
            multiprocess_mode="livemax",
        )
        self.breakglass_oldest_unreviewed = Gauge(
            "gatehouse_breakglass_oldest_unreviewed_age_seconds",
            "Seconds since the oldest granted break-glass grant that no reviewer has reviewed yet began; 0 when none. "
            "Set by the break-glass maintenance pass, off the request path.",
            registry=registry, multiprocess_mode="livemax",
        )
        self.breakglass_requests = Counter(
            "gatehouse_breakglass_requests_total", "Requests let through under a break-glass grant, by route.",
            ["route"], registry=registry,
        )

        # Access ledger (ledger.py)
        self.ledger_rows_pending = Gauge(
            "gatehouse_ledger_rows_pending",
            "Access ledger rows held in memory, not yet stored, as of the last flush (a crash would lose them).",
            registry=registry, multiprocess_mode="livesum",
        )
        self.ledger_requests_pending = Gauge(
            "gatehouse_ledger_requests_pending",
            "Requests counted in the access ledger rows held in memory, not yet stored, as of the last flush.",
            registry=registry, multiprocess_mode="livesum",
        )
        self.ledger_flushes = Counter(
            "gatehouse_ledger_flushes_total",
            "Access ledger batches handed to the store, by outcome: stored, already-stored (a retry whose first "
            "commit had gone through), failed (kept in memory and retried).",
            ["outcome"], registry=registry,
        )
        self.ledger_dropped = Counter(
            "gatehouse_ledger_dropped_requests_total",
            "Requests the access ledger could not count: the rows held in memory during a store outage reached "
            "`evidence.ledger_max_pending_rows`.",
            registry=registry,
        )
        self.ledger_flush_duration = Histogram(
            "gatehouse_ledger_flush_duration_seconds", "Seconds to write one access ledger batch to the store.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )

    def child(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, remembered: the request path skips label validation and locking.

        Values must come from closed sets (as every label value here does), so the memo stays small.
        """
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child  # type: ignore[return-value]


class RequestTimer:
    """The timing points of one request, read the same way for every request (the duration histograms' help names them).

    Made when the request's head has been read; ``upstream_begins`` when Gatehouse starts getting a
    connection to the upstream; ``upstream_took`` when the upstream's final response head has been
    read; ``stop`` when the response is done (the first call fixes the request's duration).
    """

    __slots__ = ("started", "_upstream", "_took")

    def __init__(self) -> None:
        self.started = perf_counter()
        self._upstream = self.started
        self._took: float | None = None

    def upstream_begins(self) -> None:
        """Gatehouse starts getting a connection to the upstream (a pooled one, or connecting)."""
        self._upstream = perf_counter()

    def upstream_took(self) -> float:
        """Seconds since ``upstream_begins``: call it when the upstream's final response head has been read."""
        return perf_counter() - self._upstream

    def stop(self) -> float:
        """Seconds since the head was read, fixed at the first call: call it when the response is done."""
        if self._took is None:
            self._took = perf_counter() - self.started
        return self._took


class Tally:
    """Counter, gauge and histogram updates kept in plain dicts until the next flush.

    ``add(child, n)`` for counters and gauges (a gauge's net change; negative allowed), ``observe(child,
    value)`` for histograms, both on label-bound children (``Metrics.child``). Flushed whenever the
    registry is collected (a scrape, ``get_sample_value``: a collector registered before every
    metric flushes first, so a reader never sees a stale value) and by the proxy's sweep about
    once a second (with workers, the supervisor reads what workers flushed). Histogram buckets
    follow prometheus-client's ``Histogram.observe`` exactly (``value <= bound``, non-cumulative
    bucket values, ``_sum``); ``tests/gateway/test_metrics.py`` pins that.
    """

    __slots__ = ("_counts", "_histograms")

    def __init__(self) -> None:
        self._counts: defaultdict[Any, float] = defaultdict(float)
        self._histograms: dict[Any, list[Any]] = {}

    def add(self, child: Any, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter or gauge child."""
        self._counts[child] += amount

    def observe(self, child: Any, value: float) -> None:
        """Record one observation of a histogram child."""
        entry = self._histograms.get(child)
        if entry is None:
            entry = self._histograms[child] = [0.0, [0] * len(child._upper_bounds), child._upper_bounds]
        entry[0] += value
        entry[1][bisect_left(entry[2], value)] += 1

    def flush(self) -> None:
        """Apply every pending update to its metric."""
        counts, self._counts = self._counts, defaultdict(float)
        for child, amount in counts.items():
            if amount:
                child.inc(amount)
        for child, entry in self._histograms.items():
            buckets = entry[1]
            if not any(buckets):
                continue
            child._sum.inc(entry[0])
            entry[0] = 0.0
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)
                    buckets[index] = 0

    # a Collector for the registry: flush, contribute no samples
    def collect(self) -> list[Any]:
        self.flush()
        return []

    def describe(self) -> list[Any]:
        return []
