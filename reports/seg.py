"""DICOM Segmentations (PS3.3 A.51) of the lung, lobe and lesion masks of one analysis.

Layers
------
The masks come from different models (the lung mask, the lobe network, the lesion network), so a
lobe lies in a lung and a lesion in a lobe: in one Segmentation a viewer would paint those voxels
twice.  Each *layer* of :data:`SEG_LAYERS` is therefore its own Segmentation instance, and the
segments of one instance never share a voxel:

* ``lungs``: the left and right lung, or ``lungs`` alone when neither side has a mask;
* ``lobes``: the five lobes;
* ``lesions``: ground-glass opacity and consolidation, or ``lesions`` when the lesions are not
  typed.

A union (``lungs``, ``lesions``) is not a segment when its parts are: the pipeline makes it as
their union (``models.qct.measurements``, ``models.segmentation.lesions``) and the SR measures it
without a segment reference.  The learned models choose one class per voxel (argmax), so the
masks of one layer do not overlap; should two still claim a voxel (masks from another source),
the later mask in layer order keeps it -- consolidation over ground glass, the more severe
finding -- so that every instance stays non-overlapping.  result.json and the SR measure the
masks as they are.

All instances are one series (Series Instance UID and Number, Series Description shared; PS3.3
C.7.3.1) with Instance Number 1, 2, 3 in layer order.  Each has its own SOP Instance UID derived
from the analysis (:meth:`reports.identity.ReportContext.output_uid`; the lungs layer keeps the
UID the single SEG had before the layers) and its own Content Label (``LUNGCDS_LOBES``; PS3.3
C.10.9).  A layer without any voxel has no instance.

Segments
--------
One BINARY segment per mask, numbered from 1 in each instance (Segment Description macro, PS3.3
C.8.20.2):

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
  Series Description of every instance says UNVALIDATED too, so the PACS series list shows it;
* Recommended Display CIELab Value from the colours of the PDF legend.

Frames reference their source CT image through the Derivation Image Sequence (highdicom),
slice ``k`` of the mask being ``Volume.source_sop_instance_uids[k]``; frames without any voxel
of their segment are omitted (``omit_empty_frames``), so a segment costs one frame per slice it
touches.

Transfer syntax
---------------
JPEG 2000 Image Compression (Lossless Only), :data:`SEG_TRANSFER_SYNTAX` (PS3.5 A.4.4), one
fragment per frame.  It is the only compressed syntax highdicom 0.28 encodes for BINARY
segmentations; highdicom, pydicom (pylibjpeg-openjpeg), DCMTK-based Orthanc, dcmjs and
``dciodvfy`` read it.  Deflated Explicit VR Little Endian would be smaller still, but
``dciodvfy`` cannot read it.  A peer that does not accept JPEG 2000 gets the SEG decoded to
Explicit VR Little Endian with the same SOP Instance UID (:mod:`dicom_node.scu`).  Measured on
the 64-slice, 512x512 shared series: with hand-made lungs, lobes and typed lesions
(``tests/reports/test_real_series.py``) one uncompressed SEG of 9 segments and 269 frames was
8,959,144 bytes, the three layers now take 204,064 + 205,934 + 32,932 = 442,930 bytes (20x
smaller; about 40 % of that is headers and per-frame functional groups); ``lungcds analyze``
without weights (the two lungs, 127 frames) went from 3,540,208 to 136,408 bytes.

The encoder (pylibjpeg-openjpeg 2.6's ``encode_array``, which highdicom calls for each frame) is
not thread-safe: two threads encoding at once crash the process with a segmentation fault within
seconds (two threads encoding 512x512 binary frames in a loop: dead after 1-9 s, three runs; one
thread: 16,539 frames without fault), and the embedded worker analyses two series at once in
threads.  Building a SEG holds :data:`_ENCODER_LOCK`, so frames are encoded one instance at a time
per process.  Decoding the same codestreams in two threads was not affected (900 frames).

highdicom 0.28 needs only the metadata of the source images (no Pixel Data), so headers read
with ``stop_before_pixels=True`` are accepted as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import highdicom as hd
import numpy as np
from highdicom.color import CIELabColor
from pydicom import Dataset
from pydicom.uid import JPEG2000Lossless

from models.findings import LOBE_NAMES, REGION_NAMES, Findings
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
    "SEG_LAYERS",
    "SEG_SERIES_DESCRIPTION",
    "SEG_TRANSFER_SYNTAX",
    "SEG_UNVALIDATED_INSTALLED_SEGMENT",
    "SEG_UNVALIDATED_SEGMENT",
    "SEG_UNVALIDATED_SERIES_DESCRIPTION",
    "SegLayer",
    "build_segs",
    "layer_segments",
    "segment_caveat",
    "segment_label",
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
#: Content Label (0070,0080) prefix, Content Identification Macro (PS3.3 C.10.9); each instance
#: appends its layer ("LUNGCDS_LOBES").
SEG_CONTENT_LABEL = "LUNGCDS"
#: Transfer Syntax of every SEG (see the module docstring).
SEG_TRANSFER_SYNTAX = JPEG2000Lossless
#: Held while a SEG is built: its JPEG 2000 encoder must not run in two threads at once.
_ENCODER_LOCK = threading.Lock()

SegLayer = Literal["lungs", "lobes", "lesions"]

#: The SEG instances in Instance Number order, each with its choices of masks: the first choice
#: with any voxel makes the layer's segments, in this order (a union only without its parts).
SEG_LAYERS: Mapping[SegLayer, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        "lungs": (("lung_left", "lung_right"), ("lungs",)),
        "lobes": (LOBE_NAMES,),
        "lesions": (("ggo", "consolidation"), ("lesions",)),
    }
)
_CONTENT_DESCRIPTIONS: Mapping[SegLayer, str] = MappingProxyType(
    {
        "lungs": "Lung masks for decision support",
        "lobes": "Lobe masks for decision support",
        "lesions": "Lesion masks for decision support",
    }
)


def segment_label(name: str) -> str:
    """Segment Label (0062,0005): the words a viewer's segment list shows ("Left lung", "Consolidation")."""
    return LEGEND_LABELS.get(legend_key(name), name)


