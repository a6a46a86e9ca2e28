"""REST API: authentication, listings, series state and reasons, results, rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key, revoke_api_key
from server.db_models import ApiKey, Job
from server.routing.intake import SeriesIntake
from tests.server.conftest import HeaderFactory

ASSOC = AssociationInfo(id="a", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)


@pytest.fixture
def client(settings: Settings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine))


@pytest.fixture
def keys(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {role: create_api_key(session, role).secret for role in ("viewer", "admin")}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def received(engine: Engine, settings: Settings, ct_headers: HeaderFactory) -> dict[str, str]:
    """One eligible (queued) and one rejected series of one study."""
    intake = SeriesIntake(engine, settings, lambda job, rev: None)
    good = ct_headers(series_uid="1.2.3.4.1")
    thick = ct_headers(series_uid="1.2.3.4.2", count=64, spacing=5.0, thickness=5.0)
    for h in good + thick:
        intake.instance_stored(StoredInstance(header=h, path=Path("/x"), size=1, duplicate=False), ASSOC)
    intake.association_ended(ASSOC, frozenset({"1.2.3.4.1", "1.2.3.4.2"}), released=True)
    return {"good": "1.2.3.4.1", "thick": "1.2.3.4.2", "study": good[0].study_instance_uid or ""}


def test_health_needs_no_key(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    assert body["database"] == "ok" and body["status"] in {"ok", "degraded"}


def test_401_without_or_with_a_bad_key_as_problem_json(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/api/v1/series")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] == "Authentication required"
    assert client.get("/api/v1/series", headers=_auth("lcds_wrong")).status_code == 401
    assert client.get("/api/v1/series", headers={"X-API-Key": keys["viewer"]}).status_code == 200


def test_revoked_keys_stop_working(client: TestClient, engine: Engine, keys: dict[str, str]) -> None:
    assert client.get("/api/v1/jobs", headers=_auth(keys["viewer"])).status_code == 200
    with session_scope(engine) as session:
        key_id = next(k.id for k in session.exec(select(ApiKey)).all() if k.role == "viewer")
        assert revoke_api_key(session, key_id)
    assert client.get("/api/v1/jobs", headers=_auth(keys["viewer"])).status_code == 401


def test_keys_are_stored_hashed(engine: Engine, keys: dict[str, str]) -> None:
    with Session(engine) as session:
        stored = {k.key_hash for k in session.exec(select(ApiKey)).all()}
    assert not stored & set(keys.values())


def test_series_state_and_rejection_reasons(client: TestClient, keys: dict[str, str], received: dict[str, str]) -> None:
    headers = _auth(keys["viewer"])
    thick = client.get(f"/api/v1/series/{received['thick']}", headers=headers).json()
    assert thick["state"] == "rejected"
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in thick["reasons"]
    good = client.get(f"/api/v1/series/{received['good']}", headers=headers).json()
    assert good["state"] == "queued" and good["job"]["state"] == "queued"
    listing = client.get("/api/v1/series", params={"state": "rejected"}, headers=headers).json()
    assert [s["series_instance_uid"] for s in listing["items"]] == [received["thick"]]
    assert client.get("/api/v1/series/9.9.9", headers=headers).status_code == 404


def test_studies_filter_and_paginate(client: TestClient, keys: dict[str, str], received: dict[str, str]) -> None:
    headers = _auth(keys["viewer"])
    body = client.get("/api/v1/studies", params={"patient_id": "PID-1"}, headers=headers).json()
    assert body["total"] == 1 and body["items"][0]["series_count"] == 2
    assert client.get("/api/v1/studies", params={"patient_id": "nobody"}, headers=headers).json()["total"] == 0
    bad = client.get("/api/v1/studies", params={"limit": 0}, headers=headers)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")


def test_results_and_report_downloads(
    client: TestClient, engine: Engine, keys: dict[str, str], received: dict[str, str], tmp_path: Path
) -> None:
    headers = _auth(keys["viewer"])
    uid = received["good"]
    assert client.get(f"/api/v1/series/{uid}/result", headers=headers).status_code == 404
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"eligibility": {"eligible": True, "reasons": []}}))
    (out / "report.pdf").write_bytes(b"%PDF-1.4 test")
    with Session(engine) as session:
        session.execute(update(Job).where(Job.series_instance_uid == uid).values(result_dir=str(out)))
        session.commit()
    assert client.get(f"/api/v1/series/{uid}/result", headers=headers).json()["eligibility"]["eligible"] is True
    pdf = client.get(f"/api/v1/series/{uid}/reports/pdf", headers=headers)
    assert (
        pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    )
    assert client.get(f"/api/v1/series/{uid}/reports/sr", headers=headers).status_code == 404
    assert client.get(f"/api/v1/series/{uid}/reports/nonsense", headers=headers).status_code == 404
    (out / "seg_lobes.dcm").write_bytes(b"lobes SEG")
    lobes = client.get(f"/api/v1/series/{uid}/reports/seg-lobes", headers=headers)
    assert lobes.status_code == 200 and lobes.content == b"lobes SEG"
    assert lobes.headers["content-type"] == "application/dicom"
    missing = client.get(f"/api/v1/series/{uid}/reports/seg-lesions", headers=headers)
    assert missing.status_code == 404 and "produced no seg_lesions.dcm" in missing.json()["detail"]


def test_rules_are_changed_by_admins_only_and_validated(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    assert client.get("/api/v1/rules", headers=_auth(keys["viewer"])).json()["max_slice_thickness_mm"] == 3.0
    forbidden = client.patch("/api/v1/rules", json={"max_slice_thickness_mm": 5.0}, headers=_auth(keys["viewer"]))
    assert forbidden.status_code == 403
    bad = client.patch("/api/v1/rules", json={"max_axial_tilt_deg": -1}, headers=_auth(keys["admin"]))
    assert bad.status_code == 422
    unknown = client.patch("/api/v1/rules", json={"colour": "red"}, headers=_auth(keys["admin"]))
    assert unknown.status_code == 422 and "colour" in unknown.json()["detail"]
    ok = client.patch("/api/v1/rules", json={"max_slice_thickness_mm": 5.0}, headers=_auth(keys["admin"]))
    assert ok.status_code == 200 and ok.json()["max_slice_thickness_mm"] == 5.0
    assert settings.rules_file is not None and "max_slice_thickness_mm = 5.0" in settings.rules_file.read_text()


def test_a_line_break_in_a_rule_is_refused_and_nothing_is_written(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    """The attack of issue 14 section 4: this once wrote an unparsable rules file and halted intake."""
    admin = _auth(keys["admin"])
    assert client.patch("/api/v1/rules", json={"min_slices": 25}, headers=admin).status_code == 200
    assert settings.rules_file is not None
    before = settings.rules_file.read_bytes()
    for value in ("CT\n[oops", "CT\r", "CT\u0000", "CT\u001b[2J"):
        response = client.patch("/api/v1/rules", json={"modalities": [value]}, headers=admin)
        assert response.status_code == 422 and "control character" in response.json()["detail"], value
    assert settings.rules_file.read_bytes() == before
    listed = client.get("/api/v1/rules", headers=admin).json()
    assert (listed["min_slices"], listed["modalities"], listed["source"], listed["error"]) == (25, ["CT"], "file", None)
    listed["min_slices"] = 30
    assert client.put("/api/v1/rules", json=listed, headers=admin).json()["min_slices"] == 30, "sent back as listed"


def test_a_hand_broken_rules_file_keeps_routing_on_the_last_good_rules(
    client: TestClient, keys: dict[str, str], settings: Settings, engine: Engine, ct_headers: HeaderFactory
) -> None:
    admin = _auth(keys["admin"])
    assert client.patch("/api/v1/rules", json={"max_slice_thickness_mm": 5.0}, headers=admin).status_code == 200
    assert settings.rules_file is not None
    settings.rules_file.write_text('[eligibility]\nmodalities = ["CT\n[oops"]\n')  # edited badly by hand
    trail = client.app.state.audit_trail  # type: ignore[attr-defined]  # shared, as in lungcds serve
    intake = SeriesIntake(engine, settings, lambda job, rev: None, trail)
    thick = ct_headers(series_uid="1.2.3.9.1", count=64, spacing=5.0, thickness=5.0)
    for h in thick:
        intake.instance_stored(StoredInstance(header=h, path=Path("/x"), size=1, duplicate=False), ASSOC)
    assert intake.finalize("1.2.3.9.1", trigger="test")
    series = client.get("/api/v1/series/1.2.3.9.1", headers=admin).json()
    assert series["state"] == "queued", "routed with the last good rules (5 mm allowed), not stuck in receiving"

    rules = client.get("/api/v1/rules", headers=admin)
    assert rules.status_code == 200
    assert rules.json()["max_slice_thickness_mm"] == 5.0 and rules.json()["source"] == "last good copy"
    assert "not valid TOML" in rules.json()["error"]
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["rules"].endswith("the last good copy is in force")
    assert "not valid TOML" in ready.json()["detail"]
    events = client.get("/api/v1/audit", params={"channel": "config"}, headers=admin).json()["items"]
    assert [(e["target"], e["outcome"]) for e in events] == [(str(settings.rules_file), "rejected")]

    repaired = client.patch("/api/v1/rules", json={"min_slices": 20}, headers=admin)
    assert repaired.status_code == 200 and (repaired.json()["source"], repaired.json()["error"]) == ("file", None)
    assert client.get("/api/v1/health/ready").json()["status"] == "ready"


def test_openapi_is_published(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/series/{series_uid}/result" in spec["paths"]


def test_series_filter_by_patient_and_time_and_sort(
    client: TestClient, keys: dict[str, str], received: dict[str, str]
) -> None:
    headers = _auth(keys["viewer"])
    by_patient = client.get("/api/v1/series", params={"patient_id": "PID-1"}, headers=headers).json()
    assert by_patient["total"] == 2
    assert client.get("/api/v1/series", params={"accession_number": "none"}, headers=headers).json()["total"] == 0
    future = client.get("/api/v1/series", params={"received_from": "2999-01-01T00:00:00Z"}, headers=headers).json()
    assert future["total"] == 0
    ascending = client.get("/api/v1/series", params={"sort": "state"}, headers=headers).json()["items"]
    assert [s["state"] for s in ascending] == ["queued", "rejected"]
    descending = client.get("/api/v1/series", params={"sort": "-state"}, headers=headers).json()["items"]
    assert [s["state"] for s in descending] == ["rejected", "queued"]
    bad = client.get("/api/v1/series", params={"sort": "patient_name"}, headers=headers)
    assert bad.status_code == 422 and "sort by one of" in bad.json()["detail"]
    jobs = client.get("/api/v1/jobs", params={"sort": "-queued_at", "state": "queued"}, headers=headers).json()
    assert jobs["total"] == 1


@pytest.mark.parametrize("path", ["/api/v1/series?received_to", "/api/v1/jobs?queued_to", "/api/v1/audit?until"])
def test_time_filters_are_utc_and_refuse_what_utc_cannot_hold(
    client: TestClient, keys: dict[str, str], received: dict[str, str], path: str
) -> None:
    headers = _auth(keys["admin"])
    naive = client.get(f"{path}=2999-01-01T00:00:00", headers=headers)  # no offset: taken as UTC
    assert naive.status_code == 200 and naive.json()["total"] >= 1
    too_early = client.get(f"{path}=0001-01-01T00:00:00%2B01:00", headers=headers)  # before year 1 in UTC
    assert too_early.status_code == 422
    assert "outside the range of UTC times" in json.dumps(too_early.json())
