"""The Jamf Pro connector: the computer inventory of the Jamf Pro API turned into snapshots.

Owns: JamfConnector, parse_jamf_computer, INVENTORY_SECTIONS, JAMF_UNMEASURABLE.
Must not import: gateway.app, gateway.keys.

Read at the source: the Jamf Pro API's OpenAPI schema (``ComputerInventory``, ``ComputerGeneral``,
``ComputerHardware``, ``ComputerOperatingSystem``, ``ComputerDiskEncryption``,
``ComputerPartitionEncryption``, ``ComputerPartitionFileVault2State``, ``ComputerSecurity``,
``ComputerUserAndLocation``) as served by Jamf Pro 10.40-11.x at ``/api/schema`` (field names and
enums checked against client code generated from it), and "Client Credentials" of the Jamf Pro
developer docs. Recorded shapes: tests/fixtures/jamf/.

Requests:

- token: ``POST /api/oauth/token`` (form ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``) -> ``{"access_token", "token_type": "Bearer", "expires_in"}``; renewed 60 s
  before it expires, and at once after a 401;
- a pass: ``GET /api/v1/computers-inventory?section=GENERAL&section=HARDWARE&section=OPERATING_SYSTEM
  &section=DISK_ENCRYPTION&section=SECURITY&section=USER_AND_LOCATION&page=P&page-size=N&sort=id:asc``
  -> ``{"totalCount", "results": [...]}``; the cursor is the next page number;
- "check again": the same with ``filter=hardware.serialNumber=="<serial>"`` (the one computer).
  Jamf Pro has no way to make a Mac report now through this API: its data changes when the Mac
  next submits inventory. Jamf documents (Jamf Pro 11.x, "Computer Inventory Information") that
  the preconfigured "Update Inventory" policy collects inventory from every computer once a week,
  that ``sudo jamf recon`` on the Mac submits it at once, and that some attributes (the macOS
  version) arrive as soon as they change through the declarative status channel.

Computer field -> snapshot:

- ``hardware.serialNumber`` -> serial; ``general.name`` -> hostname; platform darwin (Jamf Pro
  computers are Macs; ``general.platform`` other than ``Mac`` is rejected);
- ``operatingSystem.name``/``version``/``build`` -> os_name/os_version/os_build;
- ``diskEncryption.bootPartitionEncryptionDetails.partitionFileVault2State`` -> disk_encrypted:
  ``ENCRYPTED``/``OPTIMIZING`` true; ``UNENCRYPTED``, ``DECRYPTED``, ``DECRYPTING``, ``ENCRYPTING``,
  ``RESTART_NEEDED``, ``INELIGIBLE``, ``*_PAUSED`` false (the boot disk is not fully encrypted);
  ``UNKNOWN`` or absent not measured;
- ``security.firewallEnabled`` -> firewall_enabled; ``security.sipStatus`` ``ENABLED``/``DISABLED``
  -> sip_enabled (``NOT_COLLECTED``/``NOT_AVAILABLE`` not measured); ``security.gatekeeperStatus``
  ``APP_STORE``/``APP_STORE_AND_IDENTIFIED_DEVELOPERS`` true, ``DISABLED`` false -> gatekeeper_enabled;
- ``general.reportDate`` (Jamf's "Last Inventory Update") -> collected_at;
- ``userAndLocation.email`` -> owner, an assigned one (an administrator or the enrollment set it).

The inventory has no field for the facts in ``JAMF_UNMEASURABLE``; each is named in every
snapshot's ``unmeasurable`` set, so the policy's ``if_unmeasurable`` decides and the denial says
Jamf Pro cannot tell, not that the Mac did not report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from gateway.config.ingest import JamfConnectorSettings
from gateway.ingest.connectors.base import ConnectorError, ConnectorRecord, Page, Rejected, Sleep, VendorHttp
from gateway.ingest.snapshot_parse import future_problem, parse_time, serial_problem
from gateway.ingest.owners import owner_email_problem
from policy_engine.model import DeviceSnapshot, OsFamily, Version

INVENTORY_SECTIONS = ("GENERAL", "HARDWARE", "OPERATING_SYSTEM", "DISK_ENCRYPTION", "SECURITY", "USER_AND_LOCATION")
_FILEVAULT = {"ENCRYPTED": True, "OPTIMIZING": True, "UNENCRYPTED": False, "DECRYPTED": False, "DECRYPTING": False,
              "ENCRYPTING": False, "RESTART_NEEDED": False, "INELIGIBLE": False, "DECRYPTING_PAUSED": False,
              "ENCRYPTING_PAUSED": False}
_SIP = {"ENABLED": True, "DISABLED": False}
_GATEKEEPER = {"APP_STORE": True, "APP_STORE_AND_IDENTIFIED_DEVELOPERS": True, "DISABLED": False}
_RENEW_BEFORE = timedelta(seconds=60)
JAMF_UNMEASURABLE = frozenset({
    "screen_lock_enabled", "screen_lock_delay_s", "auto_updates_enabled", "remote_login_enabled", "agent_version",
})
"""Facts no section of ``ComputerInventory`` carries (Jamf Pro 10.40-11.x): the agent's version included."""