def _layer_stack(findings: Findings, layer: SegLayer) -> tuple[tuple[str, ...], np.ndarray]:
    """The segments of ``layer``: their names in segment-number order, and their masks made
    mutually exclusive, stacked ``[z, y, x, segment]`` (the array highdicom takes).

    The first choice of :data:`SEG_LAYERS` with any voxel is taken.  A voxel that several of its
    masks claim stays only in the last of them (consolidation over ground glass); a mask left
    without any voxel is no segment, because a segment without a frame cannot be referenced.
    The masks are written into the stack directly, so a layer costs one copy of its masks.
    """
    shape = findings.volume.geometry.shape
    names: list[str] = []
    for choice in SEG_LAYERS[layer]:
        names = [name for name in choice if name in findings.masks and findings.masks[name].any()]
        if names:
            break
    stacked = np.zeros((*shape, len(names)), dtype=bool)
    claimed = np.zeros(shape, dtype=bool)
    for index in reversed(range(len(names))):
        mask = findings.masks[names[index]]
        np.logical_and(mask, ~claimed, out=stacked[..., index])
        claimed |= mask
    kept = [index for index in range(len(names)) if stacked[..., index].any()]
    if len(kept) < len(names):
        stacked = stacked[..., kept]
    return tuple(names[index] for index in kept), stacked


def layer_segments(findings: Findings) -> dict[SegLayer, tuple[str, ...]]:
    """Names of the masks that become segments, by layer in instance order; layers without any left out."""
    layers = {layer: _layer_stack(findings, layer)[0] for layer in SEG_LAYERS}
    return {layer: names for layer, names in layers.items() if names}


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


def _pixel_array(findings: Findings, stacked: np.ndarray, number_of_frames: int | None) -> np.ndarray:
    """Stacked-segments array ``[frame, row, column, segment]`` in source-frame order.

    For single-frame sources (``number_of_frames`` None) the frames are the slices of the
    volume; for one multi-frame source (Enhanced CT) frame ``f`` holds slice ``k`` with
    ``source_frame_numbers[k] == f``.
    """
    frame_numbers = findings.volume.source_frame_numbers
    if number_of_frames is None or frame_numbers is None:
        return stacked
    frames = np.zeros((number_of_frames,) + stacked.shape[1:], dtype=bool)
    for k, frame_number in enumerate(frame_numbers):
        frames[frame_number - 1] = stacked[k]
    return frames


