"""Admin REST: roles over every route, audit trail, probes, metrics, timeline, job actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from server import crud
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import Delivery, Job
from server.routing.intake import SeriesIntake
from tests.server.conftest import HeaderFactory

ASSOC = AssociationInfo(id="a", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)

#: Routes anybody may call: probes, the API description.
PUBLIC = {
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/health/live"),
    ("GET", "/api/v1/health/ready"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/docs"),
    ("GET", "/metrics"),
}
#: Routes that need the admin role; every other route needs at least a viewer key.
ADMIN = {
    ("PUT", "/api/v1/rules"),
    ("PATCH", "/api/v1/rules"),
    ("PUT", "/api/v1/destinations"),
    ("POST", "/api/v1/destinations"),
    ("PUT", "/api/v1/destinations/{ae_title}"),
    ("DELETE", "/api/v1/destinations/{ae_title}"),
    ("POST", "/api/v1/destinations/{ae_title}/echo"),
    ("POST", "/api/v1/series/{series_uid}/reevaluate"),
    ("POST", "/api/v1/retrieve"),
    ("PUT", "/api/v1/models/{name}/weights"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/queues"),
    ("POST", "/api/v1/jobs/{job_id}/requeue"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("POST", "/api/v1/jobs/{job_id}/resend"),
}
VIEWER = {
    ("GET", "/api/v1/studies"),
    ("GET", "/api/v1/studies/{study_uid}"),
    ("GET", "/api/v1/series"),
    ("GET", "/api/v1/series/{series_uid}"),
    ("GET", "/api/v1/series/{series_uid}/result"),
    ("GET", "/api/v1/series/{series_uid}/reports/{kind}"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/stuck"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("GET", "/api/v1/jobs/{job_id}/timeline"),
    ("GET", "/api/v1/notifications"),
    ("GET", "/api/v1/rules"),
    ("GET", "/api/v1/destinations"),
    ("GET", "/api/v1/destinations/{ae_title}"),
    ("GET", "/api/v1/models"),
    # STOW-RS: any authenticated sender, unless LUNGCDS_DICOMWEB_ALLOWED_SENDERS lists who may.
    ("POST", "/api/v1/dicomweb/studies"),
    ("POST", "/api/v1/dicomweb/studies/{study}"),
}
SAMPLE_PATH_VALUES = {
    "job_id": "1",
    "study_uid": "1.2.3",
    "series_uid": "1.2.3",
    "kind": "pdf",
    "name": "corads",
    "ae_title": "PACS",
    "study": "1.2.3",
}


class FakeQueue:
    def __init__(self, problem: str | None = None) -> None:
        self.enqueued: list[tuple[int, int]] = []
        self.retrievals: list[tuple[str, str, str | None, str]] = []
        self.problem = problem

    def enqueue_analysis(self, job_id: int, revision: int) -> None:
        self.enqueued.append((job_id, revision))

    def enqueue_retrieval(self, source: str, study_uid: str, series_uid: str | None, method: str) -> str:
        self.retrievals.append((source, study_uid, series_uid, method))
        return f"task-{len(self.retrievals)}"

    def depths(self) -> dict[str, int]:
        return {"gpu": len(self.enqueued), "cpu": 0}

    def check(self) -> str | None:
        return self.problem


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def client(settings: Settings, engine: Engine, queue: FakeQueue) -> TestClient:
    return TestClient(create_app(settings, engine, queue))


@pytest.fixture
def keys(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {role: create_api_key(session, role).secret for role in ("viewer", "admin")}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


#: Routes outside the OpenAPI document (the document itself, its UI, the Prometheus scrape).
OUTSIDE_SCHEMA = {
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/docs"),
    ("GET", "/metrics"),
}


def _documented_routes(client: TestClient) -> set[tuple[str, str]]:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


def test_every_route_is_classified(client: TestClient) -> None:
    """Every route of the OpenAPI document must be put in PUBLIC, VIEWER or ADMIN here, consciously."""
    assert _documented_routes(client) == (PUBLIC | VIEWER | ADMIN) - OUTSIDE_SCHEMA


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    url = path.format(**SAMPLE_PATH_VALUES)
    body = {} if method in {"PUT", "PATCH", "POST"} else None
    return client.request(method, url, headers=headers, json=body).status_code


@pytest.mark.parametrize(("method", "path"), sorted(VIEWER | ADMIN))
def test_roles_matrix(client: TestClient, keys: dict[str, str], method: str, path: str) -> None:
    assert _call(client, method, path, {}) == 401
    assert _call(client, method, path, _auth("lcds_not_a_key")) == 401
    viewer = _call(client, method, path, _auth(keys["viewer"]))
    admin = _call(client, method, path, _auth(keys["admin"]))
    if (method, path) in ADMIN:
        assert viewer == 403
    else:
        assert viewer not in (401, 403)
    assert admin not in (401, 403)


@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC))
def test_public_routes_need_no_key(client: TestClient, method: str, path: str) -> None:
    assert _call(client, method, path, {}) == 200


@pytest.fixture
def queued_job(engine: Engine, settings: Settings, ct_headers: HeaderFactory) -> int:
    intake = SeriesIntake(engine, settings, lambda job, rev: None)
    for h in ct_headers():
        intake.instance_stored(StoredInstance(header=h, path=Path("/x"), size=1, duplicate=False), ASSOC)
    intake.association_ended(ASSOC, frozenset({ct_headers()[0].series_instance_uid or ""}), released=True)
    with Session(engine) as session:
        job_id = session.exec(select(Job.id)).one()
    assert job_id is not None
    return job_id


def test_timeline_requeue_cancel(
    client: TestClient, keys: dict[str, str], queued_job: int, queue: FakeQueue, engine: Engine
) -> None:
    admin = _auth(keys["admin"])
    with Session(engine) as session:
        crud.add_job_event(session, queued_job, "stage", name="lung_mask", seconds=2.5)
        session.commit()
    timeline = client.get(f"/api/v1/jobs/{queued_job}/timeline", headers=_auth(keys["viewer"])).json()
    kinds = [e["kind"] for e in timeline]
    assert kinds[:1] == ["first_instance_received"] and "series_complete" in kinds and "queued" in kinds
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    assert [(e["name"], e["seconds"]) for e in timeline if e["kind"] == "stage"] == [("lung_mask", 2.5)]

    requeued = client.post(f"/api/v1/jobs/{queued_job}/requeue", headers=admin).json()
    assert requeued["revision"] == 2 and requeued["state"] == "queued"
    assert queue.enqueued == [(queued_job, 2)]

    cancelled = client.post(f"/api/v1/jobs/{queued_job}/cancel", headers=admin).json()
    assert cancelled["state"] == "cancelled" and cancelled["revision"] == 3
    again = client.post(f"/api/v1/jobs/{queued_job}/cancel", headers=admin)
    assert again.status_code == 409 and "only queued or running" in again.json()["detail"]
    kinds = [e["kind"] for e in client.get(f"/api/v1/jobs/{queued_job}/timeline", headers=admin).json()]
    assert kinds.count("queued") == 2 and kinds[-1] == "cancelled"


def test_resend_validates_the_destination(
    client: TestClient, keys: dict[str, str], queued_job: int, engine: Engine, settings: Settings
) -> None:
    admin = _auth(keys["admin"])
    settings.destinations = ["PACS@127.0.0.1:104"]
    nothing = client.post(f"/api/v1/jobs/{queued_job}/resend", json={}, headers=admin)
    assert nothing.status_code == 409
    with session_scope(engine) as session:
        session.add(
            Delivery(
                job_id=queued_job,
                destination="PACS@127.0.0.1:104",
                kind="sr",
                path="/x",
                sop_instance_uid="1.2",
                state="sent",
            )
        )
    unknown = client.post(f"/api/v1/jobs/{queued_job}/resend", json={"destination": "X@h:1"}, headers=admin)
    assert unknown.status_code == 422 and "not a configured destination" in unknown.json()["detail"]
    bad = client.post(f"/api/v1/jobs/{queued_job}/resend", json={"destination": "nonsense"}, headers=admin)
    assert bad.status_code == 422
    ok = client.post(f"/api/v1/jobs/{queued_job}/resend", json={"destination": "PACS@127.0.0.1:104"}, headers=admin)
    assert ok.status_code == 200 and ok.json()["deliveries"][0]["state"] == "pending"


def test_api_calls_are_audited(client: TestClient, keys: dict[str, str]) -> None:
    client.get("/api/v1/series", headers=_auth(keys["viewer"]))
    client.get("/api/v1/series")
    client.get("/api/v1/audit", headers=_auth(keys["viewer"]))
    events = client.get("/api/v1/audit", params={"channel": "api"}, headers=_auth(keys["admin"])).json()["items"]
    seen = [(e["actor"].split(":")[0], e["role"], e["action"], e["outcome"]) for e in reversed(events)]
    assert seen[:3] == [
        ("apikey", "viewer", "GET /api/v1/series", "200"),
        ("anonymous", None, "GET /api/v1/series", "401"),
        ("apikey", "viewer", "GET /api/v1/audit", "403"),
    ]
    client.get("/api/v1/health/live")
    latest = client.get("/api/v1/audit", headers=_auth(keys["admin"])).json()["items"][0]
    assert latest["action"] == "GET /api/v1/audit", "probes are not audited"


def test_associations_are_audited(
    client: TestClient, keys: dict[str, str], engine: Engine, settings: Settings, queued_job: int
) -> None:
    SeriesIntake(engine, settings, lambda job, rev: None).association_rejected(ASSOC, "calling AE not recognised")
    events = client.get("/api/v1/audit", params={"channel": "dicom"}, headers=_auth(keys["admin"])).json()["items"]
    assert [(e["actor"], e["outcome"]) for e in events] == [("dicom:CT01", "rejected"), ("dicom:CT01", "released")]
    assert events[1]["target"] == "1.2.826.0.1.3680043.8.498.2"


def test_readiness_reports_each_check(settings: Settings, engine: Engine) -> None:
    ready = TestClient(create_app(settings, engine, FakeQueue()))
    assert ready.get("/api/v1/health/ready").json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "disk": "ok",
        "rules": "ok",
        "destinations": "ok",
        "weights": "ok",
    }
    broken = TestClient(create_app(settings, engine, FakeQueue(problem="broker unreachable: refused")))
    response = broken.get("/api/v1/health/ready")
    assert response.status_code == 503 and response.headers["content-type"].startswith("application/problem+json")
    assert "broker: broker unreachable: refused" in response.json()["detail"]
    assert broken.get("/api/v1/health/live").status_code == 200


def test_queue_overview(client: TestClient, keys: dict[str, str], queued_job: int) -> None:
    from server.tasks.heartbeat import beat

    beat(client.app.state.engine, "worker@host", "cpu,gpu")  # type: ignore[attr-defined]
    body = client.get("/api/v1/queues", headers=_auth(keys["admin"])).json()
    assert body["depths"] == {"gpu": 0, "cpu": 0}
    assert body["workers_alive"] == 1 and body["workers"][0]["hostname"] == "worker@host"


def test_metrics_follow_the_data(client: TestClient, queued_job: int) -> None:
    text = client.get("/metrics").text
    assert "lungcds_instances_received_total 100.0" in text
    assert 'lungcds_series{state="queued"} 1.0' in text
    assert 'lungcds_jobs{state="queued"} 1.0' in text
    assert 'lungcds_queue_depth{queue="gpu"} 0.0' in text


def test_retrieve_requests_are_validated_and_queued(
    client: TestClient, keys: dict[str, str], queue: FakeQueue, settings: Settings
) -> None:
    admin = _auth(keys["admin"])
    settings.retrieve_sources = ["PACS@10.0.0.5:104"]
    body = {"source": "PACS", "study_instance_uid": "1.2.840.113619.2.1", "method": "move"}
    accepted = client.post("/api/v1/retrieve", json=body, headers=admin)
    assert accepted.status_code == 202 and accepted.json()["source"] == "PACS@10.0.0.5:104"
    assert queue.retrievals == [("PACS@10.0.0.5:104", "1.2.840.113619.2.1", None, "move")]
    unknown = client.post("/api/v1/retrieve", json={**body, "source": "OTHER"}, headers=admin)
    assert unknown.status_code == 422 and "not a configured retrieve source" in unknown.json()["detail"]
    bad_uid = client.post("/api/v1/retrieve", json={**body, "study_instance_uid": "1.02.x"}, headers=admin)
    assert bad_uid.status_code == 422
