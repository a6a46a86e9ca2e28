"""build_reports + ReportSet.write: file contract, Part 10 encoding, re-runs, character sets, real series."""

from __future__ import annotations

import dataclasses
import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from reports.bundle import PDF_DICOM_FILE, PDF_FILE, SEG_FILE, SR_FILE, build_reports

DICOM_FILES = (SR_FILE, SEG_FILE, PDF_DICOM_FILE)


def test_writes_exactly_the_contract_files(tmp_path, headers, findings, context) -> None:
    reports = build_reports(findings, headers, context, ["eligible"])
    written = reports.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([SR_FILE, SEG_FILE, PDF_FILE, PDF_DICOM_FILE])
    assert set(written) == {SR_FILE, SEG_FILE, PDF_FILE, PDF_DICOM_FILE}
    for name in DICOM_FILES:
        raw = (tmp_path / "out" / name).read_bytes()
        assert raw[128:132] == b"DICM", name
        ds = pydicom.dcmread(tmp_path / "out" / name)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == headers[0].StudyInstanceUID
    assert (tmp_path / "out" / PDF_FILE).read_bytes() == reports.pdf
    pdf_dicom = pydicom.dcmread(tmp_path / "out" / PDF_DICOM_FILE)
    assert bytes(pdf_dicom.EncapsulatedDocument[: pdf_dicom.EncapsulatedDocumentLength]) == reports.pdf
    series = {pydicom.dcmread(tmp_path / "out" / name).SeriesInstanceUID for name in DICOM_FILES}
    assert len(series) == 3 and headers[0].SeriesInstanceUID not in series


def test_rerun_replaces_and_drops_stale_seg(tmp_path, headers, findings, context) -> None:
    first = build_reports(findings, headers, context)
    first.write(tmp_path)
    uids = {name: pydicom.dcmread(tmp_path / name).SOPInstanceUID for name in DICOM_FILES}
    second = build_reports(findings, list(reversed(headers)), context)
    second.write(tmp_path)
    assert {name: pydicom.dcmread(tmp_path / name).SOPInstanceUID for name in DICOM_FILES} == uids
    maskless = dataclasses.replace(findings, masks={})
    third = build_reports(maskless, headers, context)
    assert third.seg is None
    third.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SR_FILE, PDF_FILE, PDF_DICOM_FILE])
    assert pydicom.dcmread(tmp_path / SR_FILE).SOPInstanceUID == uids[SR_FILE]


@pytest.mark.parametrize(
    ("name", "charset"),
    [
        ("Παπαδόπουλος^Γιώργος", "ISO_IR 192"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "ISO_IR 192"),
        ("Müller^Jürgen", "ISO_IR 100"),
    ],
)
def test_non_ascii_patient_names(tmp_path, make_headers, make_findings, context, dciodvfy, name, charset) -> None:
    headers = make_headers(patient_name=name, charset=charset)
    reports = build_reports(make_findings(headers, outputs=True, unvalidated=True), headers, context)
    reports.write(tmp_path)
    for file_name in DICOM_FILES:
        ds = pydicom.dcmread(tmp_path / file_name)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == name, file_name
        result = dciodvfy(tmp_path / file_name)
        assert not result.errors, "\n".join(result.errors)
    assert (tmp_path / PDF_FILE).read_bytes().startswith(b"%PDF-")


def test_real_series_bundle(tmp_path, real_series, context, dciodvfy) -> None:
    start = time.perf_counter()
    reports = build_reports(real_series.findings, real_series.headers, context)
    elapsed = time.perf_counter() - start
    written = reports.write(tmp_path)
    sizes = {name: path.stat().st_size for name, path in written.items()}
    print(f"\nreal series: built in {elapsed:.2f} s; sizes {sizes}")
    assert elapsed < 60
    for name in DICOM_FILES:
        result = dciodvfy(tmp_path / name)
        print(f"dciodvfy {name}: {len(result.warnings)} warning(s)", *sorted(set(result.warnings)), sep="\n  ")
        assert not result.errors, "\n".join(result.errors)
    seg = pydicom.dcmread(tmp_path / SEG_FILE)
    assert 0 < int(seg.NumberOfFrames) <= 3 * len(real_series.headers)
