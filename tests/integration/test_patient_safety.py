"""Wrong-patient reports, attacked the way a faulty modality would (issue 14, item 1), with the real
DCMTK storescu as the sender, our server as a process and Orthanc as the PACS.

* Two patients (or two studies) under one Series Instance UID: stored, never analysed, rejected with
  every disagreement named, audited and visible over REST; nothing reaches the PACS.
* The same SOP Instance UID again with other content, or inside another series: refused with
  0xC111 (cannot understand: the UID is in use), audited with both identities, no unindexed file left on disk.
* A normal series: SR, SEG and encapsulated PDF in the PACS agree with each other and with the
  source images on every patient and study attribute.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.peers import LungcdsProcess, OrthancPeer, start_lungcds, storescu, wait_for
from tests.reports.helpers import IDENTITY_KEYWORDS

pytestmark = pytest.mark.integration

SOURCE = "lung-dx-a0001-chest-5mm-s2"


@pytest.fixture
def server(tmp_path: Path, orthanc: OrthancPeer) -> Any:
    process = start_lungcds(
        tmp_path / "lungcds",
        extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5", "LUNGCDS_DESTINATIONS": orthanc.destination},
    )
    yield process
    process.stop()


def _source(ct_dir: Path) -> list[Path]:
    return sorted(p for p in (ct_dir / SOURCE).iterdir() if p.is_file())


def _rewrite(files: list[Path], folder: Path, *, tag: str, each: Any = None) -> list[Path]:
    """Copies of ``files`` in ``folder`` with new SOP Instance UIDs (from ``tag``); ``each(k, ds)`` edits copy k."""
    folder.mkdir(parents=True)
    written = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[tag, str(k)])
        if each is not None:
            each(k, ds)
        target = folder / f"{k:03d}.dcm"
        ds.save_as(target)
        written.append(target)
    return written


def _audit(server: LungcdsProcess, action: str | None = None, **params: str) -> list[dict[str, Any]]:
    with server.api as client:
        response = client.get("/audit", params={"limit": "1000", **params})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return [e for e in items if action is None or e["action"] == action]


def _settled(server: LungcdsProcess, uid: str) -> dict[str, Any] | None:
    series = server.series(uid)
    return series if series and series["state"] not in ("receiving", "finalizing") else None


def test_two_patients_in_one_series_are_rejected_and_never_reported(
    ct_dir: Path, tmp_path: Path, orthanc: OrthancPeer, server: LungcdsProcess
) -> None:
    files = _source(ct_dir)[17:47]  # 30 contiguous 5 mm slices: 150 mm, enough coverage to be eligible
    series_uid, study_uid = generate_uid(), generate_uid()

    def mix(k: int, ds: pydicom.Dataset) -> None:
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
        ds.PatientID, ds.PatientName = ("PAT-A", "Alpha^Anna") if k < 15 else ("PAT-B", "Beta^Bert")

    mixed = _rewrite(files, tmp_path / "mixed", tag="mixed", each=mix)
    assert storescu(server.dicom_port, mixed).returncode == 0, "every instance is stored: nothing acknowledged is lost"

    series = wait_for(lambda: _settled(server, series_uid), 120, 0.5, "the mixed series finalised")
    assert series["state"] == "rejected", series
    assert series["instance_count"] == 30
    assert "2 patients in one series: PAT-A (15 slices), PAT-B (15 slices)" in series["reasons"]
    assert "2 patient names in one series: Alpha^Anna (15 slices), Beta^Bert (15 slices)" in series["reasons"]
    assert series["identity_conflicts"], "recorded as the instances arrived"
    assert series.get("job") is None, "never queued"
    conflicts = _audit(server, action="identity-check")
    assert {e["outcome"] for e in conflicts} == {"conflict", "rejected"}
    assert all(e["target"] == series_uid for e in conflicts)

    time.sleep(3)  # anything we were going to send would be on its way by now
    assert int(orthanc.http.get("/statistics").json()["CountInstances"]) == 0


def test_two_studies_under_one_series_uid_are_rejected(ct_dir: Path, tmp_path: Path, server: LungcdsProcess) -> None:
    files = _source(ct_dir)[17:47]
    series_uid, studies = generate_uid(), (generate_uid(), generate_uid())

    def split(k: int, ds: pydicom.Dataset) -> None:
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, studies[k % 2]

    assert storescu(server.dicom_port, _rewrite(files, tmp_path / "split", tag="split", each=split)).returncode == 0
    series = wait_for(lambda: _settled(server, series_uid), 120, 0.5, "the split series finalised")
    assert series["state"] == "rejected"
    assert any(r.startswith("2 studies in one series: ") for r in series["reasons"]), series["reasons"]


def _status_lines(completed: Any) -> str:
    return str(completed.stdout) + str(completed.stderr)


def test_a_reused_sop_instance_uid_is_refused_audited_and_leaves_no_file(
    ct_dir: Path, tmp_path: Path, server: LungcdsProcess
) -> None:
    original = _rewrite(_source(ct_dir)[:1], tmp_path / "original", tag="reused")
    assert storescu(server.dicom_port, original).returncode == 0
    stored = pydicom.dcmread(original[0], stop_before_pixels=True)
    sop_uid = str(stored.SOPInstanceUID)
    assert storescu(server.dicom_port, original).returncode == 0, "the same content again is a harmless re-send"

    def other_patient(_k: int, ds: pydicom.Dataset) -> None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.PatientID, ds.PatientName = "PAT-Z", "Zeta^Zoe"

    def other_series(_k: int, ds: pydicom.Dataset) -> None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["other series"])

    for name, edit in (("patient", other_patient), ("series", other_series)):
        copy = _rewrite(_source(ct_dir)[:1], tmp_path / name, tag=name, each=edit)
        sent = storescu(server.dicom_port, copy, extra=("-v",))
        assert sent.returncode != 0 and "CannotUnderstand" in _status_lines(sent), _status_lines(sent)

    refusals = [e for e in _audit(server, outcome="refused") if e["detail"].get("sop_instance_uid") == sop_uid]
    assert len(refusals) == 2
    for event in refusals:
        assert event["detail"]["status"] == "0xC111"
        assert event["detail"]["stored"]["patient_id"] == str(stored.PatientID)
    received = {e["detail"]["received"]["patient_id"] for e in refusals}
    assert received == {"PAT-Z", str(stored.PatientID)}

    files = sorted(p for p in (server.data_dir / "spool").rglob("*") if p.is_file())
    assert [p.name for p in files] == [f"{sop_uid}.dcm"], "one file, the first one, indexed"
    assert pydicom.dcmread(files[0], stop_before_pixels=True).PatientID == stored.PatientID


def test_every_report_object_carries_the_identity_of_its_source_images(
    ct_dir: Path, tmp_path: Path, orthanc: OrthancPeer, server: LungcdsProcess
) -> None:
    files = _source(ct_dir)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    series_uid = str(source.SeriesInstanceUID)
    assert storescu(server.dicom_port, files).returncode == 0

    series = wait_for(lambda: server.delivered(series_uid), 600, 1.0, "the reports in the PACS")
    deliveries = series["job"]["deliveries"]
    assert sorted(d["kind"] for d in deliveries) == ["kos", "pdf", "sc", "seg", "sr"]
    expected = {tag: str(source.get(tag, "") or "") for tag in IDENTITY_KEYWORDS}
    for delivery in deliveries:
        found = [r for r in orthanc.lookup(delivery["sop_instance_uid"]) if r["Type"] == "Instance"]
        assert len(found) == 1
        report = pydicom.dcmread(__import__("io").BytesIO(orthanc.instance_file(found[0]["ID"])))
        carried = {tag: str(report.get(tag, "") or "") for tag in IDENTITY_KEYWORDS}
        assert carried == expected, delivery["kind"]
