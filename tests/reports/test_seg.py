"""SEG: segments, slice-to-source mapping, empty masks, multi-frame sources, dciodvfy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import EnhancedCTImageStorage, generate_uid

from models.findings import Findings, ModelRun, Volume
from reports import codes
from reports.identity import ReportContext, analysis_digest
from reports.seg import (
    SEG_SERIES_DESCRIPTION,
    SEG_UNVALIDATED_INSTALLED_SEGMENT,
    SEG_UNVALIDATED_SEGMENT,
    SEG_UNVALIDATED_SERIES_DESCRIPTION,
    build_seg,
    segment_label,
    segment_order,
)
from tests.reports.helpers import SHA_VALID, Validation


def _first(findings: Findings, headers: list[Dataset]) -> Dataset:
    """The header of the volume's first slice (where every object takes patient and study data from)."""
    return next(h for h in headers if h.SOPInstanceUID == findings.volume.source_sop_instance_uids[0])


def _build(findings: Findings, headers: list[Dataset], context: ReportContext) -> hd.seg.Segmentation:
    seg = build_seg(findings, headers, context)
    assert seg is not None
    return seg


def _frames_by_source(seg: Dataset) -> dict[tuple[str, int], np.ndarray]:
    """Decoded frames keyed by (referenced source SOP Instance UID, segment number)."""
    pixels = seg.pixel_array.reshape((int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)))
    out = {}
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        key = (str(source.ReferencedSOPInstanceUID), number)
        if "ReferencedFrameNumber" in source:
            key = (f"{source.ReferencedSOPInstanceUID}#{int(source.ReferencedFrameNumber)}", number)
        out[key] = pixels[index].astype(bool)
    return out