def _check_size(findings: Findings, source: Dataset) -> None:
    """Raise ValueError unless the source image has the rows and columns of the masks."""
    _, rows, columns = findings.volume.geometry.shape
    if (int(source.Rows), int(source.Columns)) != (rows, columns):
        raise ValueError(f"masks are {rows}x{columns} but source images are {source.Rows}x{source.Columns}")


def _source_images(findings: Findings, by_uid: dict[str, Dataset]) -> tuple[list[Dataset], int | None]:
    """Source images in frame order, and the number of frames of a multi-frame source.

    Single-frame series give one header per slice in volume order (``None`` frames); an
    Enhanced CT volume gives its one multi-frame header and its Number of Frames.  Each must
    have the size of the masks.
    """
    volume = findings.volume
    uids = volume.source_sop_instance_uids
    numbers = volume.source_frame_numbers
    if numbers is None:
        if len(set(uids)) != len(uids):
            raise ValueError("a single-frame series must have one source instance per slice")
        for uid in uids:
            _check_size(findings, by_uid[uid])
        return [by_uid[uid] for uid in uids], None
    if len(set(uids)) != 1:
        raise ValueError("a volume with frame numbers must come from exactly one multi-frame instance")
    source = by_uid[uids[0]]
    _check_size(findings, source)
    if "NumberOfFrames" not in source:
        raise ValueError("source frame numbers given but the source instance is not multi-frame")
    count = int(source.NumberOfFrames)
    if len(numbers) != len(uids) or len(set(numbers)) != len(numbers) or not all(1 <= n <= count for n in numbers):
        raise ValueError(f"source frame numbers must be distinct, one per slice, within 1-{count}")
    return [source], count


def build_segs(
    findings: Findings, source_headers: Sequence[Dataset], context: ReportContext
) -> dict[SegLayer, hd.seg.Segmentation]:
    """Build one Segmentation per layer of :data:`SEG_LAYERS` that has any voxel.

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
    dict of str to highdicom.seg.Segmentation
        By layer, in Instance Number order; empty when no mask has any voxel.  The instances
        are one new series of the source study with Series and SOP Instance UIDs derived from
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
    highdicom takes the masks of one layer as one stacked array, built one layer at a time, so
    memory peaks near slices x rows x columns x (segments + 2) bytes (about 0.6 GB for the five
    lobes of 300 slices of 512x512).
    """
    validate_findings(findings)
    by_uid = index_source_headers(findings, source_headers)
    layers = layer_segments(findings)
    if not layers:
        return {}
    sources, number_of_frames = _source_images(findings, by_uid)
    series_uid = str(sources[0].SeriesInstanceUID)
    digest = analysis_digest(findings, identity_source(findings, by_uid))
    unvalidated = any(segment_caveat(findings, name) for names in layers.values() for name in names)
    evidence = evidence_headers(sources)  # highdicom only reads them: one copy serves every layer
    segs = {}
    for number, layer in enumerate(layers, start=1):
        names, stacked = _layer_stack(findings, layer)
        descriptions = [
            _description(segment, name, findings, context, series_uid) for segment, name in enumerate(names, start=1)
        ]
        pixel_array = _pixel_array(findings, stacked, number_of_frames)
        with _ENCODER_LOCK:
            segs[layer] = hd.seg.Segmentation(
                source_images=evidence,
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=context.output_uid(digest, "seg", "series"),
                series_number=context.seg_series_number,
                sop_instance_uid=context.output_uid(digest, "seg", "instance", None if layer == "lungs" else layer),
                instance_number=number,
                manufacturer=context.manufacturer,
                manufacturer_model_name=context.manufacturer_model_name,
                software_versions=context.software_version,
                device_serial_number=context.device_serial_number,
                content_description=_CONTENT_DESCRIPTIONS[layer],
                content_label=f"{SEG_CONTENT_LABEL}_{layer.upper()}",
                omit_empty_frames=True,
                series_description=SEG_UNVALIDATED_SERIES_DESCRIPTION if unvalidated else SEG_SERIES_DESCRIPTION,
                institution_name=context.institution_name,
                specific_character_set=OUTPUT_CHARACTER_SET,
                transfer_syntax_uid=SEG_TRANSFER_SYNTAX,
            )
    return segs
