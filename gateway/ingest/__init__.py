"""Snapshot ingestion: osquery's TLS remote API, the JSON snapshot API, Stethoscope results, file back-fill.

Owns: add_ingest_routes, IngestSettings, Ingestor, ComplianceRecorder, import_files.
Must not import: gateway.app (app.py wires these in).
"""

from __future__ import annotations

from gateway.ingest.config import IngestSettings, OsqueryIntervals
from gateway.ingest.pipeline import ComplianceRecorder, Ingestor

__all__ = ["ComplianceRecorder", "IngestSettings", "Ingestor", "OsqueryIntervals"]