def _section(computer: Mapping[str, object], name: str) -> Mapping[str, object]:
    value = computer.get(name)
    return value if isinstance(value, dict) else {}


def parse_jamf_computer(computer: object, *, source: str, received_at: datetime, max_future_skew: timedelta) -> ConnectorRecord | Rejected:
    """One computer of the inventory (an item of ``results``) as a snapshot, or why not."""
    if not isinstance(computer, dict):
        return Rejected("", "", "computer", "a JSON object")
    ref = str(computer.get("id", ""))
    general, hardware = _section(computer, "general"), _section(computer, "hardware")
    system, security = _section(computer, "operatingSystem"), _section(computer, "security")
    raw_serial = hardware.get("serialNumber")
    shown = raw_serial if isinstance(raw_serial, str) else ""
    if (problem := serial_problem(raw_serial)) is not None:
        return Rejected(ref, shown, "hardware.serialNumber", problem)
    serial = str(raw_serial).strip()
    platform = general.get("platform")
    if platform not in (None, "", "Mac"):
        return Rejected(ref, serial, "general.platform", f"`Mac`, not `{platform}` (Gatehouse gates laptops)")
    collected_at = parse_time(general.get("reportDate"))
    if collected_at is None:
        return Rejected(ref, serial, "general.reportDate", "the time of the computer's last inventory update, such as `2024-08-01T14:05:00.000Z`")
    if (ahead := future_problem(collected_at, received_at=received_at, max_future_skew=max_future_skew)) is not None:
        return Rejected(ref, serial, "general.reportDate", ahead)
    version_text = system.get("version")
    try:
        version = Version.parse(version_text) if isinstance(version_text, str) and version_text else None
    except ValueError:
        return Rejected(ref, serial, "operatingSystem.version", f"a dotted version such as `14.6.1`, not `{version_text}`")
    encryption = _section(_section(computer, "diskEncryption"), "bootPartitionEncryptionDetails")
    firewall = security.get("firewallEnabled")
    email = _section(computer, "userAndLocation").get("email")
    owners = (str(email).strip().lower(),) if owner_email_problem(email) is None else ()
    intern = sys.intern
    snapshot = DeviceSnapshot(
        serial=serial, platform=OsFamily.DARWIN, os_name=intern(str(system.get("name") or "macOS")), os_version=version,
        collected_at=collected_at, received_at=received_at, source=intern(source),
        hostname=str(general.get("name") or "")[:256], owners=owners, os_build=intern(str(system.get("build") or "")),
        agent_name="jamf", firewall_enabled=firewall if isinstance(firewall, bool) else None,
        disk_encrypted=_FILEVAULT.get(str(encryption.get("partitionFileVault2State"))),
        sip_enabled=_SIP.get(str(security.get("sipStatus"))),
        gatekeeper_enabled=_GATEKEEPER.get(str(security.get("gatekeeperStatus"))), unmeasurable=JAMF_UNMEASURABLE,
    )
    return ConnectorRecord(snapshot, ref, owners)


