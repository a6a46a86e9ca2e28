"""models.phantom: plausible anatomy, orientation, and a CT series that dciodvfy and our loader accept."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from models.phantom import Phantom, chest_phantom
from models.volume import load_series, patient_context

WriteSeries = Callable[..., list[Path]]


@pytest.fixture(scope="module")
def small_phantom() -> Phantom:
    return chest_phantom((8, 96, 96), (5.0, 4.0, 4.0), consolidation=True)


def test_anatomy_is_plausible(phantom_5mm: Phantom) -> None:
    ml = phantom_5mm.geometry.voxel_volume_ml
    for lung in (phantom_5mm.left, phantom_5mm.right):
        assert 1000.0 <= lung.sum() * ml <= 2500.0
        assert -900.0 <= float(np.median(phantom_5mm.hu[lung])) <= -800.0
    assert not np.any(phantom_5mm.left & phantom_5mm.right)
    assert not np.any((phantom_5mm.left | phantom_5mm.right) & (phantom_5mm.airway | phantom_5mm.gas))
    assert np.all(phantom_5mm.consolidation <= phantom_5mm.right)
    assert float(np.median(phantom_5mm.hu[phantom_5mm.airway])) < -950.0
    assert float(np.median(phantom_5mm.hu[:, :, :10])) == pytest.approx(-1000.0, abs=5.0)


def test_left_lung_is_at_patient_left(phantom_5mm: Phantom) -> None:
    def x_mm(mask: np.ndarray) -> float:
        centre = tuple(float(c) for c in np.argwhere(mask).mean(axis=0))
        return phantom_5mm.geometry.index_to_patient(centre)[0]  # type: ignore[arg-type]

    assert x_mm(phantom_5mm.left) > 30.0 > -30.0 > x_mm(phantom_5mm.right)


@pytest.mark.parametrize(
    ("position", "row", "column", "flipped_axes"),
    [
        ("HFP", (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (1, 2)),
        ("FFS", (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0, 2)),
        ("FFP", (1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0, 1)),
    ],
)
def test_patient_positions_reorient_the_same_anatomy(
    position: str, row: tuple[float, ...], column: tuple[float, ...], flipped_axes: tuple[int, ...]
) -> None:
    supine = chest_phantom((8, 96, 96), (5.0, 4.0, 4.0), noise_hu=0.0)
    other = chest_phantom((8, 96, 96), (5.0, 4.0, 4.0), patient_position=position, noise_hu=0.0)
    direction = np.asarray(other.geometry.direction)
    assert direction[:, 0] == pytest.approx(row)
    assert direction[:, 1] == pytest.approx(column)
    np.testing.assert_array_equal(other.left, np.flip(supine.left, flipped_axes))
    # the same voxel has the same patient coordinates in both grids
    same_voxel = tuple(float(n - 1) if axis in flipped_axes else 0.0 for axis, n in enumerate(supine.hu.shape))
    assert other.geometry.index_to_patient((0.0, 0.0, 0.0)) == pytest.approx(
        supine.geometry.index_to_patient(same_voxel)  # type: ignore[arg-type]
    )


def test_rejects_unknown_position() -> None:
    with pytest.raises(ValueError, match="patient_position"):
        chest_phantom((4, 32, 32), (5.0, 10.0, 10.0), patient_position="LEFT")


def test_written_series_passes_dciodvfy(small_phantom: Phantom, write_series: WriteSeries, dciodvfy: str) -> None:
    files = write_series(small_phantom)
    for path in (files[0], files[-1]):
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        output = result.stdout + result.stderr
        assert "CTImage" in output
        errors = [line for line in output.splitlines() if "Error" in line]
        assert not errors, "\n".join(errors)


def test_written_series_attributes(small_phantom: Phantom, write_series: WriteSeries) -> None:
    files = write_series(
        small_phantom,
        patient_id="P-42",
        patient_age="063Y",
        patient_sex="F",
        study_uid="1.2.826.0.1.3680043.8.498.1",
    )
    assert len(files) == 8
    first = pydicom.dcmread(files[0])
    assert first.SOPClassUID == CTImageStorage
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.PatientID == "P-42"
    assert first.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert (first.RescaleIntercept, first.RescaleSlope) == (-1024, 1)
    assert first.pixel_array.dtype == np.int16
    assert patient_context(first).age_years == 63.0
    assert patient_context(first).sex == "F"
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files}
    assert len(uids) == 8
    again = write_series(small_phantom, folder="again", series_uid=first.SeriesInstanceUID)
    assert pydicom.dcmread(again[3]).SOPInstanceUID == pydicom.dcmread(files[3]).SOPInstanceUID


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
    ],
    ids=lambda uid: uid.name,
)
def test_round_trip_through_the_loader(small_phantom: Phantom, write_series: WriteSeries, syntax: str) -> None:
    files = write_series(small_phantom, transfer_syntax=syntax)
    assert pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    volume = load_series(files)
    np.testing.assert_allclose(volume.hu, small_phantom.hu, rtol=0, atol=0.501)  # int16 rounding
    assert volume.geometry.origin == pytest.approx(small_phantom.geometry.origin)
    assert volume.geometry.spacing == pytest.approx(small_phantom.geometry.spacing)
    assert volume.slice_thickness_mm == 5.0


def test_plain_array_needs_a_geometry(small_phantom: Phantom, write_series: WriteSeries) -> None:
    with pytest.raises(ValueError, match="geometry is required"):
        write_series(small_phantom.hu)
    files = write_series(small_phantom.hu, small_phantom.geometry)
    np.testing.assert_allclose(load_series(files).hu, small_phantom.hu, rtol=0, atol=0.501)
