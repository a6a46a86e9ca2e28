"""Image coordinates in the SR (issue 17, part 2): each lung outlined on the axial density key slice.

Findings come from the weight-free pipeline on the chest phantom; the expected numbers are computed
here from the findings' own slice and masks, and the outline is checked against the mask by area.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from scipy import ndimage

from models.findings import Findings
from models.phantom import chest_phantom
from models.pipeline import analyse
from models.volume import PatientContext
from reports import codes
from reports.bundle import build_reports
from reports.identity import ReportContext
from reports.keyimages import select_density_slice
from reports.sr import build_sr
from reports.sr_key_slice import KEY_SLICE_LUNGS, lung_outline
from tests.reports.helpers import Validation, algorithm_of, ct_headers, read_with_dcmjs

CONTEXT = ReportContext(software_version="0.1.0", institution_name="Test Hospital")


def _shoelace(points: np.ndarray) -> float:
    """Area enclosed by a closed polyline of (x, y) points."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2.0)


def test_the_outline_follows_the_largest_part_and_measures_only_lung_inside_it() -> None:
    rows, columns = np.mgrid[0:96, 0:128]
    big = (rows - 40) ** 2 + (columns - 50) ** 2 <= 25**2
    hole = (rows - 40) ** 2 + (columns - 50) ** 2 <= 4**2
    small = (rows - 80) ** 2 + (columns - 110) ** 2 <= 6**2
    plane = (big & ~hole) | small

    outline = lung_outline(plane)

    assert outline is not None
    points, inside = outline
    assert np.array_equal(points[0], points[-1]), "closed: the first point is repeated last"
    assert np.array_equal(inside, big & ~hole), "the small part is not in it; the hole is not lung"
    # the border of pixels 0.5 inside the pixel edges: its area is within one pixel ring of the filled disk's
    assert abs(_shoelace(points) - big.sum()) < 0.06 * big.sum()
    # (column, row) image coordinates with pixel centres at +0.5: the disk is centred on column 50.5, row 40.5
    assert np.allclose(points[:-1].mean(axis=0), (50.5, 40.5), atol=0.5)
    assert lung_outline(np.zeros((8, 8), dtype=bool)) is None


@dataclass(frozen=True)
class Case:
    findings: Findings
    headers: list[Dataset]


@pytest.fixture(scope="module")
def case() -> Case:
    phantom = chest_phantom((38, 192, 192), (8.0, 2.0, 2.0), consolidation=True)
    findings = analyse(dataclasses.replace(phantom.volume(), slice_thickness_mm=8.0), PatientContext(50.0, None))
    g = findings.volume.geometry
    headers = ct_headers(g.shape, g.spacing, g.origin)
    for k, header in enumerate(reversed(headers)):  # ct_headers lists descending z; volume index k is ascending
        header.SOPInstanceUID = findings.volume.source_sop_instance_uids[k]
        header.file_meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    return Case(findings, headers)


def _planar_groups(sr: Dataset) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    report = hd.sr.MeasurementReport.from_sequence([sr])
    return list(report.get_planar_roi_measurement_groups())


def _image_of(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> str:
    """The SOP Instance UID of the image the group's region is drawn on (its SELECTED FROM item)."""
    region = group.roi
    assert region is not None
    (image,) = [item for item in region.ContentSequence if item.ValueType == "IMAGE"]
    return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def _value(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, concept: object) -> float:
    (measurement,) = [m for m in group.get_measurements() if m.name == concept]
    return float(measurement.value)


def test_each_lung_is_outlined_on_the_key_slice_with_what_lies_inside(case: Case) -> None:
    findings = case.findings
    assert findings.densitometry is not None
    k, _ = select_density_slice(findings, findings.densitometry)
    key_uid = findings.volume.source_sop_instance_uids[k]

    groups = _planar_groups(build_sr(findings, case.headers, CONTEXT))

    assert [str(g.tracking_identifier) for g in groups] == [
        f"{name} on axial key slice {k + 1} of {len(case.headers)}" for name in KEY_SLICE_LUNGS
    ]
    _, row_mm, column_mm = findings.volume.geometry.spacing
    hu = findings.volume.hu[k]
    for name, group in zip(KEY_SLICE_LUNGS, groups, strict=True):
        region = group.roi
        assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert region.value.shape[1] == 2 and np.array_equal(region.value[0], region.value[-1])
        assert _image_of(group) == key_uid
        assert group.finding_type == codes.REGION_CODES[name]
        lung = findings.masks[name][k]
        assert ndimage.label(lung, structure=np.ones((3, 3)))[1] == 1, "the phantom's lung is one part on the slice"
        inside = hu[lung]
        assert _value(group, codes.AREA) == round(inside.size * row_mm * column_mm / 100.0, 1)
        assert abs(_shoelace(region.value) * row_mm * column_mm / 100.0 - _value(group, codes.AREA)) < 0.06 * (
            _value(group, codes.AREA)
        ), "the outline encloses the area it reports"
        assert _value(group, codes.ATTENUATION_COEFFICIENT) == round(float(inside.mean()))
        assert _value(group, codes.SLICE_LAA_950) == round(100.0 * float(np.mean(inside < -950)), 1)
        involved = (inside >= -700) & (inside < 100)
        assert _value(group, codes.SLICE_INVOLVEMENT) == round(100.0 * float(np.mean(involved)), 1)
        assert _value(group, codes.SLICE_INVOLVEMENT) > 0, "the consolidated phantom's key slice shows involvement"
        assert any(f"axial slice {k + 1}," in p for p in algorithm_of(group[0])["parameters"])


def test_the_outlined_slice_is_the_one_the_key_objects_flag_first(case: Case) -> None:
    reports = build_reports(case.findings, case.headers, CONTEXT)
    groups = _planar_groups(reports.sr)
    flagged = [
        ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for ref in reports.kos.ContentSequence
        if ref.ValueType == "IMAGE"
        and ref.ReferencedSOPSequence[0].ReferencedSOPClassUID == case.headers[0].SOPClassUID
    ]
    assert flagged and {_image_of(g) for g in groups} == {flagged[0]}


def test_viewers_read_the_outlines(case: Case, tmp_path: Path, dciodvfy: Callable[[Path], Validation]) -> None:
    path = tmp_path / "sr.dcm"
    build_sr(case.findings, case.headers, CONTEXT).save_as(path, enforce_file_format=True)
    assert not dciodvfy(path).errors
    assert len(_planar_groups(pydicom.dcmread(path))) == 2

    seen = read_with_dcmjs("sr", path)

    assert case.findings.densitometry is not None
    k, _ = select_density_slice(case.findings, case.findings.densitometry)
    key_uid = case.findings.volume.source_sop_instance_uids[k]
    assert [(r["graphicType"], r["closed"], r["image"]) for r in seen["regions"]] == [("POLYLINE", True, key_uid)] * 2
    assert all(r["points"] >= 8 for r in seen["regions"])
    areas = [n for n in seen["numbers"] if n["concept"] == codes.AREA.value]
    assert len(areas) == 2 and all(a["unit"] == "cm2" and a["value"] > 0 for a in areas)
