"""The Fleet connector: hosts from Fleet's REST API turned into snapshots.

Owns: FleetConnector, parse_fleet_host, parse_os_version (Fleet's ``os_version`` text per platform),
FLEET_UNMEASURABLE.
Must not import: gateway.app, gateway.keys.

Read at the source: Fleet's REST API reference (``docs/REST API/rest-api.md`` of fleetdm/fleet, the
4.5x-4.6x series: "List hosts", "Get host by identifier", "Refetch host", "Get host's device
mapping") and the JSON names of ``server/fleet/hosts.go``. Recorded shapes: tests/fixtures/fleet/.

Requests (``Authorization: Bearer <api_token>``):

- a pass: ``GET /api/v1/fleet/hosts?order_key=id&after=<last id>&per_page=N&populate_policies=true&device_mapping=true``
  (keyset pagination on the host id, so hosts enrolling during the pass do not shift pages; the
  cursor is the last host id of the stored page);
- "check again": ``GET /api/v1/fleet/hosts/identifier/<serial>``, then ``POST /api/v1/fleet/hosts/<id>/refetch``
  (Fleet asks the agent for fresh details on its next check-in), then ``GET .../device_mapping``.

Host field -> snapshot:

- ``hardware_serial`` -> serial (the one serial rule; empty or placeholder: rejected);
- ``platform`` (``darwin``, ``windows``, ``ubuntu``, ``rhel``, ``centos``...; else ``platform_like``)
  -> platform and Linux distribution; any other platform (``ios``, ``chrome``, ``android``): rejected;
- ``os_version`` (``macOS 14.6.1``, ``Ubuntu 24.04.1 LTS``, ``Microsoft Windows 11 Enterprise 23H2
  10.0.22631.3593``, ``CentOS Linux 8.3.2011``) -> os_name and os_version (``parse_os_version``);
  ``build`` -> os_build; ``osquery_version`` -> agent osquery and its version;
- ``disk_encryption_enabled`` -> disk_encrypted (absent or null: not measured);
- ``policies[].response`` through ``policy_map`` (policy name -> fact): ``pass`` true, ``fail``
  false, ``""`` (not run yet) not measured; a mapped policy with a result wins over the host field;
- ``detail_updated_at`` -> collected_at (when Fleet last read the host's details; a host that
  never reported has a zero time and is rejected);
- ``device_mapping[]`` (``email``, ``source``) and ``end_users[].idp_username`` -> owners. Emails an
  administrator or the identity provider set (every source but ``google_chrome_profiles``) are
  assigned owners; Chrome profile emails are what the device itself reports, kept on the snapshot only.

Fleet's host record has no field for the facts in ``FLEET_UNMEASURABLE``; each is named in the
snapshot's ``unmeasurable`` set (so the policy's ``if_unmeasurable`` decides, and the denial says
Fleet cannot tell, not that the device did not report) unless the site's ``policy_map`` maps a
Fleet policy to it. A mapped fact whose policy has no result yet is merely not reported (None).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from gateway.ingest.connectors.base import ConnectorError, ConnectorRecord, Page, Rejected, Sleep, VendorHttp
from gateway.config.ingest import FleetConnectorSettings
from gateway.ingest.snapshot_parse import future_problem, parse_platform, parse_time, serial_problem
from gateway.ingest.owners import owner_email_problem
from policy_engine.facts import CUSTOM_PREFIX
from policy_engine.model import DeviceSnapshot, Fact, OsFamily, Version

_DEVICE_REPORTED_SOURCES = frozenset({"google_chrome_profiles"})
_VERSION_TOKEN = re.compile(r"v?\d+(?:\.\d+)*")
_WINDOWS_RELEASE = re.compile(r"\d{2}H\d|\d{4}", re.IGNORECASE)
_NEVER = datetime(2001, 1, 1, tzinfo=UTC)
"""Fleet reports a host that never sent details with a zero time; anything before this is that."""
_LINUX_WORDS = ("linux", "debian", "rhel", "fedora", "suse", "arch")
FLEET_UNMEASURABLE = frozenset({
    "firewall_enabled", "screen_lock_enabled", "screen_lock_delay_s", "remote_login_enabled",
    "auto_updates_enabled", "sip_enabled", "gatekeeper_enabled",
})
"""Facts no Fleet host field carries (4.5x-4.6x ``server/fleet/hosts.go``); only a mapped policy can set one."""


def parse_os_version(text: str, platform: OsFamily) -> tuple[str, Version | None, str]:
    """(os_name, version, build) from Fleet's ``os_version`` text; version None when it names none.

    The version is the last dotted number (``Ubuntu 24.04.1 LTS`` -> 24.04.1); on Windows it is the
    kernel version at the end (10.0.22631.3593, whose third part is the build) and the marketing
    release (``23H2``) is dropped from the name.
    """
    tokens = text.split()
    at = next((i for i in range(len(tokens) - 1, -1, -1) if _VERSION_TOKEN.fullmatch(tokens[i])), None)
    if at is None:
        return text.strip(), None, ""
    version = Version.parse(tokens[at])
    name_tokens = tokens[:at]
    build = ""
    if platform is OsFamily.WINDOWS:
        if name_tokens and name_tokens[0].lower() == "microsoft":
            name_tokens = name_tokens[1:]
        if name_tokens and _WINDOWS_RELEASE.fullmatch(name_tokens[-1]):
            name_tokens = name_tokens[:-1]
        if len(version.parts) >= 3:
            build = str(version.parts[2])
    elif len(name_tokens) > 1 and _VERSION_TOKEN.fullmatch(name_tokens[-1]):
        name_tokens = name_tokens[:-1]  # "Ubuntu 22 04": keep the name only
    return " ".join(name_tokens), version, build


def _platform(host: Mapping[str, object]) -> tuple[OsFamily, str]:
    word = str(host.get("platform") or "").strip().lower()
    family = parse_platform(word) if word else OsFamily.UNKNOWN
    if family is OsFamily.UNKNOWN:
        like = str(host.get("platform_like") or "").lower().split()
        if word and any(w in _LINUX_WORDS for w in like):
            family = OsFamily.LINUX
    distribution = word if family is OsFamily.LINUX and word != "linux" else ""
    return family, distribution


def _owners(host: Mapping[str, object]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every owner email, the assigned ones) from device_mapping and end_users."""
    every: list[str] = []
    assigned: list[str] = []
    mapping = host.get("device_mapping")
    for entry in mapping if isinstance(mapping, list) else ():
        if not isinstance(entry, dict) or owner_email_problem(entry.get("email")) is not None:
            continue
        email = str(entry["email"]).strip().lower()
        every.append(email)
        if entry.get("source") not in _DEVICE_REPORTED_SOURCES:
            assigned.append(email)
    users = host.get("end_users")
    for user in users if isinstance(users, list) else ():
        if isinstance(user, dict) and owner_email_problem(user.get("idp_username")) is None:
            email = str(user["idp_username"]).strip().lower()
            every.append(email)
            assigned.append(email)
    return tuple(dict.fromkeys(every)), tuple(dict.fromkeys(assigned))


