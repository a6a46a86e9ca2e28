"""SEG: one instance per layer, segments that never share a voxel, slice-to-source mapping, empty
masks, multi-frame sources, JPEG 2000 Lossless read back by highdicom, dciodvfy."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import EnhancedCTImageStorage, JPEG2000Lossless, generate_uid

from models.findings import Findings, ModelRun, Volume
from reports import codes
from reports.identity import ReportContext, analysis_digest
from reports.seg import (
    SEG_SERIES_DESCRIPTION,
    SEG_UNVALIDATED_INSTALLED_SEGMENT,
    SEG_UNVALIDATED_SEGMENT,
    SEG_UNVALIDATED_SERIES_DESCRIPTION,
    build_segs,
    layer_segments,
    segment_label,
)
from tests.reports.helpers import SHA_VALID, Validation


def _first(findings: Findings, headers: list[Dataset]) -> Dataset:
    """The header of the volume's first slice (where every object takes patient and study data from)."""
    return next(h for h in headers if h.SOPInstanceUID == findings.volume.source_sop_instance_uids[0])


def _written(findings: Findings, headers: list[Dataset], context: ReportContext, folder: Path) -> dict[str, Dataset]:
    """Each layer's SEG, written as a Part 10 file and read back."""
    segs = build_segs(findings, headers, context)
    assert segs
    for layer, seg in segs.items():
        seg.save_as(folder / f"{layer}.dcm", enforce_file_format=True)
    return {layer: pydicom.dcmread(folder / f"{layer}.dcm") for layer in segs}


def _items(segs: dict[str, Dataset]) -> dict[str, Dataset]:
    """Segment Sequence items of every instance, by Tracking ID."""
    return {str(item.TrackingID): item for seg in segs.values() for item in seg.SegmentSequence}


def _frames_by_source(seg: Dataset) -> dict[tuple[str, int], np.ndarray]:
    """Decoded frames keyed by (referenced source SOP Instance UID, segment number).

    With a single segment, its identification is in the shared functional groups, not per frame.
    """
    pixels = seg.pixel_array.reshape((int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)))
    shared = seg.SharedFunctionalGroupsSequence[0]
    out = {}
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        identification = frame if "SegmentIdentificationSequence" in frame else shared
        number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        key = (str(source.ReferencedSOPInstanceUID), number)
        if "ReferencedFrameNumber" in source:
            key = (f"{source.ReferencedSOPInstanceUID}#{int(source.ReferencedFrameNumber)}", number)
        out[key] = pixels[index].astype(bool)
    return out


def _owners(seg: Dataset) -> dict[str, np.ndarray]:
    """How many segments of ``seg`` claim each pixel, per referenced source image."""
    count: dict[str, np.ndarray] = {}
    for (source, _), frame in _frames_by_source(seg).items():
        count[source] = count.get(source, np.zeros(frame.shape, dtype=int)) + frame
    return count


