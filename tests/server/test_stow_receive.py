"""STOW-RS into lungcds over real HTTP: a uvicorn the test starts, real clients (dicomweb-client, httpx).

Each instance must take the path of a C-STORE: the same validation and reasons, the same durable
spool and index, the same identity checks, the same audit of refusals; the answer is the Store
Instances Response (PS3.18 10.5.3, Annex I).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import uvicorn
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import StorageSCP
from dicom_node.scu import Destination, send_datasets
from dicom_node.spool import Spool
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import AuditEvent, Instance, Series
from server.routing.intake import SeriesIntake
from server.services.dicomweb_store import STUDY_MISMATCH, series_in_open_requests
from tests.peers import free_port, wait_for
from tests.server.test_admin_api import FakeQueue

BOUNDARY = "lungcds-test-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass
class Api:
    """A running API: its DICOMweb base URL, its queue, and an admin and a viewer key."""

    base: str
    queue: FakeQueue
    keys: dict[str, tuple[int, str]]

    def post(
        self, parts: list[tuple[str | None, bytes]], *, key: str = "viewer", path: str = "/studies", **kw: Any
    ) -> httpx.Response:
        headers = {"Content-Type": RELATED, **kw.pop("headers", {})}
        if key:
            headers["Authorization"] = f"Bearer {self.keys[key][1]}"
        return httpx.post(self.base + path, content=multipart(parts), headers=headers, timeout=60, **kw)


ApiFactory = Callable[..., Api]


@pytest.fixture
def serve_api(settings: Settings, engine: Engine) -> Iterator[ApiFactory]:
    """Start the API on uvicorn on a free loopback port, after the test adjusted the settings."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**changes: Any) -> Api:
        for name, value in changes.items():
            setattr(settings, name, value)
        queue = FakeQueue()
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, engine, queue), host="127.0.0.1", port=port, log_config=None, lifespan="off"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, 20, 0.05, "uvicorn to start")
        with session_scope(engine) as session:
            keys = {role: create_api_key(session, role) for role in ("viewer", "admin")}
        return Api(f"http://127.0.0.1:{port}/api/v1/dicomweb", queue, {r: (k.id, k.secret) for r, k in keys.items()})

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def multipart(parts: list[tuple[str | None, bytes]]) -> bytes:
    out = b""
    for content_type, content in parts:
        out += f"\r\n--{BOUNDARY}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + content
    return out + f"\r\n--{BOUNDARY}--".encode()


