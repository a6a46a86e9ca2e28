"""assess_series: gaps, duplicates, expected counts, tilt, orientation and multi-frame geometry."""

from __future__ import annotations

import math
import random

import pytest

from dicom_node.completeness import assess_series
from dicom_node.header import InstanceHeader
from dicom_node.validation import parse_instance
from tests.dicom_node.helpers import CT_DIR, SERIES_S2, series_files

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def header(
    z: float | None = None,
    *,
    orientation: tuple[float, float, float, float, float, float] | None = AXIAL,
    position: tuple[float, float, float] | None = None,
    images_in_acquisition: int | None = None,
    frame_positions: tuple[tuple[float, float, float], ...] | None = None,
) -> InstanceHeader:
    if position is None and z is not None:
        position = (-150.0, -150.0, z)
    return InstanceHeader(
        sop_instance_uid=f"1.2.3.{random.randrange(10**9)}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        image_orientation=orientation,
        image_position=position,
        images_in_acquisition=images_in_acquisition,
        frame_positions=frame_positions,
        number_of_frames=len(frame_positions) if frame_positions else None,
    )


def stack(zs: list[float], **kwargs: object) -> list[InstanceHeader]:
    headers = [header(z, **kwargs) for z in zs]  # type: ignore[arg-type]
    random.Random(7).shuffle(headers)
    return headers


def test_contiguous_series_is_complete_in_any_order() -> None:
    geometry = assess_series(stack([-100.0 + 2.5 * k for k in range(20)]))

    assert geometry.complete, geometry.reasons
    assert geometry.reasons == []
    assert geometry.count == 20
    assert geometry.positions_mm == tuple(-100.0 + 2.5 * k for k in range(20))
    assert geometry.spacing_mm == pytest.approx(2.5)
    assert geometry.uniform and geometry.missing_slices == 0
    assert geometry.coverage_mm == pytest.approx(50.0)
    assert geometry.axial_tilt_deg == pytest.approx(0.0)
    assert geometry.consistent_orientation


def test_gap_of_one_slice_is_described() -> None:
    zs = [-150.0 + 5.0 * k for k in range(12) if -150.0 + 5.0 * k != -115.0]

    geometry = assess_series(stack(zs))

    assert not geometry.complete
    assert geometry.missing_slices == 1
    assert not geometry.uniform
    assert geometry.spacing_mm == pytest.approx(5.0)
    assert geometry.reasons == [
        "gap of 10.0 mm between slices at z=-120.0 and z=-110.0 (spacing 5.0 mm): about 1 slice missing"
    ]


def test_gap_of_several_slices_is_counted() -> None:
    zs = [0.0, 1.25, 2.5, 3.75, 5.0, 6.25, 10.0, 11.25, 12.5]

    geometry = assess_series(stack(zs))

    assert geometry.missing_slices == 2
    assert "about 2 slices missing" in geometry.reasons[0]
    assert geometry.coverage_mm == pytest.approx(12.5 + 1.25)


def test_irregular_gap_is_not_uniform() -> None:
    geometry = assess_series(stack([0.0, 2.0, 4.0, 6.0, 9.0, 11.0, 13.0]))

    assert not geometry.complete and not geometry.uniform
    assert geometry.missing_slices == 0
    assert geometry.reasons == ["irregular gap of 3.0 mm between slices at z=6.0 and z=9.0 (spacing 2.0 mm)"]


def test_spacing_tolerance_is_a_parameter() -> None:
    zs = [0.0, 5.0, 10.0, 15.6, 20.6, 25.6]

    assert not assess_series(stack(zs)).uniform
    assert assess_series(stack(zs), spacing_tolerance=0.15).complete


def test_duplicate_positions_make_a_series_incomplete() -> None:
    zs = [0.0, 3.0, 6.0, 6.0, 9.0]

    geometry = assess_series(stack(zs))

    assert not geometry.complete
    assert geometry.duplicate_positions == (6.0,)
    assert geometry.count == 5
    assert geometry.uniform
    assert geometry.reasons == ["more than one slice at z=6.0"]


def test_expected_count_from_images_in_acquisition() -> None:
    zs = [2.0 * k for k in range(20)]

    short = assess_series(stack(zs, images_in_acquisition=21))
    exact = assess_series(stack(zs, images_in_acquisition=20))

    assert short.expected_count == 21 and not short.complete
    assert short.reasons == ["20 slices received, Images in Acquisition (0020,1002) says 21 (1 missing)"]
    assert exact.expected_count == 20 and exact.complete


