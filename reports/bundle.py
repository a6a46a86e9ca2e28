"""All report objects of one analysis, and how they are written to disk.

File names are a contract with ``lungcds analyze`` and the DICOM outbox: :data:`SR_FILE`,
:data:`SEG_FILE` (the SEG of the lungs layer), :data:`SEG_LOBES_FILE` and :data:`SEG_LESIONS_FILE`
(the lobes and lesions layers; each SEG only when its layer has a voxel, see :mod:`reports.seg`),
:data:`PDF_FILE`, :data:`PDF_DICOM_FILE`, :data:`SC_FILE` (the key-image picture, or the
not-analysed picture) and :data:`KOS_FILE` (only for an analysis).  DICOM files are Part 10 files
(PS3.10 7.1: preamble, "DICM", File Meta Information) in Explicit VR Little Endian, except the
SEGs, which are JPEG 2000 Lossless on purpose (:data:`reports.seg.SEG_TRANSFER_SYNTAX`).

:meth:`ReportSet.dicom_objects` names every DICOM object twice: by its *key* (``seg_lobes``; the
file name without ``.dcm`` for the SEGs, and the key of result.json ``outputs``) and by its *kind*
(``seg``; what a destination's outputs select, :data:`reports.identity.OutputKind`), so that every
SEG instance goes wherever ``seg`` is sent.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage

from models.findings import Findings
from reports.encapsulated_pdf import (
    PDF_SERIES_DESCRIPTION,
    PDF_UNVALIDATED_SERIES_DESCRIPTION,
    build_encapsulated_pdf,
)
from reports.identity import (
    OutputKind,
    ReportContext,
    analysis_digest,
    banner_text,
    check_reasons,
    identity_source,
    index_source_headers,
    not_analysable_digest,
)
from reports.key_image_sc import build_key_image_sc, build_not_analysed_sc, key_image_sources
from reports.key_object_selection import build_key_object_selection
from reports.keyimages import render_key_images
from reports.pdf import build_not_analysable_pdf, build_pdf
from reports.seg import SEG_LAYERS, SEG_TRANSFER_SYNTAX, SegLayer, build_segs
from reports.sr import NOT_ANALYSABLE_SERIES_DESCRIPTION, build_not_analysable_sr, build_sr

__all__ = [
    "KOS_FILE",
    "PDF_DICOM_FILE",
    "PDF_FILE",
    "SC_FILE",
    "SEG_FILE",
    "SEG_FILES",
    "SEG_LESIONS_FILE",
    "SEG_LOBES_FILE",
    "SR_FILE",
    "DicomObject",
    "ReportSet",
    "build_not_analysable",
    "build_reports",
]

SR_FILE = "sr.dcm"
SEG_FILE = "seg.dcm"
SEG_LOBES_FILE = "seg_lobes.dcm"
SEG_LESIONS_FILE = "seg_lesions.dcm"
PDF_FILE = "report.pdf"
PDF_DICOM_FILE = "report_pdf.dcm"
SC_FILE = "key_images_sc.dcm"
KOS_FILE = "key_objects.dcm"
#: File of the SEG of each layer; its key (result.json ``outputs``) is the file name without ``.dcm``.
SEG_FILES: Mapping[SegLayer, str] = MappingProxyType(
    {"lungs": SEG_FILE, "lobes": SEG_LOBES_FILE, "lesions": SEG_LESIONS_FILE}
)
#: Transfer Syntax of every SOP class written compressed; all others are Explicit VR Little Endian.
_COMPRESSED: Mapping[str, str] = MappingProxyType({SegmentationStorage: SEG_TRANSFER_SYNTAX})


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
    """Write ``ds`` as a Part 10 file in the transfer syntax of its SOP class (:data:`_COMPRESSED`).

    The object must already be encoded in it: a builder that changes syntax is caught here, not
    at the PACS.
    """
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    expected = _COMPRESSED.get(str(ds.SOPClassUID), ExplicitVRLittleEndian)
    if meta.get("TransferSyntaxUID") != expected:
        raise ValueError(f"{path.name}: expected transfer syntax {expected}, got {meta.get('TransferSyntaxUID')}")
    ds.file_meta = meta
    _atomic_write(path, lambda target: ds.save_as(target, enforce_file_format=True))


@dataclass(frozen=True)
class DicomObject:
    """One DICOM object of a report set, or the place of one that this set does not have.

    Attributes
    ----------
    key : str
        Its name in result.json ``outputs`` (``"seg_lobes"``).
    kind : {"sr", "seg", "pdf", "sc", "kos"}
        What a destination's outputs select; every SEG instance is ``"seg"``.
    file : str
        Its file name in the output folder.
    dataset : pydicom.Dataset or None
        The object; None when this set has none (its file is then removed).
    """

    key: str
    kind: OutputKind
    file: str
    dataset: Dataset | None


@dataclass(frozen=True)
class ReportSet:
    """The report objects of one analysis.

    Attributes
    ----------
    sr : pydicom.Dataset
        Comprehensive 3D SR with the TID 1500 Measurement Report.
    segs : mapping of str to pydicom.Dataset
        Segmentations by layer (:data:`reports.seg.SEG_LAYERS`), one series in Instance Number
        order; without the layers that have no voxel, and empty for a series that could not be
        analysed (:func:`build_not_analysable`).
    pdf : bytes
        The PDF report.
    pdf_dicom : pydicom.Dataset
        The PDF as Encapsulated PDF Storage.
    sc : pydicom.Dataset
        The key-image Secondary Capture (:mod:`reports.key_image_sc`), or the picture saying
        why a series was not analysed.
    kos : pydicom.Dataset or None
        Key Object Selection flagging the SC and the slices it shows; None when not analysed.
    """

    sr: Dataset
    segs: Mapping[SegLayer, Dataset]
    pdf: bytes
    pdf_dicom: Dataset
    sc: Dataset
    kos: Dataset | None

    def _write_pdf(self, path: Path) -> None:
        path.write_bytes(self.pdf)

    def dicom_objects(self) -> list[DicomObject]:
        """Every DICOM object of the set, with a ``None`` dataset for each file it does not have.

        In delivery order: the SR, the SEGs in Instance Number order, the encapsulated PDF, the
        key-image SC, the KOS.
        """
        segs = [
            DicomObject(SEG_FILES[layer].removesuffix(".dcm"), "seg", SEG_FILES[layer], self.segs.get(layer))
            for layer in SEG_LAYERS
        ]
        return [
            DicomObject("sr", "sr", SR_FILE, self.sr),
            *segs,
            DicomObject("pdf", "pdf", PDF_DICOM_FILE, self.pdf_dicom),
            DicomObject("sc", "sc", SC_FILE, self.sc),
            DicomObject("kos", "kos", KOS_FILE, self.kos),
        ]

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the objects into ``out_dir`` (created if needed) under the contract file names.

        A SEG file (``seg.dcm``, ``seg_lobes.dcm``, ``seg_lesions.dcm``) or ``key_objects.dcm``
        left by an earlier run is removed when this set has none, so the directory never mixes
        objects of two runs.

        Returns
        -------
        dict of str to pathlib.Path
            Written paths keyed by file name.
        """
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        written = {}
        for item in self.dicom_objects():
            path = directory / item.file
            if item.dataset is None:
                path.unlink(missing_ok=True)
                continue
            _write_dicom(item.dataset, path)
            written[item.file] = path
        _atomic_write(directory / PDF_FILE, self._write_pdf)
        written[PDF_FILE] = directory / PDF_FILE
        return written


