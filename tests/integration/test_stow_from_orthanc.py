"""Orthanc as the STOW-RS client of ``lungcds serve``, and the reports returned to it over STOW-RS.

Orthanc (its DICOMweb plugin, a "Servers" entry with our API key) sends a study to
``/api/v1/dicomweb/studies``; the server stores it through the C-STORE path, completes the series at
the end of the request, analyses it, and sends the reports back to whoever sent it: the sender's
identity (``apikey:1``) is found in ``LUNGCDS_SENDER_ADDRESSES`` at Orthanc's own DICOMweb URL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers import (
    ORTHANC_DICOMWEB_PLUGIN,
    LungcdsProcess,
    OrthancPeer,
    free_port,
    start_lungcds,
    start_orthanc,
    wait_for,
)
from tests.server.conftest import phantom_series  # noqa: F401 - the synthetic chest CT, as a fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def ports() -> tuple[int, int]:
    """Orthanc's DICOM and HTTP ports, chosen before either side starts (each names the other)."""
    return free_port(), free_port()


@pytest.fixture
def server(tmp_path: Path, ports: tuple[int, int]) -> Iterator[LungcdsProcess]:
    if shutil.which("Orthanc") is None or not ORTHANC_DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (apt install orthanc orthanc-dicomweb)")
    orthanc_web = f"ORTHWEB@stow+http://127.0.0.1:{ports[1]}/dicom-web"
    process = start_lungcds(
        tmp_path / "data",
        extra_env={
            "LUNGCDS_DESTINATIONS": "BACK@return-to-sender",
            "LUNGCDS_DESTINATION_OUTPUTS": '{"BACK": ["sr", "pdf"]}',
            # The first API key of a new installation is apikey:1: the one start_lungcds creates.
            "LUNGCDS_SENDER_ADDRESSES": f'{{"apikey:1": "{orthanc_web}"}}',
            "LUNGCDS_DICOMWEB_ALLOWED_SENDERS": "apikey:1",
        },
    )
    yield process
    process.stop()


@pytest.fixture
def orthanc(tmp_path: Path, ports: tuple[int, int], server: LungcdsProcess) -> Iterator[OrthancPeer]:
    peer = start_orthanc(
        tmp_path / "orthanc",
        ports=ports,
        extra_config={
            "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": {
                    "lungcds": {
                        "Url": f"http://127.0.0.1:{server.api_port}/api/v1/dicomweb/",
                        "HttpHeaders": {"Authorization": f"Bearer {server.api_key}"},
                    }
                },
            },
        },
    )
    yield peer
    peer.stop()


def test_orthanc_sends_a_study_over_stow_rs_and_gets_the_reports_back(
    server: LungcdsProcess,
    orthanc: OrthancPeer,
    phantom_series: list[Path],  # noqa: F811
) -> None:
    for path in phantom_series:
        orthanc.http.post("/instances", content=path.read_bytes()).raise_for_status()
    first = pydicom.dcmread(phantom_series[0], stop_before_pixels=True)
    (study,) = [r for r in orthanc.lookup(str(first.StudyInstanceUID)) if r["Type"] == "Study"]
    sent = orthanc.http.post("/dicom-web/servers/lungcds/stow", json={"Resources": [study["ID"]]}, timeout=120)
    assert sent.status_code == 200, sent.text

    uid = str(first.SeriesInstanceUID)
    series = server.series(uid)
    assert series is not None and series["instance_count"] == len(phantom_series)
    assert series["state"] != "receiving", "the end of Orthanc's request completed the series"
    with server.api as api:
        events = api.get("/audit", params={"channel": "dicom", "actor": "dicom:apikey:1"}).json()
    assert any(e["action"] == "stow-rs" and e["outcome"] == "released" for e in events["items"]), events

    done = wait_for(lambda: server.delivered(uid), 600, 2.0, "the analysis and the return of its reports")
    deliveries = done["job"]["deliveries"]
    assert {d["kind"] for d in deliveries} == {"sr", "pdf"}
    assert all(d["destination"] == "BACK@return-to-sender" for d in deliveries)
    for delivery in deliveries:
        assert orthanc.lookup(delivery["sop_instance_uid"]), f"{delivery['kind']} is in Orthanc, sent back over STOW-RS"
