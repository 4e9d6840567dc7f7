"""A Gatehouse fed by one connector, and the device records its contract server serves: failing, then fixed.

Shared by the "check again" tests (test_recheck.py) and the browser test of the denial
(tests/browser/test_connector_pages.py).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config.settings import Settings
from tests.gateway.fullstack import Keys, gatehouse_settings
from tests.gateway.ingest.connectors.contract import FLEET_TOKEN, JAMF_CLIENT, load

FLEET_SERIAL = "C02FLEET0001"
JAMF_SERIAL = "C02JAMF00001"

# A policy a site gating on Fleet or Jamf Pro data would write: facts both vendors report, and an
# age that allows for an inventory submitted once a day.
POLICY = """
format: 1
checks:
  disk_encryption: {fact: disk_encrypted, equals: true}
  firewall: {fact: firewall_enabled, equals: true}
tiers:
  low: {checks: [disk_encryption, firewall], max_snapshot_age: 48h, break_glass: never}
  medium: {extends: low, checks: [], max_snapshot_age: 48h, break_glass: never}
  high: {extends: medium, checks: [], max_snapshot_age: 48h, break_glass: never}
"""


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def failing_fleet_host(now: datetime) -> dict[str, Any]:
    """Fleet's host C02FLEET0001 (the recorded shape), its disk not encrypted, details read 5 minutes ago."""
    host = copy.deepcopy(load("fleet/hosts-page-1.json")["hosts"][0])
    host.update(detail_updated_at=_stamp(now - timedelta(minutes=5)), disk_encryption_enabled=False)
    return dict(host)


def fix_fleet_host(host: dict[str, Any], now: datetime) -> None:
    """The engineer turned FileVault on; Fleet's next detail query saw it."""
    host.update(disk_encryption_enabled=True, detail_updated_at=_stamp(now))


def failing_jamf_computer(now: datetime) -> dict[str, Any]:
    """Jamf Pro's computer C02JAMF00001 (the recorded shape), FileVault off, inventory from 3 hours ago."""
    computer = copy.deepcopy(load("jamf/computers-inventory-page-0.json")["results"][0])
    computer["general"]["reportDate"] = _stamp(now - timedelta(hours=3))
    computer["diskEncryption"]["bootPartitionEncryptionDetails"]["partitionFileVault2State"] = "UNENCRYPTED"
    return dict(computer)


def fix_jamf_computer(computer: dict[str, Any], now: datetime) -> None:
    """The engineer turned FileVault on and ran `sudo jamf recon`."""
    computer["diskEncryption"]["bootPartitionEncryptionDetails"]["partitionFileVault2State"] = "ENCRYPTED"
    computer["general"]["reportDate"] = _stamp(now)


def connector_gatehouse(keys: Keys, root: Path, *, kind: str, url: str, upstream: str, policy_text: str = POLICY) -> Settings:
    """A Gatehouse under ``root`` with ``policy_text`` and one connector (``fleet`` or ``jamf``) at ``url``, one attempt per request."""
    policy = root / "policy.yaml"
    policy.write_text(policy_text)
    common = {"url": url, "every_s": 3600, "attempts": 1, "timeout_s": 5}
    if kind == "fleet":
        connector = {"kind": "fleet", "name": "corp", "api_token": {"value": FLEET_TOKEN},
                     "policy_map": {"Firewall enabled (macOS)": "firewall_enabled"}, **common}
    else:
        connector = {"kind": "jamf", "name": "macs", "client_id": {"value": JAMF_CLIENT[0]},
                     "client_secret": {"value": JAMF_CLIENT[1]}, **common}
    return gatehouse_settings(keys, store=f"sqlite:///{root}/gatehouse.db", upstream=upstream, policy=str(policy),
                              ingest={"connectors": [connector]})