def test_one_instance_per_layer_in_one_series_with_codes_and_frames_in_volume_order(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    segs = _written(findings, headers, context, tmp_path)
    # "lungs" is the union of the two lungs and "RML" is empty: neither is a segment.
    assert {layer: [str(i.TrackingID) for i in seg.SegmentSequence] for layer, seg in segs.items()} == {
        "lungs": ["lung_left", "lung_right"],
        "lobes": ["LUL", "LLL", "RUL", "RLL"],
        "lesions": ["lesions"],
    }
    assert {layer: list(names) for layer, names in layer_segments(findings).items()} == {
        layer: [str(i.TrackingID) for i in seg.SegmentSequence] for layer, seg in segs.items()
    }
    assert [str(i.SegmentLabel) for i in segs["lobes"].SegmentSequence] == [
        "Left upper lobe",
        "Left lower lobe",
        "Right upper lobe",
        "Right lower lobe",
    ]
    digest = analysis_digest(findings, _first(findings, headers))
    assert [int(seg.InstanceNumber) for seg in segs.values()] == [1, 2, 3]
    assert {seg.SeriesInstanceUID for seg in segs.values()} == {context.output_uid(digest, "seg", "series")}
    assert [seg.SOPInstanceUID for seg in segs.values()] == [
        context.output_uid(digest, "seg", "instance"),  # the lungs layer keeps the UID of the single SEG
        context.output_uid(digest, "seg", "instance", "lobes"),
        context.output_uid(digest, "seg", "instance", "lesions"),
    ]
    assert [seg.ContentLabel for seg in segs.values()] == ["LUNGCDS_LUNGS", "LUNGCDS_LOBES", "LUNGCDS_LESIONS"]
    uids = findings.volume.source_sop_instance_uids
    for seg in segs.values():
        assert seg.file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert (seg.SegmentationType, seg.SeriesNumber) == ("BINARY", context.seg_series_number)
        assert seg.SeriesDescription == SEG_SERIES_DESCRIPTION
        assert seg.StudyInstanceUID == headers[0].StudyInstanceUID and "ReferencedStudySequence" not in seg
        referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert referenced == set(uids)
        frames = _frames_by_source(seg)
        names = [str(item.TrackingID) for item in seg.SegmentSequence]
        expected = 0
        for number, name in enumerate(names, start=1):
            for k, uid in enumerate(uids):
                if findings.masks[name][k].any():
                    expected += 1
                    assert np.array_equal(frames[(uid, number)], findings.masks[name][k]), (name, k)
                else:
                    assert (uid, number) not in frames
        assert expected == len(frames) == int(seg.NumberOfFrames)
    for name, item in _items(segs).items():
        category = item.SegmentedPropertyCategoryCodeSequence[0].CodeValue
        prop = item.SegmentedPropertyTypeCodeSequence[0].CodeValue
        if name == "lesions":
            assert (category, prop) == (codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value, codes.LESION.value)
        else:
            assert (category, prop) == (codes.ANATOMICAL_STRUCTURE.value, codes.REGION_CODES[name].value)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        run = findings.models[findings.mask_sources[name]]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (run.name, run.version)
        family = algorithm.AlgorithmFamilyCodeSequence[0].CodeValue
        if run.provenance != "weight_free":
            assert family == codes.ARTIFICIAL_INTELLIGENCE.value
            assert algorithm.AlgorithmParameters == f"provenance=installed_validated,weights_sha256={SHA_VALID}"
        else:
            assert family == codes.MORPHOLOGICAL_OPERATIONS.value
            assert algorithm.AlgorithmParameters == "provenance=weight_free"
        assert item.SegmentLabel == segment_label(name)
        assert "SegmentDescription" not in item


def test_no_voxel_belongs_to_two_segments_of_one_instance(
    tmp_path: Path, headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    """Masks of one layer that overlap (here the lobes, and ground glass with consolidation) are made
    exclusive: the later mask of the layer keeps a shared voxel, consolidation over ground glass."""
    findings = make_findings(headers)
    masks = dict(findings.masks)
    lesions = masks["lesions"]
    masks["ggo"], masks["consolidation"] = lesions.copy(), lesions.copy()
    masks["ggo"][2] = False  # ground glass beyond slice 2 only; consolidation everywhere, over it
    masks["LLL"] = masks["LLL"] | masks["LUL"]  # the left lower lobe claims the whole left lung
    overlapping = dataclasses.replace(
        findings,
        masks=masks,
        mask_sources={**findings.mask_sources, "ggo": "lesions", "consolidation": "lesions"},
    )
    assert (overlapping.masks["ggo"] & overlapping.masks["consolidation"]).any()
    segs = _written(overlapping, headers, context, tmp_path)
    for layer, seg in segs.items():
        assert all(int(count.max()) == 1 for count in _owners(seg).values()), layer
    # the lobes and lungs, and the lesions and lobes, still overlap: in different instances
    assert layer_segments(overlapping) == {
        "lungs": ("lung_left", "lung_right"),
        "lobes": ("LLL", "RUL", "RLL"),  # LUL lost every voxel to LLL: no empty segment
        "lesions": ("consolidation",),  # and ground glass every voxel to consolidation
    }
    uids = findings.volume.source_sop_instance_uids
    lobes = _frames_by_source(segs["lobes"])
    for k, uid in enumerate(uids):
        if masks["LLL"][k].any():
            assert np.array_equal(lobes[(uid, 1)], masks["LLL"][k]), k


def test_unions_are_segments_when_their_parts_are_not(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    untyped = dataclasses.replace(
        findings,
        masks={k: v for k, v in findings.masks.items() if k not in ("lung_left", "lung_right")},
        mask_sources={k: v for k, v in findings.mask_sources.items() if k not in ("lung_left", "lung_right")},
        measurements={k: v for k, v in findings.measurements.items() if k not in ("lung_left", "lung_right")},
    )
    segs = _written(untyped, headers, context, tmp_path)
    assert [str(i.TrackingID) for i in segs["lungs"].SegmentSequence] == ["lungs"]
    assert [str(i.SegmentLabel) for i in segs["lungs"].SegmentSequence] == ["Lungs"]
    assert [str(i.TrackingID) for i in segs["lesions"].SegmentSequence] == ["lesions"]


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
    segs = _written(typed, headers, context, tmp_path)
    items = _items(segs)
    # Ground glass and consolidation partition the lesions: the union is not a segment of its own.
    assert [str(i.TrackingID) for i in segs["lesions"].SegmentSequence] == ["ggo", "consolidation"]
    assert "lesions" not in items
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
    # a series-level attribute: the same in every instance, the lungs layer's too
    assert {seg.SeriesDescription for seg in segs.values()} == {SEG_UNVALIDATED_SERIES_DESCRIPTION}


def test_installed_weights_without_validation_are_not_called_generated(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    installed = ModelRun("lobes", "ran", "site file", "2.0", "installed_unvalidated", SHA_VALID, "installed from x")
    unvalidated = dataclasses.replace(findings, models={**findings.models, "lobes": installed})
    segs = _written(unvalidated, headers, context, tmp_path)
    items = _items(segs)
    assert items["LUL"].SegmentDescription == SEG_UNVALIDATED_INSTALLED_SEGMENT
    assert "generated" not in items["LUL"].SegmentDescription
    algorithm = items["LUL"].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmParameters == f"provenance=installed_unvalidated,weights_sha256={SHA_VALID}"
    assert "SegmentDescription" not in items["lesions"], "validated weights carry no UNVALIDATED"
    assert {seg.SeriesDescription for seg in segs.values()} == {SEG_UNVALIDATED_SERIES_DESCRIPTION}


def test_a_mask_without_a_source_has_no_provenance_and_is_refused(findings: Findings) -> None:
    with pytest.raises(ValueError, match="'lesions' has no mask source that ran"):
        dataclasses.replace(findings, mask_sources={k: v for k, v in findings.mask_sources.items() if k != "lesions"})


def test_empty_masks_and_layers_are_left_out_and_all_empty_gives_none(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    assert "RML" in findings.masks and "RML" not in layer_segments(findings)["lobes"]
    lobeless = dataclasses.replace(
        findings, masks={**findings.masks, **{name: np.zeros_like(findings.masks[name]) for name in ("LUL", "LLL")}}
    )
    lobeless = dataclasses.replace(
        lobeless, masks={**lobeless.masks, "RUL": np.zeros_like(findings.masks["RUL"]), "RLL": lobeless.masks["RML"]}
    )
    segs = build_segs(lobeless, headers, context)
    assert list(segs) == ["lungs", "lesions"]
    assert [int(seg.InstanceNumber) for seg in segs.values()] == [1, 2]
    empty = dataclasses.replace(findings, masks={name: np.zeros_like(m) for name, m in findings.masks.items()})
    assert build_segs(empty, headers, context) == {}
    maskless = dataclasses.replace(findings, masks={}, mask_sources={}, measurements={})
    assert build_segs(maskless, headers, context) == {}


def test_rejects_mismatching_images(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    wrong = [h.copy() for h in headers]
    for h in wrong:
        h.Columns = 65
    with pytest.raises(ValueError, match="source images"):
        build_segs(findings, wrong, context)
    with pytest.raises(ValueError, match="no source header"):
        build_segs(findings, headers[:-1], context)


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
    numbers = volume.source_frame_numbers
    assert numbers is not None
    for layer, seg in build_segs(multi, [enhanced], context).items():
        path = tmp_path / f"{layer}.dcm"
        seg.save_as(path, enforce_file_format=True)
        frames = _frames_by_source(hd.seg.segread(path))
        first = multi.masks[str(seg.SegmentSequence[0].TrackingID)]  # segment 1 of the layer
        for k in range(nz):
            key = (f"{enhanced.SOPInstanceUID}#{numbers[k]}", 1)
            assert np.array_equal(frames[key], first[k]) if first[k].any() else key not in frames, (layer, k)
    bad = dataclasses.replace(multi, volume=dataclasses.replace(volume, source_frame_numbers=(1,) * nz))
    with pytest.raises(ValueError, match="frame numbers"):
        build_segs(bad, [enhanced], context)


def test_highdicom_reads_every_instance_back(
    tmp_path: Path, headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    findings = make_findings(headers)
    for layer, seg in build_segs(findings, headers, context).items():
        path = tmp_path / f"{layer}.dcm"
        seg.save_as(path, enforce_file_format=True)
        read = hd.seg.segread(path)
        assert read.transfer_syntax_uid == JPEG2000Lossless
        for number, item in enumerate(read.SegmentSequence, start=1):
            mask = findings.masks[str(item.TrackingID)]
            volume = read.get_volume(segment_numbers=[number], combine_segments=True, allow_missing_positions=True)
            assert np.count_nonzero(volume.array) == int(mask.sum()), (layer, item.TrackingID)


def test_dciodvfy_accepts_every_seg(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    for layer, seg in build_segs(make_findings(headers, unvalidated=True), headers, context).items():
        path = tmp_path / f"{layer}.dcm"
        seg.save_as(path, enforce_file_format=True)
        result = dciodvfy(path)
        assert not result.errors, (layer, "\n".join(result.errors))


def test_two_threads_building_segs_never_run_the_jpeg2000_encoder_at_once(
    monkeypatch: pytest.MonkeyPatch, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    """pylibjpeg-openjpeg's encoder crashes the process when two threads encode at once (reports/seg.py).

    The encoder is wrapped to count the calls in progress and to linger, so that without the lock
    two workers' SEGs would overlap in it within the first frames.
    """
    import openjpeg.utils

    encode = openjpeg.utils.encode_array
    inside, most = 0, 0
    count = threading.Lock()

    def watched(*args: object, **kwargs: object) -> bytes:
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.002)
            return encode(*args, **kwargs)
        finally:
            with count:
                inside -= 1

    monkeypatch.setattr(openjpeg.utils, "encode_array", watched)
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda _: build_segs(findings, headers, context), range(2)))
    assert most == 1
    assert [sorted(segs) for segs in built] == [["lesions", "lobes", "lungs"]] * 2
    first, second = ({layer: seg.PixelData for layer, seg in segs.items()} for segs in built)
    assert first == second  # same inputs, same bytes: the serialised encoder lost nothing
