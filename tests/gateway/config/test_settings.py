"""Configuration loading: every problem reported at once, with its location and what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.config.secret import Secret
from gateway.config.settings import Settings, load_settings, parse_settings

MINIMAL = {
    "listeners": [{"address": "127.0.0.1:8080"}],
    "routes": [{"id": "wiki", "upstream": "http://127.0.0.1:9000", "tier": "low"}],
}


def parse(raw: object, environ: dict[str, str] | None = None, base_dir: Path = Path("/etc/gatehouse")) -> Settings:
    return parse_settings(raw, source="gatehouse.yaml", base_dir=base_dir, environ=environ or {})


def problems_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    return [str(p) for p in caught.value.problems]


class TestParseSettings:
    def test_minimal_file_gets_defaults(self) -> None:
        """A file with one listener and one route is complete; everything else has a default."""
        settings = parse(MINIMAL)

        assert "enforce" == settings.routes[0].mode
        assert "/" == settings.routes[0].path_prefix
        assert "127.0.0.1:9090" == settings.metrics.address
        assert 8080 == settings.listeners[0].port

    def test_every_problem_is_reported_with_its_location(self) -> None:
        """Several mistakes in one file are all reported, each at its path."""
        raw = {
            "listeners": [{"address": "nowhere"}],
            "routes": [
                {"id": "wiki", "upstream": "foo", "tier": "low", "colour": "blue"},
                {"id": "Bad Id", "upstream": "http://x", "tier": "low", "max_body_bytes": "lots"},
            ],
        }

        problems = problems_of(raw)

        assert [
            "listeners[0].address: `nowhere` is not an address; write host:port such as `127.0.0.1:8080`",
            "routes[0].upstream: `foo` is not an http(s) URL; write e.g. `http://127.0.0.1:9000`",
            "routes[0].colour: unknown key; check the spelling against the configuration reference in the README",
            "routes[1].id: `Bad Id` is not a route id; use lowercase letters, digits, `-` and `_`",
            "routes[1].max_body_bytes: `lots`: input should be a valid integer, unable to parse string as an integer",
        ] == problems

    def test_missing_listeners_is_named(self) -> None:
        """A file without listeners says the key is required."""
        problems = problems_of({"routes": []})

        assert ["listeners: is required"] == problems

    def test_two_routes_matching_the_same_requests_are_refused(self) -> None:
        """Two routes with the same host and prefix are ambiguous and rejected at load."""
        route = {"upstream": "http://127.0.0.1:9000", "tier": "low", "host": "wiki.corp", "path_prefix": "/a"}
        raw = {**MINIMAL, "routes": [{"id": "one", **route}, {"id": "two", **route}]}

        problems = problems_of(raw)

        assert ["routes `one` and `two` both match `wiki.corp/a`; give one a different host or path prefix"] == problems

    def test_path_prefix_with_dot_segments_is_refused(self) -> None:
        """A route prefix must already be canonical, or routing could be fooled."""
        raw = {**MINIMAL, "routes": [{"id": "a", "upstream": "http://x", "tier": "low", "path_prefix": "/a/../b"}]}

        problems = problems_of(raw)

        assert 1 == len(problems)
        assert "not a canonical path prefix" in problems[0]

    def test_top_level_must_be_a_mapping(self) -> None:
        """A file holding a list is refused with a plain explanation."""
        problems = problems_of(["listeners"])

        assert ["the file must hold a mapping of settings at the top level"] == problems


class TestLoadSettings:
    def test_relative_paths_resolve_against_the_file(self, tmp_path: Path) -> None:
        """Paths in the file are relative to the file's own directory, not the working directory."""
        path = tmp_path / "gatehouse.yaml"
        path.write_text("listeners: [{address: '127.0.0.1:8080'}]\nstore: sqlite:var/g.db\npolicy: policy.yaml\n")

        settings = load_settings(path, {})

        assert f"sqlite://{tmp_path}/var/g.db" == settings.store.reveal()
        assert tmp_path / "policy.yaml" == settings.policy

    def test_three_slashes_name_an_absolute_store(self, tmp_path: Path) -> None:
        """`sqlite:///abs/path` is the file /abs/path, not a path under the configuration's folder."""
        path = tmp_path / "etc" / "gatehouse.yaml"
        path.parent.mkdir()
        path.write_text(f"listeners: [{{address: '127.0.0.1:8080'}}]\nstore: sqlite://{tmp_path}/data/g.db\n")

        settings = load_settings(path, {})

        assert f"sqlite://{tmp_path}/data/g.db" == settings.store.reveal()

    def test_default_store_is_under_the_configuration(self, tmp_path: Path) -> None:
        """Without `store`, the SQLite file is var/gatehouse.db next to the configuration file."""
        path = tmp_path / "gatehouse.yaml"
        path.write_text("listeners: [{address: '127.0.0.1:8080'}]\n")

        settings = load_settings(path, {})

        assert f"sqlite://{tmp_path}/var/gatehouse.db" == settings.store.reveal()

    def test_store_with_a_host_is_refused(self, tmp_path: Path) -> None:
        """`sqlite://var/g.db` could mean either file; it is refused with both spellings to choose from."""
        path = tmp_path / "gatehouse.yaml"
        path.write_text("listeners: [{address: '127.0.0.1:8080'}]\nstore: sqlite://var/g.db\n")

        with pytest.raises(ConfigError) as caught:
            load_settings(path, {})

        (problem,) = caught.value.problems
        assert "store" == problem.path
        assert "names the host `var`" in problem.message
        assert "`sqlite:///var/g.db`" in problem.message and "`sqlite:var/g.db`" in problem.message

    def test_store_left_at_the_old_relative_place_is_refused(self, tmp_path: Path) -> None:
        """A `sqlite:///x` whose /x is missing while the configuration's x exists is refused, not started empty."""
        path = tmp_path / "gatehouse.yaml"
        (tmp_path / "gatehouse-test-var").mkdir()
        (tmp_path / "gatehouse-test-var" / "g.db").write_bytes(b"")
        path.write_text("listeners: [{address: '127.0.0.1:8080'}]\nstore: sqlite:///gatehouse-test-var/g.db\n")

        with pytest.raises(ConfigError) as caught:
            load_settings(path, {})

        (problem,) = caught.value.problems
        assert f"`{tmp_path}/gatehouse-test-var/g.db` does" in problem.message
        assert "write `sqlite:gatehouse-test-var/g.db` to keep" in problem.message

    def test_invalid_yaml_names_line_and_column(self, tmp_path: Path) -> None:
        """A syntax error is reported with its position."""
        path = tmp_path / "gatehouse.yaml"
        path.write_text("listeners: [\n  {address: x\n")

        with pytest.raises(ConfigError) as caught:
            load_settings(path, {})

        assert caught.value.problems[0].path.startswith("line ")

    def test_store_dsn_can_come_from_the_environment(self, tmp_path: Path) -> None:
        """A DSN with a password is written as a secret reference and never printed."""
        path = tmp_path / "gatehouse.yaml"
        path.write_text("listeners: [{address: '127.0.0.1:8080'}]\nstore: {env: STORE_DSN}\n")

        settings = load_settings(path, {"STORE_DSN": "postgresql://g:pw@db/g"})

        assert "postgresql://g:pw@db/g" == settings.store.reveal()
        assert "pw" not in repr(settings)

    def test_json_is_accepted(self, tmp_path: Path) -> None:
        """A JSON configuration file loads like YAML."""
        path = tmp_path / "gatehouse.json"
        path.write_text('{"listeners": [{"address": "127.0.0.1:8080"}]}')

        settings = load_settings(path, {})

        assert 1 == len(settings.listeners)

    def test_unreadable_file_is_reported(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming the file, not a traceback."""
        with pytest.raises(ConfigError) as caught:
            load_settings(tmp_path / "absent.yaml", {})

        assert "cannot read the file" in str(caught.value)


class TestSecret:
    def test_repr_never_shows_the_value(self) -> None:
        """A secret prints as stars wherever it ends up."""
        secret = Secret("hunter2")

        assert "Secret('***')" == repr(secret) == str(secret)
        assert "hunter2" == secret.reveal()

    def test_matches_compares_values(self) -> None:
        """Constant-time comparison accepts the right value only."""
        secret = Secret("hunter2")

        assert (True, False) == (secret.matches("hunter2"), secret.matches("hunter3"))


class TestShippedExamples:
    def test_example_configuration_is_valid(self, tmp_path: Path) -> None:
        """deploy/gatehouse.example.yaml parses with its secrets provided (its files are checked at start)."""
        example = Path(__file__).resolve().parents[3] / "deploy" / "gatehouse.example.yaml"
        environ = {name: "x" * 40 for name in ("GATEHOUSE_OIDC_CLIENT_SECRET", "GATEHOUSE_SESSION_KEY", "GATEHOUSE_INGEST_TOKEN", "GATEHOUSE_CSRF_SECRET", "GATEHOUSE_SLACK_WEBHOOK")}
        environ["GATEHOUSE_SLACK_WEBHOOK"] = "https://hooks.slack.example/services/T/B/X"
        secret = tmp_path / "enroll"
        secret.write_text("s3cret")
        text = example.read_text().replace("/run/secrets/osquery_enroll_secret", str(secret))
        copy = tmp_path / "gatehouse.yaml"
        copy.write_text(text)

        settings = load_settings(copy, environ)

        assert (4, 2, "monitor") == (len(settings.routes), len(settings.listeners), settings.routes[3].mode)
