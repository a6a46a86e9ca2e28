"""The DICOM path end to end: DCMTK storescu → lungcds → Orthanc, checked with dciodvfy and Orthanc's
own rendering of the key-image Secondary Capture.

These tests start real processes: Orthanc as the PACS, our ``lungcds serve`` (embedded mode:
SQLite + in-process Celery worker on the SQLite broker) and DCMTK's ``storescu`` as the
modality.
"""

from __future__ import annotations

import concurrent.futures
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import PIL.Image
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from tests.peers import (
    DCMTK_ENV,
    LungcdsProcess,
    OrthancPeer,
    dciodvfy_errors,
    start_lungcds,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.integration

S2 = "lung-dx-a0001-chest-5mm-s2"
S3 = "lung-dx-a0001-chest-5mm-s3"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
OUTPUT_CLASSES = {"sr": SR_CLASS, "seg": SEG_CLASS, "pdf": PDF_CLASS, "sc": SC_CLASS, "kos": KOS_CLASS}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _series_uid(folder: Path) -> str:
    return str(pydicom.dcmread(_files(folder)[0], stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture
def relaxed_server(tmp_path: Path, orthanc: OrthancPeer) -> Iterator[LungcdsProcess]:
    server = start_lungcds(
        tmp_path / "lungcds",
        extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5", "LUNGCDS_DESTINATIONS": orthanc.destination},
    )
    yield server
    server.stop()


@pytest.fixture
def default_server(tmp_path: Path) -> Iterator[LungcdsProcess]:
    server = start_lungcds(tmp_path / "lungcds-default")
    yield server
    server.stop()


def test_two_real_series_sent_at_once_come_back_as_every_output_in_orthanc(
    ct_dir: Path, orthanc: OrthancPeer, relaxed_server: LungcdsProcess, tmp_path: Path
) -> None:
    folders = [ct_dir / S2, ct_dir / S3]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sent = list(pool.map(lambda f: storescu(relaxed_server.dicom_port, _files(f)), folders))
    for completed in sent:
        assert completed.returncode == 0, completed.stderr
    last_slice_sent = time.monotonic()

    for folder in folders:
        uid = _series_uid(folder)
        series = wait_for(lambda uid=uid: relaxed_server.delivered(uid), 900, 1.0, f"series {uid} to be delivered")
        job = series["job"]
        assert job["attempts"] == 1 and job["revision"] == 1, "processed once"
        assert series["instance_count"] == 64 and series["completion_trigger"] == "association released"
        kinds = {d["kind"] for d in job["deliveries"]}
        assert kinds == {"sr", "seg", "pdf", "sc", "kos"}

        with relaxed_server.api as client:
            result = client.get(f"/series/{uid}/result").json()
        assert result["eligibility"] == {"eligible": True, "reasons": []}
        lungs = result["measurements"]["lungs"]
        assert 2000 < lungs["volume_ml"] < 9000, lungs
        assert result["measurements"]["lung_left"]["volume_ml"] > 500
        assert result["measurements"]["lung_right"]["volume_ml"] > 500
        assert result["models"]["corads"]["status"] == "not_installed"

        source_study = str(pydicom.dcmread(_files(folder)[0], stop_before_pixels=True).StudyInstanceUID)
        for kind, sop_class in OUTPUT_CLASSES.items():
            sop_uid = next(d["sop_instance_uid"] for d in job["deliveries"] if d["kind"] == kind)
            found = [r for r in orthanc.lookup(sop_uid) if r["Type"] == "Instance"]
            assert len(found) == 1, f"{kind} {sop_uid} not in Orthanc"
            tags = orthanc.instance_tags(found[0]["ID"])
            assert tags["SOPClassUID"] == sop_class
            assert tags["StudyInstanceUID"] == source_study
            path = tmp_path / f"{uid}-{kind}.dcm"
            path.write_bytes(orthanc.instance_file(found[0]["ID"]))
            assert dciodvfy_errors(path) == [], f"dciodvfy errors in the {kind} stored in Orthanc"
            if kind == "sc":
                preview = orthanc.instance_preview(found[0]["ID"])
                assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
                shown = PIL.Image.open(io.BytesIO(preview.content))
                stored = pydicom.dcmread(path)
                assert shown.size == (stored.Columns, stored.Rows) and shown.mode == "RGB"
    print(f"\nlast slice sent → both series' SR and PDF in Orthanc: {time.monotonic() - last_slice_sent:.1f} s")


def test_thick_series_is_rejected_under_the_default_rule_with_its_reason(
    ct_dir: Path, default_server: LungcdsProcess
) -> None:
    folder = ct_dir / S2
    completed = storescu(default_server.dicom_port, _files(folder))
    assert completed.returncode == 0, completed.stderr
    uid = _series_uid(folder)
    series = wait_for(
        lambda: (s := default_server.series(uid)) and s["state"] != "receiving" and s, 120, 0.5, "a decision"
    )
    assert series["state"] == "rejected"
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in series["reasons"]
    # A chest CT: its job only writes the not-analysed notice (SR and PDF saying why), then the
    # series is still rejected (tests/server/test_notice.py checks what is sent).
    series = wait_for(
        lambda: (s := default_server.series(uid)) and s["job"] and s["job"]["state"] == "done" and s, 120, 0.5, "notice"
    )
    assert series["state"] == "rejected" and "slice thickness 5.0 mm exceeds 3.0 mm" in series["reasons"]


def test_series_with_empty_uids_is_refused_without_a_crash(
    ct_dir: Path, default_server: LungcdsProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCMTK's storescu will not even propose these files (no SOP Class UID in the data set),
    so a pynetdicom SCU streams them as they are, under the SOP class of their file meta."""
    files = _files(ct_dir / "abdomen-jpeg2000-3mm")
    storescu_run = storescu(default_server.dicom_port, files)
    assert storescu_run.returncode != 0 and "No presentation context" in storescu_run.stderr

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="LAXPACS")
    ae.add_requested_context(CTImageStorage, JPEG2000Lossless)
    assoc = ae.associate("127.0.0.1", default_server.dicom_port, ae_title="LUNGCDS")
    assert assoc.is_established
    try:
        responses = [assoc.send_c_store(path) for path in files]
    finally:
        assoc.release()
    assert [int(r.Status) for r in responses] == [0xA900] * 20
    assert responses[0].ErrorComment == "SOP Class UID (0008,0016) is empty"
    spooled = [p for p in (default_server.data_dir / "spool").rglob("*") if p.is_file()]
    assert spooled == [], "nothing of the refused series is kept"
    with default_server.api as client:
        assert client.get("/series").json()["total"] == 0
    echo = subprocess.run(
        ["/usr/bin/echoscu", "-aec", "LUNGCDS", "127.0.0.1", str(default_server.dicom_port)],
        check=False,
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert echo.returncode == 0, "the SCP still answers after refusing the series"
    assert default_server.process.poll() is None
    assert "SOP Class UID (0008,0016) is empty" in default_server.log_tail(50000)
