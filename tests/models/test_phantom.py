"""models.phantom: anatomy, lobes and lesions, orientation, and a CT series that dciodvfy and our loader accept."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

from models.findings import LOBE_NAMES
from models.phantom import LesionSpec, Phantom, chest_phantom
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


LESIONS = (
    LesionSpec("RLL", "consolidation", 0.3),
    LesionSpec("RLL", "ggo", 0.2, towards=(-1.0, 0.0, 0.0)),
    LesionSpec("LUL", "ggo", 0.1, towards=(0.0, -1.0, 0.0)),
    LesionSpec("RML", "consolidation", 0.6, towards=(0.0, -1.0, 0.0)),
)


@pytest.fixture(scope="module")
def lesion_phantom() -> Phantom:
    return chest_phantom((60, 160, 160), (5.0, 2.4, 2.4), lesions=LESIONS)


def test_lobes_partition_each_lung(lesion_phantom: Phantom) -> None:
    lobes = lesion_phantom.lobes
    assert tuple(lobes) == LOBE_NAMES
    for side, names in ((lesion_phantom.left, ("LUL", "LLL")), (lesion_phantom.right, ("RUL", "RML", "RLL"))):
        union = np.zeros_like(side)
        for name in names:
            assert lobes[name].dtype == np.bool_
            assert not np.any(union & lobes[name]), f"{name} overlaps another lobe"
            union |= lobes[name]
        np.testing.assert_array_equal(union, side)
    shares = {
        name: lobes[name].sum() / (lesion_phantom.left if name[0] == "L" else lesion_phantom.right).sum()
        for name in LOBE_NAMES
    }
    assert min(shares, key=lambda name: shares[name]) == "RML"
    assert all(0.1 <= share <= 0.65 for share in shares.values()), shares


def test_lobes_lie_where_anatomy_puts_them(lesion_phantom: Phantom) -> None:
    geometry = lesion_phantom.geometry

    def centre(mask: np.ndarray) -> tuple[float, float, float]:
        index = np.argwhere(mask).mean(axis=0)
        return geometry.index_to_patient((float(index[0]), float(index[1]), float(index[2])))

    lobes = {name: centre(mask) for name, mask in lesion_phantom.lobes.items()}
    # LPS: +y is the back, +z the head; lower lobes are behind and below their upper lobe
    assert lobes["LLL"][1] > lobes["LUL"][1] and lobes["LLL"][2] < lobes["LUL"][2]
    assert lobes["RLL"][1] > lobes["RUL"][1] and lobes["RLL"][2] < lobes["RUL"][2]
    assert lobes["RML"][2] < lobes["RUL"][2] and lobes["RML"][1] < lobes["RLL"][1]


def test_fissures_are_thin_denser_surfaces() -> None:
    phantom = chest_phantom((240, 160, 160), (1.25, 2.4, 2.4), noise_hu=0.0)
    lul, lll = phantom.lobes["LUL"], phantom.lobes["LLL"]
    parenchyma = phantom.hu == -850.0
    # voxels of the upper lobe that touch the lower lobe straddle the oblique fissure
    boundary = lul & np.roll(lll, -1, axis=0) | lul & np.roll(lll, 1, axis=1) | lul & np.roll(lll, -1, axis=1)
    fissure_hu = np.median(phantom.hu[boundary & (phantom.hu < -400.0)])
    assert -820.0 <= fissure_hu <= -600.0  # denser than lung, far from soft tissue
    assert parenchyma.sum() > 0.5 * lul.sum()  # the rest of the lobe is plain lung


def test_lesions_have_the_requested_share_of_their_lobe(lesion_phantom: Phantom) -> None:
    for kind, mask in (("ggo", lesion_phantom.ggo), ("consolidation", lesion_phantom.consolidation)):
        for name in LOBE_NAMES:
            asked = sum(spec.fraction for spec in LESIONS if spec.lobe == name and spec.kind == kind)
            lobe = lesion_phantom.lobes[name]
            got = np.count_nonzero(mask & lobe)
            assert abs(got - asked * lobe.sum()) <= len(LESIONS), (kind, name)  # one voxel per lesion
        assert not np.any(mask & ~(lesion_phantom.left | lesion_phantom.right))
    assert not np.any(lesion_phantom.ggo & lesion_phantom.consolidation)
    np.testing.assert_array_equal(lesion_phantom.lesions, lesion_phantom.ggo | lesion_phantom.consolidation)
    assert np.median(lesion_phantom.hu[lesion_phantom.ggo]) == pytest.approx(-600.0, abs=10.0)
    assert -50.0 <= np.median(lesion_phantom.hu[lesion_phantom.consolidation]) <= 40.0


def test_a_lesion_grown_backwards_touches_the_costal_pleura(lesion_phantom: Phantom) -> None:
    rll_dense = lesion_phantom.consolidation & lesion_phantom.lobes["RLL"]
    grown = rll_dense.copy()
    grown[:, 1:] |= rll_dense[:, :-1]  # one voxel towards the back (rows grow to the back here)
    outside = grown & ~lesion_phantom.right & (lesion_phantom.hu > 0.0)
    assert outside.sum() > 20  # it borders the chest wall, not only aerated lung


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ((LesionSpec("LLL", "ggo", 0.7), LesionSpec("LLL", "consolidation", 0.4)), "more than all of it"),
    ],
)
def test_lesions_that_do_not_fit_are_refused(specs: tuple[LesionSpec, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chest_phantom((8, 96, 96), (40.0, 4.0, 4.0), lesions=specs)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("LXL", "ggo", 0.1), "lobe must be one of"),
        (("LUL", "mass", 0.1), "kind must be"),
        (("LUL", "ggo", 0.0), "fraction"),
        (("LUL", "ggo", 1.5), "fraction"),
    ],
)
def test_lesion_spec_is_validated(arguments: tuple[str, str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LesionSpec(*arguments)  # type: ignore[arg-type]


def test_kernels_and_contrast() -> None:
    grid: dict[str, Any] = {"shape_zyx": (4, 360, 360), "spacing_zyx": (5.0, 1.0, 1.0), "noise_hu": 0.0}
    plain = chest_phantom(**grid)
    soft = chest_phantom(**grid, kernel="soft")
    sharp = chest_phantom(**grid, kernel="sharp")
    lung = plain.left | plain.right
    # a soft kernel blurs: no new extremes; a sharp one overshoots, darker than lung along its edges
    assert soft.hu.min() >= plain.hu.min() - 1e-3 and soft.hu.max() <= plain.hu.max() + 1e-3
    assert np.abs(soft.hu - plain.hu)[lung].max() > 100.0
    assert sharp.hu[lung].min() < plain.hu[lung].min() - 50.0
    assert sharp.hu.max() > plain.hu.max() + 50.0
    np.testing.assert_array_equal(sharp.left, plain.left)
    enhanced = chest_phantom(**grid, contrast=True)
    heart = (enhanced.hu == 250.0) & (plain.hu == 40.0)
    assert heart.sum() * plain.geometry.voxel_volume_ml > 50.0
    with pytest.raises(ValueError, match="kernel"):
        chest_phantom(**grid, kernel="bone")


def test_touching_lungs_touch() -> None:
    phantom = chest_phantom((60, 192, 192), (5.0, 2.0, 2.0), touching_lungs=True)
    # the grid's x runs to the patient's left, so the right lung's voxel is the lower index
    touching = phantom.right[:, :, :-1] & phantom.left[:, :, 1:]
    assert touching.sum() > 50
    assert sum(mask.sum() for mask in phantom.lobes.values()) == (phantom.left | phantom.right).sum()
