"""Configuration of snapshot ingestion: the ``ingest:`` section of the settings file.

Owns: IngestSettings, OsqueryIntervals.
Must not import: aiohttp, gateway.app (settings sections are leaves).

Example::

    ingest:
      api_tokens: [{env: GATEHOUSE_INGEST_TOKEN}]
      osquery_enroll_secrets: [{file: /run/secrets/osquery_enroll_secret}]
      max_body_bytes: 10485760
      history_retention_days: 90
      trust_reported_owners: false
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from gateway.secret import SecretValue
from gateway.section import Section


class OsqueryIntervals(Section):
    """How often (seconds) agents run each kind of posture query and check in."""

    posture_s: int = Field(default=300, ge=10)
    """Firewall, disk encryption, screen lock, remote login, SIP, Gatekeeper, auto updates."""
    os_version_s: int = Field(default=3600, ge=10)
    config_refresh_s: int = Field(default=300, ge=10)
    logger_period_s: int = Field(default=10, ge=1)
    distributed_interval_s: int = Field(default=60, ge=5)
    accelerate_s: int = Field(default=120, ge=0)
    """After a "check again", how long the agent polls for distributed queries every few seconds."""


class IngestSettings(Section):
    """Who may send snapshots, how big, how far in the future, and how long history is kept."""

    api_tokens: tuple[SecretValue, ...] = ()
    """Bearer tokens accepted by ``POST /.gatehouse/api/v1/snapshots``; none means the API is closed."""
    osquery_enroll_secrets: tuple[SecretValue, ...] = ()
    """Enroll secrets osquery agents may present; several allow rotation. None closes osquery enroll."""
    osquery_pack: Path | None = None
    """A posture pack (JSON) to serve instead of the one shipped in ``deploy/osquery/``."""
    osquery_intervals: OsqueryIntervals = OsqueryIntervals()
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest accepted request body, after gzip decompression; larger gets 413."""
    max_batch_items: int = Field(default=10_000, ge=1)
    max_future_skew_s: int = Field(default=300, ge=0)
    """A snapshot collected more than this far in Gatehouse's future is rejected."""
    history_retention_days: int = Field(default=90, ge=1)
    trust_reported_owners: bool = False
    """Count the owners a snapshot reports (ingest API ``owners``, imports, Stethoscope) for owner binding
    and the status page when the owner inventory has no entry for the serial; the inventory always wins."""
    cache_refresh_s: float = Field(default=30.0, gt=0)
    """How often the in-memory snapshots are refreshed from the store (changes by other processes)."""
