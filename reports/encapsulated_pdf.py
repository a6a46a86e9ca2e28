"""Encapsulated PDF Storage (PS3.3 A.45.1) of the lungcds PDF report, built with pydicom.

highdicom 0.28 has no class for this IOD.  The object carries the mandatory modules of
Table A.45.1-1: Patient (C.7.1.1), General Study (C.7.2.1), Encapsulated Document Series
(C.24.1, Modality DOC), General Equipment (C.7.5.1), SC Equipment (C.8.6.1), Encapsulated
Document (C.24.2) and SOP Common (C.12.1); plus Patient Study (C.7.2.2, user optional).  It
belongs to the source study, in its own series with UIDs derived from the digest of what the
report depends on (:mod:`reports.identity`, house rule 7).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, EncapsulatedPDFStorage, ExplicitVRLittleEndian

from reports import codes
from reports.identity import (
    OUTPUT_CHARACTER_SET,
    ReportContext,
    check_source_series,
    copy_patient_study,
    sop_reference,
)
from reports.pdf import PDF_TITLE

__all__ = ["PDF_SERIES_DESCRIPTION", "PDF_UNVALIDATED_SERIES_DESCRIPTION", "build_encapsulated_pdf"]

#: Series Description (0008,103E) of the encapsulated-PDF series.
PDF_SERIES_DESCRIPTION = "lungcds report PDF (decision support)"
#: Series Description of the encapsulated PDF of a report with unvalidated outputs.
PDF_UNVALIDATED_SERIES_DESCRIPTION = "lungcds report PDF UNVALIDATED - not for clinical use"


def _code_item(code_value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = code_value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_encapsulated_pdf(
    pdf: bytes,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    *,
    content_digest: str,
    series_description: str = PDF_SERIES_DESCRIPTION,
) -> Dataset:
    """Wrap ``pdf`` in an Encapsulated PDF Storage object of the source study.

    Parameters
    ----------
    pdf : bytes
        The PDF document (must start with ``%PDF-``).
    source_headers : sequence of pydicom.Dataset
        Headers of the analysed CT series: patient and study data come from the first (give
        the :func:`reports.identity.identity_source` of the analysis first, as
        :func:`reports.bundle.build_reports` does, so that it agrees with the SR and SEG), and
        every instance is listed in the Source Instance Sequence (0042,0013), since the key
        images and measurements derive from them.
    context : ReportContext
        Device identity and output numbering.
    content_digest : str
        :func:`reports.identity.analysis_digest` (or ``not_analysable_digest``) of the report
        (keyword-only): it determines the Series and SOP Instance UIDs, so a re-run of the same
        analysis replaces the earlier object and a changed one gets new UIDs.
    series_description : str
        Series Description (0008,103E), at most 64 characters (keyword-only).

    Returns
    -------
    pydicom.Dataset
        The object, with File Meta Information for Explicit VR Little Endian.  Encapsulated
        Document (0042,0011) is padded to even length with one NUL byte when needed; Encapsulated
        Document Length (0042,0015) gives the unpadded length.

    Raises
    ------
    ValueError
        When ``pdf`` is not a PDF, the headers are not one series of one patient and study, the
        content digest is empty or the series description is not a valid LO value.
    """
    if not isinstance(pdf, bytes) or not pdf.startswith(b"%PDF-"):
        raise ValueError("pdf must be the bytes of a PDF document")
    if not content_digest:
        raise ValueError("content_digest must not be empty")
    if not series_description.strip() or len(series_description) > 64 or "\\" in series_description:
        raise ValueError(f"series_description must be 1-64 characters without backslash, got {series_description!r}")
    check_source_series(source_headers)
    source = source_headers[0]
    now = datetime.datetime.now()

    ds = Dataset()
    ds.SpecificCharacterSet = OUTPUT_CHARACTER_SET
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = context.output_uid(content_digest, "pdf", "instance")
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    copy_patient_study(source, ds)

    ds.Modality = "DOC"
    ds.SeriesInstanceUID = context.output_uid(content_digest, "pdf", "series")
    ds.SeriesNumber = context.pdf_series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime

    ds.Manufacturer = context.manufacturer
    if context.institution_name is not None:
        ds.InstitutionName = context.institution_name
    ds.StationName = context.station_name
    ds.ManufacturerModelName = context.manufacturer_model_name
    ds.DeviceSerialNumber = context.device_serial_number
    ds.SoftwareVersions = context.software_version

    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = context.manufacturer
    ds.SecondaryCaptureDeviceManufacturerModelName = context.manufacturer_model_name
    ds.SecondaryCaptureDeviceSoftwareVersions = context.software_version

    ds.InstanceNumber = 1
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "NO"
    ds.DocumentTitle = PDF_TITLE
    ds.ConceptNameCodeSequence = [
        _code_item(codes.CT_CHEST_REPORT.value, codes.CT_CHEST_REPORT.scheme_designator, codes.CT_CHEST_REPORT.meaning)
    ]
    ds.VerificationFlag = "UNVERIFIED"
    ds.SourceInstanceSequence = [sop_reference(header) for header in source_headers]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
