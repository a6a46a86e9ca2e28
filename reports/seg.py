"""DICOM Segmentation (PS3.3 A.51) of the lung, lobe and lesion masks of one analysis.

One BINARY segment per non-empty mask of ``Findings.masks``, in the order left and right lung,
the five lobes, then the lesion masks (``ggo``, ``consolidation``, or ``lesions`` when the lesions
are not typed).  A mask that is the union of others (``lungs`` of the two lungs, ``lesions`` of
ground glass and consolidation) is not a segment when its parts are and partition it exactly:
a viewer would paint it twice over them.  Segments still overlap where different models made
them (the lobes lie in the lung masks, lesions in the lobes), so LABELMAP does not apply.  Per
segment (Segment Description macro, PS3.3 C.8.20.2):

* Segment Label = the region's words as a viewer's segment list shows them ("Left lung", "Right
  upper lobe", "Ground-glass opacity"; :data:`reports.keyimages.LEGEND_LABELS`), Tracking ID =
  the region name of ``result.json`` (``lung_left``) and Tracking UID shared with the SR
  measurement group of that region;
* Segmented Property Category/Type (CID 7150/7151): Anatomical Structure with the SNOMED CT
  lung, left/right lung or lobe; Morphologically Abnormal Structure with Lesion, or the
  private ground-glass opacity / consolidation concepts;
* Segment Algorithm Type AUTOMATIC with the Segmentation Algorithm Identification of the model
  that produced the mask (``Findings.mask_sources``: name, version, family -- Artificial
  Intelligence unless its provenance is weight-free -- and, as parameters, its provenance and,
  for installed weights, their SHA-256);
* Segment Description "UNVALIDATED: ..." when that model's provenance is unvalidated
  (generated weights, or installed weights without a validation statement), and then the
  Series Description says UNVALIDATED too, so the PACS series list shows it;
* Recommended Display CIELab Value from the colours of the PDF legend.

Frames reference their source CT image through the Derivation Image Sequence (highdicom),
slice ``k`` of the mask being ``Volume.source_sop_instance_uids[k]``; frames without any voxel
of their segment are omitted (``omit_empty_frames``), so a segment costs one frame per slice it
touches.

Size: a BINARY frame is packed 1 bit per pixel, 32 KiB for 512x512.  Uncompressed Explicit VR
Little Endian is kept because every PACS and viewer reads it; highdicom 0.28 can encode BINARY
only as JPEG 2000 Lossless besides the native syntaxes, and Deflated Explicit VR Little Endian
is not accepted by every peer (dciodvfy cannot read it).  Measured on the 64-slice, 512x512 shared
series (``lungcds analyze``, no weights): 3.5 MB for the left and right lung (106 frames), 5.3 MB
when the union ``lungs`` was a segment too; earlier, 11.4 MB with the five lobes and three lesion
masks as well (343 of 704 possible frames).  JPEG 2000 Lossless made the three lung segments
about 0.35 MB when measured earlier; it is not used yet because not every PACS accepts it and
the SCU sends each object in its own transfer syntax.

highdicom 0.28 needs only the metadata of the source images (no Pixel Data), so headers read
with ``stop_before_pixels=True`` are accepted as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import highdicom as hd
import numpy as np
from highdicom.color import CIELabColor
from pydicom import Dataset

from models.findings import LESION_NAMES, REGION_NAMES, Findings
from reports import codes
from reports.identity import (
    OUTPUT_CHARACTER_SET,
    ReportContext,
    analysis_digest,
    evidence_headers,
    identity_source,
    index_source_headers,
    validate_findings,
)
from reports.keyimages import LEGEND_COLOURS, LEGEND_LABELS, legend_key

__all__ = [
    "SEG_CONTENT_LABEL",
    "SEG_SERIES_DESCRIPTION",
    "SEG_UNVALIDATED_INSTALLED_SEGMENT",
    "SEG_UNVALIDATED_SEGMENT",
    "SEG_UNVALIDATED_SERIES_DESCRIPTION",
    "UNION_PARTS",
    "build_seg",
    "segment_caveat",
    "segment_label",
    "segment_order",
]

#: Series Description (0008,103E) of the SEG series.
SEG_SERIES_DESCRIPTION = "lungcds lung masks (decision support)"
#: Series Description when any segment comes from unvalidated weights.
SEG_UNVALIDATED_SERIES_DESCRIPTION = "lungcds masks UNVALIDATED - not for clinical use"
#: Segment Description (0062,0006) of a segment made with generated (demo) weights.
SEG_UNVALIDATED_SEGMENT = "UNVALIDATED: generated weights, not for clinical use"
#: Segment Description of a segment made with installed weights without a validation statement.
SEG_UNVALIDATED_INSTALLED_SEGMENT = "UNVALIDATED: weights without validation statement"
_SEGMENT_CAVEATS = {
    "generated_weights": SEG_UNVALIDATED_SEGMENT,
    "installed_unvalidated": SEG_UNVALIDATED_INSTALLED_SEGMENT,
}
#: Content Label (0070,0080), Content Identification Macro (PS3.3 C.10.9).
SEG_CONTENT_LABEL = "LUNGCDS"


#: Masks that are, by construction, the union of others: as a segment beside those they would be
#: painted twice over them in a viewer, so they are left out when their parts are segments and
#: exactly partition them (the SR measures them without a segment reference).
UNION_PARTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"lungs": ("lung_left", "lung_right"), "lesions": ("ggo", "consolidation")}
)


def segment_label(name: str) -> str:
    """Segment Label (0062,0005): the words a viewer's segment list shows ("Left lung", "Consolidation")."""
    return LEGEND_LABELS.get(legend_key(name), name)


