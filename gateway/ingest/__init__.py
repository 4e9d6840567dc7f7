"""Snapshot ingestion: osquery's TLS remote API, the JSON snapshot API, Stethoscope results, file back-fill.

Owns: add_ingest_routes, ingest_background, request_osquery_refresh, IngestSettings, Ingestor,
ComplianceRecorder, import_files.
Must not import: gateway.app (app.py wires these in).
"""

from __future__ import annotations

from gateway.config.ingest import IngestSettings, OsqueryIntervals
from gateway.ingest.http import add_ingest_routes, ingest_background, request_osquery_refresh
from gateway.ingest.importer import ImportReport, import_files
from gateway.ingest.pipeline import ComplianceRecorder, HistoryThrottle, Ingestor, prune_history

__all__ = [
    "ComplianceRecorder",
    "HistoryThrottle",
    "ImportReport",
    "IngestSettings",
    "Ingestor",
    "OsqueryIntervals",
    "add_ingest_routes",
    "import_files",
    "ingest_background",
    "prune_history",
    "request_osquery_refresh",
]
