"""Retention: images and results go after the configured days, never before delivery."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import Delivery, Job, Series, utcnow
from server.retention import purge_expired
from tests.server.conftest import HeaderFactory

ASSOC = AssociationInfo(id="a", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)
UID = "1.2.826.0.1.3680043.8.498.2"


def _finished_series(
    engine: Engine, settings: Settings, ct_headers: HeaderFactory, days_ago: float
) -> tuple[list[Path], Path, int]:
    from server.routing.intake import SeriesIntake

    intake = SeriesIntake(engine, settings, lambda job, rev: None)
    files = []
    for header in ct_headers(count=100):
        path = settings.spool_dir / "study" / UID / f"{header.sop_instance_uid}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"DICM")
        files.append(path)
        intake.instance_stored(StoredInstance(header=header, path=path, size=4, duplicate=False), ASSOC)
    intake.finalize(UID, trigger="test")
    results = settings.results_dir / UID
    results.mkdir(parents=True)
    (results / "sr.dcm").write_bytes(b"x")
    with session_scope(engine) as session:
        job_id = session.exec(select(Job.id)).one()
        session.execute(update(Job).values(state="done", result_dir=str(results)))
        session.execute(update(Series).values(state="done", completed_at=utcnow() - timedelta(days=days_ago)))
        session.add(
            Delivery(
                job_id=job_id,
                destination="PACS@h:104",
                kind="sr",
                path=str(results / "sr.dcm"),
                sop_instance_uid="1.2.3",
                state="pending",
            )
        )
    return files, results, job_id


def test_nothing_is_removed_before_delivery_or_before_its_time(
    engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    settings.retention_days = 30
    files, results, _ = _finished_series(engine, settings, ct_headers, days_ago=40)
    assert purge_expired(engine, settings) == 0, "a pending delivery keeps the files"
    with session_scope(engine) as session:
        session.execute(update(Delivery).values(state="sent"))
        session.execute(update(Series).values(completed_at=utcnow() - timedelta(days=10)))
    assert purge_expired(engine, settings) == 0, "not old enough"
    assert all(f.exists() for f in files) and results.exists()


def test_expired_delivered_series_lose_their_files_but_keep_their_record(
    engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    settings.retention_days = 30
    files, results, _ = _finished_series(engine, settings, ct_headers, days_ago=40)
    outside = settings.data_dir.parent / "keep.dcm"
    outside.write_bytes(b"x")
    with session_scope(engine) as session:
        session.execute(update(Delivery).values(state="refused"))
    assert purge_expired(engine, settings) == 1
    assert not any(f.exists() for f in files) and not results.exists() and outside.exists()
    with Session(engine) as session:
        series = session.get(Series, UID)
    assert series is not None and series.purged_at is not None and series.state == "done"
    assert purge_expired(engine, settings) == 0, "purged once"

    with session_scope(engine) as session:
        key = create_api_key(session, "viewer").secret
    client = TestClient(create_app(settings, engine))
    headers = {"Authorization": f"Bearer {key}"}
    response = client.get(f"/api/v1/series/{UID}/reports/sr", headers=headers)
    assert response.status_code == 410 and "retention policy" in response.json()["detail"]
    assert client.get(f"/api/v1/series/{UID}", headers=headers).json()["purged_at"] is not None


def test_retention_off_by_default(engine: Engine, settings: Settings, ct_headers: HeaderFactory) -> None:
    files, _, _ = _finished_series(engine, settings, ct_headers, days_ago=4000)
    with session_scope(engine) as session:
        session.execute(update(Delivery).values(state="sent"))
    assert settings.retention_days == 0 and purge_expired(engine, settings) == 0
    assert all(f.exists() for f in files)