def _partitioned(findings: Findings, name: str, present: Sequence[str]) -> bool:
    """True when the parts of union ``name`` are segments, do not overlap, and make up exactly its mask."""
    parts = [part for part in UNION_PARTS.get(name, ()) if part in present]
    if len(parts) < 2:
        return False
    masks = [findings.masks[part] for part in parts]
    union = np.logical_or.reduce(masks)
    disjoint = int(sum(int(m.sum()) for m in masks)) == int(union.sum())
    return disjoint and bool(np.array_equal(union, findings.masks[name]))


def segment_order(findings: Findings) -> list[str]:
    """Names of the masks that become segments, in segment-number order.

    Regions come in ``REGION_NAMES`` order, then lesion masks in ``LESION_NAMES`` order; empty
    masks are left out because a segment without any frame cannot be referenced, and so is a
    union whose parts are segments (:data:`UNION_PARTS`).
    """
    names = [name for name in REGION_NAMES + LESION_NAMES if name in findings.masks and findings.masks[name].any()]
    return [name for name in names if not _partitioned(findings, name, names)]


def _algorithm(name: str, findings: Findings, context: ReportContext) -> hd.AlgorithmIdentificationSequence:
    """Segmentation Algorithm Identification (PS3.3 C.8.20.2) of mask ``name``.

    From the run of ``Findings.mask_sources[name]``: its name and version; family Morphological
    Operations for a weight-free method, else Artificial Intelligence; its provenance and, for
    installed weights, their SHA-256 as parameters.
    """
    run = findings.mask_run(name)
    assert run is not None and run.provenance is not None  # Findings requires a source that ran
    parameters = {"provenance": str(run.provenance)}
    if run.weights_sha256 is not None:
        parameters["weights_sha256"] = run.weights_sha256
    learned = run.provenance != "weight_free"
    return hd.AlgorithmIdentificationSequence(
        name=run.name,
        family=codes.ARTIFICIAL_INTELLIGENCE if learned else codes.MORPHOLOGICAL_OPERATIONS,
        version=run.version,
        source=context.manufacturer,
        parameters=parameters,
    )


def segment_caveat(findings: Findings, name: str) -> str | None:
    """Segment Description (0062,0006) owed by a mask of unvalidated provenance, or None."""
    run = findings.mask_run(name)
    return _SEGMENT_CAVEATS.get(run.provenance or "") if run is not None else None


def _description(
    number: int, name: str, findings: Findings, context: ReportContext, series_uid: str
) -> hd.seg.SegmentDescription:
    if name in REGION_NAMES:
        category, prop = codes.ANATOMICAL_STRUCTURE, codes.REGION_CODES[name]
    else:
        category, prop = codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.LESION_CODES[name]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment_label(name),
        segmented_property_category=category,
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(name, findings, context),
        tracking_uid=context.tracking_uid(series_uid, findings.pipeline_version, name),
        tracking_id=name,
        display_color=CIELabColor.from_rgb(*LEGEND_COLOURS[legend_key(name)]),
    )
    caveat = segment_caveat(findings, name)
    if caveat is not None:
        description.SegmentDescription = caveat
    return description