def parse_fleet_host(
    host: object, *, source: str, policy_map: Mapping[str, str], received_at: datetime, max_future_skew: timedelta
) -> ConnectorRecord | Rejected:
    """One Fleet host (an item of ``hosts``, or ``host`` of a single-host answer) as a snapshot, or why not."""
    if not isinstance(host, dict):
        return Rejected("", "", "host", "a JSON object")
    ref = str(host.get("id", ""))
    raw_serial = host.get("hardware_serial")
    shown = raw_serial if isinstance(raw_serial, str) else ""
    if (problem := serial_problem(raw_serial)) is not None:
        return Rejected(ref, shown, "hardware_serial", problem)
    serial = str(raw_serial).strip()
    platform, distribution = _platform(host)
    if platform is OsFamily.UNKNOWN:
        return Rejected(ref, serial, "platform", f"`darwin`, `windows` or a Linux distribution, not `{host.get('platform')}` (Gatehouse gates laptops)")
    collected_at = parse_time(host.get("detail_updated_at"))
    if collected_at is None or collected_at < _NEVER:
        return Rejected(ref, serial, "detail_updated_at", "the time Fleet last read the host's details (this host has not reported any)")
    if (ahead := future_problem(collected_at, received_at=received_at, max_future_skew=max_future_skew)) is not None:
        return Rejected(ref, serial, "detail_updated_at", ahead)
    os_name, os_version, build = parse_os_version(str(host.get("os_version") or ""), platform)
    encrypted = host.get("disk_encryption_enabled")
    facts: dict[str, bool | None] = {"disk_encrypted": encrypted if isinstance(encrypted, bool) else None}
    custom: dict[str, Fact] = {}
    policies = host.get("policies")
    for policy in policies if isinstance(policies, list) else ():
        if not isinstance(policy, dict) or policy.get("name") not in policy_map:
            continue
        answer = {"pass": True, "fail": False}.get(str(policy.get("response") or ""))
        fact = policy_map[str(policy["name"])]
        if fact.startswith(CUSTOM_PREFIX):
            if answer is not None:
                custom[sys.intern(fact[len(CUSTOM_PREFIX):])] = answer
        elif answer is not None or fact not in facts:
            facts[fact] = answer
    agent_version = host.get("osquery_version")
    try:
        agent = Version.parse(agent_version) if isinstance(agent_version, str) and agent_version else None
    except ValueError:
        agent = None
    owners, assigned = _owners(host)
    intern = sys.intern
    snapshot = DeviceSnapshot(
        serial=serial, platform=platform, os_name=intern(os_name), os_version=os_version,
        collected_at=collected_at, received_at=received_at, source=intern(source),
        hostname=str(host.get("hostname") or "")[:256], owners=owners, distribution=intern(distribution),
        os_build=intern(str(host.get("build") or build)), agent_name="osquery" if agent is not None else "",
        agent_version=agent, custom=custom, unmeasurable=FLEET_UNMEASURABLE.difference(policy_map.values()), **facts,  # INVARIANT: policy_map names bool facts only (config check)
    )
    return ConnectorRecord(snapshot, ref, assigned)