def build_reports(
    findings: Findings,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    eligibility_reasons: Sequence[str] = (),
    *,
    predecessors: Sequence[Dataset] = (),
) -> ReportSet:
    """Build the SEGs, SR (referencing their segments), PDF, encapsulated PDF, the key-image
    Secondary Capture and the Key Object Selection flagging it.

    Every object takes patient and study data from the same header
    (:func:`reports.identity.identity_source`), and its UIDs from the same digest
    (:func:`reports.identity.analysis_digest`).  The key images are rendered once, for the PDF
    and the SC alike.

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
    predecessors : sequence of pydicom.Dataset
        Earlier SR documents of this series that these objects replace (keyword-only; see
        :func:`reports.sr.build_sr`).

    Returns
    -------
    ReportSet
        All objects, with derived UIDs in new series of the source study.
    """
    by_uid = index_source_headers(findings, source_headers)
    identity = identity_source(findings, by_uid)
    ordered = [identity, *(ds for ds in source_headers if ds is not identity)]
    segs = build_segs(findings, ordered, context)
    sr = build_sr(findings, ordered, context, segs=list(segs.values()), predecessors=predecessors)
    key_images = render_key_images(findings)
    pdf = build_pdf(findings, ordered, context, eligibility_reasons, key_images=key_images)
    banner = banner_text(findings)
    pdf_dicom = build_encapsulated_pdf(
        pdf,
        ordered,
        context,
        content_digest=analysis_digest(findings, identity, eligibility_reasons),
        series_description=PDF_UNVALIDATED_SERIES_DESCRIPTION if banner else PDF_SERIES_DESCRIPTION,
    )
    digest = analysis_digest(findings, identity)
    sources = key_image_sources(findings, key_images, by_uid)
    sc = build_key_image_sc(findings, identity, key_images, sources, context, digest)
    kos = build_key_object_selection(sc, sources, identity, context, digest, banner)
    return ReportSet(sr=sr, segs=segs, pdf=pdf, pdf_dicom=pdf_dicom, sc=sc, kos=kos)


