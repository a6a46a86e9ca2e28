"""An admin asks for a study already in PACS: lungcds retrieves it from Orthanc and analyses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers import LungcdsProcess, OrthancPeer, start_lungcds, storescu, wait_for

pytestmark = pytest.mark.integration
SERIES = "lung-dx-a0001-chest-5mm-s2"


@pytest.fixture
def pacs_with_study(ct_dir: Path, orthanc: OrthancPeer) -> tuple[OrthancPeer, str, str]:
    files = sorted((ct_dir / SERIES).iterdir())
    assert storescu(orthanc.dicom_port, files, called=orthanc.aet).returncode == 0
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    return orthanc, str(header.StudyInstanceUID), str(header.SeriesInstanceUID)


@pytest.fixture
def server(tmp_path: Path, pacs_with_study: tuple[OrthancPeer, str, str]) -> Iterator[LungcdsProcess]:
    orthanc, _, _ = pacs_with_study
    process = start_lungcds(
        tmp_path / "lungcds",
        extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5", "LUNGCDS_RETRIEVE_SOURCES": orthanc.destination},
    )
    yield process
    process.stop()


def _analysed(server: LungcdsProcess, uid: str) -> dict | None:  # type: ignore[type-arg]
    series = server.series(uid)
    if series and series["state"] in {"failed", "rejected"}:
        raise AssertionError(series)
    return series if series and series["state"] == "done" else None


@pytest.mark.parametrize("method", ["get", "move"])
def test_retrieved_study_is_analysed(
    server: LungcdsProcess, pacs_with_study: tuple[OrthancPeer, str, str], method: str
) -> None:
    orthanc, study_uid, series_uid = pacs_with_study
    if method == "move":
        orthanc.add_modality("lungcds", "LUNGCDS", server.dicom_port)
    with server.api as client:
        response = client.post(
            "/retrieve", json={"source": orthanc.aet, "study_instance_uid": study_uid, "method": method}
        )
    assert response.status_code == 202, response.text
    series = wait_for(lambda: _analysed(server, series_uid), 600, 1.0, f"the {method} retrieval to be analysed")
    assert series["instance_count"] == 64
    assert series["completion_trigger"] == "association released", "complete by content when the retrieval ended"
    with server.api as client:
        audit = client.get("/audit", params={"channel": "dicom"}).json()["items"]
    assert any(event["actor"] == "dicom:ORTHANC" and event["target"] == series_uid for event in audit)
