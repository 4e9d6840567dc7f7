"""Pull connectors: external systems (Fleet, Jamf Pro) Gatehouse polls for device health.

Owns: build_connector, connectors_ctx, refresh_from_connector (ConnectorRefresh), and (in base.py, fleet.py, jamf.py,
runtime.py) the connectors, their runner and their wiring into an app.
Must not import: gateway.app.
"""

from __future__ import annotations

from gateway.ingest.connectors.base import Connector, ConnectorError, ConnectorRecord, ConnectorRunner, Page, Rejected
from gateway.ingest.connectors.fleet import FleetConnector, parse_fleet_host, parse_os_version
from gateway.ingest.connectors.jamf import JamfConnector, parse_jamf_computer
from gateway.ingest.connectors.runtime import (
    REFRESH_LIMIT_S,
    ConnectorRefresh,
    build_connector,
    connector_for_source,
    connectors_ctx,
    refresh_from_connector,
)

__all__ = [
    "REFRESH_LIMIT_S",
    "Connector",
    "ConnectorError",
    "ConnectorRefresh",
    "ConnectorRecord",
    "ConnectorRunner",
    "FleetConnector",
    "JamfConnector",
    "Page",
    "Rejected",
    "build_connector",
    "connector_for_source",
    "connectors_ctx",
    "parse_fleet_host",
    "parse_jamf_computer",
    "parse_os_version",
    "refresh_from_connector",
]
