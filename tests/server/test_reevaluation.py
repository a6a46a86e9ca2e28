"""POST /series/{uid}/reevaluate: a rejected series judged again under the rules in force, or overridden."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.header import InstanceHeader
from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from server.api.main import create_app
from server.audit import REQUESTED, AuditTrail, AuditUnavailable
from server.core.config import Settings
from server.core.db import downgrade, make_engine, session_scope, upgrade
from server.core.security import create_api_key
from server.db_models import AuditEvent, Job, Series
from server.routing.intake import SeriesIntake
from server.tasks.app import ANALYSIS_TASK, create_celery
from tests.server.conftest import HeaderFactory, Recorder
from tests.server.test_admin_api import FakeQueue

ASSOC = AssociationInfo(id="a", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)
THICK = "1.2.826.0.1.3680043.8.498.20"
REASON = "5 mm is all this scanner makes; the referring team accepts the caveat (ticket 4711)"


@pytest.fixture
def fake_queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def client(settings: Settings, engine: Engine, fake_queue: FakeQueue) -> TestClient:
    return TestClient(create_app(settings, engine, fake_queue))


@pytest.fixture
def keys(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {role: create_api_key(session, role).secret for role in ("viewer", "admin")}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _store(engine: Engine, settings: Settings, headers: list[InstanceHeader]) -> str:
    """Store ``headers`` as one series and finalise it (no files: routing reads the index)."""
    intake = SeriesIntake(engine, settings, lambda job, rev: None)
    for header in headers:
        intake.instance_stored(StoredInstance(header=header, path=Path("/x"), size=1, duplicate=False), ASSOC)
    uid = headers[0].series_instance_uid or ""
    assert intake.finalize(uid, trigger="test")
    return uid


@pytest.fixture
def thick(engine: Engine, settings: Settings, ct_headers: HeaderFactory) -> str:
    """A series of 5 mm slices, rejected by the default rules (3 mm), with no job."""
    return _store(engine, settings, ct_headers(series_uid=THICK, count=64, spacing=5.0, thickness=5.0))


def _series(engine: Engine, uid: str) -> Series:
    with Session(engine) as session:
        series = session.get(Series, uid)
    assert series is not None
    return series


def _admin_events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.channel == "admin").order_by(AuditEvent.id))  # type: ignore[arg-type]
        return list(rows.all())


def test_still_not_eligible_answers_200_with_every_reason_and_queues_nothing(
    client: TestClient, keys: dict[str, str], thick: str, fake_queue: FakeQueue, engine: Engine
) -> None:
    response = client.post(f"/api/v1/series/{thick}/reevaluate", headers=_auth(keys["admin"]))
    assert response.status_code == 200
    body = response.json()
    assert (body["eligible"], body["queued"], body["eligibility_override"]) == (False, False, None)
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in body["reasons"]
    assert body["series"]["state"] == "rejected" and body["series"]["reasons"] == body["reasons"]
    assert body["series"]["job"] is None and fake_queue.enqueued == []
    (event,) = _admin_events(engine)
    assert (event.action, event.target, event.outcome) == ("re-evaluate series", thick, REQUESTED)
    assert event.detail["eligible"] is False and event.detail["eligibility_override"] is None


def test_after_a_rule_change_the_series_is_queued_like_a_fresh_one(
    client: TestClient, keys: dict[str, str], thick: str, fake_queue: FakeQueue
) -> None:
    admin = _auth(keys["admin"])
    assert client.patch("/api/v1/rules", json={"max_slice_thickness_mm": 5.0}, headers=admin).status_code == 200
    response = client.post(f"/api/v1/series/{thick}/reevaluate", headers=admin)
    assert response.status_code == 202
    body = response.json()
    assert (body["eligible"], body["queued"], body["reasons"], body["eligibility_override"]) == (True, True, [], None)
    job = body["series"]["job"]
    assert body["series"]["state"] == "queued" and body["series"]["reasons"] == []
    assert (job["state"], job["revision"], job["eligibility_override"]) == ("queued", 1, None)
    assert fake_queue.enqueued == [(job["id"], 1)], "enqueued after the commit, as intake does"
    timeline = client.get(f"/api/v1/jobs/{job['id']}/timeline", headers=admin).json()
    kinds = [e["kind"] for e in timeline]
    assert "queued" in kinds and "reevaluated" in kinds
    again = client.post(f"/api/v1/series/{thick}/reevaluate", headers=admin)
    assert again.status_code == 409 and "POST /jobs/{id}/requeue" in again.json()["detail"]


def test_an_override_queues_it_records_who_why_and_when_and_audits_it(
    client: TestClient, keys: dict[str, str], thick: str, fake_queue: FakeQueue, engine: Engine
) -> None:
    admin = _auth(keys["admin"])
    response = client.post(
        f"/api/v1/series/{thick}/reevaluate", json={"override": {"reason": f"  {REASON} "}}, headers=admin
    )
    assert response.status_code == 202
    body = response.json()
    assert (body["eligible"], body["queued"]) == (False, True)
    override = body["eligibility_override"]
    assert override["reason"] == REASON and override["by"].startswith("apikey:")
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in override["reasons"]

    shown = client.get(f"/api/v1/series/{thick}", headers=_auth(keys["viewer"])).json()
    assert shown["state"] == "queued" and shown["job"]["eligibility_override"] == override
    timeline = client.get(f"/api/v1/jobs/{shown['job']['id']}/timeline", headers=admin).json()
    queued = next(e for e in timeline if e["kind"] == "queued")
    assert queued["detail"]["eligibility_override"]["reason"] == REASON
    (event,) = _admin_events(engine)
    assert event.actor == override["by"] and event.detail["eligibility_override"]["reason"] == REASON
    assert fake_queue.enqueued == [(shown["job"]["id"], 1)]

    requeued = client.post(f"/api/v1/jobs/{shown['job']['id']}/requeue", headers=admin).json()
    assert requeued["eligibility_override"] == override, "an admin's re-queue keeps the override"


def test_an_override_is_not_recorded_when_the_rules_let_the_series_through(
    client: TestClient, keys: dict[str, str], thick: str
) -> None:
    admin = _auth(keys["admin"])
    client.patch("/api/v1/rules", json={"max_slice_thickness_mm": 5.0}, headers=admin)
    response = client.post(f"/api/v1/series/{thick}/reevaluate", json={"override": {"reason": REASON}}, headers=admin)
    assert response.status_code == 202 and response.json()["eligibility_override"] is None
    assert response.json()["series"]["job"]["eligibility_override"] is None


def test_an_override_never_bypasses_an_identity_conflict(
    client: TestClient, keys: dict[str, str], engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(series_uid=THICK, count=60, spacing=5.0, thickness=5.0)
    mixed = [dataclasses.replace(h, patient_id="PAT-B") if k % 2 else h for k, h in enumerate(headers)]
    uid = _store(engine, settings, mixed)
    admin = _auth(keys["admin"])
    refused = client.post(f"/api/v1/series/{uid}/reevaluate", json={"override": {"reason": REASON}}, headers=admin)
    assert refused.status_code == 409 and refused.json()["title"] == "Override refused"
    assert "2 patients in one series" in refused.json()["detail"]
    assert "on arrival: Patient ID (0010,0020) is PAT-B, already held: PID-1" in refused.json()["detail"]
    series = _series(engine, uid)
    assert series.state == "rejected"
    with Session(engine) as session:
        assert session.exec(select(Job)).all() == [], "nothing queued"
    assert _admin_events(engine) == [], "refused before any change"
    plain = client.post(f"/api/v1/series/{uid}/reevaluate", headers=admin)
    assert plain.status_code == 200 and any("2 patients in one series" in r for r in plain.json()["reasons"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"modality": "MR"}, "only CT series are analysed"),
        ({"sop_class_uid": "1.2.840.10008.5.1.4.1.1.4"}, "is stored but not analysed"),
    ],
    ids=["not CT", "not an analysed image class"],
)
def test_an_override_never_analyses_what_is_no_ct_image_series(
    client: TestClient,
    keys: dict[str, str],
    engine: Engine,
    settings: Settings,
    ct_headers: HeaderFactory,
    overrides: dict[str, str],
    words: str,
) -> None:
    uid = _store(engine, settings, ct_headers(series_uid=THICK, count=30, **overrides))
    assert _series(engine, uid).state in ("rejected", "ignored")
    response = client.post(
        f"/api/v1/series/{uid}/reevaluate", json={"override": {"reason": REASON}}, headers=_auth(keys["admin"])
    )
    assert response.status_code == 409 and words in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"override": {"reason": ""}},
        {"override": {"reason": "   "}},
        {"override": {"reason": "x" * 501}},
        {"override": {"reason": "ok\n[forged log line"}},
        {"override": {"reason": "ok\u001b[2J"}},
        {"override": {}},
        {"override": {"reason": "ok", "by": "someone else"}},
        {"colour": "red"},
    ],
    ids=["empty", "blank", "too long", "line break", "escape", "no reason", "extra field", "unknown key"],
)
def test_an_invalid_override_is_refused_and_nothing_changes(
    client: TestClient, keys: dict[str, str], thick: str, fake_queue: FakeQueue, body: dict[str, object], engine: Engine
) -> None:
    response = client.post(f"/api/v1/series/{thick}/reevaluate", json=body, headers=_auth(keys["admin"]))
    assert response.status_code == 422, response.text
    assert _series(engine, thick).state == "rejected" and fake_queue.enqueued == []


def test_who_may_reevaluate_and_what(
    client: TestClient, keys: dict[str, str], thick: str, engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    assert client.post(f"/api/v1/series/{thick}/reevaluate").status_code == 401
    assert client.post(f"/api/v1/series/{thick}/reevaluate", headers=_auth(keys["viewer"])).status_code == 403
    admin = _auth(keys["admin"])
    assert client.post("/api/v1/series/9.9.9/reevaluate", headers=admin).status_code == 404
    queued = _store(engine, settings, ct_headers(series_uid="1.2.826.0.1.3680043.8.498.21"))
    assert _series(engine, queued).state == "queued"
    conflict = client.post(f"/api/v1/series/{queued}/reevaluate", headers=admin)
    assert conflict.status_code == 409 and "is queued, not rejected or ignored" in conflict.json()["detail"]
    no_queue = TestClient(create_app(settings, engine))
    assert no_queue.post(f"/api/v1/series/{thick}/reevaluate", headers=admin).status_code == 503
    assert _series(engine, thick).state == "rejected"


def test_a_late_instance_withdraws_the_override(
    client: TestClient, keys: dict[str, str], thick: str, engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    """The override was granted for the content seen then: new content is judged afresh."""
    client.post(
        f"/api/v1/series/{thick}/reevaluate", json={"override": {"reason": REASON}}, headers=_auth(keys["admin"])
    )
    late = ct_headers(series_uid=THICK, count=65, spacing=5.0, thickness=5.0)[-1]
    SeriesIntake(engine, settings, lambda job, rev: None).instance_stored(
        StoredInstance(header=late, path=Path("/x"), size=1, duplicate=False), ASSOC
    )
    with Session(engine) as session:
        (job,) = session.exec(select(Job)).all()
    assert job.eligibility_override is None and _series(engine, thick).state == "receiving"


def test_the_worker_analyses_under_the_override_and_result_json_says_so(
    engine: Engine, settings: Settings, phantom_series: list[Path]
) -> None:
    """End to end: rejected (2.5 mm against 2.0), overridden, analysed by the task, marked in result.json."""
    settings.max_slice_thickness_mm = 2.0
    settings.notify_not_analysed = False
    queue = Recorder()
    intake = SeriesIntake(engine, settings, queue)
    uid = _finalise_rejected_phantom(intake, queue, settings, phantom_series)
    fake = FakeQueue()
    client = TestClient(create_app(settings, engine, fake))
    with session_scope(engine) as session:
        key = create_api_key(session, "admin").secret
    response = client.post(
        f"/api/v1/series/{uid}/reevaluate", json={"override": {"reason": REASON}}, headers=_auth(key)
    )
    assert response.status_code == 202
    ((job_id, revision),) = fake.enqueued
    create_celery(settings).tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None and job.state == "done" and job.result_dir is not None
    assert _series(engine, uid).state == "done"
    result = json.loads((Path(job.result_dir) / "result.json").read_text())
    assert result["eligibility"] == {"eligible": False, "reasons": ["slice thickness 2.5 mm exceeds 2.0 mm"]}
    assert result["eligibility_override"]["reason"] == REASON
    assert result["eligibility_override"]["by"] == response.json()["eligibility_override"]["by"]
    assert result["analysable"] is True and result["measurements"]["lungs"]["volume_ml"] > 0


def _finalise_rejected_phantom(
    intake: SeriesIntake, queue: Recorder, settings: Settings, phantom_series: list[Path]
) -> str:
    """The phantom stored through the spool and finalised: rejected, nothing queued."""
    import pydicom

    from dicom_node.spool import Spool

    spool = Spool(settings.spool_dir, min_free_bytes=0)
    for path in phantom_series:
        intake.instance_stored(spool.store_file(path), None)
    uid = str(pydicom.dcmread(phantom_series[0], stop_before_pixels=True).SeriesInstanceUID)
    assert intake.finalize(uid, trigger="test") and queue.calls == []
    return uid


def _job_columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns("job")}
    finally:
        engine.dispose()


def test_the_migration_adds_the_override_column_and_takes_it_away(database_url: str) -> None:
    upgrade(database_url)
    assert "eligibility_override" in _job_columns(database_url)
    downgrade(database_url, "0005")
    assert "eligibility_override" not in _job_columns(database_url)
    upgrade(database_url)
    assert "eligibility_override" in _job_columns(database_url)


class _AdminEventsLost(AuditTrail):
    """A trail that writes the API's events but not the services' own."""

    def record_or_raise(self, **event: Any) -> None:
        if event["channel"] == "admin":
            raise AuditUnavailable(503, "the database went away")
        super().record_or_raise(**event)


def test_an_override_that_cannot_be_audited_is_not_granted(
    settings: Settings, engine: Engine, keys: dict[str, str], thick: str, fake_queue: FakeQueue
) -> None:
    client = TestClient(create_app(settings, engine, fake_queue, audit_trail=_AdminEventsLost(engine)))
    body = {"override": {"reason": REASON}}
    response = client.post(f"/api/v1/series/{thick}/reevaluate", json=body, headers=_auth(keys["admin"]))
    assert response.status_code == 503 and "nothing was changed" in response.json()["detail"]
    assert _series(engine, thick).state == "rejected" and fake_queue.enqueued == []
    with Session(engine) as session:
        assert session.exec(select(Job)).all() == []
