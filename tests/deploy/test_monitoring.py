"""The Grafana dashboard and Prometheus alert rules in deploy/ name only metrics Gatehouse exports, and the rules load."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import Metrics
from tests.conftest import missing_service

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gatehouse-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "gatehouse-alerts.yaml"
SELECTOR = re.compile(r"\b(gatehouse_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name a PromQL query can use (counters with `_total`, histograms as `_bucket`, `_sum`, `_count`), with its labels."""
    metrics = Metrics(CollectorRegistry())
    series: dict[str, frozenset[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = frozenset(metric._labelnames) | TARGET_LABELS
        name = metric._name
        if metric._type == "counter":
            series[f"{name}_total"] = labels
        elif metric._type == "histogram":
            series.update({f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels})
        else:
            series[name] = labels
    return series


def dashboard_queries() -> list[str]:
    document = orjson.loads(DASHBOARD.read_bytes())
    queries = [t["expr"] for p in document["panels"] for t in p.get("targets", ())]
    queries += [v["definition"] for v in document["templating"]["list"] if "definition" in v]
    return queries


def rule_queries() -> list[str]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def unknown_names(queries: list[str]) -> set[str]:
    """`name` for a series Gatehouse does not export, `name{label}` for a label it does not have."""
    series = exported_series()
    problems: set[str] = set()
    for query in queries:
        for name, braces in SELECTOR.findall(query):
            if name not in series:
                problems.add(name)
                continue
            problems.update(f"{name}{{{label}}}" for label in MATCHER.findall(braces or "") if label not in series[name])
    return problems


class TestMetricNames:
    def test_every_dashboard_query_names_an_exported_series(self) -> None:
        """Each panel's PromQL (and the job variable's) uses only gatehouse_* series and labels the registry has."""
        queries = dashboard_queries()

        assert len(queries) > 25
        assert set() == unknown_names(queries)

    def test_every_alert_names_an_exported_series(self) -> None:
        """Each alert rule's PromQL uses only gatehouse_* series and labels the registry has."""
        queries = rule_queries()

        assert len(queries) >= 8
        assert set() == unknown_names(queries)

    def test_a_wrong_name_or_label_is_caught(self) -> None:
        """The check itself finds a counter without `_total`, an unknown metric and an unknown label."""
        queries = ['rate(gatehouse_requests[5m])', 'gatehouse_nope', 'gatehouse_decisions_total{user="a", tier="low"}']

        assert {"gatehouse_requests", "gatehouse_nope", "gatehouse_decisions_total{user}"} == unknown_names(queries)

    def test_the_dashboard_covers_what_an_sre_asks(self) -> None:
        """Decisions, denials by check, break-glass, ingest freshness, latency and store health each have a panel."""
        names = {name for query in dashboard_queries() for name, _ in SELECTOR.findall(query)}

        assert {
            "gatehouse_decisions_total", "gatehouse_failing_checks_total", "gatehouse_breakglass_requests_total",
            "gatehouse_breakglass_oldest_unreviewed_age_seconds", "gatehouse_ingest_last_stored_timestamp_seconds",
            "gatehouse_requests_total", "gatehouse_request_duration_seconds_bucket", "gatehouse_store_errors_total",
            "gatehouse_tls_certificate_expiry_timestamp_seconds",
        } <= names


def annotations_of(alert: str, severity: str, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with `{{ $labels.x }}` filled in, as Prometheus renders them."""
    document = yaml.safe_load(ALERTS.read_text())
    rule = next(r for g in document["groups"] for r in g["rules"] if r["alert"] == alert and r["labels"]["severity"] == severity)
    return {key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text) for key, text in rule["annotations"].items()}


class TestPromtool:
    def test_rules_pass_promtool_check(self) -> None:
        """`promtool check rules` accepts the alert rules file."""
        promtool = shutil.which("promtool")
        if promtool is None:
            missing_service("promtool", "run `make system-deps` (installs Debian's prometheus)")

        done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False)

        assert 0 == done.returncode, done.stderr + done.stdout
        assert "SUCCESS: 9 rules found" in done.stdout

    @pytest.mark.parametrize("alert", ["GatehouseBreakglassUnreviewed", "GatehouseStoreDegraded", "GatehouseIngestStalled"])
    def test_alert_fires_on_its_series(self, tmp_path: Path, alert: str) -> None:
        """`promtool test rules` over synthetic series: the alert fires when its condition has held for its `for:`."""
        promtool = shutil.which("promtool")
        if promtool is None:
            missing_service("promtool", "run `make system-deps` (installs Debian's prometheus)")
        series, at, labels = {
            "GatehouseBreakglassUnreviewed": ('gatehouse_breakglass_oldest_unreviewed_age_seconds{job="gh"}',
                                              "86000+60x60", {"job": "gh"}),
            "GatehouseStoreDegraded": ('gatehouse_store_errors_total{job="gh", operation="put_snapshots"}',
                                       "0+1x60", {"job": "gh", "operation": "put_snapshots"}),
            "GatehouseIngestStalled": ('gatehouse_ingest_last_stored_timestamp_seconds{job="gh", source="osquery"}',
                                       "0x120", {"job": "gh", "source": "osquery"}),
        }[alert]
        severity = "critical" if alert == "GatehouseStoreDegraded" else "warning"
        tests = {
            "rule_files": [str(ALERTS)],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [{"series": series, "values": at}],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": alert, "exp_alerts": []},
                    {"eval_time": "80m" if alert == "GatehouseIngestStalled" else "30m", "alertname": alert,
                     "exp_alerts": [{"exp_labels": {"severity": severity, **labels},
                                     "exp_annotations": annotations_of(alert, severity, labels)}]},
                ],
            }],
        }
        path = tmp_path / "tests.yaml"
        path.write_text(yaml.safe_dump(tests))

        done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)

        assert 0 == done.returncode, done.stderr + done.stdout
