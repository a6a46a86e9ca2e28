"""models.volume: loading real and synthetic series, Enhanced CT, every refusal, patient context."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from models.findings import Volume
from models.phantom import Phantom, chest_phantom
from models.volume import PatientContext, VolumeError, load_series, patient_context

WriteSeries = Callable[..., list[Path]]


@pytest.fixture(scope="module")
def small_phantom() -> Phantom:
    """A tiny phantom: 6 slices of 64x64 at 6 mm, enough for every loader case."""
    return chest_phantom((6, 64, 64), (5.0, 6.0, 6.0), noise_hu=0.0)


@pytest.fixture
def small_series(small_phantom: Phantom, write_series: WriteSeries) -> list[Path]:
    return write_series(small_phantom)


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


# --- real data -----------------------------------------------------------------------------


def test_real_5mm_series_geometry_and_hu(chest_5mm: Volume) -> None:
    geometry = chest_5mm.geometry
    assert chest_5mm.hu.shape == (64, 512, 512)
    assert chest_5mm.hu.dtype == np.float32
    assert geometry.spacing[0] == pytest.approx(5.0)
    assert geometry.spacing[1:] == pytest.approx((0.841796875, 0.841796875))
    assert chest_5mm.slice_thickness_mm == pytest.approx(5.0)
    # sorted along the normal (+z, feet to head): the first slice is the lowest one
    assert geometry.origin[2] == pytest.approx(-439.0)
    assert geometry.index_to_patient((63, 0, 0))[2] == pytest.approx(-124.0)
    air = chest_5mm.hu[chest_5mm.hu < -900]
    assert air.size > 0.3 * chest_5mm.hu.size
    assert -1030.0 <= float(np.median(air)) <= -970.0
    assert float(chest_5mm.hu.max()) > 1000.0  # bone
    assert len(set(chest_5mm.source_sop_instance_uids)) == 64


def test_real_8mm_series(real_series: Callable[[str], list[Path]]) -> None:
    volume = load_series(real_series("lung-dx-a0002-thorax-8mm-b40f"))
    assert volume.hu.shape == (30, 512, 512)
    assert volume.geometry.spacing[0] == pytest.approx(8.0)


def test_jpeg2000_series_decodes_and_keeps_empty_uids(real_series: Callable[[str], list[Path]]) -> None:
    files = real_series("abdomen-jpeg2000-3mm")
    assert pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless
    volume = load_series(files)
    assert volume.hu.shape == (20, 512, 512)
    assert volume.geometry.spacing[0] == pytest.approx(2.0)
    assert float(volume.hu.min()) >= -1024.0
    soft = volume.hu[(volume.hu > -200) & (volume.hu < 300)]
    assert soft.size > 0.2 * volume.hu.size
    assert 0.0 < float(np.median(soft)) < 100.0
    # identifiers are passed through as they are, never invented
    assert volume.source_sop_instance_uids == ("",) * 20


def test_patient_context_of_real_series(real_series: Callable[[str], list[Path]]) -> None:
    ds = pydicom.dcmread(real_series("lung-dx-a0001-chest-5mm-s2")[0], stop_before_pixels=True)
    assert patient_context(ds) == PatientContext(age_years=58.0, sex="M")


# --- synthetic series ------------------------------------------------------------------------


def test_round_trip_any_file_order(small_phantom: Phantom, small_series: list[Path]) -> None:
    shuffled = list(small_series)
    random.Random(3).shuffle(shuffled)
    volume = load_series(shuffled)
    np.testing.assert_array_equal(volume.hu, np.rint(small_phantom.hu))
    assert volume.geometry.origin == pytest.approx(small_phantom.geometry.origin)
    assert volume.geometry.spacing == pytest.approx(small_phantom.geometry.spacing)
    assert np.allclose(volume.geometry.direction, small_phantom.geometry.direction)
    ordered = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in small_series]
    assert volume.source_sop_instance_uids == tuple(ordered)
    assert volume.source_frame_numbers is None


def test_feet_first_series_is_sorted_along_its_normal(write_series: WriteSeries) -> None:
    phantom = chest_phantom((6, 64, 64), (5.0, 6.0, 6.0), patient_position="FFS", noise_hu=0.0)
    volume = load_series(write_series(phantom)[::-1])
    np.testing.assert_array_equal(volume.hu, np.rint(phantom.hu))
    normal = np.asarray(volume.geometry.direction)[:, 2]
    assert normal == pytest.approx([0.0, 0.0, -1.0])


def test_rescale_is_applied_per_slice(small_phantom: Phantom, small_series: list[Path]) -> None:
    _edit(small_series[2], lambda ds: setattr(ds, "RescaleIntercept", "-1000"))
    volume = load_series(small_series)
    expected = np.rint(small_phantom.hu)
    np.testing.assert_array_equal(volume.hu[2], expected[2] + 24.0)
    np.testing.assert_array_equal(volume.hu[3], expected[3])


def _enhanced_ct(phantom: Phantom, path: Path, order: list[int], intercepts: list[float]) -> None:
    """An Enhanced CT Image Storage file whose frame ``f`` is slice ``order[f]`` of the phantom."""
    geometry = phantom.geometry
    direction = np.asarray(geometry.direction)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[2]
    ds.NumberOfFrames = len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures = Dataset()
    measures.PixelSpacing = list(geometry.spacing[1:])
    measures.SliceThickness = geometry.spacing[0]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [*direction[:, 0], *direction[:, 1]]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, per_frame = [], []
    for frame, k in enumerate(order):
        position = Dataset()
        position.ImagePositionPatient = list(geometry.index_to_patient((k, 0, 0)))
        transform = Dataset()
        transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = (
            intercepts[frame],
            1.0,
            "HU",
        )
        item = Dataset()
        item.PlanePositionSequence = [position]
        item.PixelValueTransformationSequence = [transform]
        per_frame.append(item)
        frames.append(np.rint(phantom.hu[k] - intercepts[frame]).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_ct_multiframe(small_phantom: Phantom, tmp_path: Path) -> None:
    order = [3, 0, 5, 1, 4, 2]
    intercepts = [-1024.0, -1000.0] * 3
    path = tmp_path / "enhanced.dcm"
    _enhanced_ct(small_phantom, path, order, intercepts)
    volume = load_series([path])
    np.testing.assert_array_equal(volume.hu, np.rint(small_phantom.hu))
    assert volume.geometry.spacing == pytest.approx(small_phantom.geometry.spacing)
    assert volume.geometry.origin == pytest.approx(small_phantom.geometry.origin)
    assert volume.source_frame_numbers == tuple(order.index(k) + 1 for k in range(6))
    assert len(set(volume.source_sop_instance_uids)) == 1


# --- refusals ----------------------------------------------------------------------------------


def test_no_files() -> None:
    with pytest.raises(VolumeError, match="no DICOM files"):
        load_series([])


def test_not_dicom(small_series: list[Path], tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(VolumeError, match="notes.txt is not a readable DICOM file"):
        load_series([*small_series, junk])


def test_two_series(small_phantom: Phantom, write_series: WriteSeries) -> None:
    first = write_series(small_phantom, folder="a", series_uid=generate_uid())
    second = write_series(small_phantom, folder="b", series_uid=generate_uid())
    with pytest.raises(VolumeError, match="more than one series"):
        load_series(first + second[:1])


def test_missing_pixel_data(small_series: list[Path]) -> None:
    _edit(small_series[1], lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(VolumeError, match=rf"{small_series[1].name} has no Pixel Data"):
        load_series(small_series)


def test_differing_orientation(small_series: list[Path]) -> None:
    _edit(small_series[4], lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.9, 0.43589]))
    with pytest.raises(VolumeError, match="differing orientation"):
        load_series(small_series)


def test_differing_matrix_size(small_series: list[Path]) -> None:
    def shrink(ds: pydicom.Dataset) -> None:
        ds.Columns = 32
        ds.PixelData = np.zeros((64, 32), dtype=np.int16).tobytes()

    _edit(small_series[0], shrink)
    with pytest.raises(VolumeError, match="differing matrix size"):
        load_series(small_series)


def test_duplicate_positions(small_series: list[Path]) -> None:
    position = pydicom.dcmread(small_series[2], stop_before_pixels=True).ImagePositionPatient
    _edit(small_series[3], lambda ds: setattr(ds, "ImagePositionPatient", position))
    with pytest.raises(VolumeError, match="duplicate slice position"):
        load_series(small_series)


def test_missing_slice_is_a_non_uniform_gap(small_series: list[Path]) -> None:
    kept = small_series[:2] + small_series[3:]
    with pytest.raises(VolumeError, match="not uniform") as caught:
        load_series(kept)
    message = str(caught.value)
    assert small_series[1].name in message and small_series[3].name in message
    assert "10.00 mm" in message and "5.00 mm" in message


def test_undecodable_pixel_data_names_the_transfer_syntax(small_series: list[Path]) -> None:
    def corrupt(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\x00" * 64])

    _edit(small_series[0], corrupt)
    with pytest.raises(VolumeError, match="cannot decode .*JPEG 2000"):
        load_series(small_series)


# --- patient context ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(
    ("attributes", "age", "sex"),
    [
        ({"PatientAge": "058Y", "PatientSex": "M"}, 58.0, "M"),
        ({"PatientAge": "006M", "PatientSex": "F"}, 0.5, "F"),
        ({"PatientAge": "026W"}, 26 * 7 / 365.2425, None),
        ({"PatientAge": "010D", "PatientSex": "O"}, 10 / 365.2425, None),
        ({"PatientBirthDate": "19700615", "StudyDate": "20200615"}, 50.0, None),
        ({"PatientAge": "", "PatientBirthDate": "19700615", "SeriesDate": "20100614"}, 39 + 364 / 365, None),
        ({"PatientBirthDate": "19720229", "StudyDate": "20210228"}, 49.0, None),
        ({"PatientAge": "58", "PatientBirthDate": "garbage", "StudyDate": "20200101"}, None, None),
        ({"PatientBirthDate": "20300101", "StudyDate": "20200101"}, None, None),
        ({}, None, None),
    ],
)
def test_patient_context(attributes: dict[str, str], age: float | None, sex: str | None) -> None:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    context = patient_context(ds)
    assert context.sex == sex
    if age is None:
        assert context.age_years is None
    else:
        assert context.age_years == pytest.approx(age, abs=1e-9)