def _pixel_array(findings: Findings, names: list[str], number_of_frames: int | None) -> np.ndarray:
    """Stacked-segments array ``[frame, row, column, segment]`` in source-frame order.

    For single-frame sources (``number_of_frames`` None) the frames are the slices of the
    volume; for one multi-frame source (Enhanced CT) frame ``f`` holds slice ``k`` with
    ``source_frame_numbers[k] == f``.
    """
    stacked = np.stack([findings.masks[name] for name in names], axis=-1)
    frame_numbers = findings.volume.source_frame_numbers
    if number_of_frames is None or frame_numbers is None:
        return stacked
    frames = np.zeros((number_of_frames,) + stacked.shape[1:], dtype=bool)
    for k, frame_number in enumerate(frame_numbers):
        frames[frame_number - 1] = stacked[k]
    return frames


def _source_images(findings: Findings, by_uid: dict[str, Dataset]) -> tuple[list[Dataset], int | None]:
    """Source images in frame order, and the number of frames of a multi-frame source.

    Single-frame series give one header per slice in volume order (``None`` frames); an
    Enhanced CT volume gives its one multi-frame header and its Number of Frames.
    """
    volume = findings.volume
    uids = volume.source_sop_instance_uids
    numbers = volume.source_frame_numbers
    if numbers is None:
        if len(set(uids)) != len(uids):
            raise ValueError("a single-frame series must have one source instance per slice")
        return [by_uid[uid] for uid in uids], None
    if len(set(uids)) != 1:
        raise ValueError("a volume with frame numbers must come from exactly one multi-frame instance")
    source = by_uid[uids[0]]
    if "NumberOfFrames" not in source:
        raise ValueError("source frame numbers given but the source instance is not multi-frame")
    count = int(source.NumberOfFrames)
    if len(numbers) != len(uids) or len(set(numbers)) != len(numbers) or not all(1 <= n <= count for n in numbers):
        raise ValueError(f"source frame numbers must be distinct, one per slice, within 1-{count}")
    return [source], count


def build_seg(
    findings: Findings, source_headers: Sequence[Dataset], context: ReportContext
) -> hd.seg.Segmentation | None:
    """Build the Segmentation of ``findings.masks``, or None when no mask has any voxel.

    Parameters
    ----------
    findings : Findings
        The analysis; masks are ``[z, y, x]`` on ``findings.volume.geometry``.
    source_headers : sequence of pydicom.Dataset
        Headers of the analysed CT series, in any order, Pixel Data not needed.
    context : ReportContext
        Device identity and output numbering.

    Returns
    -------
    highdicom.seg.Segmentation or None
        A new series of the source study with Series and SOP Instance UIDs derived from
        :func:`reports.identity.analysis_digest`; patient and study data come from the first
        slice of the volume (:func:`reports.identity.identity_source`).

    Raises
    ------
    ValueError
        When headers and volume disagree (see :func:`reports.identity.index_source_headers`),
        the mask size differs from the source Rows/Columns, or the frame numbers of a
        multi-frame source are inconsistent.

    Notes
    -----
    highdicom takes the masks as one stacked array, so memory peaks near
    slices x rows x columns x segments bytes (about 0.6 GB for 300 slices of 512x512 with
    8 segments).
    """
    validate_findings(findings)
    by_uid = index_source_headers(findings, source_headers)
    names = segment_order(findings)
    if not names:
        return None
    _, rows, columns = findings.volume.geometry.shape
    sources, number_of_frames = _source_images(findings, by_uid)
    for ds in sources:
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise ValueError(f"masks are {rows}x{columns} but source images are {ds.Rows}x{ds.Columns}")

    series_uid = str(sources[0].SeriesInstanceUID)
    digest = analysis_digest(findings, identity_source(findings, by_uid))
    descriptions = [
        _description(number, name, findings, context, series_uid) for number, name in enumerate(names, start=1)
    ]
    return hd.seg.Segmentation(
        source_images=evidence_headers(sources),
        pixel_array=_pixel_array(findings, names, number_of_frames),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=context.output_uid(digest, "seg", "series"),
        series_number=context.seg_series_number,
        sop_instance_uid=context.output_uid(digest, "seg", "instance"),
        instance_number=1,
        manufacturer=context.manufacturer,
        manufacturer_model_name=context.manufacturer_model_name,
        software_versions=context.software_version,
        device_serial_number=context.device_serial_number,
        content_description="Lung, lobe and lesion masks for decision support",
        content_label=SEG_CONTENT_LABEL,
        omit_empty_frames=True,
        series_description=(
            SEG_UNVALIDATED_SERIES_DESCRIPTION
            if any(segment_caveat(findings, name) for name in names)
            else SEG_SERIES_DESCRIPTION
        ),
        institution_name=context.institution_name,
        specific_character_set=OUTPUT_CHARACTER_SET,
    )
