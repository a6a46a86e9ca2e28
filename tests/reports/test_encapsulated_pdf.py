"""Encapsulated PDF Storage: mandatory attributes, byte-exact round trip, dciodvfy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from models.findings import Findings
from reports.encapsulated_pdf import PDF_SERIES_DESCRIPTION, build_encapsulated_pdf
from reports.identity import ReportContext
from reports.pdf import PDF_TITLE, build_pdf
from tests.reports.helpers import Validation

DIGEST = "ab" * 32


@pytest.fixture()
def pdf(headers: list[Dataset], findings: Findings, context: ReportContext) -> bytes:
    return build_pdf(findings, headers, context)


@pytest.mark.parametrize("pad", [0, 1])
def test_round_trip_is_byte_exact(
    tmp_path: Path, headers: list[Dataset], context: ReportContext, pdf: bytes, pad: int
) -> None:
    document = pdf + b" " * pad
    path = tmp_path / "report_pdf.dcm"
    build_encapsulated_pdf(document, headers, context, content_digest=DIGEST).save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(path)
    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert ds.EncapsulatedDocumentLength == len(document)
    assert bytes(ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength]) == document
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_mandatory_attributes(tmp_path: Path, headers: list[Dataset], context: ReportContext, pdf: bytes) -> None:
    path = tmp_path / "report_pdf.dcm"
    build_encapsulated_pdf(pdf, headers, context, content_digest=DIGEST).save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(path)
    source = headers[0]
    assert ds.SOPClassUID == EncapsulatedPDFStorage
    assert ds.Modality == "DOC"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.BurnedInAnnotation == "YES"
    assert ds.DocumentTitle == PDF_TITLE
    assert ds.ConceptNameCodeSequence[0].CodeValue == "24627-2"
    assert ds.ConversionType == "WSD"
    assert ds.Manufacturer == context.manufacturer
    assert ds.InstitutionName == "Test Hospital"
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyID",
    ):
        assert str(ds[keyword].value) == str(source[keyword].value), keyword
    assert "ReferencedStudySequence" not in ds
    assert ds.SeriesNumber == context.pdf_series_number
    assert ds.SeriesDescription == PDF_SERIES_DESCRIPTION
    assert ds.SeriesInstanceUID == context.output_uid(DIGEST, "pdf", "series")
    assert ds.SOPInstanceUID == context.output_uid(DIGEST, "pdf", "instance")
    assert {i.ReferencedSOPInstanceUID for i in ds.SourceInstanceSequence} == {h.SOPInstanceUID for h in headers}


def test_rejects_bad_input(
    headers: list[Dataset], context: ReportContext, pdf: bytes, make_headers: Callable[..., list[Dataset]]
) -> None:
    with pytest.raises(ValueError, match="PDF"):
        build_encapsulated_pdf(b"not a pdf", headers, context, content_digest=DIGEST)
    with pytest.raises(ValueError, match="studies"):
        build_encapsulated_pdf(pdf, [*headers, make_headers()[0]], context, content_digest=DIGEST)
    with pytest.raises(ValueError, match="no source headers"):
        build_encapsulated_pdf(pdf, [], context, content_digest=DIGEST)
    with pytest.raises(ValueError, match="content_digest"):
        build_encapsulated_pdf(pdf, headers, context, content_digest="")
    with pytest.raises(ValueError, match="series_description"):
        build_encapsulated_pdf(pdf, headers, context, content_digest=DIGEST, series_description="x" * 65)


def test_dciodvfy_accepts_encapsulated_pdf(
    tmp_path: Path,
    headers: list[Dataset],
    context: ReportContext,
    pdf: bytes,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    path = tmp_path / "report_pdf.dcm"
    build_encapsulated_pdf(pdf, headers, context, content_digest=DIGEST).save_as(path, enforce_file_format=True)
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)