def encoded(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def variant(path: Path, **changes: Any) -> Dataset:
    """A phantom slice with new UIDs unless given, and the attributes ``changes`` sets."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = changes.pop("SOPInstanceUID", pydicom.uid.generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for name, value in changes.items():
        setattr(ds, name, value)
    return ds


def dicom(ds: Dataset) -> tuple[str, bytes]:
    return "application/dicom", encoded(ds)


def audit(engine: Engine, action: str, outcome: str | None = None) -> list[AuditEvent]:
    with Session(engine) as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if outcome is not None:
            query = query.where(AuditEvent.outcome == outcome)
        return list(session.exec(query).all())


def failures(response: httpx.Response) -> dict[str, int]:
    """SOP Instance UID (or '' when unknown) → Failure Reason of the Failed SOP Sequence."""
    items = Dataset.from_json(response.json()).get("FailedSOPSequence", [])
    return {str(item.get("ReferencedSOPInstanceUID") or ""): int(item.FailureReason) for item in items}


def test_a_series_sent_with_dicomweb_client_is_stored_indexed_and_queued(
    serve_api: ApiFactory, engine: Engine, settings: Settings, phantom_series: list[Path]
) -> None:
    api = serve_api()
    key_id, key = api.keys["viewer"]
    client = DICOMwebClient(api.base, headers={"Authorization": f"Bearer {key}"})
    datasets = [pydicom.dcmread(p) for p in phantom_series]
    response = client.store_instances(datasets)  # > 1 MB: dicomweb-client sends it chunked

    assert "FailedSOPSequence" not in response
    assert {str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence} == {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    series_uid = str(datasets[0].SeriesInstanceUID)
    with Session(engine) as session:
        series = session.get(Series, series_uid)
        paths = session.exec(select(Instance.path).where(Instance.series_instance_uid == series_uid)).all()
    assert series is not None and series.instance_count == len(datasets)
    assert series.calling_aet == f"apikey:{key_id}", "the sender is the series' origin (return to sender)"
    assert series.state == "queued" and series.completion_trigger == "STOW-RS request ended"
    assert len(api.queue.enqueued) == 1, "the end of the request completed the series, as a released association"
    assert all(Path(p).is_file() and Path(p).is_relative_to(settings.spool_dir) for p in paths)
    assert list((settings.data_dir / "stow-incoming").iterdir()) == [], "no part file is left behind"
    (ended,) = audit(engine, "stow-rs", "released")
    assert ended.actor == f"dicom:apikey:{key_id}" and ended.target == series_uid
    assert ended.detail["stored"] == len(datasets) and ended.detail["refused"] == 0


def test_each_refused_part_has_its_reason_as_a_c_store_would(
    serve_api: ApiFactory, engine: Engine, settings: Settings, phantom_series: list[Path], tmp_path: Path
) -> None:
    api = serve_api()
    good = variant(phantom_series[0])
    broken = variant(phantom_series[1])
    broken.PixelData = broken.PixelData[:-1000]  # shorter than Rows x Columns x Bits Allocated say
    response = api.post(
        [dicom(good), ("text/plain", b"a note, not an image"), dicom(broken), ("application/dicom", b"not DICOM")]
    )

    assert response.status_code == 202 and response.headers["content-type"] == "application/dicom+json"
    body = Dataset.from_json(response.json())
    assert [str(i.ReferencedSOPInstanceUID) for i in body.ReferencedSOPSequence] == [str(good.SOPInstanceUID)]
    assert failures(response) == {"": 0xC000, str(broken.SOPInstanceUID): 0xC000}
    assert len(body.FailedSOPSequence) == 3
    warnings = response.headers.get_list("warning")
    assert any("part 2" in w and "text/plain, not application/dicom" in w for w in warnings)
    assert any("part 4" in w and "not a DICOM Part 10 stream" in w for w in warnings)

    # The same broken instance over C-STORE, into the same kind of intake: the same status and reason.
    c_store_refusals: list[tuple[int, str]] = []

    class Sink(SeriesIntake):
        def instance_refused(self, sop_instance_uid: str, status: int, reason: str, *args: Any, **kw: Any) -> None:
            c_store_refusals.append((status, reason))

    intake = Sink(engine, settings, lambda job, revision: None)
    with StorageSCP("LUNGCDS", Spool(tmp_path / "scp", min_free_bytes=0), intake) as scp:
        port = scp.start("127.0.0.1", 0)
        (result,) = send_datasets(Destination("LUNGCDS", "127.0.0.1", port), [broken], calling_aet="CT01")
    assert result.status == 0xC000
    events = audit(engine, "stow-rs", "refused")
    assert sorted(e.detail["status"] for e in events) == ["0xC000"] * 3
    refused = {e.detail["sop_instance_uid"]: e for e in events}
    assert (0xC000, refused[str(broken.SOPInstanceUID)].detail["reason"]) == c_store_refusals[0]
    assert c_store_refusals[0][1].startswith("Pixel Data (7FE0,0010) is truncated")
    with Session(engine) as session:
        stored = session.exec(select(Instance.sop_instance_uid)).all()
    assert stored == [str(good.SOPInstanceUID)], "nothing refused is indexed"


def test_nothing_stored_is_409_and_every_media_type_but_dicom_is_415(
    serve_api: ApiFactory, engine: Engine, phantom_series: list[Path]
) -> None:
    api = serve_api()
    assert api.post([("application/dicom", b"not DICOM")]).status_code == 409
    ds = variant(phantom_series[0])
    for content_type in (
        "application/dicom",
        "application/json",
        'multipart/related; type="application/dicom+json"; boundary=x',
    ):
        response = api.post([dicom(ds)], headers={"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.headers["content-type"] == "application/problem+json"
    no_boundary = api.post([dicom(ds)], headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]
    truncated = httpx.post(
        api.base + "/studies",
        content=multipart([dicom(ds)])[:-20],
        headers={"Content-Type": RELATED, "Authorization": f"Bearer {api.keys['viewer'][1]}"},
    )
    assert truncated.status_code == 400 and "truncated" in truncated.json()["detail"]
    assert len(audit(engine, "stow-rs", "aborted")) == 1, "a truncated request ends like an aborted association"
    with Session(engine) as session:
        assert session.exec(select(Instance)).all() == []


def test_senders_are_authenticated_and_allow_listed(
    serve_api: ApiFactory, engine: Engine, phantom_series: list[Path]
) -> None:
    api = serve_api()
    parts = [dicom(variant(phantom_series[0]))]
    assert api.post(parts, key="").status_code == 401
    assert api.post(parts, key="", headers={"Authorization": "Bearer lcds_not_a_key"}).status_code == 401

    admin_id = api.keys["admin"][0]
    listed = serve_api(dicomweb_allowed_senders=[f"apikey:{admin_id}"])
    listed.keys = api.keys  # the same database: the keys of the first start
    refused = listed.post(parts, key="viewer")
    assert refused.status_code == 403 and "LUNGCDS_DICOMWEB_ALLOWED_SENDERS" in refused.json()["detail"]
    (rejected,) = audit(engine, "stow-rs", "rejected")
    assert rejected.actor == f"dicom:apikey:{api.keys['viewer'][0]}"
    assert listed.post(parts, key="admin").status_code == 200


def test_a_body_over_the_limit_is_413(
    serve_api: ApiFactory, engine: Engine, settings: Settings, phantom_series: list[Path]
) -> None:
    api = serve_api(max_stow_request_mb=1)
    slices = [dicom(variant(p)) for p in phantom_series[:40]]  # about 1.3 MB
    declared = api.post(slices)
    assert declared.status_code == 413 and "LUNGCDS_MAX_STOW_REQUEST_MB" in declared.json()["detail"]
    with Session(engine) as session:
        assert session.exec(select(Instance)).all() == [], "refused before a byte was read"

    body = multipart(slices)
    chunked = httpx.post(
        api.base + "/studies",
        content=(body[i : i + 65536] for i in range(0, len(body), 65536)),  # no Content-Length
        headers={"Content-Type": RELATED, "Authorization": f"Bearer {api.keys['viewer'][1]}"},
    )
    assert chunked.status_code == 413
    with Session(engine) as session:
        count = len(session.exec(select(Instance)).all())
    assert 0 < count < 40 and f"{count} instance(s) stored before" in chunked.json()["detail"]
    assert list((settings.data_dir / "stow-incoming").iterdir()) == []


def test_identity_disagreements_are_handled_as_the_scp_handles_them(
    serve_api: ApiFactory, engine: Engine, phantom_series: list[Path]
) -> None:
    api = serve_api()
    first = variant(phantom_series[0])
    other_patient = variant(phantom_series[1], PatientID="SOMEONE-ELSE")
    assert api.post([dicom(first), dicom(other_patient)]).status_code == 200, "kept, as the SCP keeps them"
    with Session(engine) as session:
        series = session.get(Series, str(first.SeriesInstanceUID))
    assert series is not None and any("SOMEONE-ELSE" in c or "patient" in c for c in series.identity_conflicts)
    assert audit(engine, "identity-check", "conflict"), "the disagreement is audited"

    assert api.post([dicom(first)]).status_code == 200, "the same instance again is a duplicate, stored once"
    elsewhere = variant(
        phantom_series[0], SOPInstanceUID=first.SOPInstanceUID, SeriesInstanceUID=pydicom.uid.generate_uid()
    )
    response = api.post([dicom(elsewhere)])
    assert response.status_code == 409 and failures(response) == {str(first.SOPInstanceUID): 0xC111}
    assert "in use" in response.headers["warning"]


def test_the_study_of_the_url_is_the_study_of_every_instance(
    serve_api: ApiFactory, engine: Engine, phantom_series: list[Path]
) -> None:
    api = serve_api()
    ds = variant(phantom_series[0])
    other = f"2.25.{uuid.uuid4().int}"
    mismatch = api.post([dicom(ds)], path=f"/studies/{other}")
    assert mismatch.status_code == 409 and failures(mismatch) == {str(ds.SOPInstanceUID): STUDY_MISMATCH}
    assert other in mismatch.headers["warning"]
    assert api.post([dicom(ds)], path=f"/studies/{ds.StudyInstanceUID}").status_code == 200
    assert api.post([dicom(ds)], path="/studies/1.2.x").status_code == 400


def test_a_series_still_being_sent_is_never_idle(
    serve_api: ApiFactory, engine: Engine, phantom_series: list[Path]
) -> None:
    """A sender pausing between parts for longer than the idle time keeps its series open, as an open
    association does: the runtime's idle timer skips :func:`series_in_open_requests`."""
    api = serve_api()
    slices = [pydicom.dcmread(p) for p in phantom_series[:12]]
    first = slices[0]
    series_uid = str(first.SeriesInstanceUID)
    body = multipart([dicom(ds) for ds in slices])
    delimiter = f"\r\n--{BOUNDARY}\r\n".encode()
    cut = 0
    for _ in range(11):  # through the line that ends the tenth part: more than the route gathers before storing
        cut = body.index(delimiter, cut) + len(delimiter)
    assert cut > 256 * 2**10
    resume = threading.Event()

    def slowly() -> Iterator[bytes]:
        yield body[:cut]
        resume.wait(30)
        yield body[cut:]

    def first_stored() -> bool:
        query = select(Instance).where(Instance.sop_instance_uid == str(first.SOPInstanceUID))
        with Session(engine) as session:
            return session.exec(query).first() is not None

    headers = {"Content-Type": RELATED, "Authorization": f"Bearer {api.keys['viewer'][1]}"}
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(httpx.post(api.base + "/studies", content=slowly(), headers=headers, timeout=60))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(first_stored, 30, 0.05, "the first part to be stored")
        assert series_uid in series_in_open_requests()
        with Session(engine) as session:
            series = session.get(Series, series_uid)
        assert series is not None and series.state == "receiving"
    finally:
        resume.set()
        sender.join(60)
    assert [answer.status_code for answer in answers] == [200]
    assert series_uid not in series_in_open_requests(), "the request ended: the idle timer may act again"
