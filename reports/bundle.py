"""All report objects of one analysis, and how they are written to disk.

File names are a contract with ``lungcds analyze`` and the DICOM outbox: :data:`SR_FILE`,
:data:`SEG_FILE` (only when there is a segmentation), :data:`PDF_FILE` and
:data:`PDF_DICOM_FILE`.  DICOM files are Part 10 files (PS3.10 7.1: preamble, "DICM", File
Meta Information) in Explicit VR Little Endian.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from models.findings import Findings
from reports.encapsulated_pdf import (
    PDF_SERIES_DESCRIPTION,
    PDF_UNVALIDATED_SERIES_DESCRIPTION,
    build_encapsulated_pdf,
)
from reports.identity import ReportContext, banner_text
from reports.pdf import build_not_analysable_pdf, build_pdf
from reports.seg import build_seg
from reports.sr import NOT_ANALYSABLE_SERIES_DESCRIPTION, NOT_ANALYSABLE_VARIANT, build_not_analysable_sr, build_sr

__all__ = [
    "PDF_DICOM_FILE",
    "PDF_FILE",
    "SEG_FILE",
    "SR_FILE",
    "ReportSet",
    "build_not_analysable",
    "build_reports",
]

SR_FILE = "sr.dcm"
SEG_FILE = "seg.dcm"
PDF_FILE = "report.pdf"
PDF_DICOM_FILE = "report_pdf.dcm"


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``, so a
    reader (e.g. the DICOM outbox) never sees a partial file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_dicom(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a Part 10 file in Explicit VR Little Endian."""
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        raise ValueError(f"{path.name}: expected Explicit VR Little Endian, got {meta.get('TransferSyntaxUID')}")
    ds.file_meta = meta
    _atomic_write(path, lambda target: ds.save_as(target, enforce_file_format=True))


@dataclass(frozen=True)
class ReportSet:
    """The report objects of one analysis.

    Attributes
    ----------
    sr : pydicom.Dataset
        Comprehensive 3D SR with the TID 1500 Measurement Report.
    seg : pydicom.Dataset or None
        Segmentation of the masks; None when no mask has any voxel, and for a series that
        could not be analysed (:func:`build_not_analysable`).
    pdf : bytes
        The PDF report.
    pdf_dicom : pydicom.Dataset
        The PDF as Encapsulated PDF Storage.
    """

    sr: Dataset
    seg: Dataset | None
    pdf: bytes
    pdf_dicom: Dataset

    def _write_pdf(self, path: Path) -> None:
        path.write_bytes(self.pdf)

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the objects into ``out_dir`` (created if needed) under the contract file names.

        A ``seg.dcm`` left by an earlier run is removed when this set has no segmentation, so
        the directory never mixes objects of two runs.

        Returns
        -------
        dict of str to pathlib.Path
            Written paths keyed by file name.
        """
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        written = {}
        _write_dicom(self.sr, directory / SR_FILE)
        written[SR_FILE] = directory / SR_FILE
        if self.seg is not None:
            _write_dicom(self.seg, directory / SEG_FILE)
            written[SEG_FILE] = directory / SEG_FILE
        else:
            (directory / SEG_FILE).unlink(missing_ok=True)
        _atomic_write(directory / PDF_FILE, self._write_pdf)
        written[PDF_FILE] = directory / PDF_FILE
        _write_dicom(self.pdf_dicom, directory / PDF_DICOM_FILE)
        written[PDF_DICOM_FILE] = directory / PDF_DICOM_FILE
        return written


def build_reports(
    findings: Findings,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    eligibility_reasons: Sequence[str] = (),
) -> ReportSet:
    """Build SEG, SR (referencing the SEG's segments), PDF and encapsulated PDF.

    Parameters
    ----------
    findings : Findings
        The analysis to report.
    source_headers : sequence of pydicom.Dataset
        Headers of the analysed CT series (Pixel Data not needed).
    context : ReportContext
        Device identity and output numbering.
    eligibility_reasons : sequence of str
        Notes of the eligibility check, shown in the PDF.

    Returns
    -------
    ReportSet
        All objects, with deterministic UIDs in new series of the source study.
    """
    seg = build_seg(findings, source_headers, context)
    sr = build_sr(findings, source_headers, context, seg=seg)
    pdf = build_pdf(findings, source_headers, context, eligibility_reasons)
    pdf_dicom = build_encapsulated_pdf(
        pdf,
        source_headers,
        context,
        pipeline_version=findings.pipeline_version,
        series_description=PDF_UNVALIDATED_SERIES_DESCRIPTION if banner_text(findings) else PDF_SERIES_DESCRIPTION,
    )
    return ReportSet(sr=sr, seg=seg, pdf=pdf, pdf_dicom=pdf_dicom)


def build_not_analysable(
    source_headers: Sequence[Dataset],
    context: ReportContext,
    reasons: Sequence[str],
    pipeline_version: str,
) -> ReportSet:
    """Report a series that was routed for analysis but could not be analysed.

    For a series that passed routing yet yields no analysis (too few slices, lungs not
    covered, unreadable pixels, ...), the radiologist in PACS must see that the scan was seen
    and why no numbers follow.  This builds an SR (TID 1500 with the coded statement "Series
    not analysable" and each reason as text, every source instance as evidence), a one-page
    PDF and its Encapsulated PDF; there is no SEG.

    Parameters
    ----------
    source_headers : sequence of pydicom.Dataset
        Headers of the series (Pixel Data not needed).
    context : ReportContext
        Device identity and output numbering.
    reasons : sequence of str
        Why the series could not be analysed, in words (at least one, none blank).
    pipeline_version : str
        Pipeline version of the job.  With the source Series Instance UID it fixes the UIDs:
        the objects go into the SR and PDF series that :func:`build_reports` uses for the same
        series and version, with SOP Instance UIDs of their own (one UID, one content).

    Returns
    -------
    ReportSet
        With ``seg`` None (``ReportSet.write`` then removes a stale ``seg.dcm``).

    Raises
    ------
    TypeError, ValueError
        When the headers are not one series of one study, ``reasons`` is empty or holds a
        blank or non-string item, or ``pipeline_version`` is empty.
    """
    sr = build_not_analysable_sr(source_headers, context, reasons, pipeline_version)
    pdf = build_not_analysable_pdf(source_headers, context, reasons, pipeline_version)
    pdf_dicom = build_encapsulated_pdf(
        pdf,
        source_headers,
        context,
        pipeline_version=pipeline_version,
        series_description=NOT_ANALYSABLE_SERIES_DESCRIPTION,
        instance_variant=NOT_ANALYSABLE_VARIANT,
    )
    return ReportSet(sr=sr, seg=None, pdf=pdf, pdf_dicom=pdf_dicom)
