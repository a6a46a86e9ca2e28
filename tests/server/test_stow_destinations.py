"""Our outputs to a real Orthanc over STOW-RS (its DICOMweb plugin), through the outbox; read back over WADO-RS.

The analysis and delivery tasks run in-process (``Task.apply``), as in ``test_tasks``; Orthanc
requires HTTP basic authentication, so the credential setting is exercised for real.
"""

from __future__ import annotations

import base64
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import Delivery
from server.services.configuration import echo_destination
from server.tasks.app import ANALYSIS_TASK, DELIVERY_TASK, create_celery
from tests.peers import ORTHANC_DICOMWEB_PLUGIN, OrthancPeer, free_port, start_orthanc

pytestmark = pytest.mark.integration

USER, PASSWORD = "lungcds", "s3cret-pw"


@pytest.fixture
def orthanc_web(tmp_path: Path) -> Iterator[OrthancPeer]:
    """Orthanc with its DICOMweb plugin, HTTP basic authentication required."""
    if shutil.which("Orthanc") is None or not ORTHANC_DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (apt install orthanc orthanc-dicomweb)")
    peer = start_orthanc(
        tmp_path / "orthanc",
        extra_config={
            "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
        },
        auth=(USER, PASSWORD),
    )
    yield peer
    peer.stop()


def _rows(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.exec(select(Delivery).order_by(Delivery.id)).all())


def test_outputs_are_stored_in_orthanc_over_stow_rs_and_read_back(
    settings: Settings,
    engine: Engine,
    queued: tuple[int, int, str],
    orthanc_web: OrthancPeer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = f"http://127.0.0.1:{orthanc_web.http_port}/dicom-web"
    settings.destinations = [f"ORTHWEB@stow+{base}", f"GONE@stow+http://127.0.0.1:{free_port()}/dicom-web"]
    settings.dicomweb_credentials = {"ORTHWEB": f"basic:{USER}:wrong"}
    app = create_celery(settings)
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    rows = _rows(engine)
    assert {r.kind for r in rows} == {"sr", "seg", "pdf", "sc", "kos"} and len(rows) == 10

    for row in rows:
        app.tasks[DELIVERY_TASK].apply(args=[row.id])
    by_target = {(r.destination.split("@")[0], r.kind): r for r in _rows(engine)}
    for kind in ("sr", "seg", "pdf", "sc", "kos"):
        refused, unreachable = by_target[("ORTHWEB", kind)], by_target[("GONE", kind)]
        assert refused.state == "refused" and "answered 401" in (refused.last_error or ""), "a 4xx is final"
        assert unreachable.state == "pending" and "ConnectionError" in (unreachable.last_error or ""), "retried"
        assert "wrong" not in (refused.last_error or ""), "the credential is in no error"
    assert not echo_destination(settings, "ORTHWEB").answered

    settings.dicomweb_credentials = {"ORTHWEB": f"basic:{USER}:{PASSWORD}"}
    assert echo_destination(settings, "ORTHWEB").answered
    with session_scope(engine) as session:
        key = create_api_key(session, "admin").secret
    resent = TestClient(create_app(settings, engine)).post(
        f"/api/v1/jobs/{job_id}/resend",
        json={"destination": f"ORTHWEB@stow+{base}/"},  # named as listed, give or take the trailing slash
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resent.status_code == 200, resent.text
    again = [
        d["id"]
        for d in resent.json()["deliveries"]
        if d["destination"].startswith("ORTHWEB@") and d["state"] == "pending"
    ]
    assert len(again) == 5
    with caplog.at_level(logging.DEBUG):  # dicomweb-client logs its request headers at debug level
        for delivery_id in again:
            app.tasks[DELIVERY_TASK].apply(args=[delivery_id])
    assert "dicomweb_client" in {r.name.split(".")[0] for r in caplog.records}
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in caplog.text and encoded not in caplog.text, "the credential is never logged"
    sent = [r for r in _rows(engine) if r.destination.startswith("ORTHWEB@")]
    assert [r.state for r in sent] == ["sent"] * 5, [r.last_error for r in sent]

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    reader = DICOMwebClient(base, session=session)
    for row in sent:
        ours = pydicom.dcmread(row.path)
        theirs = reader.retrieve_instance(
            str(ours.StudyInstanceUID), str(ours.SeriesInstanceUID), str(ours.SOPInstanceUID)
        )
        assert theirs.SOPClassUID == ours.SOPClassUID
        assert theirs.PatientID == ours.PatientID and theirs.Modality == ours.Modality
        if "PixelData" in ours:
            assert theirs.pixel_array.tobytes() == ours.pixel_array.tobytes(), row.kind


def test_a_stow_rs_destination_that_does_not_exist_is_refused_for_good(
    settings: Settings, engine: Engine, queued: tuple[int, int, str], orthanc_web: OrthancPeer
) -> None:
    settings.destinations = [f"NOWHERE@stow+http://127.0.0.1:{orthanc_web.http_port}/no-such-base"]
    settings.destination_outputs = {"NOWHERE": ["sr"]}
    settings.dicomweb_credentials = {"NOWHERE": f"basic:{USER}:{PASSWORD}"}
    app = create_celery(settings)
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    (row,) = _rows(engine)
    app.tasks[DELIVERY_TASK].apply(args=[row.id])
    (row,) = _rows(engine)
    assert row.state == "refused" and "answered 404" in (row.last_error or "")
