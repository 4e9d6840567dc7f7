"""Version ordering: a total order consistent with how OS vendors number releases."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policy_engine import Version

from tests.policy_engine.strategies import versions


class TestVersionOrder:
    def test_examples_from_the_issue_are_ordered(self) -> None:
        """``10.15.7 < 11.0 < 11.5.1`` and Windows builds compare part by part."""
        texts = ["10.15.7", "11.0", "11.5.1", "22.04", "10.0.19045"]

        ordered = sorted(Version.parse(t) for t in texts)

        assert ["10.0.19045", "10.15.7", "11.0", "11.5.1", "22.04"] == [str(v) for v in ordered]

    def test_ubuntu_versions_compare_numerically(self) -> None:
        """Ubuntu ``22.04`` is newer than ``20.04.2`` and older than ``24.04``."""
        old, mid, new = Version.parse("20.04.2"), Version.parse("22.04"), Version.parse("24.04")

        result = old < mid < new

        assert True is result

    def test_windows_builds_compare_numerically(self) -> None:
        """Build ``10.0.19045`` is newer than ``10.0.9999`` (numbers, not text)."""
        result = Version.parse("10.0.19045") > Version.parse("10.0.9999")

        assert True is result

    def test_trailing_zeros_do_not_matter(self) -> None:
        """``14``, ``14.0`` and ``14.0.0`` are the same version."""
        a, b, c = Version.parse("14"), Version.parse("14.0"), Version.parse("14.0.0")

        assert (a, a) == (b, c)

    @given(versions, versions)
    def test_exactly_one_of_less_equal_greater(self, a: Version, b: Version) -> None:
        """Any two versions are related by exactly one of <, == and > (trichotomy)."""
        relations = [a < b, a == b, a > b]

        assert 1 == sum(relations)

    @given(versions, versions, versions)
    def test_order_is_transitive(self, a: Version, b: Version, c: Version) -> None:
        """If a <= b and b <= c then a <= c."""
        low, mid, high = sorted([a, b, c])

        assert True is (low <= high)

    @given(versions, versions)
    def test_equal_versions_hash_equal(self, a: Version, b: Version) -> None:
        """Versions equal under comparison have equal hashes."""
        hashes = {hash(a), hash(b)}

        assert (1 if a == b else len(hashes)) == len(hashes)

    @given(st.lists(st.integers(min_value=0, max_value=99), min_size=1, max_size=4))
    def test_appending_a_nonzero_part_makes_a_newer_version(self, parts: list[int]) -> None:
        """``x`` < ``x.1``: a version with one more nonzero part is newer."""
        base = Version.parse(".".join(map(str, parts)))

        longer = Version.parse(".".join(map(str, [*parts, 1])))

        assert True is (base < longer)
