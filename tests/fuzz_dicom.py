"""Malformed DICOM for fuzzing: a small valid CT slice and the ways real senders break it.

The strategies draw from what goes wrong in hospitals: transfers cut off mid-file, length fields
that disagree with the data, a VR written wrong by a converter, absurd values (65535 rows, a NaN
pixel spacing, a billion frames), pixel data missing or of the wrong size, and series whose
slices disagree in geometry or belong to different series.

Byte-level mutations only touch the data set after the file meta information, so a mutated file
keeps a valid Part 10 header and can still be sent over the network as it is (pynetdicom sends
the bytes after the meta unchanged when ``STORE_SEND_CHUNKED_DATASET`` is set).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st
from pydicom import dcmwrite
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID, generate_uid

from tests.dicom_node.helpers import make_ct

__all__ = [
    "Malformed",
    "base_slice",
    "dataset_offset",
    "encode",
    "malformed_instances",
    "slice_of_series",
]

_PREAMBLE_AND_PREFIX = 132
_FIXED_UID = "1.2.826.0.1.3680043.8.498.77"
_SHORT_LENGTH_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN"}
_SHORT_LENGTH_VRS |= {b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}

#: Elements whose header the byte-level mutations rewrite: the identifying UIDs, the image
#: geometry and pixel description, and Pixel Data itself.
TARGET_TAGS: tuple[tuple[int, int], ...] = (
    (0x0008, 0x0016),
    (0x0008, 0x0018),
    (0x0010, 0x0010),
    (0x0020, 0x000D),
    (0x0020, 0x000E),
    (0x0020, 0x0032),
    (0x0020, 0x0037),
    (0x0028, 0x0010),
    (0x0028, 0x0011),
    (0x0028, 0x0030),
    (0x0028, 0x0100),
    (0x7FE0, 0x0010),
)

#: Values a sender should never write but some do, per keyword (all stay within the VR's syntax
#: or break it on purpose, as real converters do).
ABSURD_VALUES: dict[str, list[object]] = {
    "Rows": [0, 1, 65535],
    "Columns": [0, 65535],
    "BitsAllocated": [0, 1, 7, 64],
    "BitsStored": [0, 40],
    "HighBit": [99],
    "SamplesPerPixel": [0, 3],
    "PixelRepresentation": [7],
    "NumberOfFrames": ["0", "2147483647", "-3", "x"],
    "PixelSpacing": [["0", "0"], ["nan", "1"], ["1e308", "1e308"], ["-1", "0.7"], ["0.7"]],
    "ImagePositionPatient": [["inf", "0", "0"], ["a", "b", "c"], ["1", "2"], ["1e300", "-1e300", "0"]],
    "ImageOrientationPatient": [["0", "0", "0", "0", "0", "0"], ["1", "0", "0", "1", "0", "0"], ["nan"] * 6],
    "SliceThickness": ["-1", "0", "nan", "1e308"],
    "RescaleSlope": ["0", "nan", "-1e308"],
    "RescaleIntercept": ["inf"],
    "PatientName": ["A" * 70000],
    "PatientAge": ["999Y", "abc", "-05Y"],
    "PatientBirthDate": ["99999999", "2020-01-01"],
    "SOPInstanceUID": ["1." + "2" * 80, "1..2", "01.2", ""],
    "SeriesInstanceUID": ["", "x.y"],
    "SOPClassUID": ["1.2.3"],
    "Modality": ["", "MR"],
    "ImageType": [["DERIVED", "SECONDARY", "LOCALIZER"], []],
    "SpecificCharacterSet": ["ISO_IR 999", "\\\\"],
}


@dataclass(frozen=True)
class Malformed:
    """One generated instance: what was done to it (for failure messages) and its Part 10 bytes."""

    label: str
    data: bytes


def encode(ds: Dataset) -> bytes:
    """The Part 10 bytes of ``ds`` (preamble, file meta, data set) as pydicom writes them."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def dataset_offset(data: bytes) -> int:
    """Where the data set starts: after the preamble, ``DICM`` and the group 0002 elements."""
    group_length = struct.unpack_from("<I", data, _PREAMBLE_AND_PREFIX + 8)[0]
    return _PREAMBLE_AND_PREFIX + 12 + int(group_length)