def test_segments_codes_and_frames_follow_volume_order(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    path = tmp_path / "seg.dcm"
    _build(findings, headers, context).save_as(path, enforce_file_format=True)
    seg = pydicom.dcmread(path)
    labels = [item.TrackingID for item in seg.SegmentSequence]
    # "lungs" is the union of the two lungs, which partition it: not painted twice.
    assert labels == ["lung_left", "lung_right", "LUL", "LLL", "RUL", "RLL", "lesions"]
    assert [item.SegmentLabel for item in seg.SegmentSequence] == [
        "Left lung",
        "Right lung",
        "Left upper lobe",
        "Left lower lobe",
        "Right upper lobe",
        "Right lower lobe",
        "Lesion",
    ]
    assert seg.SegmentationType == "BINARY"
    for item in seg.SegmentSequence:
        category = item.SegmentedPropertyCategoryCodeSequence[0].CodeValue
        prop = item.SegmentedPropertyTypeCodeSequence[0].CodeValue
        if item.TrackingID == "lesions":
            assert (category, prop) == (codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value, codes.LESION.value)
        else:
            assert (category, prop) == (codes.ANATOMICAL_STRUCTURE.value, codes.REGION_CODES[item.TrackingID].value)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        run = findings.models[findings.mask_sources[item.TrackingID]]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (run.name, run.version)
        family = algorithm.AlgorithmFamilyCodeSequence[0].CodeValue
        if run.provenance != "weight_free":
            assert family == codes.ARTIFICIAL_INTELLIGENCE.value
            assert algorithm.AlgorithmParameters == f"provenance=installed_validated,weights_sha256={SHA_VALID}"
        else:
            assert family == codes.MORPHOLOGICAL_OPERATIONS.value
            assert algorithm.AlgorithmParameters == "provenance=weight_free"
        assert item.SegmentLabel == segment_label(item.TrackingID)
        assert "SegmentDescription" not in item
    assert seg.SeriesDescription == SEG_SERIES_DESCRIPTION
    frames = _frames_by_source(seg)
    uids = findings.volume.source_sop_instance_uids
    assert len(frames) == int(seg.NumberOfFrames)
    expected = 0
    for number, name in enumerate(labels, start=1):
        mask = findings.masks[name]
        for k, uid in enumerate(uids):
            if mask[k].any():
                expected += 1
                assert np.array_equal(frames[(uid, number)], mask[k]), (name, k)
            else:
                assert (uid, number) not in frames
    assert expected == int(seg.NumberOfFrames)
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(uids)
    assert "ReferencedStudySequence" not in seg
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.SeriesNumber == context.seg_series_number
    assert seg.SOPInstanceUID == context.output_uid(
        analysis_digest(findings, _first(findings, headers)), "seg", "instance"
    )


def test_lesion_types_and_unvalidated_segments(
    tmp_path: Path, headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    findings = make_findings(headers, unvalidated=True)
    lesions = findings.masks["lesions"]
    core = np.zeros_like(lesions)
    core[2] = lesions[2]
    masks = {**findings.masks, "ggo": lesions & ~core, "consolidation": core}
    typed = dataclasses.replace(
        findings, masks=masks, mask_sources={**findings.mask_sources, "ggo": "lesions", "consolidation": "lesions"}
    )
    path = tmp_path / "seg.dcm"
    _build(typed, headers, context).save_as(path, enforce_file_format=True)
    seg = pydicom.dcmread(path)
    items = {str(item.TrackingID): item for item in seg.SegmentSequence}
    # Ground glass and consolidation partition the lesions: the union is not a segment of its own.
    assert list(items)[-2:] == ["ggo", "consolidation"] and "lesions" not in items
    assert [items[n].SegmentLabel for n in ("ggo", "consolidation")] == ["Ground-glass opacity", "Consolidation"]
    assert items["ggo"].SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.GROUND_GLASS_OPACITY.value
    assert items["consolidation"].SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.CONSOLIDATION.value
    assert items["ggo"].RecommendedDisplayCIELabValue != items["consolidation"].RecommendedDisplayCIELabValue
    for name in ("LUL", "ggo", "consolidation"):
        assert items[name].SegmentDescription == SEG_UNVALIDATED_SEGMENT
        algorithm = items[name].SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmParameters == "provenance=generated_weights"
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == codes.ARTIFICIAL_INTELLIGENCE.value
    assert "SegmentDescription" not in items["lung_left"]
    assert seg.SeriesDescription == SEG_UNVALIDATED_SERIES_DESCRIPTION


def test_installed_weights_without_validation_are_not_called_generated(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    installed = ModelRun("lobes", "ran", "site file", "2.0", "installed_unvalidated", SHA_VALID, "installed from x")
    seg = _build(dataclasses.replace(findings, models={**findings.models, "lobes": installed}), headers, context)
    items = {str(item.TrackingID): item for item in seg.SegmentSequence}
    assert items["LUL"].SegmentDescription == SEG_UNVALIDATED_INSTALLED_SEGMENT
    assert "generated" not in items["LUL"].SegmentDescription
    algorithm = items["LUL"].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmParameters == f"provenance=installed_unvalidated,weights_sha256={SHA_VALID}"
    assert "SegmentDescription" not in items["lesions"], "validated weights carry no UNVALIDATED"
    assert seg.SeriesDescription == SEG_UNVALIDATED_SERIES_DESCRIPTION


def test_a_mask_without_a_source_has_no_provenance_and_is_refused(findings: Findings) -> None:
    with pytest.raises(ValueError, match="'lesions' has no mask source that ran"):
        dataclasses.replace(findings, mask_sources={k: v for k, v in findings.mask_sources.items() if k != "lesions"})


def test_empty_masks_are_left_out_and_all_empty_gives_none(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    assert "RML" in findings.masks and "RML" not in segment_order(findings)
    empty = dataclasses.replace(findings, masks={name: np.zeros_like(m) for name, m in findings.masks.items()})
    assert build_seg(empty, headers, context) is None
    maskless = dataclasses.replace(findings, masks={}, mask_sources={}, measurements={})
    assert build_seg(maskless, headers, context) is None


def test_rejects_mismatching_images(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    wrong = [h.copy() for h in headers]
    for h in wrong:
        h.Columns = 65
    with pytest.raises(ValueError, match="source images"):
        build_seg(findings, wrong, context)
    with pytest.raises(ValueError, match="no source header"):
        build_seg(findings, headers[:-1], context)


def _enhanced_ct(headers: list[Dataset], order: list[int]) -> Dataset:
    """One Enhanced CT header whose frame f holds the slice ``order[f - 1]`` of ``headers``."""
    by_z = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    first = by_z[0]
    ds = Dataset()
    for keyword in (
        "SpecificCharacterSet",
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
        "SeriesInstanceUID",
        "SeriesNumber",
        "FrameOfReferenceUID",
        "Rows",
        "Columns",
        "Modality",
        "Manufacturer",
        "PositionReferenceIndicator",
    ):
        setattr(ds, keyword, first.get(keyword))
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(order)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in order:
        position = Dataset()
        position.ImagePositionPatient = by_z[k].ImagePositionPatient
        frame = Dataset()
        frame.PlanePositionSequence = [position]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    return ds


def test_multi_frame_source_maps_frame_numbers(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    nz = findings.volume.geometry.shape[0]
    order = list(range(nz))[::-1]
    enhanced = _enhanced_ct(headers, order)
    volume = Volume(
        hu=findings.volume.hu,
        geometry=findings.volume.geometry,
        source_sop_instance_uids=(str(enhanced.SOPInstanceUID),) * nz,
        source_frame_numbers=tuple(order.index(k) + 1 for k in range(nz)),
    )
    multi = dataclasses.replace(findings, volume=volume)
    path = tmp_path / "seg.dcm"
    _build(multi, [enhanced], context).save_as(path, enforce_file_format=True)
    seg = hd.seg.segread(path)
    numbers = volume.source_frame_numbers
    assert numbers is not None
    frames = _frames_by_source(seg)
    left = multi.masks["lung_left"]  # segment 1 (the union "lungs" is not a segment)
    for k in range(nz):
        key = (f"{enhanced.SOPInstanceUID}#{numbers[k]}", 1)
        if left[k].any():
            assert np.array_equal(frames[key], left[k]), k
    bad = dataclasses.replace(multi, volume=dataclasses.replace(volume, source_frame_numbers=(1,) * nz))
    with pytest.raises(ValueError, match="frame numbers"):
        build_seg(bad, [enhanced], context)


def test_dciodvfy_accepts_seg(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    path = tmp_path / "seg.dcm"
    _build(make_findings(headers, unvalidated=True), headers, context).save_as(path, enforce_file_format=True)
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)