class JamfConnector:
    """Reads the computer inventory of one Jamf Pro server with an API client."""

    label = "Jamf Pro"
    refresh_hint = ("Jamf Pro sees a change when the Mac next submits its inventory: Jamf's default is once a week,"
                    " and your IT team may run it more often. To send it now, run “sudo jamf recon” in Terminal"
                    " (or use the inventory update your Self Service offers), then check again.")

    def __init__(self, settings: JamfConnectorSettings, *, sleep: Sleep, clock: Callable[[], datetime], max_future_skew: timedelta) -> None:
        self.name = settings.name
        self.source = f"jamf:{settings.name}"
        self._settings = settings
        self._clock = clock
        self._skew = max_future_skew
        self._http = VendorHttp(settings.url, vendor="Jamf Pro", timeout_s=settings.timeout_s, attempts=settings.attempts, sleep=sleep)
        self._token_value = ""
        self._expires_at: datetime | None = None

    async def _token(self, renew: bool) -> str:
        now = self._clock()
        if renew or self._expires_at is None or now >= self._expires_at - _RENEW_BEFORE:
            body = await self._http.request("POST", "/api/oauth/token", data={
                "grant_type": "client_credentials",
                "client_id": self._settings.client_id.reveal(),
                "client_secret": self._settings.client_secret.reveal(),
            })
            token = body.get("access_token") if isinstance(body, dict) else None
            expires = body.get("expires_in") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token or not isinstance(expires, int) or isinstance(expires, bool):
                raise ConnectorError("Jamf Pro's `/api/oauth/token` answer has no `access_token` and `expires_in`; check the connector's `url`")
            self._token_value = token
            self._expires_at = now + timedelta(seconds=expires)
        return self._token_value

    def _params(self) -> list[tuple[str, str]]:
        return [("section", s) for s in INVENTORY_SECTIONS]

    def _results(self, body: object) -> tuple[list[object], int]:
        results = body.get("results") if isinstance(body, dict) else None
        total = body.get("totalCount") if isinstance(body, dict) else None
        if not isinstance(results, list) or not isinstance(total, int):
            raise ConnectorError("Jamf Pro's `/api/v1/computers-inventory` answer has no `results` list and `totalCount`; check the connector's `url`")
        return results, total

    def _parse(self, computer: object, now: datetime) -> ConnectorRecord | Rejected:
        return parse_jamf_computer(computer, source=self.source, received_at=now, max_future_skew=self._skew)

    async def fetch_page(self, cursor: str, *, now: datetime) -> Page:
        """The inventory page numbered ``cursor`` (``""``: page 0), sorted by id.

        Raises:
            ConnectorError: Jamf Pro could not be read after retries, or the answer is not an inventory page.
        """
        page = int(cursor) if cursor.isdigit() else 0
        size = self._settings.page_size
        params = [*self._params(), ("page", str(page)), ("page-size", str(size)), ("sort", "id:asc")]
        body = await self._http.request("GET", "/api/v1/computers-inventory", token=self._token, params=params)
        results, total = self._results(body)
        records = tuple(self._parse(c, now) for c in results)
        more = results and (page + 1) * size < total
        return Page(records, str(page + 1) if more else None)

    async def fetch_device(self, serial: str, *, now: datetime) -> ConnectorRecord | Rejected | None:
        """The computer with this serial as Jamf Pro has it now; None when it has none.

        Raises:
            ConnectorError: Jamf Pro could not be read after retries.
        """
        quoted = serial.replace("\\", "\\\\").replace('"', '\\"')
        params = [*self._params(), ("page", "0"), ("page-size", "1"), ("filter", f'hardware.serialNumber=="{quoted}"')]
        body = await self._http.request("GET", "/api/v1/computers-inventory", token=self._token, params=params)
        results, _ = self._results(body)
        return self._parse(results[0], now) if results else None

    async def close(self) -> None:
        await self._http.close()


__all__ = ["INVENTORY_SECTIONS", "JAMF_UNMEASURABLE", "JamfConnector", "parse_jamf_computer"]