def _element_header(data: bytes, tag: tuple[int, int]) -> int | None:
    """Offset of the explicit VR little endian header of ``tag`` in the data set, if present."""
    needle = struct.pack("<HH", *tag)
    position = data.find(needle, dataset_offset(data))
    return None if position < 0 else position


def _with_length(data: bytes, tag: tuple[int, int], length: int) -> bytes:
    """Rewrite the length field of ``tag`` (2 or 4 bytes, depending on its VR) to ``length``."""
    at = _element_header(data, tag)
    if at is None:
        return data
    vr = data[at + 4 : at + 6]
    if vr in _SHORT_LENGTH_VRS:
        return data[: at + 6] + struct.pack("<H", length & 0xFFFF) + data[at + 8 :]
    return data[: at + 8] + struct.pack("<I", length & 0xFFFFFFFF) + data[at + 12 :]


def _with_vr(data: bytes, tag: tuple[int, int], vr: bytes) -> bytes:
    """Overwrite the two VR bytes of ``tag``; the length field stays as it was."""
    at = _element_header(data, tag)
    if at is None:
        return data
    return data[: at + 4] + vr + data[at + 6 :]


def base_slice() -> Dataset:
    """The valid slice every mutation starts from, with fixed UIDs so that generation is repeatable."""
    ds = make_ct(study_uid=_FIXED_UID + ".1", series_uid=_FIXED_UID + ".2")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(_FIXED_UID + ".3")
    # An explicit OW, so that the slice still encodes when a mutation removes Bits Allocated.
    ds.add_new(0x7FE00010, "OW", ds.PixelData)
    return ds


def _raw_value(keyword: str, value: object) -> bytes:
    """``value`` as the bytes of an explicit VR little endian element, valid for its VR or not."""
    vr = dictionary_VR(keyword)
    if vr == "US":
        return struct.pack("<H", int(str(value)) & 0xFFFF)
    text = "\\".join(map(str, value)) if isinstance(value, list) else str(value)
    raw = text.encode("latin-1")
    return raw + (b"\0" if vr == "UI" else b" ") * (len(raw) % 2)


def _with_value(keyword: str, value: object) -> bytes:
    """A valid slice with one attribute written as ``value`` (or deleted when ``value`` is ``[]``).

    The value goes in as raw bytes, so that pydicom writes what it would refuse to convert.
    """
    ds = base_slice()
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    if value == []:
        ds.pop(tag, None)
    else:
        raw = _raw_value(keyword, value)
        ds[tag] = RawDataElement(Tag(tag), dictionary_VR(tag), len(raw), raw, 0, False, True)
    if keyword in ("SOPInstanceUID", "SOPClassUID") and value not in ([], ""):
        # A sender that copies its own error into the file meta, so only the value is wrong.
        meta_tag = Tag(f"MediaStorage{keyword}")
        ds.file_meta[meta_tag] = RawDataElement(meta_tag, "UI", len(raw), raw, 0, False, True)
    return encode(ds)


def _without_pixel_data() -> bytes:
    ds = base_slice()
    del ds.PixelData
    return encode(ds)


def _with_pixel_bytes(count: int) -> bytes:
    ds = base_slice()
    ds.add_new(0x7FE00010, "OW", bytes(count + (count % 2)))
    return encode(ds)


