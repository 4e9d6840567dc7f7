"""Configuration of snapshot ingestion: the ``ingest:`` section of the settings file.

Owns: IngestSettings, OsqueryIntervals, the connector sections (FleetConnectorSettings, JamfConnectorSettings).
Must not import: aiohttp, gateway.app (settings sections are leaves).

Example::

    ingest:
      api_tokens: [{env: GATEHOUSE_INGEST_TOKEN}]
      osquery_enroll_secrets: [{file: /run/secrets/osquery_enroll_secret}]
      max_body_bytes: 10485760
      history_retention_days: 90
      trust_reported_owners: false
      connectors:                       # pull connectors (gateway/ingest/connectors/)
        - kind: fleet
          name: corp-fleet
          url: https://fleet.corp.example
          api_token: {env: FLEET_API_TOKEN}
          policy_map: {"Firewall enabled (macOS)": firewall_enabled}
        - kind: jamf
          name: macs
          url: https://corp.jamfcloud.com
          client_id: {env: JAMF_CLIENT_ID}
          client_secret: {file: /run/secrets/jamf_client_secret}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from gateway.config.secret import SecretValue
from gateway.config.section import Section
from policy_engine.facts import FactKind, fact_kind

_CONNECTOR_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


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


class _ConnectorBase(Section):
    """What every pull connector is configured with."""

    name: str
    """Names the connector in metrics, logs, ``/.gatehouse/readyz`` and ``gatehouse connectors test NAME``."""
    url: str
    """The vendor server's base URL, e.g. ``https://fleet.corp.example``."""
    every_s: float = Field(default=300.0, ge=1)
    """How long to wait between two passes over the whole fleet."""
    stale_after_s: float = Field(default=3600.0, ge=1)
    """A connector with no complete pass for this long is listed as ``degraded`` by readiness."""
    page_size: int = Field(default=100, ge=1, le=1000)
    timeout_s: float = Field(default=30.0, gt=0)
    """Per request; a timeout is retried with backoff like a 5xx."""
    attempts: int = Field(default=4, ge=1, le=10)
    """Tries per request before the pass stops (429, 5xx, timeouts); the snapshots already stored stay."""
    owners_to_inventory: bool = True
    """Record the owners the system's administrators assigned as owner inventory entries (source
    ``connector``) for serials the inventory has no other entry for."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CONNECTOR_NAME.fullmatch(value):
            raise ValueError(f"`{value}` is not a connector name; write 1 to 40 lowercase letters, digits or `-`, e.g. `corp-fleet`")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"`{value}` is not a base URL; write e.g. `https://fleet.corp.example`")
        return value.rstrip("/")


class FleetConnectorSettings(_ConnectorBase):
    """Fleet (fleetdm.com): hosts, their policy results and device mapping, with an API token."""

    kind: Literal["fleet"]
    api_token: SecretValue
    """An API-only user's token (role observer is enough); sent as ``Authorization: Bearer``."""
    policy_map: tuple[tuple[str, str], ...] = ()
    """The site's Fleet policy names -> Gatehouse facts (written as a mapping): a true/false fact
    (``firewall_enabled``) or ``custom.<name>``. A policy's ``pass`` makes the fact true, ``fail``
    false, an empty response not measured. Kept as pairs so the settings stay hashable."""

    @field_validator("policy_map", mode="before")
    @classmethod
    def _policy_pairs(cls, value: object) -> object:
        return tuple(value.items()) if isinstance(value, dict) else value

    @field_validator("policy_map")
    @classmethod
    def _policy_map(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        problems = [
            f"`{policy}` -> `{fact}`"
            for policy, fact in value
            if fact_kind(fact) not in (FactKind.BOOL, FactKind.CUSTOM)
        ]
        if problems:
            raise ValueError(
                f"{', '.join(problems)}: a policy maps to a true/false fact such as `firewall_enabled` or to `custom.<name>`"
            )
        return value


class JamfConnectorSettings(_ConnectorBase):
    """Jamf Pro: the computer inventory of the Jamf Pro API, with an API client (OAuth client credentials)."""

    kind: Literal["jamf"]
    client_id: SecretValue
    client_secret: SecretValue
    """The API client's credentials; its role needs the privilege "Read Computers"."""


ConnectorSettings = Annotated[Union[FleetConnectorSettings, JamfConnectorSettings], Field(discriminator="kind")]


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
    connectors: tuple[ConnectorSettings, ...] = ()
    """Pull connectors: external systems (Fleet, Jamf Pro) Gatehouse polls for device health."""

    @model_validator(mode="after")
    def _unique_connectors(self) -> IngestSettings:
        names = [c.name for c in self.connectors]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"connector names {', '.join(f'`{n}`' for n in twice)} are used twice; give each connector its own name")
        return self
