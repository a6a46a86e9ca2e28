"""Return to sender: the reports go to the AE that sent the series, found in LUNGCDS_SENDER_ADDRESSES,
or nowhere, with the reason on the delivery (GET /jobs/{id}) and in the audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.scu import Destination, send_files
from dicom_node.spool import Spool, StoredInstance
from server.api.main import create_app
from server.cli.main import setting_rows
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import AuditEvent, Delivery, Series
from server.routing.destinations import DestinationEntry, parse_address
from server.routing.intake import SeriesIntake
from server.tasks.app import ANALYSIS_TASK, DELIVERY_TASK, create_celery
from tests.peers import copy_series, free_port
from tests.server.conftest import Recorder


class _Peer:
    """The sending modality's own Storage SCP: keeps what it is sent."""

    def __init__(self) -> None:
        self.stored: list[StoredInstance] = []

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        self.stored.append(stored)

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        return None

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        return None


def _receive(intake: SeriesIntake, settings: Settings, files: list[Path], calling_aet: str) -> str:
    """Send ``files`` to our SCP as ``calling_aet`` would; the series UID (finalised when the association ends)."""
    spool = Spool(settings.spool_dir, min_free_bytes=0, admit=intake.admit)
    with StorageSCP("LUNGCDS", spool, intake) as scp:
        port = scp.start("127.0.0.1", 0)
        results = send_files(Destination("LUNGCDS", "127.0.0.1", port), files, calling_aet=calling_aet)
    assert all(r.ok for r in results)
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def test_the_reports_go_back_to_the_sender_and_an_unknown_sender_gets_nothing(
    settings: Settings,
    engine: Engine,
    intake: SeriesIntake,
    queue: Recorder,
    phantom_series: list[Path],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings.destinations = ["BACK@return-to-sender"]
    settings.destination_outputs = {"BACK": ["sr", "pdf"]}
    settings.sender_addresses = {"CT1": f"CT1@127.0.0.1:{port}"}
    app = create_celery(settings)

    known = _receive(intake, settings, phantom_series, "CT1")
    unknown = _receive(intake, settings, copy_series(phantom_series, tmp_path / "copy", "ct9"), "CT9")
    with Session(engine) as session:
        assert session.get(Series, known).calling_aet == "CT1"  # type: ignore[union-attr]
        assert session.get(Series, unknown).calling_aet == "CT9"  # type: ignore[union-attr]
    assert len(queue.calls) == 2, "each series completed when its association was released"
    for job_id, revision in queue.calls:
        app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])

    peer = _Peer()
    with StorageSCP("CT1", Spool(tmp_path / "ct1", min_free_bytes=0), peer) as ct1:
        ct1.start("127.0.0.1", port)
        with Session(engine) as session:
            for row in session.exec(select(Delivery)).all():
                app.tasks[DELIVERY_TASK].apply(args=[row.id])
    (known_job, _), (unknown_job, _) = queue.calls
    with Session(engine) as session:
        rows = session.exec(select(Delivery)).all()
    sent = [r for r in rows if r.job_id == known_job]
    assert [r.state for r in sent] == ["sent", "sent"] and all(r.destination == "BACK@return-to-sender" for r in sent)
    assert {s.header.sop_instance_uid for s in peer.stored} == {r.sop_instance_uid for r in sent}
    assert {str(s.header.series_instance_uid) for s in peer.stored} != {known}, "the reports, not the images"

    refused = [r for r in rows if r.job_id == unknown_job]
    assert [r.state for r in refused] == ["refused", "refused"], "never sent elsewhere, never retried"
    assert all("CT9 is not in LUNGCDS_SENDER_ADDRESSES" in (r.last_error or "") for r in refused)
    assert len(peer.stored) == 2, "the unknown sender's reports did not go to the known one"

    with session_scope(engine) as session:
        key = create_api_key(session, "viewer").secret
    job = TestClient(create_app(settings, engine)).get(
        f"/api/v1/jobs/{unknown_job}", headers={"Authorization": f"Bearer {key}"}
    )
    assert job.status_code == 200
    shown = job.json()["deliveries"]
    assert {d["state"] for d in shown} == {"refused"} and all("CT9" in d["last_error"] for d in shown)
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "return-to-sender")).all()
    assert len(events) == 2 and {e.outcome for e in events} == {"refused"}
    assert all(e.detail["origin"] == "CT9" and e.detail["job"] == unknown_job for e in events)


def test_destination_addresses_of_every_kind() -> None:
    assert str(parse_address(" PACS@pacs:104 ")) == "PACS@pacs:104"
    web = parse_address("ARCHIVE@stow+https://archive.example:8443/dicom-web/")
    assert (web.kind, web.name, web.url) == ("stow-rs", "ARCHIVE", "https://archive.example:8443/dicom-web")
    assert str(web) == "ARCHIVE@stow+https://archive.example:8443/dicom-web"
    back = parse_address("BACK@return-to-sender")
    assert (back.kind, back.name, back.dicom, back.url) == ("return-to-sender", "BACK", None, None)
    for bad, words in [
        ("W@stow+https://user:pw@host/dicom-web", "LUNGCDS_DICOMWEB_CREDENTIALS"),
        ("W@stow+https:///dicom-web", "no host"),
        ("W@stow+https://host/dicom-web?x=1", "no query"),
        ("W@stow+https://host:99999/dicom-web", "out of range"),
        ("@return-to-sender", "AE title"),
        ("PACS@pacs", "no ':port'"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_address(bad)
    with pytest.raises(ValueError, match="tls and calling_aet are for DICOM peers"):
        DestinationEntry(address="W@stow+https://host/dicom-web", tls=True, calling_aet=None, uncompressed=False)


def test_sender_addresses_and_credentials_are_checked_with_the_settings(settings: Settings) -> None:
    with pytest.raises(ValueError, match="sender_addresses\\['CT1'\\] must be an address"):
        Settings(data_dir=settings.data_dir, sender_addresses={"CT1": "X@return-to-sender"})
    with pytest.raises(ValueError, match="sender_addresses\\['CT1'\\]"):
        Settings(data_dir=settings.data_dir, sender_addresses={"CT1": "not an address"})
    with pytest.raises(ValueError, match="bearer:<token> or basic:<user>:<password>"):
        Settings(data_dir=settings.data_dir, dicomweb_credentials={"W": "password-only"})
    fine = Settings(
        data_dir=settings.data_dir,
        destinations=["BACK@return-to-sender", "W@stow+https://archive/dicom-web"],
        destination_outputs={"W": ["sr"]},
        sender_addresses={"CT1": "CT1@10.0.0.5:104", "apikey:3": "W@stow+https://archive/dicom-web"},
        dicomweb_credentials={"W": "bearer:abc"},
    )
    assert fine.outputs_for("W@stow+https://archive/dicom-web") == ("sr",)
    assert setting_rows(fine)["dicomweb_credentials"]["value"] == "***", "lungcds config show hides them"