@st.composite
def malformed_instances(draw: st.DrawFn) -> Malformed:
    """One malformed (or, by chance, still valid) CT slice."""
    base = encode(base_slice())
    start = dataset_offset(base)
    kind = draw(st.sampled_from(["truncate", "overwrite", "length", "vr", "value", "pixels"]))
    if kind == "truncate":
        at = draw(st.integers(start, len(base) - 1))
        return Malformed(f"truncated at byte {at} of {len(base)}", base[:at])
    if kind == "overwrite":
        at = draw(st.integers(start, len(base) - 1))
        junk = draw(st.binary(min_size=1, max_size=64))
        return Malformed(f"{len(junk)} bytes overwritten at {at}", base[:at] + junk + base[at + len(junk) :])
    if kind == "length":
        tag = draw(st.sampled_from(TARGET_TAGS))
        length = draw(st.one_of(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF]), st.integers(0, 4096)))
        return Malformed(f"length of {tag[0]:04X},{tag[1]:04X} set to {length}", _with_length(base, tag, length))
    if kind == "vr":
        tag = draw(st.sampled_from(TARGET_TAGS))
        vr = draw(
            st.one_of(
                st.sampled_from([b"SQ", b"UN", b"OB", b"OW", b"FD", b"AT", b"UT"]), st.binary(min_size=2, max_size=2)
            )
        )
        return Malformed(f"VR of {tag[0]:04X},{tag[1]:04X} set to {vr!r}", _with_vr(base, tag, vr))
    if kind == "value":
        keyword = draw(st.sampled_from(sorted(ABSURD_VALUES)))
        value = draw(st.sampled_from(ABSURD_VALUES[keyword] + [[]]))
        return Malformed(f"{keyword} = {str(value)[:40]}", _with_value(keyword, value))
    count = draw(st.sampled_from([0, 1, 16 * 16, 16 * 16 * 2 - 2, 16 * 16 * 4]))
    if count == 0:
        return Malformed("no Pixel Data", _without_pixel_data())
    return Malformed(f"Pixel Data of {count} bytes for 16x16x16 bits", _with_pixel_bytes(count))


SeriesEdit = Callable[[Dataset, int], None]


def _tilt(ds: Dataset, k: int) -> None:
    if k % 3 == 1:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]


def _duplicate(ds: Dataset, k: int) -> None:
    if k == 2:
        ds.ImagePositionPatient = [0.0, 0.0, 1.0]


def _gap(ds: Dataset, k: int) -> None:
    if k >= 3:
        ds.ImagePositionPatient = [0.0, 0.0, float(k + 2)]


def _matrix(ds: Dataset, k: int) -> None:
    if k == 1:
        ds.Rows = ds.Columns = 8
        ds.PixelData = bytes(8 * 8 * (ds.BitsAllocated // 8))


def _pixel_spacing(ds: Dataset, k: int) -> None:
    if k == 1:
        ds.PixelSpacing = [0.9, 0.9]


def _no_position(ds: Dataset, k: int) -> None:
    if k == 0:
        del ds.ImagePositionPatient


def _mixed_sop_class(ds: Dataset, k: int) -> None:
    if k == 1:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")


def _mixed_modality(ds: Dataset, k: int) -> None:
    if k == 1:
        ds.Modality = "PT"


def _bits(ds: Dataset, k: int) -> None:
    if k == 1:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(ds.Rows * ds.Columns)


def _rescale(ds: Dataset, k: int) -> None:
    ds.RescaleSlope = [1, 0.5, 2][k % 3]


def _frame_of_reference(ds: Dataset, k: int) -> None:
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[f"frame-{k % 2}"])


#: Ways a series can be inconsistent while each of its instances is valid on its own.
SERIES_EDITS: dict[str, SeriesEdit] = {
    "one slice in three tilted": _tilt,
    "two slices at one position": _duplicate,
    "a slice missing": _gap,
    "one slice with another matrix": _matrix,
    "one slice with another pixel spacing": _pixel_spacing,
    "a slice without Image Position": _no_position,
    "a Secondary Capture among CT slices": _mixed_sop_class,
    "a PT slice among CT slices": _mixed_modality,
    "one slice with 8-bit pixels": _bits,
    "rescale slopes differing per slice": _rescale,
    "two frames of reference": _frame_of_reference,
}


def slice_of_series(series_uid: str, study_uid: str, k: int, edits: list[str]) -> Dataset:
    """Slice ``k`` (1 mm apart) of a small CT series, with the named series edits applied."""
    ds = make_ct(study_uid=study_uid, series_uid=series_uid, z=float(k))
    for name in edits:
        SERIES_EDITS[name](ds, k)
    return ds