def build_not_analysable(
    source_headers: Sequence[Dataset],
    context: ReportContext,
    reasons: Sequence[str],
    pipeline_version: str,
    *,
    predecessors: Sequence[Dataset] = (),
) -> ReportSet:
    """Report a series that was routed for analysis but could not be analysed.

    For a series that passed routing yet yields no analysis (too few slices, lungs not
    covered, unreadable pixels, ...), the radiologist in PACS must see that the scan was seen
    and why no numbers follow.  This builds an SR (TID 1500 with the coded statement "Series
    not analysable" and each reason as text, every source instance as evidence), a one-page
    PDF and its Encapsulated PDF, and a Secondary Capture picture of the reasons; there are no
    SEGs and no Key Object Selection.

    Parameters
    ----------
    source_headers : sequence of pydicom.Dataset
        Headers of the series (Pixel Data not needed).
    context : ReportContext
        Device identity and output numbering.
    reasons : sequence of str
        Why the series could not be analysed, in words (at least one, none blank).
    pipeline_version : str
        Pipeline version of the job.  With the source instances and the reasons it fixes the
        UIDs (:func:`reports.identity.not_analysable_digest`), which differ from those of any
        analysis (one UID, one content).
    predecessors : sequence of pydicom.Dataset
        Earlier SR documents of this series that these objects replace (keyword-only).

    Returns
    -------
    ReportSet
        With no ``segs`` and ``kos`` None (``ReportSet.write`` then removes stale files of them).

    Raises
    ------
    TypeError, ValueError
        When the headers are not one series of one study, ``reasons`` is empty or holds a
        blank or non-string item, or ``pipeline_version`` is empty.
    """
    sr = build_not_analysable_sr(source_headers, context, reasons, pipeline_version, predecessors=predecessors)
    pdf = build_not_analysable_pdf(source_headers, context, reasons, pipeline_version)
    digest = not_analysable_digest(source_headers, check_reasons(reasons), pipeline_version)
    pdf_dicom = build_encapsulated_pdf(
        pdf, source_headers, context, content_digest=digest, series_description=NOT_ANALYSABLE_SERIES_DESCRIPTION
    )
    sc = build_not_analysed_sc(source_headers[0], check_reasons(reasons), context, digest)
    return ReportSet(sr=sr, segs={}, pdf=pdf, pdf_dicom=pdf_dicom, sc=sc, kos=None)
