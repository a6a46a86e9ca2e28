"""InstanceHeader: character sets, malformed values, Enhanced CT functional groups, JSON round trip."""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import EnhancedCTImageStorage, generate_uid

from dicom_node.header import InstanceHeader, summarize
from dicom_node.validation import parse_instance
from tests.dicom_node.helpers import SERIES_S2, make_ct, series_files


def encode(ds: Dataset) -> bytes:
    """Write a data set as Part 10 bytes, letting pydicom encode text in its character set."""
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("charset", "name", "description"),
    [
        ("ISO_IR 100", "Müller^Jürgen", "Thorax nativ Übersicht"),
        ("ISO_IR 192", "Wang^XiaoDong=王^小東", "胸部 CT 平扫"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", None),
        (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동", None),
    ],
)
def test_text_is_decoded_in_its_character_set(charset: str | list[str], name: str, description: str | None) -> None:
    ds = make_ct()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    if description is not None:
        ds.StudyDescription = description
    data = encode(ds)
    if charset != "ISO_IR 100":
        # The stream really carries multi-byte text or ISO 2022 escape sequences.
        assert name.encode("ascii", errors="ignore") != name.encode("utf-8")
        assert name.encode("utf-8") not in data or charset == "ISO_IR 192"

    _, header = parse_instance(data)

    assert header.patient_name == name
    assert header.study_description == description
    assert header.sop_instance_uid == ds.SOPInstanceUID


def test_undecodable_text_keeps_raw_text_with_replacement_characters() -> None:
    ds = make_ct()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Bad^Name"
    data = encode(ds).replace(b"Bad^Name", b"Bad\xff\xfeNam")

    _, header = parse_instance(data)

    assert header.patient_name is not None
    assert header.patient_name.startswith("Bad")
    assert "\ufffd" in header.patient_name
    assert header.sop_instance_uid == ds.SOPInstanceUID


def test_unknown_character_set_does_not_raise() -> None:
    ds = make_ct()
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds.PatientName = "Plain^Ascii"

    _, header = parse_instance(encode(ds))

    assert header.patient_name == "Plain^Ascii"
    assert header.specific_character_set == "ISO_IR 999"


def explicit_element(tag: int, vr: str, value: bytes) -> bytes:
    """The explicit VR little endian encoding of a short element (PS3.5 7.1.2)."""
    group, element = tag >> 16, tag & 0xFFFF
    return (
        group.to_bytes(2, "little")
        + element.to_bytes(2, "little")
        + vr.encode()
        + len(value).to_bytes(2, "little")
        + value
    )


@pytest.mark.parametrize(
    ("keyword", "tag", "vr", "good", "bad", "field"),
    [
        ("SliceThickness", 0x00180050, "DS", b"1.25", b"ab.c", "slice_thickness"),
        ("InstanceNumber", 0x00200013, "IS", b"17", b"x7", "instance_number"),
    ],
)
def test_malformed_numbers_become_none(keyword: str, tag: int, vr: str, good: bytes, bad: bytes, field: str) -> None:
    ds = make_ct()
    setattr(ds, keyword, good.decode())
    data = encode(ds)
    original = explicit_element(tag, vr, good)
    assert data.count(original) == 1

    _, header = parse_instance(data.replace(original, explicit_element(tag, vr, bad)))

    assert getattr(header, field) is None
    assert header.rows == 16


def test_malformed_position_becomes_none_and_other_values_survive() -> None:
    ds = make_ct()
    ds.ImagePositionPatient = ["0", "0", "-12.5"]
    data = encode(ds)
    original = explicit_element(0x00200032, "DS", b"0\\0\\-12.5 ")
    assert data.count(original) == 1

    _, header = parse_instance(data.replace(original, explicit_element(0x00200032, "DS", b"0\\0\\-1x.5 ")))

    assert header.image_position is None
    assert header.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert header.pixel_spacing == (0.7, 0.7)


def test_single_frame_ct_geometry_and_identifiers() -> None:
    ds = make_ct(z=-30.0)
    ds.ImagesInAcquisition = 64
    ds.ConvolutionKernel = ["Br38f", "3"]
    ds.SeriesNumber = 2

    header = summarize(ds, "1.2.840.10008.1.2.1")

    assert header.image_position == (0.0, 0.0, -30.0)
    assert header.frame_positions is None
    assert header.images_in_acquisition == 64
    assert header.convolution_kernel == "Br38f\\3"
    assert header.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert header.series_number == 2
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1"


def _enhanced_ct(frames: int, spacing: float) -> Dataset:
    """An Enhanced CT header with geometry only in the functional groups (PS3.3 C.7.6.16)."""
    ds = Dataset()
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.NumberOfFrames = frames
    ds.Rows = 8
    ds.Columns = 8
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    measures.SliceThickness = 1.5
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0.8660254, -0.5]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(frames):
        position = Dataset()
        position.ImagePositionPatient = [0.0, 10.0, -k * spacing]
        item = Dataset()
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    return ds


def test_enhanced_ct_geometry_comes_from_functional_groups() -> None:
    header = summarize(_enhanced_ct(frames=5, spacing=2.0), "1.2.840.10008.1.2.1")

    assert header.number_of_frames == 5
    assert header.frame_positions == tuple((0.0, 10.0, -2.0 * k) for k in range(5))
    assert header.image_position == (0.0, 10.0, 0.0)
    assert header.image_orientation == pytest.approx((1, 0, 0, 0, 0.8660254, -0.5))
    assert header.pixel_spacing == (0.5, 0.6)
    assert header.slice_thickness == 1.5


def test_json_round_trip_is_lossless() -> None:
    ds = _enhanced_ct(frames=3, spacing=1.0)
    ds.PatientName = "Doe^Jane"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    header = summarize(ds, "1.2.840.10008.1.2.1")

    text = json.dumps(header.to_json(), allow_nan=False)
    again = InstanceHeader.from_json(json.loads(text))

    assert again == header
    assert isinstance(again.frame_positions, tuple)
    assert isinstance(again.image_type, tuple)


def test_from_json_ignores_unknown_keys() -> None:
    header = summarize(make_ct(), "1.2.840.10008.1.2.1")
    data = header.to_json() | {"added_later": 1}

    assert InstanceHeader.from_json(data) == header


def test_real_ct_header() -> None:
    first = series_files(SERIES_S2)[0]

    _, header = parse_instance(first)

    assert header.modality == "CT"
    assert header.rows == 512 and header.columns == 512
    assert header.slice_thickness == 5.0
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert header.image_position is not None and header.image_orientation is not None
    json.dumps(header.to_json(), allow_nan=False)