class FleetConnector:
    """Reads hosts from one Fleet server."""

    label = "Fleet"
    refresh_hint = ("Fleet gets fresh details from the device's agent when the agent next checks in after being asked,"
                    " typically within a few minutes while the device is online and awake.")

    def __init__(self, settings: FleetConnectorSettings, *, sleep: Sleep, max_future_skew: timedelta) -> None:
        self.name = settings.name
        self.source = f"fleet:{settings.name}"
        self._settings = settings
        self._policy_map = dict(settings.policy_map)
        self._skew = max_future_skew
        self._http = VendorHttp(settings.url, vendor="Fleet", timeout_s=settings.timeout_s, attempts=settings.attempts, sleep=sleep)

    async def _token(self, renew: bool) -> str:
        # An API token cannot be renewed by Gatehouse; a second 401 ends the pass with a message.
        return self._settings.api_token.reveal()

    def _parse(self, host: object, now: datetime) -> ConnectorRecord | Rejected:
        return parse_fleet_host(host, source=self.source, policy_map=self._policy_map, received_at=now, max_future_skew=self._skew)

    async def fetch_page(self, cursor: str, *, now: datetime) -> Page:
        """Hosts after the host id ``cursor``, by id.

        Raises:
            ConnectorError: Fleet could not be read after retries, or the answer has no ``hosts`` list.
        """
        params = [("order_key", "id"), ("per_page", str(self._settings.page_size)), ("page", "0"),
                  ("populate_policies", "true"), ("device_mapping", "true")]
        if cursor:
            params.append(("after", cursor))
        body = await self._http.request("GET", "/api/v1/fleet/hosts", token=self._token, params=params)
        hosts = body.get("hosts") if isinstance(body, dict) else None
        if not isinstance(hosts, list):
            raise ConnectorError("Fleet's `GET /api/v1/fleet/hosts` answer has no `hosts` list; check the connector's `url`")
        records = tuple(self._parse(host, now) for host in hosts)
        last = hosts[-1].get("id") if hosts and isinstance(hosts[-1], dict) else None
        full = len(hosts) >= self._settings.page_size and last is not None
        return Page(records, str(last) if full else None)

    async def fetch_device(self, serial: str, *, now: datetime) -> ConnectorRecord | Rejected | None:
        """The host with this hardware serial, after asking Fleet to refetch it; None when Fleet has no such host.

        Raises:
            ConnectorError: Fleet could not be read after retries.
        """
        try:
            body = await self._http.request("GET", f"/api/v1/fleet/hosts/identifier/{quote(serial, safe='')}", token=self._token)
        except ConnectorError as exc:
            if exc.status == 404:
                return None
            raise
        host = body.get("host") if isinstance(body, dict) else None
        if not isinstance(host, dict) or "id" not in host:
            return None
        await self._http.request("POST", f"/api/v1/fleet/hosts/{host['id']}/refetch", token=self._token)
        mapping = await self._http.request("GET", f"/api/v1/fleet/hosts/{host['id']}/device_mapping", token=self._token)
        if isinstance(mapping, dict) and isinstance(mapping.get("device_mapping"), list):
            host = {**host, "device_mapping": mapping["device_mapping"]}
        record = self._parse(host, now)
        if isinstance(record, ConnectorRecord) and record.snapshot.serial != serial:
            return Rejected(record.ref, record.snapshot.serial, "hardware_serial", f"the serial asked for, `{serial}`")
        return record

    async def close(self) -> None:
        await self._http.close()


__all__ = ["FLEET_UNMEASURABLE", "FleetConnector", "parse_fleet_host", "parse_os_version"]
