"""Acceptance rules shared by the SCP and folder import: parse errors, UIDs, SOP class mismatches, pixel data."""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable

import numpy as np
import pytest
from pydicom import config, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)

from dicom_node.scp import error_comment
from dicom_node.statuses import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS
from dicom_node.validation import InvalidInstance, check_uid, parse_instance, validate_dataset
from tests.dicom_node.helpers import SERIES_J2K, make_ct, series_files


def part10(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def with_pixel_data(ds: Dataset, transfer_syntax: str, pixel_data: bytes, *, encapsulated: bool) -> bytes:
    """Part 10 bytes whose file meta names ``transfer_syntax`` and whose Pixel Data is written as given.

    The rest of ``ds`` is explicit VR little endian, as every compressed transfer syntax has it
    (PS3.5 A.4); pydicom itself refuses to write pixel data that disagrees with the syntax.
    """
    ds = copy.deepcopy(ds)
    del ds.PixelData
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    if encapsulated:
        buffer.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        buffer.write(pixel_data + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    else:
        buffer.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, len(pixel_data)) + pixel_data)
    return buffer.getvalue()


def jpeg_header(sof: int, rows: int = 16, columns: int = 16, components: int = 1) -> bytes:
    """The start of a JPEG or JPEG-LS codestream: SOI, an APP0 segment, a frame header and SOS (T.81 B.2)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + bytes(9)
    frame = struct.pack(">BBHBHHB", 0xFF, sof, 8 + 3 * components, 8, rows, columns, components)
    frame += b"".join(bytes([k + 1, 0x11, 0]) for k in range(components))
    scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0, 0, 0, 0])
    return b"\xff\xd8" + app0 + frame + scan + bytes(32) + b"\xff\xd9"


def refusal(data: bytes) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data)
    return caught.value


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.5.1.4.1.1.2", "0.0", "2.25.329800735698586629295641978511506172918", "1" * 64],
)
def test_valid_uids(uid: str) -> None:
    assert check_uid(uid) is None


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("1." + "2" * 63, "longer than 64"),
        ("1.2.840.01", "leading zero"),
        ("1.2..3", "empty component"),
        ("1.2.3.", "empty component"),
        ("1.2.abc", "other than digits"),
        ("1.2 .3", "other than digits"),
    ],
)
def test_invalid_uids(uid: str, problem: str) -> None:
    result = check_uid(uid)
    assert result is not None and problem in result


@pytest.mark.parametrize(
    ("keyword", "name"),
    [
        ("SOPClassUID", "SOP Class UID (0008,0016)"),
        ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
        ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
        ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
    ],
)
def test_missing_empty_and_invalid_uids_are_named(keyword: str, name: str) -> None:
    missing = make_ct()
    delattr(missing, keyword)
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(missing)
    assert caught.value.reason == f"{name} is missing"
    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS

    empty = make_ct()
    setattr(empty, keyword, "")
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(empty)
    assert caught.value.reason == f"{name} is empty"

    invalid = make_ct()
    setattr(invalid, keyword, "1.2.03.4")
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(invalid)
    assert caught.value.reason.startswith(f"{name} is not a valid UID")
    assert "'1.2.03.4'" in caught.value.reason


def test_sop_class_must_match_the_request() -> None:
    ds = make_ct()
    validate_dataset(ds, request_sop_class_uid=CTImageStorage, request_sop_instance_uid=ds.SOPInstanceUID)

    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(ds, request_sop_class_uid=MRImageStorage)
    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert CTImageStorage in caught.value.reason and MRImageStorage in caught.value.reason


def test_sop_instance_must_match_the_request() -> None:
    ds = make_ct()
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(ds, request_sop_instance_uid="1.2.3.4")
    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "'1.2.3.4'" in caught.value.reason


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is not DICOM at all" * 4, b"\x00" * 132 + b"junk", bytes(range(256)) * 4],
)
def test_garbage_cannot_be_understood(data: bytes) -> None:
    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data)
    assert caught.value.status == CANNOT_UNDERSTAND
    assert caught.value.reason.startswith("Data set has no data elements")
    assert caught.value.reason.endswith("pydicom could not parse it")


def test_truncated_stream_is_refused() -> None:
    data = part10(make_ct(size=64))

    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data[: len(data) - 1000])
    assert caught.value.status == CANNOT_UNDERSTAND
    assert "truncated" in caught.value.reason

    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data[:300])
    assert caught.value.status == CANNOT_UNDERSTAND


def test_truncated_encapsulated_pixel_data_is_refused() -> None:
    data = series_files(SERIES_J2K)[0].read_bytes()

    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data[:-500])
    assert caught.value.status == CANNOT_UNDERSTAND
    assert "truncated" in caught.value.reason


def test_bare_data_set_without_file_meta_parses() -> None:
    ds = make_ct()
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, ds)

    parsed, header = parse_instance(buffer.getvalue())

    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2"
    validate_dataset(parsed)


def test_real_jpeg2000_files_with_empty_uids_are_refused_by_name() -> None:
    for path in series_files(SERIES_J2K):
        ds, header = parse_instance(path)
        assert header.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
        with pytest.raises(InvalidInstance) as caught:
            validate_dataset(ds)
        assert caught.value.reason == "SOP Class UID (0008,0016) is empty"


def test_validation_works_with_strict_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    ds = make_ct()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Bad^Name"
    data = part10(ds).replace(b"Bad^Name", b"Bad\xff\xfeNam")

    parsed, header = parse_instance(data)
    validate_dataset(parsed)

    assert header.patient_name is not None and "\ufffd" in header.patient_name

    ds = make_ct()
    ds.SliceThickness = "1.25"
    ds.InstanceNumber = "17"
    strict = part10(ds).replace(b"DS\x04\x001.25", b"DS\x04\x00ab.c").replace(b"IS\x02\x0017", b"IS\x02\x00x7")
    _, header = parse_instance(strict)
    assert header.slice_thickness is None and header.instance_number is None
    assert header.rows == 16


def _signed_rows(ds: Dataset) -> None:
    ds["Rows"] = DataElement(0x00280010, "SS", -16)


def _rgb_without_planar_configuration(ds: Dataset) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(16 * 16 * 3)


IMAGE_PIXEL_REFUSALS: list[tuple[Callable[[Dataset], None], str]] = [
    (lambda ds: setattr(ds, "Rows", 0), "Rows (0028,0010) is 0"),
    (lambda ds: setattr(ds, "Columns", 0), "Columns (0028,0011) is 0"),
    (_signed_rows, "Rows (0028,0010) is -16"),
    (lambda ds: delattr(ds, "Columns"), "Columns (0028,0011) is missing"),
    (lambda ds: setattr(ds, "BitsAllocated", 12), "Bits Allocated (0028,0100) is 12"),
    (lambda ds: setattr(ds, "BitsAllocated", 0), "Bits Allocated (0028,0100) is 0"),
    (lambda ds: setattr(ds, "BitsStored", 40), "Bits Stored (0028,0101) is 40"),
    (lambda ds: setattr(ds, "PixelRepresentation", 7), "Pixel Representation (0028,0103) is 7"),
    (lambda ds: setattr(ds, "SamplesPerPixel", 3), "Samples per Pixel (0028,0002) is 3"),
    (lambda ds: delattr(ds, "PhotometricInterpretation"), "Photometric Interpretation (0028,0004) is missing"),
    (lambda ds: setattr(ds, "PhotometricInterpretation", "JUNK"), "Photometric Interpretation (0028,0004) is 'JUNK'"),
    (_rgb_without_planar_configuration, "Planar Configuration (0028,0006) is missing"),
    (lambda ds: setattr(ds, "NumberOfFrames", 0), "Number of Frames (0028,0008) is 0"),
]


@pytest.mark.parametrize(("change", "start"), IMAGE_PIXEL_REFUSALS)
def test_image_pixel_values_no_decoder_follows_are_refused_by_attribute(
    change: Callable[[Dataset], None], start: str
) -> None:
    ds = make_ct()
    change(ds)

    refused = refusal(part10(ds))

    assert refused.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert refused.reason.startswith(start), refused.reason
    assert error_comment(refused.reason).startswith(start)


def _eight_bits(ds: Dataset) -> None:
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7


def _thirty_two_bits(ds: Dataset) -> None:
    ds.BitsAllocated = 32


@pytest.mark.parametrize(
    ("change", "start"),
    [
        (_eight_bits, "Pixel Data (7FE0,0010) is too long: 512 bytes, 256 expected"),
        (_thirty_two_bits, "Pixel Data (7FE0,0010) is truncated: 512 of 1024 bytes"),
        (lambda ds: setattr(ds, "NumberOfFrames", 2), "Pixel Data (7FE0,0010) is truncated: 512 of 1024 bytes"),
        (lambda ds: setattr(ds, "Rows", 65535), "Pixel Data (7FE0,0010) is truncated: 512 of 2097120 bytes"),
    ],
)
def test_native_pixel_data_of_another_length_is_refused(change: Callable[[Dataset], None], start: str) -> None:
    ds = make_ct()
    change(ds)

    refused = refusal(part10(ds))

    assert refused.status == CANNOT_UNDERSTAND
    assert refused.reason.startswith(start), refused.reason
    assert "Rows " in refused.reason and "Bits Allocated" in refused.reason and "PS3.5 8.1.1" in refused.reason


def test_native_pixel_data_of_the_declared_length_is_accepted() -> None:
    odd = make_ct(size=3)
    _eight_bits(odd)
    odd.PixelData = bytes(9)  # written with its padding byte (PS3.5 7.1.1)
    bits = make_ct()
    bits.BitsAllocated, bits.BitsStored, bits.HighBit = 1, 1, 0
    bits.PixelData = bytes(16 * 16 // 8)
    ybr = make_ct(size=4)
    _eight_bits(ybr)
    ybr.SamplesPerPixel, ybr.PhotometricInterpretation, ybr.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ybr.PixelData = bytes(4 * 4 * 2)
    frames = make_ct()
    frames.NumberOfFrames = 2
    frames.PixelData = bytes(16 * 16 * 2 * 2)

    for ds in (odd, bits, ybr, frames):
        parsed, _ = parse_instance(part10(ds))
        assert parsed.Rows == ds.Rows


def test_a_compressed_transfer_syntax_over_native_bytes_is_refused() -> None:
    ds = make_ct()

    refused = refusal(with_pixel_data(ds, JPEG2000Lossless, ds.PixelData, encapsulated=False))

    assert refused.status == CANNOT_UNDERSTAND
    assert refused.reason.startswith("Pixel Data (7FE0,0010) is not encapsulated: JPEG 2000 Image Compression")
    assert error_comment(refused.reason).startswith("Pixel Data (7FE0,0010) is not encapsulated")


def test_fragments_under_a_native_transfer_syntax_are_refused() -> None:
    ds = make_ct()

    refused = refusal(with_pixel_data(ds, ExplicitVRLittleEndian, encapsulate([ds.PixelData]), encapsulated=True))

    assert refused.status == CANNOT_UNDERSTAND
    assert refused.reason.startswith("Pixel Data (7FE0,0010) is encapsulated, the transfer syntax is native")


def _compressed(syntax: str) -> Dataset:
    ds = make_ct(size=64)
    ds.compress(syntax)
    return ds


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_encoded_frames_are_accepted(syntax: str) -> None:
    ds = _compressed(syntax)

    parsed, header = parse_instance(part10(ds))

    assert header.transfer_syntax_uid == syntax
    assert np.array_equal(parsed.pixel_array, make_ct(size=64).pixel_array)


def test_a_jp2_file_in_the_fragment_is_followed_to_its_codestream() -> None:
    ds = _compressed(JPEG2000Lossless)
    codestream = next(iter(_fragments(ds.PixelData)))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">L4s", 20, b"ftyp") + b"jp2 " + bytes(8)
    jp2 += struct.pack(">L4s", 8 + len(codestream), b"jp2c") + codestream

    parse_instance(with_pixel_data(ds, JPEG2000Lossless, encapsulate([jp2]), encapsulated=True))

    ds.Rows = 32
    refused = refusal(with_pixel_data(ds, JPEG2000Lossless, encapsulate([jp2]), encapsulated=True))
    assert refused.reason.startswith("Rows (0028,0010) is 32, the JPEG 2000 codestream has 64")


def _fragments(pixel_data: bytes) -> list[bytes]:
    from pydicom.encaps import generate_fragments

    return list(generate_fragments(pixel_data[8 + int.from_bytes(pixel_data[4:8], "little") :]))


def _frames_two(ds: Dataset) -> None:
    ds.NumberOfFrames = 2


ENCAPSULATED_REFUSALS: list[tuple[str, Callable[[Dataset], bytes], str]] = [
    (
        "a JPEG codestream declared as JPEG 2000",
        lambda ds: encapsulate([jpeg_header(0xC0)]),
        "Pixel Data (7FE0,0010) is not a JPEG 2000 codestream: the first frame does not start with SOC FF4F",
    ),
    (
        "a cut fragment",
        lambda ds: encapsulate([bytes(ds.PixelData)])[:-10],
        "Pixel Data (7FE0,0010) item at byte 12 is cut: 512 bytes, 502 left",
    ),
    (
        "a sequence where an item belongs",
        lambda ds: encapsulate([bytes(32)]).replace(b"\xfe\xff\x00\xe0\x20", b"\xfe\xff\x0d\xe0\x20"),
        "Pixel Data (7FE0,0010) has tag (FFFE,E00D) where an item (FFFE,E000) belongs",
    ),
    (
        "no fragments",
        lambda ds: struct.pack("<HHL", 0xFFFE, 0xE000, 0),
        "Pixel Data (7FE0,0010) has no fragments",
    ),
    (
        "an offset table with two offsets for one frame",
        lambda ds: struct.pack("<HHLLL", 0xFFFE, 0xE000, 8, 0, 40) + encapsulate([bytes(32)])[12:],
        "Pixel Data (7FE0,0010) Basic Offset Table does not point at its 1 frames",
    ),
]


@pytest.mark.parametrize(
    ("label", "pixel_data", "start"), ENCAPSULATED_REFUSALS, ids=[c[0] for c in ENCAPSULATED_REFUSALS]
)
def test_encapsulated_pixel_data_that_does_not_parse_is_refused(
    label: str, pixel_data: Callable[[Dataset], bytes], start: str
) -> None:
    ds = make_ct()

    refused = refusal(with_pixel_data(ds, JPEG2000Lossless, pixel_data(ds), encapsulated=True))

    assert refused.status == CANNOT_UNDERSTAND, label
    assert refused.reason.startswith(start), refused.reason


def test_fewer_fragments_than_frames_are_refused() -> None:
    ds = _compressed(JPEG2000Lossless)
    ds.NumberOfFrames = 2

    refused = refusal(part10(ds))

    assert refused.reason.startswith("Pixel Data (7FE0,0010) has 1 fragments for 2 frames")


@pytest.mark.parametrize(
    ("syntax", "codestream", "start"),
    [
        (JPEGBaseline8Bit, jpeg_header(0xC0), None),
        (JPEGLosslessSV1, jpeg_header(0xC3), None),
        (JPEGLSLossless, jpeg_header(0xF7), None),
        (JPEGLosslessSV1, jpeg_header(0xC3, rows=64), "Rows (0028,0010) is 16, the JPEG codestream has 64"),
        (JPEGBaseline8Bit, jpeg_header(0xC0, components=3), "Samples per Pixel (0028,0002) is 1, the JPEG codestream"),
        (JPEGLSLossless, jpeg_header(0xC3), "Pixel Data (7FE0,0010) is not a JPEG-LS codestream: the first frame"),
        (JPEGLosslessSV1, jpeg_header(0xF7), "Pixel Data (7FE0,0010) is not a JPEG codestream: the first frame"),
        (JPEGBaseline8Bit, b"\xff\x4f\xff\x51" + bytes(60), "Pixel Data (7FE0,0010) is not a JPEG codestream"),
        (JPEG2000, jpeg_header(0xC0), "Pixel Data (7FE0,0010) is not a JPEG 2000 codestream"),
    ],
)
def test_the_first_frame_must_be_the_declared_codestream(syntax: str, codestream: bytes, start: str | None) -> None:
    data = with_pixel_data(make_ct(), syntax, encapsulate([codestream]), encapsulated=True)

    if start is None:
        parse_instance(data)
        return
    refused = refusal(data)
    assert refused.status == CANNOT_UNDERSTAND
    assert refused.reason.startswith(start), refused.reason


def test_the_rle_header_must_fit_the_samples() -> None:
    ds = make_ct()
    three_segments = struct.pack("<16L", 3, 64, 65, 66, *([0] * 12)) + bytes(3)
    refused = refusal(with_pixel_data(ds, RLELossless, encapsulate([three_segments]), encapsulated=True))
    assert refused.reason.startswith("Pixel Data (7FE0,0010) has 3 RLE segments, 2 expected")

    not_rle = b"\xff\xd8" + bytes(100)
    refused = refusal(with_pixel_data(ds, RLELossless, encapsulate([not_rle]), encapsulated=True))
    assert refused.reason.startswith("Pixel Data (7FE0,0010) is not an RLE frame")


def test_a_bare_data_set_with_fragments_gets_only_its_items_checked() -> None:
    data = with_pixel_data(make_ct(), JPEG2000Lossless, encapsulate([jpeg_header(0xC0)]), encapsulated=True)
    bare = data[dcmread(DicomBytesIO(data)).file_meta.get("FileMetaInformationGroupLength") + 144 :]

    parsed, header = parse_instance(bare)

    assert header.transfer_syntax_uid == ExplicitVRLittleEndian
    assert getattr(parsed.get_item(0x7FE00010), "length", None) == 0xFFFFFFFF
