"""The operations kit in deploy/monitoring agrees with the app it watches.

promtool checks and unit-tests the alert rules (and parses every dashboard query); the Grafana
dashboard is validated against a JSON schema of the parts Grafana and we rely on; and every
metric name, with its label names, used by a rule or a panel exists in a real ``/metrics`` of
the app, so renaming a metric fails here instead of silencing an alert.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import yaml
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from server.api.main import create_app
from server.core.config import load_settings
from server.core.db import make_engine, upgrade
from server.core.disk import disk_shortage
from server.db_models import Delivery, Instance, Job, JobEvent, Series, Study, WorkerHeartbeat, utcnow

if TYPE_CHECKING:
    from server.tasks.queue import QueueGateway

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
#: Debian's prometheus package puts promtool in /usr/bin; PATH is the fallback elsewhere.
PROMTOOL = shutil.which("promtool", path=os.pathsep.join(["/usr/bin", os.environ.get("PATH", "")]))
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus: apt-get install prometheus)"
)

#: Labels Prometheus adds to every scraped series; the app does not export them.
TARGET_LABELS = frozenset({"job", "instance"})
#: PromQL functions, aggregations and operators the kit uses (and Grafana's label_values); any
#: other word in a query must be a lungcds metric.
PROMQL_WORDS = frozenset(
    {
        "absent",
        "and",
        "avg",
        "bool",
        "clamp_min",
        "count",
        "delta",
        "increase",
        "label_values",
        "max",
        "min",
        "or",
        "predict_linear",
        "rate",
        "sum",
        "unless",
    }
)
#: Grafana's label_values(metric, label): a metric and one of its label names.
_LABEL_VALUES = r"label_values\(\s*(lungcds_[A-Za-z0-9_:]*)[^,()]*,\s*([A-Za-z_]\w*)\s*\)"
#: by (...) / without (...) / on (...) / ignoring (...) and the group modifiers, with their label lists.
_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
#: What the dashboard must show (issue 18): throughput, job states, queue depth, stage
#: durations, delivery failures, stuck jobs, workers alive and the disk.
DASHBOARD_METRICS = frozenset(
    {
        "lungcds_instances_received_total",
        "lungcds_jobs",
        "lungcds_queue_depth",
        "lungcds_stage_duration_seconds_sum",
        "lungcds_stage_duration_seconds_count",
        "lungcds_delivery_failures_total",
        "lungcds_jobs_stuck",
        "lungcds_workers_alive",
        "lungcds_disk_free_bytes",
        "lungcds_disk_reserve_bytes",
    }
)
#: What the alerts must watch: stuck jobs, failed deliveries, queue depth, disk, worker heartbeats.
ALERTED_METRICS = frozenset(
    {
        "lungcds_jobs_stuck",
        "lungcds_delivery_failures_total",
        "lungcds_queue_depth",
        "lungcds_disk_free_bytes",
        "lungcds_disk_reserve_bytes",
        "lungcds_workers_alive",
    }
)

_DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${DS_PROMETHEUS}"}},
}
_NAME = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 0}
#: The parts of Grafana's dashboard model (schemaVersion 39) that this kit relies on.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "time", "templating", "panels"],
    "properties": {
        "title": _NAME,
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36, "maximum": 41},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name", "type"], "properties": {"name": _NAME}},
                    "contains": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"const": "DS_PROMETHEUS"},
                            "type": {"const": "datasource"},
                            "query": {"const": "prometheus"},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "datasource", "gridPos", "fieldConfig", "targets"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table"]},
                    "title": _NAME,
                    "description": {"type": "string"},
                    "datasource": _DATASOURCE,
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "h": {"type": "integer", "minimum": 1},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": _COUNT,
                        },
                    },
                    "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["expr", "refId", "datasource"],
                            "properties": {"expr": _NAME, "refId": _NAME, "datasource": _DATASOURCE},
                        },
                    },
                },
            },
        },
    },
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120, check=False)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of the dashboard."""
    board = _dashboard()
    queries = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in board["panels"] for t in p["targets"]]
    queries += [(f"variable {v['name']}", v["definition"]) for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def _all_queries() -> list[tuple[str, str]]:
    return [(f"alert {r['alert']}", r["expr"]) for r in _rules()] + _dashboard_queries()


def _selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """Each lungcds metric name in ``expr`` with the label names its matchers use."""
    for match in re.finditer(r"(?<![\w:$])(lungcds_[A-Za-z0-9_:]*)\s*(\{[^}]*\})?", expr):
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2) or ""))
        yield match.group(1), labels
    for match in re.finditer(_LABEL_VALUES, expr):  # Grafana's label_values(metric, label) names a label too
        yield match.group(1), {match.group(2)}


