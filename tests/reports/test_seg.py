"""SEG: segments, slice-to-source mapping, empty masks, multi-frame sources, dciodvfy."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import EnhancedCTImageStorage, generate_uid

from models.findings import Volume
from reports import codes
from reports.seg import build_seg, segment_order


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


def test_segments_codes_and_frames_follow_volume_order(tmp_path, headers, findings, context) -> None:
    path = tmp_path / "seg.dcm"
    build_seg(findings, headers, context).save_as(path, enforce_file_format=True)
    seg = pydicom.dcmread(path)
    labels = [item.SegmentLabel for item in seg.SegmentSequence]
    assert labels == ["lungs", "lung_left", "lung_right", "LUL", "LLL", "RUL", "RLL", "lesions"]
    assert seg.SegmentationType == "BINARY"
    for item in seg.SegmentSequence:
        category = item.SegmentedPropertyCategoryCodeSequence[0].CodeValue
        prop = item.SegmentedPropertyTypeCodeSequence[0].CodeValue
        if item.SegmentLabel == "lesions":
            assert (category, prop) == (codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value, codes.LESION.value)
        else:
            assert (category, prop) == (codes.ANATOMICAL_STRUCTURE.value, codes.REGION_CODES[item.SegmentLabel].value)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmVersion == "0.1.0"
        assert algorithm.AlgorithmName.startswith("lungcds")
        assert item.TrackingID == item.SegmentLabel
    assert seg.SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == (
        "lungcds classical lung mask"
    )
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
    assert seg.SOPInstanceUID == context.output_uid(headers[0].SeriesInstanceUID, "0.1.0", "seg", "instance")


def test_empty_masks_are_left_out_and_all_empty_gives_none(headers, findings, context) -> None:
    assert "RML" in findings.masks and "RML" not in segment_order(findings)
    empty = dataclasses.replace(findings, masks={name: np.zeros_like(m) for name, m in findings.masks.items()})
    assert build_seg(empty, headers, context) is None
    assert build_seg(dataclasses.replace(findings, masks={}), headers, context) is None


def test_rejects_mismatching_images(headers, findings, context) -> None:
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


def test_multi_frame_source_maps_frame_numbers(tmp_path, headers, findings, context) -> None:
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
    build_seg(multi, [enhanced], context).save_as(path, enforce_file_format=True)
    seg = hd.seg.segread(path)
    frames = _frames_by_source(seg)
    lungs = multi.masks["lungs"]
    for k in range(nz):
        key = (f"{enhanced.SOPInstanceUID}#{volume.source_frame_numbers[k]}", 1)
        if lungs[k].any():
            assert np.array_equal(frames[key], lungs[k]), k
    bad = dataclasses.replace(multi, volume=dataclasses.replace(volume, source_frame_numbers=(1,) * nz))
    with pytest.raises(ValueError, match="frame numbers"):
        build_seg(bad, [enhanced], context)


def test_dciodvfy_accepts_seg(tmp_path, headers, findings, context, dciodvfy) -> None:
    path = tmp_path / "seg.dcm"
    build_seg(findings, headers, context).save_as(path, enforce_file_format=True)
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)


def test_real_series_seg(tmp_path, real_series, context, dciodvfy) -> None:
    path = tmp_path / "seg.dcm"
    build_seg(real_series.findings, real_series.headers, context).save_as(path, enforce_file_format=True)
    seg = pydicom.dcmread(path)
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["lungs", "lung_left", "lung_right"]
    frames = _frames_by_source(seg)
    lungs = real_series.findings.masks["lungs"]
    for k, uid in enumerate(real_series.findings.volume.source_sop_instance_uids):
        if lungs[k].any():
            assert np.array_equal(frames[(uid, 1)], lungs[k])
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)