def test_gantry_tilt_is_measured_along_the_slice_normal() -> None:
    angle = math.radians(15.0)
    orientation = (1.0, 0.0, 0.0, 0.0, math.cos(angle), math.sin(angle))
    normal = (0.0, -math.sin(angle), math.cos(angle))
    positions = [(0.0, 3.0 * k * normal[1], 3.0 * k * normal[2]) for k in range(10)]

    geometry = assess_series([header(orientation=orientation, position=p) for p in positions])

    assert geometry.complete, geometry.reasons
    assert geometry.axial_tilt_deg == pytest.approx(15.0)
    assert geometry.spacing_mm == pytest.approx(3.0)


def test_inconsistent_orientation_is_reported() -> None:
    angle = math.radians(5.0)
    tilted = (1.0, 0.0, 0.0, 0.0, math.cos(angle), math.sin(angle))
    headers = [header(float(z)) for z in range(10)] + [header(10.0, orientation=tilted)]

    geometry = assess_series(headers)

    assert not geometry.consistent_orientation and not geometry.complete
    assert any("orientation differs" in reason for reason in geometry.reasons)


def test_multi_frame_uses_frame_positions() -> None:
    frames = tuple((0.0, 0.0, -1.25 * k) for k in range(40))
    complete = assess_series([header(frame_positions=frames, position=frames[0])])

    assert complete.complete, complete.reasons
    assert complete.count == 40
    assert complete.spacing_mm == pytest.approx(1.25)
    assert complete.coverage_mm == pytest.approx(50.0)

    holed = frames[:10] + frames[11:]
    incomplete = assess_series([header(frame_positions=holed, position=holed[0])])

    assert not incomplete.complete and incomplete.missing_slices == 1


def test_multi_frame_split_over_two_instances() -> None:
    first = tuple((0.0, 0.0, 1.0 * k) for k in range(10))
    second = tuple((0.0, 0.0, 1.0 * k) for k in range(10, 20))

    geometry = assess_series([header(frame_positions=second), header(frame_positions=first)])

    assert geometry.complete and geometry.count == 20


def test_headers_without_geometry() -> None:
    geometry = assess_series([header(None, orientation=None) for _ in range(3)])

    assert not geometry.complete
    assert geometry.count == 0 and geometry.spacing_mm is None
    assert geometry.reasons == ["3 of 3 instances have no Image Position (Patient) or Image Orientation (Patient)"]


def test_some_headers_without_geometry() -> None:
    headers = [header(float(z)) for z in range(5)] + [header(None)]

    geometry = assess_series(headers)

    assert not geometry.complete and geometry.uniform
    assert geometry.reasons[0].startswith("1 of 6 instances have no Image Position")


def test_single_slice_and_empty_series() -> None:
    single = assess_series([header(0.0)])
    assert not single.complete
    assert single.reasons == ["only one slice position: the spacing cannot be determined"]

    empty = assess_series([])
    assert not empty.complete and empty.reasons == ["the series has no instances"]


def test_to_json_is_plain() -> None:
    data = assess_series(stack([0.0, 1.0, 2.0])).to_json()
    assert data["positions_mm"] == [0.0, 1.0, 2.0] and data["complete"] is True


@pytest.mark.parametrize(
    ("folder", "count", "spacing"),
    [("lung-dx-a0001-chest-5mm-s2", 64, 5.0), ("lung-dx-a0002-thorax-8mm-b40f", 30, 8.0)],
)
def test_real_series_are_complete(folder: str, count: int, spacing: float) -> None:
    files = series_files(CT_DIR / folder)
    headers = [parse_instance(path)[1] for path in files]

    geometry = assess_series(headers)

    assert geometry.complete, geometry.reasons
    assert geometry.count == count
    assert geometry.spacing_mm == pytest.approx(spacing, abs=0.01)


def test_real_series_with_a_missing_slice() -> None:
    files = series_files(SERIES_S2)
    headers = sorted((parse_instance(path)[1] for path in files), key=lambda h: h.image_position[2])  # type: ignore[index]
    del headers[30]

    geometry = assess_series(headers)

    assert not geometry.complete and geometry.missing_slices == 1
    assert "about 1 slice missing" in geometry.reasons[0]
