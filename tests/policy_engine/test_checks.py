"""Compiled checks: closures, generated inline expressions and display strings agree."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given

from policy_engine import CheckSpec, DeviceSnapshot, IfUnknown, Operator, OsFamily, Version, VersionFloor
from policy_engine.checks import NOT_REPORTED, compile_check, display

from tests.policy_engine.factories import make_snapshot
from tests.policy_engine.strategies import RELAXED, hostile_snapshots, snapshots

V = Version.parse
SPECS = (
    CheckSpec("a", "firewall_enabled", Operator.EQUALS, True),
    CheckSpec("b", "remote_login_enabled", Operator.EQUALS, False, if_unknown=IfUnknown.PASS),
    CheckSpec("c", "screen_lock_delay_s", Operator.AT_MOST, 600),
    CheckSpec("d", "screen_lock_delay_s", Operator.ABOVE, 5, if_unknown=IfUnknown.PASS),
    CheckSpec("e", "screen_lock_delay_s", Operator.EQUALS, 0, if_unknown=IfUnknown.PASS),
    CheckSpec("f", "platform", Operator.ONE_OF, ("darwin", "windows")),
    CheckSpec("g", "distribution", Operator.NONE_OF, ("arch",), if_unknown=IfUnknown.PASS),
    CheckSpec("h", "os_version", Operator.MIN_VERSION, VersionFloor(everywhere=V("11.5.1"))),
    CheckSpec("i", "os_version", Operator.MIN_VERSION,
              VersionFloor(darwin=V("14.4"), linux=V("6"), linux_distributions=(("ubuntu", V("22.04")),)),
              if_unknown=IfUnknown.PASS),
    CheckSpec("j", "agent_version", Operator.MIN_VERSION, VersionFloor(windows=V("5.1"), everywhere=V("5.10"))),
    CheckSpec("k", "sip_enabled", Operator.EQUALS, True, platforms=frozenset({OsFamily.DARWIN})),
    CheckSpec("l", "custom.mdm", Operator.EQUALS, True),
    CheckSpec("m", "os_name", Operator.EQUALS, "macOS", platforms=frozenset({OsFamily.DARWIN, OsFamily.LINUX})),
    CheckSpec("n", "screen_lock_delay_s", Operator.AT_LEAST, 1),
    CheckSpec("o", "screen_lock_delay_s", Operator.BELOW, 900),
)
COMPILED = tuple(compile_check(spec, spec.name, i) for i, spec in enumerate(SPECS))


def outcome(run: object, snapshot: DeviceSnapshot) -> object:
    """The result of a check runner, or the exception type it raised."""
    try:
        return bool(run(snapshot))  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001
        return type(exc)


def inline_runner(index: int) -> object:
    """Compile one check's inline expression the way compile.py does."""
    check = COMPILED[index]
    namespace: dict[str, object] = {"__builtins__": {}}
    namespace.update(check.constants)
    exec(f"def run(s):\n    return {check.inline}\n", namespace)  # noqa: S102
    return namespace["run"]


INLINE = tuple(inline_runner(i) for i in range(len(COMPILED)))


class TestInlineAgreesWithClosure:
    @RELAXED
    @given(snapshots())
    def test_inline_expression_matches_closure(self, snapshot: DeviceSnapshot) -> None:
        """On well-typed snapshots the generated expression and the closure agree for every check."""
        closures = [outcome(c.passes, snapshot) for c in COMPILED]

        inlined = [outcome(run, snapshot) for run in INLINE]

        assert closures == inlined

    @RELAXED
    @given(hostile_snapshots())
    def test_inline_never_passes_what_the_closure_fails(self, snapshot: DeviceSnapshot) -> None:
        """On broken snapshots an inline pass implies a closure pass (the fast path is never laxer)."""
        pairs = [(outcome(run, snapshot), outcome(c.passes, snapshot)) for run, c in zip(INLINE, COMPILED)]

        laxer = [i for i, (fast, slow) in enumerate(pairs) if fast is True and slow is not True]

        assert [] == laxer

    def test_custom_fact_checks_are_not_inlined(self) -> None:
        """Custom facts run through their closure (their type is only known when evaluated)."""
        check = COMPILED[11]

        inline = check.inline

        assert "_p11(s)" == inline


class TestDisplay:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(None, NOT_REPORTED), (True, "on"), (False, "off"), (V("13.2.1"), "13.2.1"), (600, "600"),
         (2.0, "2"), (OsFamily.LINUX, "linux"), ("macOS", "macOS")],
    )
    def test_display_values(self, value: object, expected: str) -> None:
        """Facts show as the deny page prints them."""
        text = display(value)

        assert expected == text

    def test_required_text_per_platform(self) -> None:
        """A per-platform floor shows the floor for the device's platform and distribution."""
        check = COMPILED[8]
        mac, ubuntu, fedora = (make_snapshot(), make_snapshot(platform=OsFamily.LINUX, distribution="ubuntu"),
                               make_snapshot(platform=OsFamily.LINUX, distribution="fedora"))

        texts = [check.required(s) for s in (mac, ubuntu, fedora)]

        assert [">= 14.4", ">= 22.04", ">= 6"] == texts

    def test_bounds_show_their_operator(self) -> None:
        """Numeric bounds read ``<= 600``, ``> 5``, ``>= 1``, ``< 900``."""
        snapshot = make_snapshot()

        texts = [COMPILED[i].required(snapshot) for i in (2, 3, 13, 14)]

        assert ["<= 600", "> 5", ">= 1", "< 900"] == texts


class TestSemantics:
    def test_windows_floor_overrides_everywhere(self) -> None:
        """A platform entry beats ``default``: Windows agents need 5.1, others 5.10."""
        check = COMPILED[9]
        win = make_snapshot(platform=OsFamily.WINDOWS, agent_version=V("5.2"))
        mac = make_snapshot(agent_version=V("5.2"))

        results = [check.passes(win), check.passes(mac)]

        assert [True, False] == results

    def test_unreported_numeric_fact_fails_unless_told(self) -> None:
        """``at_most`` on an unreported delay fails; with ``if_unknown: pass`` it passes."""
        snapshot = make_snapshot(screen_lock_delay_s=None)

        results = [COMPILED[2].passes(snapshot), COMPILED[3].passes(snapshot)]

        assert [False, True] == results

    def test_grace_and_severity_are_carried(self) -> None:
        """The compiled check keeps severity, grace and remediation key."""
        spec = CheckSpec("x", "disk_encrypted", Operator.EQUALS, True, grace=timedelta(hours=2))

        check = compile_check(spec, "disk_encryption", 0)

        assert ("fail", timedelta(hours=2), "disk_encryption") == (check.severity.value, check.grace, check.remediation)
