"""build_reports / build_not_analysable + ReportSet.write: file contract, Part 10, re-runs, character sets."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from models.findings import Findings
from reports.bundle import (
    KOS_FILE,
    PDF_DICOM_FILE,
    PDF_FILE,
    SC_FILE,
    SEG_FILE,
    SEG_LESIONS_FILE,
    SEG_LOBES_FILE,
    SR_FILE,
    build_not_analysable,
    build_reports,
)
from reports.encapsulated_pdf import PDF_SERIES_DESCRIPTION, PDF_UNVALIDATED_SERIES_DESCRIPTION
from reports.identity import ReportContext
from reports.key_image_sc import NOT_ANALYSED_SC_SERIES_DESCRIPTION
from reports.sr import NOT_ANALYSABLE_SERIES_DESCRIPTION
from tests.reports.helpers import IDENTITY_KEYWORDS, Validation, pdf_page_text

SEG_FILES = (SEG_FILE, SEG_LOBES_FILE, SEG_LESIONS_FILE)
DICOM_FILES = (SR_FILE, *SEG_FILES, PDF_DICOM_FILE, SC_FILE, KOS_FILE)


def test_writes_exactly_the_contract_files(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    reports = build_reports(findings, headers, context, ["eligible"])
    written = reports.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*DICOM_FILES, PDF_FILE])
    assert set(written) == {*DICOM_FILES, PDF_FILE}
    for name in DICOM_FILES:
        raw = (tmp_path / "out" / name).read_bytes()
        assert raw[128:132] == b"DICM", name
        ds = pydicom.dcmread(tmp_path / "out" / name)
        assert ds.file_meta.TransferSyntaxUID == (JPEG2000Lossless if name in SEG_FILES else ExplicitVRLittleEndian)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == headers[0].StudyInstanceUID
    assert (tmp_path / "out" / PDF_FILE).read_bytes() == reports.pdf
    pdf_dicom = pydicom.dcmread(tmp_path / "out" / PDF_DICOM_FILE)
    assert bytes(pdf_dicom.EncapsulatedDocument[: pdf_dicom.EncapsulatedDocumentLength]) == reports.pdf
    assert pdf_dicom.SeriesDescription == PDF_SERIES_DESCRIPTION
    series = {name: pydicom.dcmread(tmp_path / "out" / name).SeriesInstanceUID for name in DICOM_FILES}
    assert len(set(series.values())) == len(DICOM_FILES) - 2 and headers[0].SeriesInstanceUID not in series.values()
    assert len({series[name] for name in SEG_FILES}) == 1, "the SEGs are one series"
    objects = [(o.key, o.kind, o.file) for o in reports.dicom_objects()]
    assert objects == [
        ("sr", "sr", SR_FILE),
        ("seg", "seg", SEG_FILE),
        ("seg_lobes", "seg", SEG_LOBES_FILE),
        ("seg_lesions", "seg", SEG_LESIONS_FILE),
        ("pdf", "pdf", PDF_DICOM_FILE),
        ("sc", "sc", SC_FILE),
        ("kos", "kos", KOS_FILE),
    ]


def test_only_the_segs_are_written_compressed(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    reports = build_reports(findings, headers, context)
    sr = copy.copy(reports.sr)
    sr.file_meta = copy.deepcopy(reports.sr.file_meta)
    sr.file_meta.TransferSyntaxUID = JPEG2000Lossless
    with pytest.raises(ValueError, match=f"sr.dcm: expected transfer syntax {ExplicitVRLittleEndian}"):
        dataclasses.replace(reports, sr=sr).write(tmp_path / "sr")
    seg = copy.copy(reports.segs["lobes"])
    seg.file_meta = copy.deepcopy(seg.file_meta)
    seg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(ValueError, match=f"seg_lobes.dcm: expected transfer syntax {JPEG2000Lossless}"):
        dataclasses.replace(reports, segs={**reports.segs, "lobes": seg}).write(tmp_path / "seg")


def test_same_job_same_uids_new_version_new_uids(
    headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    first = build_reports(findings, headers, context)
    second = build_reports(findings, list(reversed(headers)), context)
    newer = build_reports(dataclasses.replace(findings, pipeline_version="0.2.0"), headers, context)
    assert list(first.segs) == list(second.segs) == list(newer.segs) == ["lungs", "lobes", "lesions"]
    objects = [(first.sr, second.sr, newer.sr)]
    objects += [(first.segs[layer], second.segs[layer], newer.segs[layer]) for layer in first.segs]
    objects.append((first.pdf_dicom, second.pdf_dicom, newer.pdf_dicom))
    objects.append((first.sc, second.sc, newer.sc))
    assert first.kos is not None and second.kos is not None and newer.kos is not None
    objects.append((first.kos, second.kos, newer.kos))
    for a, b, c in objects:
        assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
        assert a.SeriesInstanceUID != c.SeriesInstanceUID and a.SOPInstanceUID != c.SOPInstanceUID
    assert first.pdf_dicom.SeriesDescription == PDF_UNVALIDATED_SERIES_DESCRIPTION


def test_rerun_replaces_and_drops_stale_segs(
    tmp_path: Path,
    headers: list[Dataset],
    findings: Findings,
    make_findings: Callable[..., Findings],
    context: ReportContext,
) -> None:
    first = build_reports(findings, headers, context)
    first.write(tmp_path)
    uids = {name: pydicom.dcmread(tmp_path / name).SOPInstanceUID for name in DICOM_FILES}
    second = build_reports(findings, list(reversed(headers)), context)
    second.write(tmp_path)
    assert {name: pydicom.dcmread(tmp_path / name).SOPInstanceUID for name in DICOM_FILES} == uids
    lungs_only = build_reports(make_findings(headers, lobes=False, lesion=False), headers, context)
    assert list(lungs_only.segs) == ["lungs"]
    lungs_only.write(tmp_path)
    assert not (tmp_path / SEG_LOBES_FILE).exists() and not (tmp_path / SEG_LESIONS_FILE).exists()
    assert pydicom.dcmread(tmp_path / SEG_FILE).SOPInstanceUID == lungs_only.segs["lungs"].SOPInstanceUID
    maskless = dataclasses.replace(findings, masks={}, mask_sources={}, measurements={})
    third = build_reports(maskless, headers, context)
    assert third.segs == {}
    third.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SR_FILE, PDF_FILE, PDF_DICOM_FILE, SC_FILE, KOS_FILE])


def test_not_analysable_set_has_uids_of_its_own(
    tmp_path: Path,
    headers: list[Dataset],
    findings: Findings,
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    """Its own UIDs, series and instances (one UID, one content), the same on a repeat; a later
    successful analysis replaces it (its SR names this one as predecessor, see test_sr)."""
    analysed = build_reports(findings, headers, context)
    analysed.write(tmp_path)
    reasons = ["only 10 slices; at least 40 are needed"]
    first = build_not_analysable(headers, context, reasons, "0.1.0")
    again = build_not_analysable(list(reversed(headers)), context, reasons, "0.1.0")
    other_version = build_not_analysable(headers, context, reasons, "0.2.0")
    assert first.segs == {} and first.kos is None
    written = first.write(tmp_path)
    assert sorted(written) == sorted([SR_FILE, PDF_FILE, PDF_DICOM_FILE, SC_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SR_FILE, PDF_FILE, PDF_DICOM_FILE, SC_FILE])
    for kind in ("sr", "pdf_dicom", "sc"):
        ours, repeat, newer, success = (getattr(s, kind) for s in (first, again, other_version, analysed))
        assert (ours.SeriesInstanceUID, ours.SOPInstanceUID) == (repeat.SeriesInstanceUID, repeat.SOPInstanceUID)
        assert ours.SeriesInstanceUID != success.SeriesInstanceUID
        assert ours.SOPInstanceUID != success.SOPInstanceUID
        assert ours.SOPInstanceUID != newer.SOPInstanceUID
        assert ours.SeriesDescription == (
            NOT_ANALYSED_SC_SERIES_DESCRIPTION if kind == "sc" else NOT_ANALYSABLE_SERIES_DESCRIPTION
        )
    for name in (SR_FILE, PDF_DICOM_FILE, SC_FILE):
        result = dciodvfy(tmp_path / name)
        assert not result.errors, "\n".join(result.errors)
    with pytest.raises(ValueError, match="at least one"):
        build_not_analysable(headers, context, [], "0.1.0")


@pytest.mark.parametrize(
    ("name", "charset"),
    [
        ("Παπαδόπουλος^Γιώργος", "ISO_IR 192"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "ISO_IR 192"),
        ("Müller^Jürgen", "ISO_IR 100"),
    ],
)
def test_non_ascii_patient_names(
    tmp_path: Path,
    make_headers: Callable[..., list[Dataset]],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
    name: str,
    charset: str,
) -> None:
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


def _identity(ds: Dataset) -> dict[str, str]:
    return {keyword: str(ds.get(keyword, "")) for keyword in IDENTITY_KEYWORDS}


def test_every_object_carries_the_identity_of_its_source(
    tmp_path: Path,
    make_headers: Callable[..., list[Dataset]],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
) -> None:
    """Issue 14 section 1: SR, SEG, PDF and encapsulated PDF agree with each other and with the source."""
    headers = make_headers()
    for ds in headers:
        ds.IssuerOfPatientID = "HOSPITAL-A"
    findings = make_findings(headers, outputs=True, unvalidated=True)
    expected = _identity(headers[0])
    assert all(_identity(ds) == expected for ds in headers)
    build_reports(findings, list(reversed(headers)), context).write(tmp_path)
    for name in DICOM_FILES:
        assert _identity(pydicom.dcmread(tmp_path / name)) == expected, name
    text = " ".join(pdf_page_text(tmp_path / PDF_FILE, 1).split())
    shown = [
        "Patient name Doe, Jane",
        "Patient ID SYN-0001 (issuer HOSPITAL-A)",
        "Birth date 1960-01-02",
        "Sex F",
        "Referring physician House, Gregory",
        "Study date 2024-03-05 10:15:00",
        "Accession number ACC123",
        "Study ID S1",
        "Study description CT chest",
        f"Study Instance UID {expected['StudyInstanceUID']}",
    ]
    for words in shown:
        assert words in text, words


def test_every_object_takes_its_identity_from_the_same_header(
    tmp_path: Path,
    make_headers: Callable[..., list[Dataset]],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
) -> None:
    """Slices that differ in a study attribute not worth a refusal still give one identity to all four objects."""
    headers = make_headers()
    findings = make_findings(headers)
    first_slice = findings.volume.source_sop_instance_uids[0]
    for ds in headers:
        ds.AccessionNumber = "ACC-FIRST" if ds.SOPInstanceUID == first_slice else "ACC-OTHER"
    for order in (headers, list(reversed(headers))):
        build_reports(findings, order, context).write(tmp_path)
        for name in DICOM_FILES:
            assert pydicom.dcmread(tmp_path / name).AccessionNumber == "ACC-FIRST", name
        assert "Accession number ACC-FIRST" in " ".join(pdf_page_text(tmp_path / PDF_FILE, 1).split())


def test_reports_of_two_patients_are_refused(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    """A series with slices of two patients gets no report object at all (defence in depth)."""
    mixed = [copy.deepcopy(ds) for ds in headers]
    for ds in mixed[: len(mixed) // 2]:
        ds.PatientID, ds.PatientName = "PAT-B", "Other^Patient"
    message = r"^2 patients in one series: PAT-B \(5 slices\), SYN-0001 \(5 slices\); 2 patient names"
    with pytest.raises(ValueError, match=message):
        build_reports(findings, mixed, context)
    with pytest.raises(ValueError, match=message):
        build_not_analysable(mixed, context, ["too few slices"], "0.1.0")
