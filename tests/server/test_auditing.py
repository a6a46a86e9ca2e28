"""The API's audit trail is strict: no change without its event, no credential stored (issue 14 section 7)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.api.auditing import audited_target
from server.api.main import create_app
from server.audit import REQUESTED, AuditTrail, AuditUnavailable
from server.core.config import Settings
from server.core.db import make_engine, session_scope
from server.core.security import create_api_key
from server.db_models import AuditEvent

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.fixture
def keys(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {role: create_api_key(session, role).secret for role in ("viewer", "admin")}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).order_by(AuditEvent.id)).all())  # type: ignore[arg-type]


def test_credentials_in_the_url_are_never_stored(
    settings: Settings, engine: Engine, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(create_app(settings, engine))
    key = keys["admin"]
    caplog.set_level(logging.DEBUG)
    client.get("/api/v1/series", params={"api_key": key, "limit": 5})
    client.get("/api/v1/series", params={"token": "not-a-key-but-a-token", "limit": 5}, headers=_auth(key))
    client.get("/api/v1/series", params={"q": key, "PASSWORD": "hunter2"}, headers=_auth(key))
    client.get(f"/api/v1/series/{key}", params={"id_token": JWT, "x": JWT}, headers=_auth(key))
    client.patch("/api/v1/rules", params={"access_token": key}, json={"min_slices": 9}, headers=_auth(key))
    with engine.connect() as conn:
        stored = " ".join(str(row) for row in conn.execute(text("SELECT * FROM audit_event")))
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if not r.name.startswith("httpx"))
    for secret in (key, key[5:], "not-a-key-but-a-token", "hunter2", JWT):
        assert secret not in stored and secret not in logged
    targets = [e.target for e in _events(engine) if e.channel == "api"]
    assert targets[:3] == [
        "/api/v1/series?api_key=REDACTED&limit=5",
        "/api/v1/series?token=REDACTED&limit=5",
        "/api/v1/series?q=REDACTED&PASSWORD=REDACTED",
    ]
    assert targets[3] == "/api/v1/series/REDACTED?id_token=REDACTED&x=REDACTED"
    assert targets[4:] == ["/api/v1/rules?access_token=REDACTED"] * 2


@pytest.mark.parametrize(
    ("path", "query", "stored"),
    [
        ("/api/v1/series", "", "/api/v1/series"),
        ("/api/v1/series", "patient_id=PID-1&limit=5", "/api/v1/series?patient_id=PID-1&limit=5"),
        ("/api/v1/series/1.2.3", "series_uid=1.2.3", "/api/v1/series/1.2.3?series_uid=1.2.3"),
        (
            "/api/v1/series",
            "Api-Key=x&Signature=y&sessionid=z&state=queued",
            "/api/v1/series?Api-Key=REDACTED&Signature=REDACTED&sessionid=REDACTED&state=queued",
        ),
    ],
)
def test_audited_targets_keep_what_is_not_a_secret(path: str, query: str, stored: str) -> None:
    assert audited_target(path, query) == stored


def test_each_change_is_audited_before_it_runs_then_with_its_status(
    settings: Settings, engine: Engine, keys: dict[str, str]
) -> None:
    client = TestClient(create_app(settings, engine))
    assert client.patch("/api/v1/rules", json={"min_slices": 9}, headers=_auth(keys["admin"])).status_code == 200
    assert client.get("/api/v1/rules", headers=_auth(keys["viewer"])).status_code == 200
    events = _events(engine)
    assert [(e.channel, e.action, e.outcome) for e in events] == [
        ("api", "PATCH /api/v1/rules", REQUESTED),
        ("admin", "merge rules", REQUESTED),  # what the change does, written by the service before it does it
        ("api", "PATCH /api/v1/rules", "200"),
        ("api", "GET /api/v1/rules", "200"),
    ]
    assert events[0].detail["request"] == events[2].detail["request"] != events[3].detail["request"]
    assert events[0].actor == events[1].actor == events[2].actor and events[0].actor.startswith("apikey:")
    assert events[1].detail == {"changed": {"min_slices": {"from": 20, "to": 9}}}


def test_nothing_is_changed_or_shown_when_the_trail_cannot_be_written(
    settings: Settings, engine: Engine, keys: dict[str, str], tmp_path: Path
) -> None:
    broken = AuditTrail(make_engine(f"sqlite:///{tmp_path / 'no-audit-table.db'}"))
    client = TestClient(create_app(settings, engine, audit_trail=broken))
    change = client.patch("/api/v1/rules", json={"min_slices": 9}, headers=_auth(keys["admin"]))
    assert change.status_code == 503 and "nothing was changed" in change.json()["detail"]
    assert settings.rules_file is not None and not settings.rules_file.exists()
    read = client.get("/api/v1/rules", headers=_auth(keys["viewer"]))
    assert read.status_code == 503 and read.headers["content-type"].startswith("application/problem+json")
    assert "min_slices" not in read.text, "nothing shown unaudited"
    assert client.get("/api/v1/series").status_code == 503
    assert client.get("/api/v1/health/live").status_code == 200, "probes are not audited"


class _OutcomeLost(AuditTrail):
    """A trail that takes the 'requested' event of a change, then fails."""

    def record_or_raise(self, **event: Any) -> None:
        if event["outcome"] != REQUESTED:
            raise AuditUnavailable(503, "the database went away")
        super().record_or_raise(**event)


def test_a_change_that_ran_keeps_its_true_answer_when_only_its_outcome_is_lost(
    settings: Settings, engine: Engine, keys: dict[str, str]
) -> None:
    client = TestClient(create_app(settings, engine, audit_trail=_OutcomeLost(engine)))
    response = client.patch("/api/v1/rules", json={"min_slices": 9}, headers=_auth(keys["admin"]))
    assert response.status_code == 200 and response.json()["min_slices"] == 9
    assert [(e.channel, e.outcome) for e in _events(engine)] == [("api", REQUESTED), ("admin", REQUESTED)]


def test_changes_are_refused_while_the_disk_is_at_its_reserve_and_reads_below_half_of_it(
    settings: Settings, engine: Engine, keys: dict[str, str]
) -> None:
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    settings.min_free_disk_mb = int(free_mb * 1.5)  # free space is two thirds of the reserve
    client = TestClient(create_app(settings, engine))
    for method, path, body in (
        ("PATCH", "/api/v1/rules", {"min_slices": 9}),
        ("PUT", "/api/v1/destinations", {"destinations": []}),
        ("POST", "/api/v1/jobs/1/requeue", None),
    ):
        response = client.request(method, path, json=body, headers=_auth(keys["admin"]))
        assert response.status_code == 507, (path, response.text)
        assert "LUNGCDS_MIN_FREE_DISK_MB" in response.json()["detail"]
    assert settings.rules_file is not None and not settings.rules_file.exists()
    assert client.get("/api/v1/rules", headers=_auth(keys["viewer"])).status_code == 200, "reads still answer"
    assert [e.outcome for e in _events(engine)] == ["507", "507", "507", "200"]

    settings.min_free_disk_mb = int(free_mb * 3)  # a third of the reserve: the trail stops too
    response = TestClient(create_app(settings, engine)).get("/api/v1/rules", headers=_auth(keys["viewer"]))
    assert response.status_code == 507 and "50% of the reserve" in response.json()["detail"]
    assert [e.outcome for e in _events(engine)] == ["507", "507", "507", "200"], "nothing more written"
    assert client.get("/api/v1/health/live").status_code == 200, "probes are not audited and still answer"


def test_the_dicom_channel_never_raises(tmp_path: Path) -> None:
    broken = AuditTrail(make_engine(f"sqlite:///{tmp_path / 'no-audit-table.db'}"))
    broken.record(channel="dicom", actor="dicom:CT01", action="association", outcome="released")
    with pytest.raises(AuditUnavailable) as refused:
        broken.record_or_raise(channel="api", actor="apikey:1", action="GET /api/v1/series", outcome="200")
    assert refused.value.status == 503


class _Repository:
    """Collects what would go to the ATNA audit repository."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def send(self, message: bytes) -> None:
        self.messages.append(message.decode())


