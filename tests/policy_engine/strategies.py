"""Hypothesis strategies for policy_engine: versions, snapshots (well-typed and hostile)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from policy_engine import DeviceSnapshot, OsFamily, Version

from tests.policy_engine.factories import NOW

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""For properties that compile policies or evaluate many devices: no per-example deadline, so a
busy machine cannot fail them on timing (timing is the benchmark's job, never a test's)."""

version_parts = st.lists(st.integers(min_value=0, max_value=30_000), min_size=1, max_size=5).map(tuple)
versions = version_parts.map(lambda parts: Version.parse(".".join(str(p) for p in parts)))
optional_bools = st.sampled_from([True, False, None])
ages = st.one_of(
    st.timedeltas(min_value=timedelta(minutes=-10), max_value=timedelta(days=3)),
    st.sampled_from([timedelta(0), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=24)]),
)
fact_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="abcxyz01._ ", max_size=8),
)
custom_facts = st.dictionaries(
    st.sampled_from(["mdm_enrolled", "edr_running", "open_wifi_connections", "risk_score", "x"]),
    fact_values,
    max_size=4,
)
os_versions = st.one_of(
    st.none(),
    st.sampled_from(["10.15.7", "11.0", "11.5.1", "13.2.1", "14.4", "15.1", "20.04.2", "22.04", "24.04",
                     "10.0.19041", "10.0.19045", "10.0.22631", "6.1", "39", "40"]).map(Version.parse),
    versions,
)


@st.composite
def snapshots(draw: st.DrawFn, *, now: datetime = NOW) -> DeviceSnapshot:
    """Well-typed snapshots over every platform, with unreported facts and odd custom facts."""
    platform = draw(st.sampled_from(list(OsFamily)))
    age = draw(ages)
    received_lag = draw(st.sampled_from([timedelta(0), timedelta(seconds=3), timedelta(minutes=-2)]))
    collected = now - age
    return DeviceSnapshot(
        serial=draw(st.sampled_from(["S1", "S2", "S3", "S4", "S5", "S6"])),
        platform=platform,
        os_name=draw(st.sampled_from(["macOS", "Ubuntu", "Windows 11 Pro", ""])),
        os_version=draw(os_versions),
        collected_at=collected,
        received_at=collected + received_lag,
        source=draw(st.sampled_from(["osquery", "api", "stethoscope"])),
        owners=draw(st.sampled_from([(), ("alice@example.com",), ("bob@example.com", "carol@example.com")])),
        distribution=draw(st.sampled_from(["", "ubuntu", "fedora", "debian", "arch"])),
        agent_name=draw(st.sampled_from(["", "osquery"])),
        agent_version=draw(st.one_of(st.none(), versions)),
        firewall_enabled=draw(optional_bools),
        disk_encrypted=draw(optional_bools),
        screen_lock_enabled=draw(optional_bools),
        screen_lock_delay_s=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=7200))),
        remote_login_enabled=draw(optional_bools),
        auto_updates_enabled=draw(optional_bools),
        sip_enabled=draw(optional_bools),
        gatekeeper_enabled=draw(optional_bools),
        custom=draw(custom_facts),
    )


hostile_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(alphabet="abcxyz01._ ", max_size=5), st.just(object()),
    st.just(datetime(2020, 1, 1)), st.just(Version.parse("1.2")),
)


@st.composite
def hostile_snapshots(draw: st.DrawFn) -> DeviceSnapshot:
    """Snapshots whose fields hold the wrong types (a buggy ingest), including naive datetimes."""
    base = draw(snapshots())
    fields = ["os_version", "agent_version", "firewall_enabled", "screen_lock_delay_s", "platform",
              "distribution", "collected_at", "received_at", "sip_enabled", "custom"]
    broken = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True))
    for name in broken:
        object.__setattr__(base, name, draw(hostile_values))
    return base


def utc_instants(around: datetime = NOW) -> st.SearchStrategy[datetime]:
    """Instants within a few days of ``around``, timezone-aware UTC."""
    return st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)).map(
        lambda d: (around + d).astimezone(UTC)
    )
