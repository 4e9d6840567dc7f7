"""Problems and the errors that carry them."""

from __future__ import annotations

from policy_engine import PolicyCompileError, PolicyError, PolicyParseError, Problem


class TestProblem:
    def test_str_is_path_then_message(self) -> None:
        """A problem reads ``path: message``."""
        problem = Problem("tiers.high.checks[2]", "unknown-check", "unknown check `fire_wall`")

        text = str(problem)

        assert "tiers.high.checks[2]: unknown check `fire_wall`" == text

    def test_problem_without_path_is_just_the_message(self) -> None:
        """A problem about the whole document has no path prefix."""
        problem = Problem("", "wrong-type", "expected a mapping")

        text = str(problem)

        assert "expected a mapping" == text


class TestPolicyError:
    def test_errors_join_every_problem_and_are_value_errors(self) -> None:
        """The message lists every problem; both errors are PolicyError and ValueError."""
        problems = (Problem("a", "x", "first"), Problem("b", "y", "second"))

        parse, compile_ = PolicyParseError(problems), PolicyCompileError(problems)

        assert "a: first; b: second" == str(parse)
        assert problems == compile_.problems
        assert isinstance(compile_, PolicyError) and isinstance(parse, ValueError)