def test_completed_events_and_rejected_files_go_to_the_atna_repository(
    settings: Settings, engine: Engine, keys: dict[str, str]
) -> None:
    repository = _Repository()
    trail = AuditTrail(engine, repository)  # type: ignore[arg-type]
    client = TestClient(create_app(settings, engine, audit_trail=trail))
    assert client.patch("/api/v1/rules", json={"min_slices": 9}, headers=_auth(keys["admin"])).status_code == 200
    assert len(repository.messages) == 1, "the 'requested' event stays in the database"
    assert settings.rules_file is not None
    settings.rules_file.write_text("[eligibility\n")
    for _ in range(2):
        assert client.get("/api/v1/rules", headers=_auth(keys["viewer"])).json()["source"] == "last good copy"
    rejected = [m for m in repository.messages if 'EventOutcomeIndicator="4"' in m]
    assert len(repository.messages) == 4 and len(rejected) == 1, "the broken file once, the two reads"
    assert 'originalText="Application Activity"' in rejected[0]


class _BrokenQueue:
    def check(self) -> None:
        return None

    def depths(self) -> dict[str, int]:
        raise RuntimeError("a bug")


def test_a_server_error_is_audited_too(settings: Settings, engine: Engine, keys: dict[str, str]) -> None:
    client = TestClient(create_app(settings, engine, _BrokenQueue()), raise_server_exceptions=False)  # type: ignore[arg-type]
    assert client.get("/api/v1/queues", headers=_auth(keys["admin"])).status_code == 500
    assert [(e.action, e.outcome) for e in _events(engine)] == [("GET /api/v1/queues", "500")]