def _words(expr: str) -> set[str]:
    """Identifiers of ``expr`` that are neither strings, label matchers, ranges, groupings nor variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(_LABEL_VALUES, r"label_values(\1)", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+|\$\{[^}]*\}", "", text)
    text = re.sub(_GROUPING, "", text)
    return set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Sample name -> label names of a real ``/metrics``, with a row behind every family."""

    class _Queue:
        def depths(self) -> dict[str, int]:
            return {"gpu": 2, "cpu": 0}

        def check(self) -> str | None:
            return None

    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("LUNGCDS_"):
                patch.delenv(name)
        settings = load_settings(data_dir=tmp_path_factory.mktemp("monitoring") / "data")
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        _populate(engine)
        body = TestClient(create_app(settings, engine, cast("QueueGateway", _Queue()))).get("/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def _populate(engine: Any) -> None:
    """One row of each kind the collector counts: a series, an instance, a job and its events, a delivery, a worker."""
    now = utcnow()
    uid = "1.2.826.0.1.3680043.8.498.77"
    with Session(engine) as session:
        session.add(Study(study_instance_uid=f"{uid}.1"))
        session.flush()
        session.add(Series(series_instance_uid=f"{uid}.2", study_instance_uid=f"{uid}.1", state="analysing"))
        session.flush()
        session.add(
            Instance(
                sop_instance_uid=f"{uid}.3",
                series_instance_uid=f"{uid}.2",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                path="x.dcm",
                size=1,
            )
        )
        job = Job(idempotency_key="monitoring", series_instance_uid=f"{uid}.2", pipeline_version="0", state="running")
        session.add(job)
        session.flush()
        assert job.id is not None
        session.add(
            Delivery(job_id=job.id, destination="PACS@pacs:104", kind="sr", path="sr.dcm", sop_instance_uid=uid)
        )
        session.add(JobEvent(job_id=job.id, at=now, kind="stage", name="load", seconds=2.5))
        session.add(JobEvent(job_id=job.id, at=now, kind="delivery_failed"))
        session.add(JobEvent(job_id=job.id, at=now, kind="taken_over"))
        session.add(WorkerHeartbeat(hostname="w1@test", queues="cpu,gpu", pid=1, started_at=now, last_seen=now))
        session.commit()


@needs_promtool
def test_promtool_accepts_the_alert_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    result = _promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel's PromQL, with Grafana's variables filled in, as a recording rule promtool must accept."""
    rules = [
        {
            "record": f"lungcds_dashboard:query_{index}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for index, (_, expr) in enumerate(_dashboard_queries())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_says_how_bad_it_is_and_what_to_do() -> None:
    rules = _rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        description = rule["annotations"]["description"]
        assert re.search(r"(GET|POST|PUT) /api/v1/|`(lungcds|systemctl) ", description), (
            f"{rule['alert']}: the description names no REST endpoint or command to look at"
        )
    watched = {name for rule in rules for name, _ in _selectors(rule["expr"])}
    assert watched >= ALERTED_METRICS, ALERTED_METRICS - watched


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = [case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in _rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never expected to fire"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never expected to stay silent"


def test_dashboard_matches_the_schema_we_rely_on() -> None:
    board = _dashboard()
    errors = sorted(Draft202012Validator(DASHBOARD_SCHEMA).iter_errors(board), key=str)
    assert not errors, "\n".join(f"{list(error.absolute_path)}: {error.message}" for error in errors)
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids are unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the 24-column grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"{panel['title']}: refIds are unique"


def test_dashboard_shows_what_operators_need() -> None:
    queries = [expr for _, expr in _dashboard_queries()]
    shown = {name for expr in queries for name, _ in _selectors(expr)}
    assert shown >= DASHBOARD_METRICS, DASHBOARD_METRICS - shown
    mean_stage = re.compile(
        r"rate\(lungcds_stage_duration_seconds_sum\b.*\)\s*/\s*.*rate\(lungcds_stage_duration_seconds_count\b"
    )
    assert any(mean_stage.search(expr) for expr in queries), "stage durations are rate(sum) / rate(count)"


def test_every_metric_used_is_exported_by_the_app(exported: dict[str, set[str]]) -> None:
    """Names and label names (selectors, groupings) exist in /metrics; no other metric is queried."""
    for where, expr in _all_queries():
        for name, labels in _selectors(expr):
            assert name in exported, f"{where}: {name} is not in /metrics (exported: {sorted(exported)})"
            unknown = labels - exported[name] - TARGET_LABELS
            assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"
        grouped = {label.strip() for labels in re.findall(_GROUPING, expr) for label in labels.split(",")} - {""}
        known = set(TARGET_LABELS).union(*(exported[name] for name, _ in _selectors(expr)))
        assert grouped <= known, f"{where}: grouping by {sorted(grouped - known)}, which no metric of it has"
        others = {word for word in _words(expr) - PROMQL_WORDS if not word.startswith("lungcds_")}
        assert not others, f"{where}: {sorted(others)} is neither a lungcds metric nor a PromQL word known here"


@pytest.mark.parametrize("reserve_mb", [0, 2**40])
def test_disk_gauges_agree_with_the_reserve_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reserve_mb: int
) -> None:
    """lungcds_disk_free_bytes < lungcds_disk_reserve_bytes exactly when server.core.disk says the disk is short."""
    for name in list(os.environ):
        if name.startswith("LUNGCDS_"):
            monkeypatch.delenv(name)
    settings = load_settings(data_dir=tmp_path / "data", min_free_disk_mb=reserve_mb)
    upgrade(settings.database_url)
    body = TestClient(create_app(settings, make_engine(settings.database_url))).get("/metrics").text
    values = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert values["lungcds_disk_reserve_bytes"] == reserve_mb * 2**20
    below = values["lungcds_disk_free_bytes"] < values["lungcds_disk_reserve_bytes"]
    assert below == (disk_shortage(settings) is not None)
